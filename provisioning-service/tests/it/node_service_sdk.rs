//! The unmodified Azure Node service SDK (`azure-iot-provisioning-service`, from npm) against the
//! service: every individual-enrollment, registration-state and enrollment-group call it offers
//! (`tests/node/service-sdk.js` makes the calls and checks the answers). Skipped, with the
//! reason printed, only where Node.js is not installed.

use sqlx::PgPool;
use test_support::{Device, TestApp, TestTpm};

/// The SDK version tested (the newest on npm in 2026-11).
const SDK: &str = "azure-iot-provisioning-service@1.11.2";

/// A syntactically valid EK for the SDK's enrollments, base64 of its `TPM2B_PUBLIC`.
fn test_ek(n: u8) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crate::enrollments::fake_ek(n),
    )
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_unmodified_node_service_sdk_passes_every_call(pool: PgPool) {
    if !crate::node::available("the Azure service SDK") {
        return;
    }
    let modules = crate::node::installed("node-service-sdk", &[SDK]);
    let app = TestApp::spawn(pool).await;
    // A provisioned device, for the registration-state calls.
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    app.provision(&mut t, &device).await;

    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let stdout = crate::node::run(
        "service-sdk.js",
        &[],
        vec![
            ("NODE_PATH", modules.display().to_string()),
            ("DPS_PORT", port),
            ("DPS_CA_FILE", app.pki.ca_file().display().to_string()),
            ("DPS_SAS", app.service_sas()),
            ("DPS_EK", test_ek(201)),
            ("DPS_EK_2", test_ek(202)),
            ("DPS_EK_3", test_ek(203)),
            ("DPS_EK_4", test_ek(204)),
            ("DPS_REGISTERED", device.registration_id.clone()),
        ],
    )
    .await;
    println!("{stdout}");
    assert!(stdout.contains("all service SDK calls passed"), "{stdout}");
}
