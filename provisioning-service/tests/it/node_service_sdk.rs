//! The unmodified Azure Node service SDK (`azure-iot-provisioning-service`, from npm) against the
//! service: every individual-enrollment, registration-state and enrollment-group call it offers
//! (`tests/node/service-sdk.js` makes the calls and checks the answers). Skipped, with the
//! reason printed, only where Node.js is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::PgPool;
use test_support::{Device, TestApp, TestTpm};

/// The SDK version tested (the newest on npm in 2026-11).
const SDK: &str = "azure-iot-provisioning-service@1.11.2";

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the SDK once per build directory; returns its `node_modules`.
fn installed_sdk() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-service-sdk");
    let modules = dir.join("node_modules");
    if !modules
        .join("azure-iot-provisioning-service/package.json")
        .exists()
    {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefix",
            ])
            .arg(&dir)
            .arg(SDK)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm install {SDK} failed");
    }
    modules
}

/// A syntactically valid EK for the SDK's enrollments, base64 of its `TPM2B_PUBLIC`.
fn test_ek(n: u8) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crate::enrollments::fake_ek(n),
    )
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_unmodified_node_service_sdk_passes_every_call(pool: PgPool) {
    if !has("node") || !has("npm") {
        eprintln!(
            "skipped: Node.js and npm are not installed (the Azure service SDK runs on them)"
        );
        return;
    }
    let modules = installed_sdk();
    let app = TestApp::spawn(pool).await;
    // A provisioned device, for the registration-state calls.
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    app.provision(&mut t, &device).await;

    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/service-sdk.js");
    let mut node = Command::new("node");
    node.arg(script)
        .env("NODE_PATH", &modules)
        .env("DPS_PORT", port)
        .env("DPS_CA_FILE", app.pki.ca_file())
        .env("DPS_SAS", app.service_sas())
        .env("DPS_EK", test_ek(201))
        .env("DPS_EK_2", test_ek(202))
        .env("DPS_EK_3", test_ek(203))
        .env("DPS_EK_4", test_ek(204))
        .env("DPS_REGISTERED", &device.registration_id);
    // On a blocking thread: the service answering it runs on this test's runtime.
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("all service SDK calls passed"), "{stdout}");
}
