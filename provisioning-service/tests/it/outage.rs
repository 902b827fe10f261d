//! The database goes away under load and comes back: requests fail fast with 503, Retry-After
//! and a DPS body (never another 5xx, never slower than the bound), /readyz answers within a
//! second, nothing half-written remains, and the service recovers alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioning_service::store;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use test_support::outage::PgRelay;
use test_support::{Device, Pki, TestApp, TestTpm};

/// How long any request may take while the database is away: the pool's acquire timeout plus
/// the request's own work and a margin for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(4);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_database_outage_is_503_fast_and_the_service_recovers(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    let upstream = tokio::net::lookup_host(("127.0.0.1", options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = PgRelay::start(upstream).await;
    let relayed = store::pool_options(8, ACQUIRE_TIMEOUT)
        .connect_with(options.port(relay.port))
        .await
        .unwrap();
    let app = TestApp::spawn_with(relayed, test_support::settings(), Arc::new(Pki::new())).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;

    relay.cut();
    let started = Instant::now();
    let mut seen_503 = 0;
    while started.elapsed() < Duration::from_secs(3) {
        // Load: eight device challenges and enrollment reads at once.
        let mut load = tokio::task::JoinSet::new();
        for i in 0..8 {
            let request = if i % 2 == 0 {
                app.register_request(&device)
            } else {
                app.client
                    .get(format!(
                        "{}/enrollments/{}",
                        app.base, device.registration_id
                    ))
                    .header("authorization", app.service_sas())
            };
            load.spawn(async move {
                let sent = Instant::now();
                let response = request.send().await.unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body, sent.elapsed())
            });
        }
        while let Some(done) = load.join_next().await {
            let (status, body, took) = done.unwrap();
            assert!(took < BOUND, "a request took {took:?} during the outage");
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["errorCode"], 503_000, "{body}");
            assert!(body["trackingId"].is_string(), "{body}");
            seen_503 += 1;
        }
        let probe = Instant::now();
        let ready = app
            .client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            probe.elapsed() < Duration::from_millis(1500),
            "{:?}",
            probe.elapsed()
        );
    }
    assert!(seen_503 > 0);
    let retry = app.register_request(&device).send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.headers().contains_key("retry-after"));

    // Back: the service recovers alone, and a full registration goes through.
    relay.restore();
    let mut ready = false;
    for _ in 0..100 {
        let r = app
            .client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the service did not recover");
    app.provision(&mut t, &device).await;
    let (status, state) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["status"], "assigned");
    // Nothing half-written: the only rows are the enrollment and the registration.
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM challenges")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(challenges, 0);
}

/// Issue 31: a connection that reached a standby (through a proxy, around a failover) has its
/// writes refused as read-only (SQLSTATE 25006). The service answers 503 with Retry-After, as
/// for a database that is away, not 500; reads still work.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_write_refused_as_read_only_is_503(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" SET default_transaction_read_only = on"
    ))
    .execute(&pool)
    .await
    .unwrap();
    // Fresh connections take the setting, as a standby's would refuse writes.
    let standby_like = store::pool_options(2, ACQUIRE_TIMEOUT)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let app = TestApp::spawn_with(standby_like, test_support::settings(), app.pki.clone()).await;
    let response = app.register_request(&device).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], 503_000, "{body}");
    let (status, _) = app
        .admin(
            reqwest::Method::GET,
            &format!("/enrollments/{}", device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Issue 31: the challenges table is unlogged, so a standby promoted by a failover starts with
/// it empty. A device that got its challenge from the old primary is refused at its SAS step
/// (401, as for an expired challenge), and the request it makes next, without a SAS, gets a
/// fresh challenge with which it is assigned. (device-client starts over on that 401 by itself,
/// `provision::Run::advance`.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_device_whose_challenge_was_lost_in_a_failover_gets_a_fresh_one(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    // What a promoted standby has of the unlogged table.
    sqlx::query("TRUNCATE challenges")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let operation_id = app.provision(&mut t, &device).await;
    let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "assigned", "{body}");
}
