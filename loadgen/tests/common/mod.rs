//! What the load generator's test files share.

use loadgen::fleet::Fleet;
use sqlx::PgPool;
use test_support::{TestApp, POLICY, POLICY_KEY};

/// Enrolls `fleet`'s devices on `app` through the enrollment API's bulk operation.
pub async fn enroll(app: &TestApp, fleet: &Fleet) {
    let tls = loadgen::tls_config(&app.pki.ca_pem).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .build()
        .unwrap();
    loadgen::device::enroll(
        &client,
        &app.base,
        "dps.test",
        (POLICY, POLICY_KEY),
        &fleet.devices,
    )
    .await
    .unwrap();
}

/// The service on `pool` with per-address throttles lifted (every device here is 127.0.0.1),
/// configured further by `configure`.
pub async fn unthrottled(
    pool: PgPool,
    configure: impl FnOnce(&mut provisioning_service::settings::Settings),
) -> TestApp {
    TestApp::spawn_configured(pool, |s| {
        s.registration_limit.count = 1_000_000;
        s.poll_limit.count = 1_000_000;
        configure(s);
    })
    .await
}
