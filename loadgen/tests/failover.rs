//! Issue 31: the service rides through the loss of its database primary. A Postgres cluster
//! under Patroni (synchronous replication, etcd, HAProxy in front: `scripts/lib/ha.sh`), two
//! service instances connected through HAProxy, the load generator at c = 32 against both, and
//! a fault injected under load: `kill -9` of the primary's postmaster, then (on the node that
//! took over) of its Patroni. Each time: the service answers 503 while there is no primary and
//! nothing else of the 5xx range, recovers with no operator action, and on the promoted node
//! every device it answered `assigned` has its registration and a key its hub admits, no device
//! is assigned twice, and every enrollment the API acknowledged is there. The old primary then
//! rejoins as a standby, so the second fault fails over back to it. A cluster with
//! asynchronous replication, its primary's WAL held back from the standby, shows the check
//! catching a loss.
#![allow(unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dps_protocol::ecc::EccCurve;
use dps_protocol::sas::{self, SoftwareKey};
use loadgen::device::{Assignment, Target};
use loadgen::fleet::{Fleet, FleetEk};
use loadgen::run::{self, Connections, Plan, Report};
use provisioning_service::hub::{self, Credentials, Principal};
use reqwest::{Method, StatusCode};
use test_support::{HaCluster, TestApp, API, ID_SCOPE};
use time::OffsetDateTime;

mod common;

/// Registrations started per second during a run, and the run's length: the fault lands in
/// its fourth second and the rest covers the switch (a Patroni kill takes its ttl, 10 s).
const RATE: f64 = 100.0;
const RUN: Duration = Duration::from_secs(20);
const FAULT_AFTER: Duration = Duration::from_secs(4);

fn keys_file() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loadgen-test-failover.keys")
}

/// Two instances on the cluster through HAProxy, each with a pool as `provisioning-service
/// serve` makes it, throttles lifted (every device is 127.0.0.1).
async fn instances(ha: &HaCluster) -> (TestApp, TestApp) {
    let pool = provisioning_service::store::pool_options(8, Duration::from_secs(2))
        .connect(&ha.database_url)
        .await
        .unwrap();
    provisioning_service::MIGRATOR.run(&pool).await.unwrap();
    let first = common::unthrottled(pool, |_| {}).await;
    let second = first.second_instance().await;
    (first, second)
}

/// A fleet of ECC devices (their keys derived from their ids, so thousands cost nothing), each
/// registering once, enrolled through the API.
async fn enrolled_fleet(app: &TestApp, prefix: &str, count: usize) -> Arc<Fleet> {
    let fleet = Fleet::load(&keys_file(), count, prefix, FleetEk::Ecc(EccCurve::P256)).unwrap();
    common::enroll(app, &fleet).await;
    Arc::new(fleet)
}

/// The load: c = 32 against both instances at [`RATE`], every device once, every assignment
/// kept.
async fn run_load(apps: [&TestApp; 2], fleet: Arc<Fleet>, duration: Duration) -> Report {
    let plan = Plan {
        targets: apps
            .iter()
            .map(|app| Target {
                base: app.base.clone(),
                id_scope: ID_SCOPE.to_owned(),
            })
            .collect(),
        concurrency: 32,
        count: Some(fleet.devices.len()),
        duration: Some(duration),
        connections: Connections::KeepAlive,
        challenge_only: false,
        rate: Some(RATE),
        keep_assignments: true,
    };
    let tls = loadgen::tls_config(&apps[0].pki.ca_pem).unwrap();
    run::run(&plan, fleet, tls).await.unwrap()
}

/// Writes individual enrollments through the API (the EKs of `writes`' devices, in turn) until
/// `stop`, alternating instances; the ids the API acknowledged (200), and how many answers were
/// 503 and other 5xx.
async fn write_enrollments(
    apps: [&TestApp; 2],
    writes: &Fleet,
    stop: &AtomicBool,
) -> (Vec<String>, usize, usize) {
    let (mut acknowledged, mut unavailable, mut other_5xx) = (Vec::new(), 0, 0);
    for (n, device) in writes.devices.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = &device.registration_id;
        let body = serde_json::to_value(test_support::enrollment(id, &device.ek)).unwrap();
        let (status, _) = apps[n % 2]
            .admin(Method::PUT, &format!("/enrollments/{id}?{API}"), Some(body))
            .await;
        match status {
            StatusCode::OK => acknowledged.push(id.clone()),
            StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
            s if s.is_server_error() => other_5xx += 1,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (acknowledged, unavailable, other_5xx)
}

/// What one fault did.
struct Outcome {
    load: Report,
    acknowledged_enrollments: Vec<String>,
    enrollment_503s: usize,
}

/// Runs the load and the enrollment writer, and `fault` [`FAULT_AFTER`] into them.
async fn under_load(
    apps: [&TestApp; 2],
    fleet: Arc<Fleet>,
    prefix: &str,
    fault: impl FnOnce(),
) -> Outcome {
    let writes = Fleet::load(&keys_file(), 2000, prefix, FleetEk::Ecc(EccCurve::P256)).unwrap();
    let stop = AtomicBool::new(false);
    let (load, (acknowledged_enrollments, enrollment_503s, other_5xx), ()) = tokio::join!(
        async {
            let report = run_load(apps, fleet, RUN).await;
            stop.store(true, Ordering::SeqCst);
            report
        },
        write_enrollments(apps, &writes, &stop),
        async {
            tokio::time::sleep(FAULT_AFTER).await;
            tokio::task::block_in_place(fault);
        },
    );
    assert_eq!(
        other_5xx, 0,
        "the enrollment API answered a 5xx other than 503"
    );
    Outcome {
        load,
        acknowledged_enrollments,
        enrollment_503s,
    }
}

/// What is missing on the database now: each acknowledged assignment that has no registration
/// with its hub and device id or whose key its hub refuses (asked of a fresh instance, so no
/// cached key answers), and each acknowledged enrollment that is not there.
async fn lost(checker: &TestApp, outcome: &Outcome) -> Vec<String> {
    let mut lost = Vec::new();
    for Assignment {
        registration_id,
        assigned_hub,
        device_id,
        device_key,
    } in &outcome.load.assignments
    {
        let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, assigned_hub, device_id FROM registrations WHERE registration_id = $1",
        )
        .bind(registration_id)
        .fetch_optional(&checker.pool)
        .await
        .unwrap();
        if row
            != Some((
                "assigned".into(),
                Some(assigned_hub.clone()),
                Some(device_id.clone()),
            ))
        {
            lost.push(format!("registration {registration_id}: {row:?}"));
            continue;
        }
        let token = sas::build_token(
            &format!("{assigned_hub}/devices/{device_id}"),
            test_support::now() + 300,
            None,
            &mut SoftwareKey(device_key),
        )
        .unwrap_or_else(|never| match never {});
        let username = format!("{assigned_hub}/{device_id}/?api-version=2021-04-12");
        let credentials = Credentials {
            hub: assigned_hub,
            client_id: Some(device_id),
            username: &username,
            password: &token,
            peer: None,
        };
        match hub::authenticate(
            checker.app.gatekeeper(),
            credentials,
            OffsetDateTime::now_utc(),
        )
        .await
        {
            Ok(Principal::Device { .. }) => {}
            other => lost.push(format!("key of {registration_id}: {other:?}")),
        }
    }
    for id in &outcome.acknowledged_enrollments {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM enrollments WHERE registration_id = $1")
                .bind(id)
                .fetch_optional(&checker.pool)
                .await
                .unwrap();
        if found.is_none() {
            lost.push(format!("enrollment {id}"));
        }
    }
    lost
}

/// The 503 window and the counts, for the note (printed with `--nocapture`).
fn report(fault: &str, outcome: &Outcome) {
    let load = &outcome.load;
    eprintln!(
        "{fault}: {} assigned, {} failed ({:?}); 503s: {} from registrations between {:.1} s \
         and {:.1} s, {} from the enrollment API; {} enrollments acknowledged; slowest answer \
         {:.0} ms",
        load.completed,
        load.failed,
        load.failures,
        load.unavailable,
        load.unavailable_window.map_or(0.0, |w| w.0),
        load.unavailable_window.map_or(0.0, |w| w.1),
        outcome.enrollment_503s,
        outcome.acknowledged_enrollments.len(),
        load.slowest_ms,
    );
}

/// The checks every fault must pass, made by a fresh instance (its pool new to the promoted
/// node, no key cached before the fault).
async fn rode_through(fault: &str, apps: [&TestApp; 2], outcome: &Outcome) {
    report(fault, outcome);
    let checker = &apps[0].second_instance().await;
    let load = &outcome.load;
    assert_eq!(
        load.server_errors, load.unavailable,
        "{fault}: a 5xx other than 503: {:?}",
        load.failures
    );
    assert!(
        !load.assignments.is_empty(),
        "{fault}: nothing was assigned"
    );
    // No request waited much beyond the pool's acquire timeout (2 s).
    assert!(
        load.slowest_ms < 5000.0,
        "{fault}: a request took {} ms",
        load.slowest_ms
    );
    assert_eq!(
        lost(checker, outcome).await,
        Vec::<String>::new(),
        "{fault}"
    );
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM registrations WHERE status = 'assigned'
         GROUP BY assigned_hub, device_id HAVING count(*) > 1) t",
    )
    .fetch_one(&checker.pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "{fault}: a device id assigned twice on one hub");
    // Recovered with no operator action: the same instances assign a fresh batch.
    let fleet = enrolled_fleet(apps[0], &format!("{fault}-after"), 40).await;
    let after = run_load(apps, fleet, Duration::from_secs(30)).await;
    assert_eq!(
        after.completed, 40,
        "{fault}: after the failover: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_through_the_loss_of_the_primary_and_loses_nothing_acknowledged() {
    let ha = HaCluster::start();
    let (first, second) = instances(&ha).await;
    let apps = [&first, &second];

    // 1. The primary's postmaster dies: Patroni promotes the synchronous standby at once.
    let fleet = enrolled_fleet(&first, "postmaster", 3000).await;
    let primary = ha.primary().expect("a primary");
    let outcome = under_load(apps, fleet, "api-postmaster", || {
        ha.kill_postmaster(&primary);
    })
    .await;
    let promoted =
        tokio::task::block_in_place(|| ha.wait_for_new_primary(&primary, Duration::from_secs(60)));
    rode_through("postmaster", apps, &outcome).await;
    // Its Patroni restarts the old primary as a standby of the new one (pg_rewind).
    tokio::task::block_in_place(|| ha.wait_for_standby());

    // 2. The new primary's Patroni dies (its Postgres lives on): once the leader lock expires
    // the rejoined standby is promoted: a failover back.
    let fleet = enrolled_fleet(&first, "patroni", 3000).await;
    let outcome = under_load(apps, fleet, "api-patroni", || ha.kill_patroni(&promoted)).await;
    assert_eq!(
        tokio::task::block_in_place(|| ha.wait_for_new_primary(&promoted, Duration::from_secs(60))),
        primary,
        "failed over back"
    );
    rode_through("patroni", apps, &outcome).await;
    // Patroni again: it demotes its orphaned primary and rejoins.
    tokio::task::block_in_place(|| {
        ha.start_patroni(&promoted);
        ha.wait_for_standby();
    });
}

/// The check can fail: with asynchronous replication and the primary's WAL held back from its
/// standby, a failover loses what the primary acknowledged meanwhile, and `lost` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_synchronous_replication_a_failover_loses_acknowledged_registrations() {
    let ha = HaCluster::start_with(false);
    let (first, second) = instances(&ha).await;
    let apps = [&first, &second];
    let fleet = enrolled_fleet(&first, "async", 3000).await;
    let primary = ha.primary().expect("a primary");
    let outcome = under_load(apps, fleet, "api-async", || {
        ha.hold_replication(&primary);
        std::thread::sleep(Duration::from_secs(3));
        ha.kill_postmaster(&primary);
    })
    .await;
    tokio::task::block_in_place(|| ha.wait_for_new_primary(&primary, Duration::from_secs(60)));
    report("async", &outcome);
    let checker = first.second_instance().await;
    let lost = lost(&checker, &outcome).await;
    eprintln!(
        "async: {} acknowledged and lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        lost.iter().any(|l| l.starts_with("registration ")),
        "the check found no lost registration"
    );
}
