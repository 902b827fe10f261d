//! Drives the fleet: `concurrency` workers take devices in turn until the count or the duration
//! is reached, and the report gathers throughput, latency per leg and failures by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;

use crate::cpu::CpuTimes;
use crate::device::{self, Assignment, Failure, Leg, Target};
use crate::fleet::Fleet;

/// How devices reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Connections {
    /// Each device opens its own TLS connection (full handshake, no resumption), as a fleet of
    /// real devices does.
    Fresh,
    /// Each worker keeps one connection open across the devices it drives.
    KeepAlive,
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub concurrency: usize,
    /// Stop after this many registrations...
    pub count: Option<usize>,
    /// ...or after this long (whichever comes first).
    pub duration: Option<Duration>,
    pub connections: Connections,
    /// Only the challenge leg (the service's RSA work).
    pub challenge_only: bool,
    /// Start registrations at this steady rate (per second, across all workers) instead of as
    /// fast as the workers finish them: CPU per registration compared at the same offered load,
    /// not at whatever throughput each build reaches on a shared machine.
    pub rate: Option<f64>,
    /// Keep every assignment in the report (a fault test checks each afterwards).
    pub keep_assignments: bool,
}

/// What a run measured.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub instances: usize,
    pub completed: usize,
    pub failed: usize,
    pub elapsed_secs: f64,
    pub per_second: f64,
    /// Milliseconds, per leg: (p50, p99).
    pub latency_ms: BTreeMap<&'static str, (f64, f64)>,
    /// The slowest answer of any leg, milliseconds (a request that hung shows here).
    pub slowest_ms: f64,
    pub failures: BTreeMap<String, usize>,
    pub server_errors: usize,
    /// Of those, 503s (the service's "the database is away, retry"), and when the first and the
    /// last were answered, in seconds from the start.
    pub unavailable: usize,
    pub unavailable_window: Option<(f64, f64)>,
    /// With [`Plan::keep_assignments`]: every device the service answered `assigned`.
    #[serde(skip)]
    pub assignments: Vec<Assignment>,
    /// CPU milliseconds per completed registration, when the processes were watched.
    pub service_cpu_ms: Option<f64>,
    pub postgres_cpu_ms: Option<f64>,
    /// Context switches per completed registration, likewise.
    pub service_switches: Option<f64>,
    pub postgres_switches: Option<f64>,
}

#[allow(
    clippy::cast_precision_loss, // counts far below 2^52
    clippy::cast_sign_loss       // a non-negative rank
)]
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

impl Report {
    /// The header of [`Report::row`].
    pub const ROW_HEADER: &'static str = "inst    c  conn        reg/s   challenge p50/p99   register p50/p99    poll p50/p99   svc ms/reg  pg ms/reg  svc cs/reg  pg cs/reg  5xx  failed";

    /// One line of `scripts/bench.sh`'s table.
    #[must_use]
    pub fn row(&self, connections: Connections) -> String {
        let leg = |name| {
            self.latency_ms.get(name).map_or_else(
                || "-".to_owned(),
                |(p50, p99)| format!("{p50:.1}/{p99:.1} ms"),
            )
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let count = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let conn = match connections {
            Connections::Fresh => "fresh",
            Connections::KeepAlive => "keep-alive",
        };
        format!(
            "{:>4} {:>4}  {conn:<10} {:>6.0}   {:>17}   {:>17}  {:>14}   {:>10}  {:>9}  {:>10}  {:>9}  {:>3}  {:>6}",
            self.instances,
            self.concurrency,
            self.per_second,
            leg("challenge"),
            leg("register"),
            leg("poll"),
            ms(self.service_cpu_ms),
            ms(self.postgres_cpu_ms),
            count(self.service_switches),
            count(self.postgres_switches),
            self.server_errors,
            self.failed
        )
    }

    /// Adds the CPU the watched processes used during the run, and their context switches.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn with_cpu(
        mut self,
        used: CpuTimes,
        watched_service: bool,
        watched_postgres: bool,
    ) -> Self {
        let per = |secs: f64| secs * 1000.0 / self.completed.max(1) as f64;
        self.service_cpu_ms = watched_service.then(|| per(used.service_secs));
        self.postgres_cpu_ms = watched_postgres.then(|| per(used.postgres_secs));
        let per = |n: u64| n as f64 / self.completed.max(1) as f64;
        self.service_switches = watched_service.then(|| per(used.service_switches));
        self.postgres_switches = watched_postgres.then(|| per(used.postgres_switches));
        self
    }
}

fn client(tls: &rustls::ClientConfig, keep_alive: bool) -> reqwest::Result<Client> {
    let builder = Client::builder()
        .use_preconfigured_tls(tls.clone())
        .timeout(Duration::from_secs(30));
    let builder = if keep_alive {
        builder.pool_max_idle_per_host(1)
    } else {
        builder
    };
    builder.build()
}

/// Runs `plan` with `fleet`'s devices; `tls` must trust the service's certificate.
pub async fn run(
    plan: &Plan,
    fleet: Arc<Fleet>,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!plan.targets.is_empty(), "no service URL");
    anyhow::ensure!(!fleet.devices.is_empty(), "no devices");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);
    let limit = plan.count.unwrap_or(usize::MAX);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let (plan, fleet, tls, next) = (plan.clone(), fleet.clone(), tls.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut outcomes: Vec<(Result<Option<Assignment>, Failure>, f64)> = Vec::new();
            let shared = match plan.connections {
                Connections::KeepAlive => Some(client(&tls, true)?),
                Connections::Fresh => None,
            };
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                if let Some(rate) = plan.rate {
                    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    if deadline.is_some_and(|d| due >= d) {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let device = &fleet.devices[i % fleet.devices.len()];
                let target = &plan.targets[i % plan.targets.len()];
                let fresh;
                let client = if let Some(c) = &shared {
                    c
                } else {
                    fresh = client(&tls, false)?;
                    &fresh
                };
                let outcome =
                    device::register(client, target, device, plan.challenge_only, &mut times).await;
                outcomes.push((outcome, started.elapsed().as_secs_f64()));
            }
            Ok::<_, reqwest::Error>((times, outcomes))
        }));
    }
    let mut report = Report {
        concurrency: plan.concurrency,
        instances: plan.targets.len(),
        ..Report::default()
    };
    let mut by_leg: BTreeMap<Leg, Vec<Duration>> = BTreeMap::new();
    for worker in workers {
        let (times, outcomes) = worker.await??;
        for (leg, t) in times {
            by_leg.entry(leg).or_default().push(t);
        }
        for (outcome, at) in outcomes {
            match outcome {
                Ok(assignment) => {
                    report.completed += 1;
                    if plan.keep_assignments {
                        report.assignments.extend(assignment);
                    }
                }
                Err(failure) => {
                    report.failed += 1;
                    report.server_errors += usize::from(failure.is_server_error());
                    if failure.is_unavailable() {
                        report.unavailable += 1;
                        let (first, last) = report.unavailable_window.get_or_insert((at, at));
                        (*first, *last) = (first.min(at), last.max(at));
                    }
                    *report.failures.entry(failure.to_string()).or_default() += 1;
                }
            }
        }
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    {
        report.per_second = report.completed as f64 / report.elapsed_secs.max(1e-9);
    }
    for leg in Leg::ALL {
        if let Some(times) = by_leg.get_mut(&leg) {
            times.sort_unstable();
            let slowest = times.last().map_or(0.0, |t| t.as_secs_f64() * 1000.0);
            report.slowest_ms = report.slowest_ms.max(slowest);
            report.latency_ms.insert(
                leg.name(),
                (percentile(times, 0.5), percentile(times, 0.99)),
            );
        }
    }
    Ok(report)
}
