//! `device-client`: what a TPM device runs at first boot. Thin edge: parse flags, open the TPM,
//! hand over to the library, print the result.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use device_client::dps::{self, DpsClient};
use device_client::provision::{self, Options};
use device_client::tpm::{tcti_from_env, Handles, Tpm};
use dps_protocol::sas;
use dps_protocol::RegistrationId;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Provision this device's TPM with an Azure DPS-compatible service"
)]
struct Cli {
    /// TPM TCTI: device:/dev/tpmrm0 (kernel resource manager), tabrmd:, or
    /// swtpm:host=127.0.0.1,port=2321. Default: $TPM2TOOLS_TCTI, then $TCTI, then
    /// device:/dev/tpmrm0.
    #[arg(long, env = "DPS_TCTI", global = true)]
    tcti: Option<String>,
    /// Persistent handle of the device key, the HMAC key the service issued (the Azure clients
    /// use 0x81000100). Formerly --auth-key-handle, still accepted.
    #[arg(long, alias = "auth-key-handle", env = "DPS_DEVICE_KEY_HANDLE", global = true, default_value = "0x81000100", value_parser = parse_handle)]
    device_key_handle: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what a factory enrolls: the registration id and the EK as DPS base64.
    Ek(EkArgs),
    /// Provision: challenge, import into the TPM, register with a TPM-signed SAS, wait for the
    /// assignment. Does nothing if already provisioned (see --force).
    Register(RegisterArgs),
    /// Print a SAS token signed by the provisioned key inside the TPM.
    Sas(SasArgs),
}

#[derive(Debug, Args)]
struct EkArgs {
    /// Also write the EK's TPM2B_PUBLIC to this file (what `provisioning-service enroll
    /// --ek-file` and tpm2-tools read).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON ({"registrationId", "endorsementKey"}).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RegisterArgs {
    /// The provisioning service, https://HOST[:PORT].
    #[arg(long, env = "DPS_ENDPOINT")]
    endpoint: String,
    /// The ID scope to register under.
    #[arg(long, env = "DPS_ID_SCOPE")]
    id_scope: String,
    /// Registration id (default: derived from the EK as the Azure TPM clients derive it).
    #[arg(long, env = "DPS_REGISTRATION_ID")]
    registration_id: Option<String>,
    /// PEM CA certificate to trust for the service, in addition to the public web PKI roots.
    #[arg(long, env = "DPS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Where provisioning progress and the result are kept.
    #[arg(
        long,
        env = "DPS_STATE_FILE",
        default_value = "/var/lib/dps-device/state.json"
    )]
    state_file: PathBuf,
    /// Provision again even if already assigned.
    #[arg(long)]
    force: bool,
    /// Give up after this many seconds.
    #[arg(long, env = "DPS_TIMEOUT", default_value_t = 120)]
    timeout: u64,
    /// Lifetime of the SAS tokens sent to the service, seconds.
    #[arg(long, env = "DPS_SAS_TTL", default_value_t = 120)]
    sas_ttl: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SasArgs {
    /// The resource URI the token is for (for a hub: HUB/devices/DEVICE_ID).
    #[arg(long)]
    resource: String,
    /// Token lifetime, seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// skn field (none for a hub device token).
    #[arg(long)]
    key_name: Option<String>,
}

fn parse_handle(s: &str) -> Result<u32, String> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or("write the handle in hex, 0x81......")?;
    let handle = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
    // TPM 2.0 Part 3, EvictControl: owner-hierarchy persistent handles are 0x81000000–0x817FFFFF.
    if !(0x8100_0000..=0x817F_FFFF).contains(&handle) {
        return Err("not an owner persistent handle (0x81000000-0x817FFFFF)".to_owned());
    }
    Ok(handle)
}

fn open_tpm(cli: &Cli) -> anyhow::Result<Tpm> {
    let tcti = cli.tcti.clone().unwrap_or_else(tcti_from_env);
    if tcti.starts_with("swtpm") || tcti.starts_with("mssim") {
        tracing::warn!(%tcti, "using a software TPM: it protects nothing");
    }
    let handles = Handles {
        device_key: cli.device_key_handle,
        ..Handles::default()
    };
    Tpm::open_with_handles(&tcti, handles).with_context(|| format!("cannot open the TPM at {tcti:?}; is the device present, and is this user allowed to use it?"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tss_esapi=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Ek(args) => {
            let mut tpm = open_tpm(&cli)?;
            let ek = tpm
                .endorsement_key()
                .context("cannot read the endorsement key")?;
            let id = RegistrationId::from_endorsement_key(&ek);
            if let Some(path) = &args.out {
                std::fs::write(path, &ek)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"registrationId": id.as_str(), "endorsementKey": dps::base64(&ek)})
                );
            } else {
                println!("registration id: {id}");
                println!("endorsement key: {}", dps::base64(&ek));
            }
        }
        Command::Register(args) => {
            let ca = args
                .ca_file
                .as_deref()
                .map(DpsClient::read_ca)
                .transpose()?;
            let client = DpsClient::new(
                &args.endpoint,
                &args.id_scope,
                ca.as_deref(),
                Duration::from_secs(30),
            )?;
            let mut tpm = open_tpm(&cli)?;
            let options = Options {
                registration_id: args.registration_id.clone(),
                state_file: args.state_file.clone(),
                force: args.force,
                sas_ttl: args.sas_ttl,
                deadline: Duration::from_secs(args.timeout),
                max_backoff: Duration::from_secs(16),
            };
            let outcome = provision::provision(&mut tpm, &client, &options)?;
            if args.json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else if outcome.already_provisioned {
                println!(
                    "already provisioned: {} is device {} on {} (use --force to provision again)",
                    outcome.registration_id, outcome.device_id, outcome.assigned_hub
                );
            } else {
                println!(
                    "assigned: {} is device {} on {}",
                    outcome.registration_id, outcome.device_id, outcome.assigned_hub
                );
            }
        }
        Command::Sas(args) => {
            let mut tpm = open_tpm(&cli)?;
            let token = sas::build_token(
                &args.resource,
                now() + args.ttl,
                args.key_name.as_deref(),
                &mut tpm,
            )
            .context("cannot sign with the provisioned key (is the device provisioned?)")?;
            println!("{token}");
        }
    }
    Ok(())
}
