//! What a registration costs Postgres, counted by the server itself (`pg_stat_statements`, which
//! `scripts/lib/postgres.sh` preloads), and what concurrent steps of one device do.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use sqlx::PgPool;

use test_support::{Device, TestApp, TestTpm};

/// Statements run in this test's database so far, by `pg_stat_statements` (utility statements
/// such as BEGIN and COMMIT included), by query text. The counting query counts too.
async fn statements_so_far(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT query, calls FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(pool)
    .await
    .expect("pg_stat_statements (the cluster must preload it: scripts/lib/postgres.sh)")
    .into_iter()
    .collect()
}

/// The statements run between two [`statements_so_far`], but the counting query's and sqlx's
/// lookup of a named type (`SELECT $1::regtype::oid`, once per new connection, then cached).
fn statements_between(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    after
        .iter()
        .filter(|(query, _)| !query.contains("pg_stat_statements") && !query.contains("::regtype"))
        .map(|(query, calls)| (query.clone(), calls - before.get(query).unwrap_or(&0)))
        .filter(|(_, calls)| *calls > 0)
        .collect()
}

/// Connections the instance has handed back to its pool so far: sqlx confirms each with a
/// round trip (a Sync). A device step's clean connection waits for the next request instead
/// (`store::lease`), so a registration usually hands back none.
fn pool_returns(app: &TestApp) -> f64 {
    let text = app.app.metrics().render(&app.pool);
    crate::metrics::sample(&text, "dps_db_pool_returns_total").unwrap_or(0.0)
}

/// A complete registration (challenge, SAS registration answered with the decision) is three
/// statements with no transaction around them (the challenge one, recorded with its throttle
/// count and enrollment read; the SAS step a read and a write), and at most five round trips
/// with the connections' returns to the pool (none while the steps follow each other within
/// `store::lease::KEPT_FOR`); the issue measured 13 statements and 16 pings in 8 checkouts (and
/// a third request, the poll) before. A poll is one statement more.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_complete_registration_is_three_statements(pool: PgPool) {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;

    let before = statements_so_far(&app.pool).await;
    let returned = pool_returns(&app);
    let operation_id = app.provision(&mut t, &device).await;
    let returns = pool_returns(&app) - returned;
    let registered = statements_so_far(&app.pool).await;
    let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "assigned");
    let after = statements_so_far(&app.pool).await;
    let run = statements_between(&before, &registered);
    assert_eq!(
        run.values().sum::<i64>(),
        3,
        "statements per complete registration: {run:#?}"
    );
    assert!(returns <= 2.0, "{returns} returns to the pool");
    let poll = statements_between(&registered, &after);
    assert_eq!(poll.values().sum::<i64>(), 1, "a poll: {poll:#?}");
}

/// Two SAS registrations of one device at once, with the same key: the write of one finds the
/// challenge consumed by the other, reads again and re-registers with the registration's key.
/// Both are answered 200, and the state is whole.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn concurrent_registrations_of_one_device_both_succeed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut t, device, token) = app.challenged_device().await;
    let body = device.body();
    let register = || app.put_register(&device.registration_id, &body, Some(&token));
    let (a, b) = tokio::join!(register(), register());
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    assert_eq!(b.0, StatusCode::OK, "{}", b.1);
    let (challenges, registrations): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM challenges), (SELECT count(*) FROM registrations)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((challenges, registrations), (0, 1));
    let (status, _) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK);
}

/// A re-registration rewrites the device's row where it lies (a heap-only update: no new index
/// entries), since nothing indexed changes and the page has room (migration 0010). Counted by
/// Postgres, which publishes a backend's counts within a second or so.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_re_registration_rewrites_the_row_in_place(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    for _ in 0..3 {
        app.provision(&mut t, &device).await;
    }
    let mut counts = (0, 0);
    for _ in 0..100 {
        counts = sqlx::query_as::<_, (i64, i64)>(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'registrations'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if counts.0 == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        counts,
        (2, 2),
        "(updates, heap-only updates) of registrations"
    );
}

/// Challenges written for one device from one address at the same moment still leave at most
/// [`CHALLENGES_PER_ADDRESS`] live: each write locks the device's challenges before it prunes
/// them (migration 0011). As a single statement, each write saw the table as it was before the
/// others committed, kept its own row and pruned none of theirs: with that statement, this test
/// ended with three live in one run of two to four (and the suite's
/// `register::concurrent_registrations_of_one_device_end_in_one_state` once in CI). The writes
/// are made to start together by holding a lock on the table until all of them wait.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn simultaneous_challenges_keep_the_per_address_cap(pool: PgPool) {
    use provisioning_service::store::device_steps::put_challenge;
    use provisioning_service::store::registrations::{ChallengeRow, CHALLENGES_PER_ADDRESS};
    const WRITES: i64 = 10;
    // The test's pool has five connections: the writes and the lock need more.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(WRITES as u32 + 2)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let mut gate = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE challenges IN SHARE MODE")
        .execute(&mut *gate)
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut writes = Vec::new();
    for i in 0..WRITES {
        let mut conn = pool.acquire().await.unwrap();
        writes.push(tokio::spawn(async move {
            let row = ChallengeRow {
                challenge_id: uuid::Uuid::new_v4(),
                registration_id: "device-1".to_owned(),
                client_address: "192.0.2.1".to_owned(),
                ek_hash: vec![1; 32],
                storage_root_key: vec![2; 8],
                sealed_key: vec![3; 8],
                key_id: "k".to_owned(),
                authentication_key: vec![4; 8],
                issued_at: now + time::Duration::milliseconds(i),
                expires_at: now + time::Duration::minutes(5),
                group_id: None,
            };
            put_challenge(&mut conn, &row).await.unwrap();
        }));
    }
    // Every write waits: on the table (one statement) or on the device's lock (the function).
    // Only this test's database counts: other tests run beside it on the same cluster.
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut *gate)
        .await
        .unwrap();
        if waiting == WRITES {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    gate.commit().await.unwrap();
    for w in writes {
        w.await.unwrap();
    }
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM challenges WHERE registration_id = 'device-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live, CHALLENGES_PER_ADDRESS);
}
