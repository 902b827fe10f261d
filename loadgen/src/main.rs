//! `dps-loadgen`: drives the provisioning service with software TPM devices and reports
//! registrations/s, latency per leg, failures by kind, and CPU and context switches per
//! registration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::Parser;

use dps_protocol::ecc::EccCurve;
use loadgen::cpu::Watched;
use loadgen::device::Target;
use loadgen::fleet::{Fleet, FleetEk};
use loadgen::run::{self, Connections, Plan};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
    Row,
}

#[allow(clippy::struct_excessive_bools)] // each is an on/off command-line flag
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A service's device API, `https://host:port` (repeat for several instances: devices take
    /// them in turn).
    #[arg(long = "url", env = "LOADGEN_URL", required = true)]
    urls: Vec<String>,
    #[arg(long, env = "LOADGEN_ID_SCOPE", default_value = "0ne00000001")]
    id_scope: String,
    /// The CA certificate(s) the service's TLS certificate chains to (PEM).
    #[arg(long, env = "LOADGEN_CA_FILE")]
    ca_file: PathBuf,
    /// Where the devices' RSA keys are kept between runs (generated on first use).
    #[arg(
        long,
        env = "LOADGEN_KEYS_FILE",
        default_value = "target/loadgen/devices.keys"
    )]
    keys_file: PathBuf,
    /// Devices in the fleet (registration ids `{prefix}-0000000`, ...).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// The devices' EK: rsa2048 (kept in --keys-file), ecc-p256 (TCG template L-2) or ecc-p384
    /// (H-3), derived from the registration id. Enroll again after changing it.
    #[arg(long, value_enum, default_value = "rsa2048")]
    ek_type: EkChoice,
    /// Enroll the fleet first through the enrollment API's bulk operation (idempotent), with
    /// the first policy of this `name=base64key` file.
    #[arg(long, env = "LOADGEN_ACCESS_POLICY_FILE")]
    enroll_with_policy_file: Option<PathBuf>,
    /// The resource the service SAS is signed for (the service's `--service-host-name`).
    #[arg(long, default_value = "localhost")]
    service_host_name: String,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Stop after this many registrations (default: one per device).
    #[arg(long)]
    count: Option<usize>,
    /// Stop after this many seconds (instead of, or as well as, --count).
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long, value_enum, default_value = "fresh")]
    connections: Connections,
    /// Only the challenge (the service's RSA work), no registration.
    #[arg(long)]
    challenge_only: bool,
    /// The devices attest: each shows an attestation key and answers the service's quote
    /// challenge (software ECDSA P-256); enrolled with `attestationPolicy: {"mode": "require"}`.
    #[arg(long)]
    attest: bool,
    /// The devices send a CSR (a fresh ECDSA P-384 key each) and are enrolled with this
    /// `credentialPolicyName`: every registration issues a certificate.
    #[arg(long)]
    csr_policy: Option<String>,
    /// With --csr-policy: the devices' keys are ECDSA P-256 instead of P-384.
    #[arg(long, requires = "csr_policy")]
    csr_p256: bool,
    /// Start registrations at this steady rate per second (open loop; --concurrency must
    /// cover rate × latency) instead of as fast as they finish.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Count this service process's CPU and context switches (repeat for several instances).
    #[arg(long = "service-pid")]
    service_pids: Vec<i32>,
    /// Count the CPU of this postmaster and its backends (live and exited), and the context
    /// switches of the live ones.
    #[arg(long)]
    postgres_pid: Option<i32>,
    /// How to print the report: text, one JSON object, or one row of `scripts/bench.sh`'s
    /// table (`--row-header` prints its header and exits).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[arg(long, exclusive = true)]
    row_header: bool,
}

/// `--ek-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EkChoice {
    Rsa2048,
    EccP256,
    EccP384,
}

impl From<EkChoice> for FleetEk {
    fn from(choice: EkChoice) -> Self {
        match choice {
            EkChoice::Rsa2048 => Self::Rsa2048,
            EkChoice::EccP256 => Self::Ecc(EccCurve::P256),
            EkChoice::EccP384 => Self::Ecc(EccCurve::P384),
        }
    }
}

fn first_policy(path: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .context("no policy in the file")?;
    let (name, key) = line
        .split_once('=')
        .context("a policy line is name=base64key")?;
    Ok((name.trim().to_owned(), STANDARD.decode(key.trim())?))
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--row-header") {
        println!("{}", run::Report::ROW_HEADER);
        return Ok(());
    }
    let args = Args::parse();
    let ca = std::fs::read(&args.ca_file)
        .with_context(|| format!("reading {}", args.ca_file.display()))?;
    let tls = loadgen::tls_config(&ca)?;
    let mut fleet = Fleet::load(
        &args.keys_file,
        args.devices,
        &args.prefix,
        args.ek_type.into(),
    )?;
    if args.attest {
        fleet = fleet.attesting()?;
    }
    if let Some(policy) = &args.csr_policy {
        fleet = fleet.requesting_certificates(policy, args.csr_p256)?;
    }
    let fleet = Arc::new(fleet);
    let targets: Vec<Target> = args
        .urls
        .iter()
        .map(|u| Target {
            base: u.trim_end_matches('/').to_owned(),
            id_scope: args.id_scope.clone(),
        })
        .collect();
    if let Some(path) = &args.enroll_with_policy_file {
        let (name, key) = first_policy(path)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()?;
        loadgen::device::enroll(
            &client,
            &targets[0].base,
            &args.service_host_name,
            (&name, &key),
            &fleet.devices,
        )
        .await
        .context("enrolling the fleet")?;
    }
    let plan = Plan {
        targets,
        concurrency: args.concurrency.max(1),
        count: args
            .count
            .or((args.duration.is_none()).then_some(args.devices)),
        duration: args.duration.map(Duration::from_secs),
        connections: args.connections,
        challenge_only: args.challenge_only,
        rate: args.rate,
        keep_assignments: false,
    };
    let watched = Watched {
        services: args.service_pids.clone(),
        postmaster: args.postgres_pid,
    };
    let before = watched.sample()?;
    let report = run::run(&plan, fleet, tls).await?;
    let used = watched.sample()? - before;
    let report = report.with_cpu(
        used,
        !watched.services.is_empty(),
        watched.postmaster.is_some(),
    );
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Row => println!("{}", report.row(args.connections)),
        Output::Text => print_report(&report),
    }
    Ok(())
}

fn print_report(r: &run::Report) {
    println!(
        "{} completed, {} failed in {:.1} s: {:.0}/s at concurrency {} on {} instance(s)",
        r.completed, r.failed, r.elapsed_secs, r.per_second, r.concurrency, r.instances
    );
    for (leg, (p50, p99)) in &r.latency_ms {
        println!("  {leg:<9} p50 {p50:7.1} ms  p99 {p99:7.1} ms");
    }
    if let Some(ms) = r.service_cpu_ms {
        println!("  service CPU  {ms:.3} ms per registration");
    }
    if let Some(ms) = r.postgres_cpu_ms {
        println!("  Postgres CPU {ms:.3} ms per registration");
    }
    if let Some(n) = r.service_switches {
        println!("  service      {n:.1} context switches per registration");
    }
    if let Some(n) = r.postgres_switches {
        println!("  Postgres     {n:.1} context switches per registration");
    }
    for (kind, n) in &r.failures {
        println!("  failure: {kind} × {n}");
    }
}
