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

/// SAS steps of `app` that registered with the challenge it remembered, without a read
/// (`None` before the first).
fn remembered_and_used(app: &TestApp) -> Option<f64> {
    let text = app.app.metrics().render(&app.pool);
    crate::metrics::sample(&text, r#"dps_remembered_challenges_total{outcome="used"}"#)
}

/// Registers `device` (challenge on `challenger`, SAS on `registrar`), then polls; returns the
/// statements of the registration and of the poll, and the connections `registrar` handed back
/// to its pool during the registration.
async fn counted_registration(
    challenger: &TestApp,
    registrar: &TestApp,
    t: &mut TestTpm,
    device: &Device,
) -> (i64, i64, f64) {
    let db = &challenger.pool;
    let before = statements_so_far(db).await;
    let returned = pool_returns(registrar);
    let blob = challenger.challenge(device).await;
    t.tpm
        .import_authentication_key(&blob)
        .expect("the TPM imports the service's blob");
    let (status, body) = registrar.register_with(device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let returns = pool_returns(registrar) - returned;
    let registered = statements_so_far(db).await;
    let operation_id = body["operationId"].as_str().unwrap();
    let (status, polled) = registrar.poll(device, operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{polled}");
    assert_eq!(polled["status"], "assigned");
    let after = statements_so_far(db).await;
    let registration = statements_between(&before, &registered);
    let poll = statements_between(&registered, &after);
    eprintln!("registration: {registration:#?}\npoll: {poll:#?}");
    (registration.values().sum(), poll.values().sum(), returns)
}

/// An instance counting statements (`pg_stat_statements` in its database) and an enrolled
/// device.
async fn counting(pool: PgPool) -> (TestApp, TestTpm, Device) {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    (app, t, device)
}

/// A complete registration (challenge, SAS registration answered with the decision) on the
/// instance that issued the challenge is two statements with no transaction around them: the
/// challenge one (recorded with its throttle count and the enrollment and registration read),
/// and the SAS step's write, which re-checks what the instance remembered of that read
/// (`registration::recent`). At most four round trips with the connections' returns to the
/// pool (none while the steps follow each other within `store::lease::KEPT_FOR`). The issue
/// measured 13 statements and 16 pings in 8 checkouts (and a third request, the poll) before.
/// A poll is one statement more. Without the remembered challenge, three statements.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_complete_registration_is_two_statements(pool: PgPool) {
    let (app, mut t, device) = counting(pool).await;
    let (registration, poll, returns) = counted_registration(&app, &app, &mut t, &device).await;
    assert_eq!(registration, 2, "statements per complete registration");
    assert!(returns <= 2.0, "{returns} returns to the pool");
    assert_eq!(poll, 1, "statements per poll");
    // Again, as a device that re-provisions: its registration is remembered too.
    let (registration, _, _) = counted_registration(&app, &app, &mut t, &device).await;
    assert_eq!(registration, 2, "statements per re-registration");
    assert_eq!(remembered_and_used(&app), Some(2.0));
}

/// A device whose SAS goes to another instance than its challenge (another connection behind
/// a load balancer) is registered all the same, with the SAS step's read: three statements.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn on_another_instance_a_registration_is_three_statements(pool: PgPool) {
    let (app, mut t, device) = counting(pool).await;
    let other = app.second_instance().await;
    let (registration, poll, _) = counted_registration(&app, &other, &mut t, &device).await;
    assert_eq!(registration, 3, "statements per complete registration");
    assert_eq!(poll, 1, "statements per poll");
    assert_eq!(
        (remembered_and_used(&app), remembered_and_used(&other)),
        (None, None)
    );
}

/// Two SAS registrations of one device at once, with the same key: the write of one finds the
/// challenge consumed by the other, reads again and re-registers with the registration's key.
/// Both are answered 202 with the decision, and the state is whole.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn concurrent_registrations_of_one_device_both_succeed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut t, device, token) = app.challenged_device().await;
    let body = device.body();
    let register = || app.put_register(&device.registration_id, &body, Some(&token));
    let (a, b) = tokio::join!(register(), register());
    assert_eq!(a.0, StatusCode::ACCEPTED, "{}", a.1);
    assert_eq!(b.0, StatusCode::ACCEPTED, "{}", b.1);
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
    use provisioning_service::store::registrations::CHALLENGES_PER_ADDRESS;
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
            let row = challenge("device-1", now + time::Duration::milliseconds(i));
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

/// A challenge of `registration_id` from one address, issued at `issued_at`, for the store's
/// own tests.
fn challenge(
    registration_id: &str,
    issued_at: time::OffsetDateTime,
) -> provisioning_service::store::registrations::ChallengeRow {
    provisioning_service::store::registrations::ChallengeRow {
        challenge_id: uuid::Uuid::new_v4(),
        registration_id: registration_id.to_owned(),
        client_address: "192.0.2.1".to_owned(),
        ek_hash: vec![1; 32],
        storage_root_key: vec![2; 8],
        sealed_key: vec![3; 8],
        key_id: "k".to_owned(),
        authentication_key: vec![4; 8],
        issued_at,
        expires_at: issued_at + time::Duration::minutes(5),
        group_id: None,
        attestation_key: None,
        attestation_nonce_hash: None,
    }
}

/// Records `n` live challenges, each of another device: a wave of first boots.
async fn wave(conn: &mut sqlx::PgConnection, n: i32) {
    sqlx::query(
        "INSERT INTO challenges (challenge_id, registration_id, client_address, ek_hash,
                                 storage_root_key, sealed_key, key_id, authentication_key,
                                 issued_at, expires_at)
         SELECT gen_random_uuid(), 'wave-' || i, '192.0.2.1', '\\x01', '\\x02', '\\x03', 'k',
                '\\x04', now(), now() + interval '5 minutes'
         FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(conn)
    .await
    .unwrap();
}

/// The SAS step's read for twenty devices with no challenge, on one connection: past the
/// five executions after which a connection keeps a generic plan.
async fn sas_reads(conn: &mut sqlx::PgConnection) {
    let now = time::OffsetDateTime::now_utc();
    for i in 0..20 {
        provisioning_service::store::device_steps::register_view(conn, &format!("device-{i}"), now)
            .await
            .unwrap();
    }
}

/// How `challenges` was read: sequential scans, and entries read through the index on expiry
/// times (the housekeeping sweep's, which a device's read must not take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
struct ChallengeReads {
    seq_scans: i64,
    by_expiry: i64,
}

/// How `scan`, on a connection of its own, read `challenges`, as Postgres counts it once the
/// connection publishes its counts (asked for at once; done within a second or so).
async fn challenge_reads<F>(pool: &PgPool, scan: F) -> ChallengeReads
where
    F: AsyncFnOnce(&mut sqlx::PgConnection),
{
    let reads = || async {
        sqlx::query_as::<_, ChallengeReads>(
            "SELECT t.seq_scan AS seq_scans, i.idx_tup_read AS by_expiry
             FROM pg_stat_user_tables t, pg_stat_user_indexes i
             WHERE t.relname = 'challenges' AND i.indexrelname = 'challenges_expires_at'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let before = reads().await;
    let mut conn = pool.acquire().await.unwrap();
    scan(&mut conn).await;
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut after = before;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = reads().await;
    }
    ChallengeReads {
        seq_scans: after.seq_scans - before.seq_scans,
        by_expiry: after.by_expiry - before.by_expiry,
    }
}

/// Recording a challenge reads the device's challenges by index, even in a new database whose
/// table has never grown (migration 0012): planned while the table was nearly empty, the read
/// was a sequential scan, and a connection keeps its plan, so while a wave of first boots grew
/// the table every challenge read all of it (260 pages a call in the benchmark).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn recording_a_challenge_never_scans_the_whole_table(pool: PgPool) {
    use provisioning_service::store::device_steps::put_challenge;
    let reads = challenge_reads(&pool, async |conn| {
        sqlx::query("VACUUM challenges")
            .execute(&mut *conn)
            .await
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        // Past the five calls after which a connection keeps a generic plan.
        for i in 0..20 {
            put_challenge(conn, &challenge(&format!("device-{i}"), now))
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(reads.seq_scans, 0, "sequential scans of challenges");
}

/// A wave's challenges, answered and vacuumed away, leave the table its pages (migration
/// 0012), and a table of a few pages is given more (0013), so the SAS step's read, planned
/// after the vacuum, still reads by index. Truncated, the table looked empty to the planner;
/// a few pages long, a sequential scan looked cheaper. Either way the read became one, and
/// stayed one as the next wave grew the table.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn after_a_wave_is_vacuumed_away_challenges_are_still_read_by_index(pool: PgPool) {
    // A small first wave (a few pages), then a large one.
    for devices in [100, 5000] {
        // The wave's own scans (the DELETE) are counted apart.
        challenge_reads(&pool, async |conn| {
            wave(conn, devices).await;
            for statement in ["DELETE FROM challenges", "VACUUM challenges"] {
                sqlx::query(statement).execute(&mut *conn).await.unwrap();
            }
        })
        .await;
        let reads = challenge_reads(&pool, sas_reads).await;
        assert_eq!(
            reads.seq_scans, 0,
            "sequential scans of challenges after a wave of {devices}"
        );
    }
}

/// The SAS step reads a device's live challenges through the index on registration and
/// expiry (migration 0012), not through the sweep's index on expiry: with the statistics of an
/// empty table the two looked alike, and the read went through every live challenge.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_devices_challenges_are_not_read_through_everyone_elses(pool: PgPool) {
    // A wave answered and vacuumed away, and the next one under way. Their own reads (the
    // DELETE) are counted apart.
    challenge_reads(&pool, async |conn| {
        wave(conn, 500).await;
        for statement in ["DELETE FROM challenges", "VACUUM challenges"] {
            sqlx::query(statement).execute(&mut *conn).await.unwrap();
        }
        wave(conn, 5000).await;
    })
    .await;
    let reads = challenge_reads(&pool, sas_reads).await;
    assert_eq!(
        reads,
        ChallengeReads {
            seq_scans: 0,
            by_expiry: 0
        }
    );
}
