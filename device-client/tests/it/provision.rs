//! End to end: the `device-client` binary against the real service (in-process, HTTPS on
//! loopback, a fresh Postgres database) and a real TPM (swtpm).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use device_client::dps::DpsClient;
use device_client::provision::{self, Options, ProvisionError, Stage};
use device_client::tpm::Tpm;
use dps_protocol::RegistrationId;
use provisioning_service::enrollment::{Attestation, IndividualEnrollment, ProvisioningStatus};
use provisioning_service::sealing::Sealer;
use provisioning_service::store::enrollments;
use provisioning_service::{App, Settings};
use sqlx::PgPool;

use crate::swtpm::Swtpm;

const ID_SCOPE: &str = "0ne00000E2E";
const HUB: &str = "hub.e2e.example";

struct Service {
    endpoint: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn spawn_service(pool: PgPool) -> Service {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let path = |f: &str| dir.path().join(f);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), leaf.pem()).unwrap();
    std::fs::write(path("server.key"), leaf_key.serialize_pem()).unwrap();
    let tls =
        provisioning_service::tls::server_config(&path("server.pem"), &path("server.key")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = App::new(
        pool,
        Sealer::new(&[3; 32]),
        Settings::new(ID_SCOPE, vec![HUB.to_owned()]),
    );
    tokio::spawn(provisioning_service::server::serve_tls(
        app,
        listener,
        tls,
        std::future::pending(),
    ));
    Service {
        endpoint: format!("https://localhost:{port}"),
        ca_file: path("ca.pem"),
        _dir: dir,
    }
}

async fn enroll(pool: &PgPool, registration_id: &str, ek: &[u8]) {
    let e = IndividualEnrollment {
        registration_id: registration_id.to_owned(),
        device_id: None,
        attestation: Attestation::tpm(ek.to_vec()),
        iot_hub_host_name: None,
        provisioning_status: ProvisioningStatus::Enabled,
        etag: None,
        created_date_time_utc: None,
        last_updated_date_time_utc: None,
        extra: serde_json::Map::new(),
    };
    let new = e.to_new(Some(&[HUB.to_owned()])).unwrap();
    enrollments::upsert(pool, &new, None, time_now())
        .await
        .unwrap();
}

fn time_now() -> sqlx::types::time::OffsetDateTime {
    sqlx::types::time::OffsetDateTime::now_utc()
}

/// Reads the EK through a short-lived context (swtpm serves one client at a time).
fn read_ek(tcti: &str) -> Vec<u8> {
    Tpm::open(tcti).unwrap().endorsement_key().unwrap()
}

/// Runs the binary off the async runtime (the service runs on it).
async fn device_client(args: Vec<String>) -> std::process::Output {
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

fn register_args(service: &Service, tcti: &str, state: &Path) -> Vec<String> {
    [
        "--tcti",
        tcti,
        "register",
        "--endpoint",
        &service.endpoint,
        "--id-scope",
        ID_SCOPE,
        "--ca-file",
        &service.ca_file.display().to_string(),
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
    let service = spawn_service(pool.clone());
    let swtpm = Swtpm::start();
    let ek = read_ek(&swtpm.tcti());
    let id = RegistrationId::from_endorsement_key(&ek);
    enroll(&pool, id.as_str(), &ek).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");

    let out = device_client(register_args(&service, &swtpm.tcti(), &state)).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("assigned: {id} is device {id} on {HUB}")),
        "{stdout}"
    );
    let saved = provision::load_state(&state).unwrap();
    assert_eq!(
        saved.stage,
        Stage::Assigned {
            assigned_hub: HUB.to_owned(),
            device_id: id.as_str().to_owned()
        }
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
        format!("{HUB}/devices/{id}"),
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

/// Runs provisioning in-process up to the first stage `stop` accepts, as if killed there.
async fn run_until(
    service: &Service,
    tcti: &str,
    state: &Path,
    stop: fn(&Stage) -> bool,
) -> Result<provision::Outcome, ProvisionError> {
    let (endpoint, ca, state_file, tcti) = (
        service.endpoint.clone(),
        service.ca_file.clone(),
        state.to_owned(),
        tcti.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let mut tpm = Tpm::open(&tcti).unwrap();
        let ca = std::fs::read(ca).unwrap();
        let client =
            DpsClient::new(&endpoint, ID_SCOPE, Some(&ca), Duration::from_secs(10)).unwrap();
        let options = Options {
            registration_id: None,
            state_file,
            force: false,
            sas_ttl: 60,
            deadline: Duration::from_secs(30),
            max_backoff: Duration::from_secs(2),
            stop_after: Some(stop),
        };
        provision::provision(&mut tpm, &client, &endpoint, &options)
    })
    .await
    .unwrap()
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_run_killed_after_the_import_completes_on_the_next(pool: PgPool) {
    let service = spawn_service(pool.clone());
    let swtpm = Swtpm::start();
    let tcti = swtpm.tcti();
    let ek = read_ek(&tcti);
    let id = RegistrationId::from_endorsement_key(&ek);
    enroll(&pool, id.as_str(), &ek).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");

    // The first run stops right after the key is imported and the state saved.
    let stopped = run_until(&service, &tcti, &state, |stage| {
        *stage == Stage::KeyImported
    })
    .await;
    assert!(
        matches!(stopped, Err(ProvisionError::Stopped(Stage::KeyImported))),
        "{stopped:?}"
    );
    assert_eq!(
        provision::load_state(&state).unwrap().stage,
        Stage::KeyImported
    );

    // The next run picks up at the SAS leg and finishes.
    let out = device_client(register_args(&service, &tcti, &state)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("assigned:"),
        "{}",
        text(&out)
    );
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM challenges")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        challenges, 0,
        "the second run used the key of the first, no new challenge"
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_run_killed_while_polling_completes_on_the_next(pool: PgPool) {
    let service = spawn_service(pool.clone());
    let swtpm = Swtpm::start();
    let tcti = swtpm.tcti();
    let ek = read_ek(&tcti);
    let id = RegistrationId::from_endorsement_key(&ek);
    enroll(&pool, id.as_str(), &ek).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");

    let stopped = run_until(&service, &tcti, &state, |stage| {
        matches!(stage, Stage::Assigning { .. })
    })
    .await;
    let Err(ProvisionError::Stopped(Stage::Assigning { operation_id })) = stopped else {
        panic!("{stopped:?}")
    };
    let out = device_client(register_args(&service, &tcti, &state)).await;
    assert!(out.status.success(), "{}", text(&out));
    // It polled the saved operation rather than registering again.
    let (current, _) = operation_of(&pool).await;
    assert_eq!(current, operation_id);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_device_that_is_not_enrolled_gets_a_clear_error(pool: PgPool) {
    let service = spawn_service(pool);
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
