//! The housekeeping sweep: ended throttle windows and expired challenges go, live ones stay,
//! each run is bounded, and only one instance sweeps at a time.

use provisioning_service::store::housekeeping::{sweep, Swept};
use reqwest::StatusCode;
use sqlx::PgPool;
use test_support::{Device, TestApp, TestTpm};
use time::{Duration, OffsetDateTime};

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_sweep_deletes_what_has_ended_boundedly_and_one_instance_at_a_time(pool: PgPool) {
    let app = TestApp::spawn_configured(pool.clone(), |s| {
        s.client_address_header = Some("x-forwarded-for".to_owned());
    })
    .await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    // Challenges and throttle rows from five addresses.
    for i in 0..5 {
        let r = app
            .register_request(&device)
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Three of them are over: their challenges expired, their throttle windows ended.
    sqlx::query(
        "UPDATE challenges SET expires_at = now() - interval '1 second'
         WHERE client_address IN ('192.0.2.0', '192.0.2.1', '192.0.2.2')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE throttle SET window_start = now() - interval '2 hours'
         WHERE bucket IN ('challenge:192.0.2.0', 'challenge:192.0.2.1', 'challenge:192.0.2.2')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let now = OffsetDateTime::now_utc();
    let stale_before = now - Duration::hours(1);

    // Another instance holds the sweep: this one skips its turn.
    let mut other = pool.begin().await.unwrap();
    let mut mine = pool.begin().await.unwrap();
    assert!(sweep(&mut other, now, stale_before, 100)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        sweep(&mut mine, now, stale_before, 100).await.unwrap(),
        None
    );
    other.rollback().await.unwrap();
    mine.rollback().await.unwrap();

    // Bounded: two rows per table per run.
    let mut tx = pool.begin().await.unwrap();
    let first = sweep(&mut tx, now, stale_before, 2).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        first,
        Some(Swept {
            throttle_rows: 2,
            challenges: 2
        })
    );
    let mut tx = pool.begin().await.unwrap();
    let second = sweep(&mut tx, now, stale_before, 2).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        second,
        Some(Swept {
            throttle_rows: 1,
            challenges: 1
        })
    );
    assert_eq!(count("challenges").await, 2, "the live challenges stay");
    assert_eq!(count("throttle").await, 2, "the open windows stay");
}
