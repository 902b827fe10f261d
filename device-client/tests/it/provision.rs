//! End to end: the `device-client` binary against the real service (in-process, HTTPS on
//! loopback, a fresh Postgres database) and a real TPM (swtpm).

use std::path::Path;
use std::process::Command;

use device_client::provision::{self, Stage};
use device_client::tpm::Tpm;
use dps_protocol::RegistrationId;
use serde_json::json;
use sqlx::PgPool;
use test_support::{Reply, Swtpm, TestApp, Webhook, HUBS, ID_SCOPE};

/// Reads the EK through a short-lived context (swtpm serves one client at a time).
fn read_ek(tcti: &str) -> Vec<u8> {
    Tpm::open(tcti).unwrap().endorsement_key().unwrap()
}

/// Runs the binary off the async runtime (the service runs on it).
pub(crate) async fn device_client(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_device-client"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub(crate) fn register_args(service: &TestApp, tcti: &str, state: &Path) -> Vec<String> {
    [
        "--tcti",
        tcti,
        "register",
        "--endpoint",
        &service.base,
        "--id-scope",
        ID_SCOPE,
        "--ca-file",
        &service.pki.ca_file().display().to_string(),
        "--state-file",
        &state.display().to_string(),
        "--timeout",
        "30",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn first_boot_provisions_and_the_second_is_a_no_op(pool: PgPool) {
    let service = TestApp::spawn(pool.clone()).await;
    let swtpm = Swtpm::start();
    let ek = read_ek(&swtpm.tcti());
    let id = RegistrationId::from_endorsement_key(&ek);
    service.enroll(id.as_str(), &ek).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");

    let out = device_client(register_args(&service, &swtpm.tcti(), &state)).await;
    assert!(out.status.success(), "{}", text(&out));
    let saved = provision::load_state(&state).unwrap();
    let Stage::Assigned {
        assigned_hub,
        device_id,
        ..
    } = saved.stage
    else {
        panic!("{saved:?}")
    };
    assert!(HUBS.contains(&assigned_hub.as_str()), "{assigned_hub}");
    assert_eq!(device_id, id.as_str());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("assigned: {id} is device {id} on {assigned_hub}")),
        "{stdout}"
    );

    // Second boot: nothing is sent, nothing changes on the service.
    let operation = operation_of(&pool).await;
    let out = device_client(register_args(&service, &swtpm.tcti(), &state)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already provisioned"),
        "{}",
        text(&out)
    );
    assert_eq!(operation_of(&pool).await, operation);
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM challenges")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(challenges, 0);

    // The key in the TPM signs a hub token.
    let out = device_client(vec![
        "--tcti".into(),
        swtpm.tcti(),
        "sas".into(),
        "--resource".into(),
        format!("{assigned_hub}/devices/{id}"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SharedAccessSignature sr="));
}

/// The registration's current operation id and etag.
async fn operation_of(pool: &PgPool) -> (String, String) {
    sqlx::query_as("SELECT operation_id::text, etag::text FROM registrations")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_device_that_is_not_enrolled_gets_a_clear_error(pool: PgPool) {
    let service = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let out = device_client(register_args(
        &service,
        &swtpm.tcti(),
        &dir.path().join("state.json"),
    ))
    .await;
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not accept this device") && stderr.contains("enrolled"),
        "{stderr}"
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_payload_reaches_the_webhook_and_its_answer_is_printed(pool: PgPool) {
    let pki = std::sync::Arc::new(test_support::Pki::new());
    let mut settings = test_support::settings();
    settings.webhook_ca_pem = Some(pki.ca_pem.clone());
    let service = TestApp::spawn_with(pool, settings, pki).await;
    let webhook = Webhook::start(&service.pki, Reply::Status(500)).await;
    let swtpm = Swtpm::start();
    let ek = read_ek(&swtpm.tcti());
    let id = RegistrationId::from_endorsement_key(&ek);
    let mut e = test_support::enrollment(id.as_str(), &ek);
    e.extra = json!({"allocationPolicy": "custom",
        "customAllocationDefinition": {"webhookUrl": webhook.url, "apiVersion": "2021-10-01"}})
    .as_object()
    .unwrap()
    .clone();
    service.enroll_with(e).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut args = register_args(&service, &swtpm.tcti(), &state);
    args.extend(["--payload".to_owned(), r#"{"model": "m-1"}"#.to_owned()]);

    // The webhook fails: the device says why, and its next run registers afresh.
    let out = device_client(args.clone()).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("errorCode 502302"), "{}", text(&out));
    assert_eq!(
        provision::load_state(&state).unwrap().stage,
        Stage::Unprovisioned
    );

    webhook.reply_with(Reply::Json(
        json!({"iotHubHostName": HUBS[0], "payload": {"greeting": "hello m-1"}}),
    ));
    let out = device_client(args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#"payload: {"greeting":"hello m-1"}"#),
        "{}",
        text(&out)
    );
    let requests = webhook.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1]["deviceRuntimeContext"]["payload"],
        json!({"model": "m-1"})
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_mixed_case_registration_id_provisions_as_one_registration(pool: PgPool) {
    let service = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let ek = read_ek(&swtpm.tcti());
    service.enroll("Line7-Unit-0042", &ek).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = register_args(&service, &swtpm.tcti(), &dir.path().join("state.json"));
    args.extend(["--registration-id".to_owned(), "LINE7-unit-0042".to_owned()]);
    let out = device_client(args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("line7-unit-0042 is device line7-unit-0042"),
        "{}",
        text(&out)
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_unenrolled_tpm_provisions_through_its_group_by_its_ek_certificate(pool: PgPool) {
    let service = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let (root, issuer) = test_support::swtpm::local_ca();
    // The group trusts the root only: the issuing CA must come from the device.
    let group = json!({
        "enrollmentGroupId": "factory-line-7",
        "attestation": {"type": "tpmEkCertificate", "tpmEkCertificate": {
            "trustedCaCertificates": [String::from_utf8(root).unwrap()],
        }},
    });
    let (status, body) = service
        .admin(
            reqwest::Method::PUT,
            "/enrollmentGroups/factory-line-7",
            Some(group),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let args = register_args(&service, &swtpm.tcti(), &dir.path().join("state.json"));

    // Without the issuing CA in the TPM's EK chain indices, no path to the root.
    let out = device_client(args.clone()).await;
    assert!(!out.status.success(), "{}", text(&out));
    // As a vendor keeps intermediates on the chip: the first EK chain index (TCG EK Credential
    // Profile), written with tpm2-tools.
    let issuer_der = dps_protocol::ek_cert::pem_certificates(&issuer)
        .unwrap()
        .remove(0);
    let der_file = dir.path().join("issuer.der");
    std::fs::write(&der_file, &issuer_der).unwrap();
    let tcti = swtpm.tcti();
    let size = issuer_der.len().to_string();
    for command in [
        vec![
            "tpm2_nvdefine",
            "0x01C00100",
            "-C",
            "o",
            "-s",
            &size,
            "-a",
            "ownerread|ownerwrite|authread|no_da",
        ],
        vec![
            "tpm2_nvwrite",
            "0x01C00100",
            "-C",
            "o",
            "-i",
            der_file.to_str().unwrap(),
        ],
    ] {
        let status = Command::new(command[0])
            .args(&command[1..])
            .env("TPM2TOOLS_TCTI", &tcti)
            .status()
            .unwrap();
        assert!(status.success(), "{command:?}");
    }

    // Without its certificate the device is a stranger; with it (read from NV), it is in.
    let mut without = args.clone();
    without.push("--no-ek-cert".to_owned());
    let out = device_client(without).await;
    assert!(!out.status.success(), "{}", text(&out));
    let out = device_client(args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("assigned: "),
        "{}",
        text(&out)
    );
}
