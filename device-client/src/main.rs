//! `device-client`: what a TPM device runs at first boot. Thin edge: parse flags, open the TPM,
//! hand over to the library, print the result.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use device_client::certificate::tls::{Identity, IdentityError, TpmLocation};
use device_client::dps::{self, DpsClient, EkCertificateBundle};
use device_client::hub::{self, Assignment, HubAuth, HubError, HubOptions, Session};
use device_client::provision::{self, EkCertificateSource, Options};
use device_client::tpm::{tcti_from_env, AkAlgorithm, EkType, Handles, SrkType, Tpm};
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
    /// Which endorsement key to use, by the TCG template its manufacturer certified:
    /// rsa2048 (L-1, at 0x81010001, certificate at NV 0x01C00002; what DPS knows),
    /// rsa2048-high (H-1, 0x81010012, NV 0x01C00012), ecc-p256 (L-2, at 0x81010003, NV
    /// 0x01C0000A), ecc-p256-high (H-2, 0x81010014, NV 0x01C00014), ecc-p384 (H-3, at
    /// 0x81010016, NV 0x01C00016) or rsa3072 (H-6, at 0x8101001C, NV 0x01C0001C). auto: the first
    /// of these, in this order, whose certificate the TPM holds; rsa2048 if it holds none. The EK
    /// is made from its template if absent.
    #[arg(
        long,
        env = "DPS_EK_TYPE",
        global = true,
        value_enum,
        default_value = "auto"
    )]
    ek_type: EkChoice,
    /// The SRK to make if the TPM has none at 0x81000001: rsa2048 (what the Azure clients make)
    /// or ecc-p256 (quicker to create). An SRK already there is used whatever its type.
    #[arg(
        long,
        env = "DPS_SRK_TYPE",
        global = true,
        value_enum,
        default_value = "rsa2048"
    )]
    srk_type: SrkChoice,
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
    /// Send device-to-cloud messages to the assigned hub (MQTT over TLS, a TPM-signed token).
    Send(SendArgs),
    /// Receive cloud-to-device messages from the assigned hub, one per line on stdout.
    Listen(ListenArgs),
}

/// Where the hub is and how to trust it; the hub and device id come from the state file.
#[derive(Debug, Args)]
struct HubArgs {
    /// The state file `register` wrote (it names the assigned hub and device id).
    #[arg(
        long,
        env = "DPS_STATE_FILE",
        default_value = "/var/lib/dps-device/state.json"
    )]
    state_file: PathBuf,
    /// The hub's MQTT-over-TLS port.
    #[arg(long, env = "DPS_HUB_PORT", default_value_t = hub::DEFAULT_PORT)]
    hub_port: u16,
    /// Connect to this host instead of the assigned hub's name: another broker serving the same
    /// hub (one taking certificate logins, say). Its TLS certificate must name this host.
    #[arg(long, env = "DPS_HUB_HOST")]
    hub_host: Option<String>,
    /// PEM CA certificate to trust for the hub (default: the public web PKI roots).
    #[arg(long = "ca-file", env = "DPS_HUB_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Lifetime of each hub token, seconds; a longer session reconnects with a fresh one.
    #[arg(long, env = "DPS_HUB_TOKEN_TTL", default_value_t = 3600)]
    token_ttl: u64,
    /// Give up on a connect or an acknowledgement after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// How to authenticate: `certificate` (mutual TLS with certificate.pem beside the state
    /// file, its key in the TPM) or `sas` (a token signed by the device key). Default: the
    /// certificate when one is there and valid, else a token.
    #[arg(long, env = "DPS_HUB_AUTH", value_enum)]
    auth: Option<AuthChoice>,
    /// When the hub refuses the device's token or certificate (its registration deleted, its
    /// certificate revoked or expired), register again with the service the state file names
    /// and reconnect, at most this many times (0: never).
    #[arg(long, env = "DPS_REREGISTER_ATTEMPTS", default_value_t = 3)]
    reregister_attempts: u32,
    /// Seconds to wait before the second re-registration; doubled before each further one (the
    /// first is at once).
    #[arg(long, env = "DPS_REREGISTER_BACKOFF", default_value_t = 30)]
    reregister_backoff: u64,
    /// PEM CA certificate to trust for the service when registering again.
    #[arg(long = "dps-ca-file", env = "DPS_CA_FILE")]
    dps_ca_file: Option<PathBuf>,
}

/// `--ek-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EkChoice {
    Auto,
    Rsa2048,
    Rsa2048High,
    EccP256,
    EccP256High,
    EccP384,
    Rsa3072,
}

impl EkChoice {
    /// The type named; `None` for auto.
    fn named(self) -> Option<EkType> {
        Some(match self {
            Self::Auto => return None,
            Self::Rsa2048 => EkType::Rsa2048,
            Self::Rsa2048High => EkType::Rsa2048High,
            Self::EccP256 => EkType::EccP256,
            Self::EccP256High => EkType::EccP256High,
            Self::EccP384 => EkType::EccP384,
            Self::Rsa3072 => EkType::Rsa3072,
        })
    }
}

/// `--srk-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SrkChoice {
    Rsa2048,
    EccP256,
}

impl From<SrkChoice> for SrkType {
    fn from(choice: SrkChoice) -> Self {
        match choice {
            SrkChoice::Rsa2048 => Self::Rsa2048,
            SrkChoice::EccP256 => Self::EccP256,
        }
    }
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthChoice {
    Certificate,
    Sas,
}

/// What `send` and `listen` authenticate with.
enum Credential {
    Sas(Tpm),
    Certificate(Identity),
}

impl Credential {
    fn auth(&mut self) -> HubAuth<'_> {
        match self {
            Self::Sas(tpm) => HubAuth::Sas(tpm),
            Self::Certificate(identity) => HubAuth::Certificate(identity),
        }
    }
}

#[derive(Debug, Args)]
struct SendArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// The message to send.
    #[arg(long, conflicts_with = "stdin", required_unless_present = "stdin")]
    message: Option<String>,
    /// Send each line of standard input as a message.
    #[arg(long)]
    stdin: bool,
    /// Send the message this many times.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

#[derive(Debug, Args)]
struct ListenArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Stop after this many messages (default: run until stopped).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds (default: run until stopped).
    #[arg(long)]
    duration: Option<u64>,
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

/// `--attestation-key`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum AkChoice {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
}

impl From<AkChoice> for AkAlgorithm {
    fn from(choice: AkChoice) -> Self {
        match choice {
            AkChoice::EcdsaP256 => Self::EcdsaP256,
            AkChoice::EcdsaP384 => Self::EcdsaP384,
            AkChoice::Rsa2048 => Self::Rsa2048,
        }
    }
}

#[allow(clippy::struct_excessive_bools)] // each is an on/off command-line flag
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
    /// JSON sent as the register body's `payload`: the service hands it to the enrollment's
    /// custom allocation webhook, and the webhook's answer is printed.
    #[arg(long, env = "DPS_PAYLOAD", value_parser = parse_json)]
    payload: Option<serde_json::Value>,
    /// The EK certificate to send instead of the one in the TPM's NV index for its EK type: DER,
    /// or PEM with the EK certificate first and any CA certificates after it. A device with no
    /// individual enrollment is admitted by a TPM enrollment group that trusts its chain.
    #[arg(long, env = "DPS_EK_CERT_FILE", conflicts_with = "no_ek_cert")]
    ek_cert_file: Option<PathBuf>,
    /// Send no EK certificate (by default the TPM's is sent with the first request).
    #[arg(long)]
    no_ek_cert: bool,
    /// Show no attestation key and quote nothing. By default the device shows its attestation
    /// key (made under the EK at persistent handle 0x81010002 if absent) with the first
    /// request, and quotes the PCRs the service asks for when its enrollment's policy asks.
    #[arg(long, env = "DPS_NO_ATTEST", conflicts_with = "attestation_key")]
    no_attest: bool,
    /// The algorithm of the attestation key, when it is made (an existing key is kept). By
    /// default ECDSA P-256 where the TPM lists the curve, else RSA-2048.
    #[arg(long, env = "DPS_ATTESTATION_KEY", value_enum)]
    attestation_key: Option<AkChoice>,
    /// Ask for a certificate (DPS 2026-04-01 `csr`) for a key made in the TPM (ECDSA P-384
    /// where the TPM has the curve, else P-256; persisted at 0x81000102), with the proof that it
    /// lives there; the chain is written to certificate.pem beside the state file.
    #[arg(long, env = "DPS_CERTIFICATE", conflicts_with = "no_attest")]
    certificate: bool,
}

/// An EK certificate file: DER, or PEM (the EK certificate, then its CAs).
fn read_ek_certificate(path: &std::path::Path) -> anyhow::Result<EkCertificateBundle> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(EkCertificateBundle {
            certificate: bytes,
            chain: Vec::new(),
        });
    }
    let mut certificates = dps_protocol::ek_cert::pem_certificates(&bytes)
        .with_context(|| format!("{} is not PEM certificates", path.display()))?
        .into_iter();
    let certificate = certificates
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))?;
    Ok(EkCertificateBundle {
        certificate,
        chain: certificates.collect(),
    })
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
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

fn tpm_location(cli: &Cli) -> TpmLocation {
    let tcti = cli.tcti.clone().unwrap_or_else(tcti_from_env);
    if tcti.starts_with("swtpm") || tcti.starts_with("mssim") {
        tracing::warn!(%tcti, "using a software TPM: it protects nothing");
    }
    TpmLocation {
        tcti,
        handles: Handles {
            srk_type: cli.srk_type.into(),
            device_key: cli.device_key_handle,
            ..Handles::default()
        }
        .with_ek_type(cli.ek_type.named().unwrap_or_default()),
    }
}

/// The TPM, using the EK `--ek-type` names or (auto) the one its manufacturer certified.
fn open_tpm(cli: &Cli) -> anyhow::Result<Tpm> {
    let TpmLocation { tcti, handles } = tpm_location(cli);
    let mut tpm = Tpm::open_with_handles(&tcti, handles).with_context(|| format!("cannot open the TPM at {tcti:?}; is the device present, and is this user allowed to use it?"))?;
    if cli.ek_type == EkChoice::Auto {
        let certified = tpm
            .certified_ek_type()
            .context("looking for the TPM's EK certificates")?;
        let ek_type = certified.unwrap_or_default();
        tracing::debug!(?ek_type, certified = certified.is_some(), "EK type");
        tpm.use_ek_type(ek_type)?;
    }
    Ok(tpm)
}

/// The service at `endpoint` for `id_scope`, trusting `ca_file` too if given.
fn dps_client(
    endpoint: &str,
    id_scope: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<DpsClient> {
    let ca = ca_file.map(DpsClient::read_ca).transpose()?;
    Ok(DpsClient::new(
        endpoint,
        id_scope,
        ca.as_deref(),
        Duration::from_secs(30),
    )?)
}

/// The certificate beside the state file, checked now against the key in the TPM.
fn certificate_identity(cli: &Cli, hub: &HubArgs) -> Result<Identity, IdentityError> {
    let now = i64::try_from(now()).unwrap_or(i64::MAX);
    Identity::load(
        &provision::chain_file(&hub.state_file),
        &tpm_location(cli),
        now,
    )
}

/// The credential `--auth` asks for; by default the certificate when it is there and valid.
fn credential(cli: &Cli, hub: &HubArgs) -> anyhow::Result<Credential> {
    let certificate = || certificate_identity(cli, hub);
    Ok(match hub.auth {
        Some(AuthChoice::Sas) => Credential::Sas(open_tpm(cli)?),
        Some(AuthChoice::Certificate) => Credential::Certificate(certificate()?),
        None => match certificate() {
            Ok(identity) => Credential::Certificate(identity),
            Err(IdentityError::Missing { .. }) => Credential::Sas(open_tpm(cli)?),
            Err(e) => {
                tracing::warn!(error = %e, "connecting with a token instead of the certificate");
                Credential::Sas(open_tpm(cli)?)
            }
        },
    })
}

impl HubArgs {
    fn options(&self) -> anyhow::Result<(Assignment, HubOptions)> {
        let state = provision::load_state(&self.state_file);
        let assignment = Assignment::of(state.as_ref())?;
        let ca_pem = self
            .ca_file
            .as_deref()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()?;
        let options = HubOptions {
            host: self.hub_host.clone(),
            port: self.hub_port,
            ca_pem,
            token_ttl: self.token_ttl.max(10),
            timeout: Duration::from_secs(self.timeout),
        };
        Ok((assignment, options))
    }
}

/// Connects to the hub. When the hub refuses the identity (the token or the certificate), does
/// what DPS advises: registers again with the service in the state file, reloads the identity
/// and the assignment, and connects again — at most `--reregister-attempts` times, the first at
/// once and each further one after a wait that doubles from `--reregister-backoff`.
fn connect(
    cli: &Cli,
    hub: &HubArgs,
    credential: &mut Credential,
    assignment: &mut Assignment,
    options: &HubOptions,
) -> anyhow::Result<Session> {
    let mut wait = Duration::from_secs(hub.reregister_backoff);
    let mut attempt = 0;
    loop {
        let refusal = match Session::connect(&mut credential.auth(), assignment, options) {
            Ok(session) => return Ok(session),
            Err(e @ (HubError::TokenRefused { .. } | HubError::CertificateRefused { .. })) => e,
            Err(e) => return Err(e.into()),
        };
        if attempt == hub.reregister_attempts {
            let refusal = anyhow::Error::new(refusal);
            return Err(if attempt == 0 {
                refusal
            } else {
                refusal.context(format!(
                    "still refused after registering again {attempt} times"
                ))
            });
        }
        if attempt > 0 {
            tracing::warn!(error = %refusal, ?wait, "the hub refused this identity; registering again after a wait");
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        } else {
            tracing::warn!(error = %refusal, "the hub refused this identity; registering again");
        }
        attempt += 1;
        if let Err(e) = reregister(cli, hub, credential) {
            tracing::warn!(error = format!("{e:#}"), "registering again failed");
            continue;
        }
        *assignment = Assignment::of(provision::load_state(&hub.state_file).as_ref())?;
    }
}

/// `register --force` with what the state file remembers (service, ID scope, registration id),
/// asking for a certificate again if the device held one; then the credential reloaded.
fn reregister(cli: &Cli, hub: &HubArgs, credential: &mut Credential) -> anyhow::Result<()> {
    let state = provision::load_state(&hub.state_file).context("no state file")?;
    let client = dps_client(&state.endpoint, &state.id_scope, hub.dps_ca_file.as_deref())?;
    let by_certificate = matches!(credential, Credential::Certificate(_));
    let options = Options {
        registration_id: Some(state.registration_id),
        state_file: hub.state_file.clone(),
        force: true,
        sas_ttl: 120,
        deadline: Duration::from_secs(hub.timeout.max(30)),
        max_backoff: Duration::from_secs(16),
        payload: None,
        ek_certificate: EkCertificateSource::Tpm,
        attest: true,
        attestation_key: None,
        certificate: by_certificate,
    };
    match credential {
        Credential::Sas(tpm) => {
            provision::provision(tpm, &client, &options)?;
        }
        Credential::Certificate(_) => {
            // A context of its own, closed before the handshake's signatures open theirs.
            provision::provision(&mut open_tpm(cli)?, &client, &options)?;
            *credential = Credential::Certificate(certificate_identity(cli, hub)?);
        }
    }
    tracing::info!("registered again");
    Ok(())
}

fn send(cli: &Cli, args: &SendArgs) -> anyhow::Result<()> {
    let (assignment, options) = args.hub.options()?;
    let messages: Vec<Vec<u8>> = if args.stdin {
        std::io::stdin()
            .lines()
            .map(|l| l.map(String::into_bytes))
            .collect::<Result<_, _>>()
            .context("cannot read standard input")?
    } else {
        let message = args.message.clone().unwrap_or_default().into_bytes();
        (0..args.count).map(|_| message.clone()).collect()
    };
    let mut credential = credential(cli, &args.hub)?;
    let mut assignment = assignment;
    let mut session = connect(cli, &args.hub, &mut credential, &mut assignment, &options)?;
    for (i, message) in messages.into_iter().enumerate() {
        if session.token_expiring() {
            session.close();
            session = connect(cli, &args.hub, &mut credential, &mut assignment, &options)?;
        }
        session.send(message)?;
        tracing::debug!(n = i + 1, "message acknowledged");
    }
    session.close();
    println!(
        "sent to {} as {} (topic {})",
        assignment.hub,
        assignment.device_id,
        assignment.events_topic()
    );
    Ok(())
}

fn listen(cli: &Cli, args: &ListenArgs) -> anyhow::Result<()> {
    let (assignment, options) = args.hub.options()?;
    let mut credential = credential(cli, &args.hub)?;
    let stop_at = args
        .duration
        .map(|d| std::time::Instant::now() + Duration::from_secs(d));
    let mut received = 0u64;
    let mut assignment = assignment;
    let mut session = connect(cli, &args.hub, &mut credential, &mut assignment, &options)?;
    session.subscribe()?;
    loop {
        if args.count.is_some_and(|c| received >= c)
            || stop_at.is_some_and(|t| std::time::Instant::now() >= t)
        {
            break;
        }
        if session.token_expiring() {
            session.close();
            session = connect(cli, &args.hub, &mut credential, &mut assignment, &options)?;
            session.subscribe()?;
        }
        let wait = stop_at.map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(std::time::Instant::now())
                .min(Duration::from_secs(1))
        });
        if let Some((topic, payload)) = session.receive(wait)? {
            received += 1;
            println!("{topic}\t{}", String::from_utf8_lossy(&payload));
        }
    }
    session.close();
    Ok(())
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
            let client = dps_client(&args.endpoint, &args.id_scope, args.ca_file.as_deref())?;
            let mut tpm = open_tpm(&cli)?;
            let options = Options {
                registration_id: args.registration_id.clone(),
                state_file: args.state_file.clone(),
                force: args.force,
                sas_ttl: args.sas_ttl,
                deadline: Duration::from_secs(args.timeout),
                max_backoff: Duration::from_secs(16),
                payload: args.payload.clone(),
                ek_certificate: match (&args.ek_cert_file, args.no_ek_cert) {
                    (Some(path), _) => EkCertificateSource::Given(read_ek_certificate(path)?),
                    (None, true) => EkCertificateSource::Omit,
                    (None, false) => EkCertificateSource::Tpm,
                },
                attest: !args.no_attest,
                attestation_key: args.attestation_key.map(AkAlgorithm::from),
                certificate: args.certificate,
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
            if let (false, Some(payload)) = (args.json, &outcome.payload) {
                println!("payload: {payload}");
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
        Command::Send(args) => send(&cli, args)?,
        Command::Listen(args) => listen(&cli, args)?,
    }
    Ok(())
}
