//! The unmodified Azure Node DPS device SDK with its TPM security client (tss.js) on swtpm, as a
//! fleet would run it: the factory reads the TPM's EK through the SDK, the service enrolls it,
//! and the SDK provisions itself (`tests/node/device-sdk.js`). Skipped, with the reason printed,
//! only where Node.js is not installed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dps_protocol::RegistrationId;
use serde_json::Value;
use sqlx::PgPool;
use test_support::{Swtpm, TestApp, HUBS, ID_SCOPE};

/// The SDK versions tested (the newest on npm in 2026-11).
const SDK: [&str; 3] = [
    "azure-iot-provisioning-device@1.9.1",
    "azure-iot-provisioning-device-http@1.9.1",
    "azure-iot-security-tpm@1.9.3",
];

/// The SDK finishes on the register call's `200 assigned` (its polling state machine polls only
/// while `assigning`): two requests, no poll.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_unmodified_node_device_sdk_provisions_its_tpm_without_polling(pool: PgPool) {
    if !crate::node::available("the Azure device SDK") {
        return;
    }
    let modules = crate::node::installed("node-device-sdk", &SDK);
    let app = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let tcti = swtpm.tcti();
    let tpm_port = tcti.rsplit('=').next().unwrap().to_owned();
    let dps_port = app.base.rsplit(':').next().unwrap().to_owned();
    let env = || {
        vec![
            ("NODE_PATH", modules.display().to_string()),
            (
                "NODE_EXTRA_CA_CERTS",
                app.pki.ca_file().display().to_string(),
            ),
            ("DPS_PORT", dps_port.clone()),
            ("TPM_PORT", tpm_port.clone()),
            ("DPS_ID_SCOPE", ID_SCOPE.to_owned()),
        ]
    };

    // The factory step: the EK as the SDK reads it, and the id it derives from it.
    let read: Value = serde_json::from_str(
        crate::node::run("device-sdk.js", &["ek"], env())
            .await
            .trim(),
    )
    .unwrap();
    let ek = STANDARD
        .decode(read["endorsementKey"].as_str().unwrap())
        .unwrap();
    let id = read["registrationId"].as_str().unwrap();
    assert_eq!(id, RegistrationId::from_endorsement_key(&ek).as_str());
    app.enroll(id, &ek).await;

    let stdout = crate::node::run("device-sdk.js", &["register"], env()).await;
    // The SDK hands over the operation status it finished on.
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["status"], "assigned", "{result}");
    let state = &result["registrationState"];
    assert_eq!(state["deviceId"], id, "{result}");
    assert!(
        HUBS.contains(&state["assignedHub"].as_str().unwrap()),
        "{result}"
    );

    let metrics = app.app.metrics().render(&app.pool);
    let register_calls = |status: u16| {
        crate::metrics::sample(&metrics, &format!(
            "dps_http_request_duration_seconds_count{{method=\"PUT\",route=\"/{{id_scope}}/registrations/{{registration_id}}/register\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(register_calls(401), Some(1.0), "one challenge\n{metrics}");
    assert_eq!(
        register_calls(202),
        Some(1.0),
        "one registration\n{metrics}"
    );
    assert!(
        !metrics.contains("/operations/"),
        "no poll was needed\n{metrics}"
    );
}
