//! The load generator against the real service (two instances on one database, in-process) and
//! a real Postgres: 256 devices registering at once must all be assigned, with no 5xx.
#![allow(unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use dps_protocol::ecc::EccCurve;
use loadgen::device::Target;
use loadgen::fleet::{Fleet, FleetEk};
use loadgen::run::{self, Connections, Plan};
use sqlx::PgPool;
use test_support::{TestApp, ID_SCOPE};

mod common;

const DEVICES: usize = 256;

/// A fleet's keys, generated on the first run (~30 s on two cores for 256 devices) and kept
/// with the build; one file per test, as tests run at once.
fn keys_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("loadgen-test-{name}.keys"))
}

/// The issue this closes: at concurrency 128 a register held a transaction and waited for a
/// second pooled connection, and the service answered 500 for 30–60 s. Here 256 devices
/// register at once through two instances sharing one small pool, per-address throttles lifted
/// (every device is 127.0.0.1): every one is assigned and nothing answers 5xx.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn two_hundred_fifty_six_devices_at_once_all_assigned_without_a_5xx(pool: PgPool) {
    let first = common::unthrottled(pool, |_| {}).await;
    let second = first.second_instance().await;
    let fleet = Arc::new(
        Fleet::load(
            &keys_file("devices"),
            DEVICES,
            "load-test",
            FleetEk::Rsa2048,
        )
        .unwrap(),
    );
    common::enroll(&first, &fleet).await;
    let tls = loadgen::tls_config(&first.pki.ca_pem).unwrap();

    let plan = Plan {
        targets: [&first, &second]
            .iter()
            .map(|app| Target {
                base: app.base.clone(),
                id_scope: ID_SCOPE.to_owned(),
            })
            .collect(),
        concurrency: DEVICES,
        count: Some(DEVICES),
        duration: None,
        connections: Connections::Fresh,
        challenge_only: false,
        rate: None,
        keep_assignments: false,
    };
    let report = run::run(&plan, fleet, tls).await.unwrap();
    assert_eq!(report.server_errors, 0, "{report:#?}");
    assert_eq!(report.completed, DEVICES, "{report:#?}");
    let assigned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM registrations WHERE status = 'assigned'")
            .fetch_one(&first.pool)
            .await
            .unwrap();
    assert_eq!(assigned, i64::try_from(DEVICES).unwrap());
}

/// Enrolls `fleet` on `app` and registers each device once, `concurrency` at a time, over
/// kept-alive connections.
async fn enroll_and_run(app: &TestApp, fleet: Fleet, concurrency: usize) -> run::Report {
    common::enroll(app, &fleet).await;
    let fleet = Arc::new(fleet);
    let tls = loadgen::tls_config(&app.pki.ca_pem).unwrap();
    let plan = Plan {
        targets: vec![Target {
            base: app.base.clone(),
            id_scope: ID_SCOPE.to_owned(),
        }],
        concurrency,
        count: Some(fleet.devices.len()),
        duration: None,
        connections: Connections::KeepAlive,
        challenge_only: false,
        rate: None,
        keep_assignments: false,
    };
    run::run(&plan, fleet, tls).await.unwrap()
}

/// The attesting mode: every software device shows an attestation key, answers the quote
/// challenge, and is assigned under a `require` policy; each verdict is `verified`. (The
/// software model's marshalling is held to swtpm's quote in dps-protocol's tests; this shows the
/// service accepts what it makes.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_attesting_fleet_is_verified_and_assigned(pool: PgPool) {
    const ATTESTING: usize = 32;
    let app = common::unthrottled(pool, |_| {}).await;
    let fleet = Fleet::load(
        &keys_file("attesting"),
        ATTESTING,
        "attest-test",
        FleetEk::Rsa2048,
    )
    .unwrap()
    .attesting()
    .unwrap();
    let report = enroll_and_run(&app, fleet, 8).await;
    assert_eq!(report.completed, ATTESTING, "{report:#?}");
    let verified: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM registrations
         WHERE status = 'assigned' AND attestation->>'verdict' = 'verified'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(verified, i64::try_from(ATTESTING).unwrap());
}

/// The certificate mode: every software device sends a CSR and is assigned with a chain; each
/// certificate is recorded.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_fleet_with_csrs_is_issued_certificates(pool: PgPool) {
    const REQUESTING: usize = 16;
    let pki = test_support::IssuingPki::new(&[("devices", serde_json::json!({}))]);
    let policies = pki.policies();
    let app = common::unthrottled(pool, |s| s.credential_policies = policies).await;
    let fleet = Fleet::load(
        &keys_file("requesting"),
        REQUESTING,
        "csr-test",
        FleetEk::Rsa2048,
    )
    .unwrap()
    .requesting_certificates("devices", false)
    .unwrap();
    let report = enroll_and_run(&app, fleet, 4).await;
    assert_eq!(report.completed, REQUESTING, "{report:#?}");
    let issued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM registrations r JOIN issued_certificates c USING (registration_id)
         WHERE cardinality(r.certificate_chain) = 3",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(issued, i64::try_from(REQUESTING).unwrap());
}

/// Fleets with ECC EKs (L-2 P-256, H-3 P-384, derived from their ids): the service seals each
/// credential to the EK's curve, the software device model activates it, and every device is
/// assigned. (The model's ECC activation is held to tpm2-tools' and swtpm's in device-client's
/// `tpm2_tools` test.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn fleets_with_ecc_eks_are_assigned(pool: PgPool) {
    const EACH: usize = 16;
    let app = common::unthrottled(pool, |_| {}).await;
    for (curve, prefix) in [(EccCurve::P256, "p256-test"), (EccCurve::P384, "p384-test")] {
        let fleet = Fleet::load(&keys_file("ecc"), EACH, prefix, FleetEk::Ecc(curve)).unwrap();
        let report = enroll_and_run(&app, fleet, 4).await;
        assert_eq!(report.completed, EACH, "{curve:?}: {report:#?}");
    }
}
