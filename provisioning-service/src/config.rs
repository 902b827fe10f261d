//! The command line: flags with environment fallbacks; the doc comments are `--help`. Defaults
//! come from `settings::defaults`; [`ServeArgs::settings`] turns the flags into validated
//! [`Settings`].
//!
//! Uses: `allocation`, `cpu`, `enrollment`, `issuance`, `settings`, `store` (the layers table,
//! docs/architecture.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::allocation::LinkedHubs;
use crate::settings::{defaults, AccessPolicy, Limit, Settings, SettingsError};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A self-hosted, Azure DPS-compatible provisioning service for TPM 2.0 devices"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the device API and the enrollment API over HTTPS.
    Serve(Box<ServeArgs>),
    /// Enroll one device (factory station), writing to the database directly.
    Enroll(EnrollArgs),
    /// Enroll many devices from a CSV or JSONL file; re-running it changes nothing.
    BulkEnroll(BulkArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Watch every device's messages on a hub, as a back-end application (an access policy's
    /// token, checked by this service's hooks like a device's).
    HubWatch(WatchArgs),
    /// Keep a broker's CRL file current: fetch a credential policy's CRL from this service, check
    /// the policy's issuing CA signed it, write it (PEM) when it changes and signal the broker
    /// (Mosquitto re-reads its `crlfile` on SIGHUP).
    CrlSync(CrlSyncArgs),
}

#[derive(Debug, Args)]
pub struct CrlSyncArgs {
    /// The CRL's URL on the service: `https://{host}/credentialPolicies/{name}/crl`.
    #[arg(long, env = "DPS_CRL_URL")]
    pub url: String,
    /// PEM CA certificate(s) of the service's TLS certificate (default: the system's roots).
    #[arg(long, env = "DPS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The policy's issuing CA certificate (PEM): a CRL it did not sign is never written.
    #[arg(long, env = "DPS_CRL_ISSUER_FILE")]
    pub issuer_file: PathBuf,
    /// The CRL file to keep (PEM), replaced by a rename so a broker never reads half of it.
    #[arg(long, env = "DPS_CRL_FILE")]
    pub out: PathBuf,
    /// A pid file (the broker's): the process gets SIGHUP after each change.
    #[arg(long, env = "DPS_CRL_RELOAD_PIDFILE")]
    pub reload_pidfile: Option<PathBuf>,
    /// Milliseconds between fetches (at least 100).
    #[arg(long, env = "DPS_CRL_INTERVAL_MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Fetch once, write if changed, and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The hub's host name (the broker's address, and the token's `sr`).
    #[arg(long, env = "DPS_HUB")]
    pub hub: String,
    /// The broker's MQTT-over-TLS port.
    #[arg(long, env = "DPS_HUB_PORT", default_value_t = 8883)]
    pub hub_port: u16,
    /// PEM CA certificate of the broker.
    #[arg(long, env = "DPS_HUB_CA_FILE")]
    pub ca_file: PathBuf,
    /// The access policy file (`name=base64key` lines) holding the policy.
    #[arg(long, env = "DPS_ACCESS_POLICY_FILE")]
    pub access_policy_file: PathBuf,
    /// The access policy to sign with.
    #[arg(
        long,
        env = "DPS_HUB_POLICY",
        default_value = "provisioningserviceowner"
    )]
    pub policy: String,
    /// MQTT client id.
    #[arg(long, default_value = "hub-watch")]
    pub client_id: String,
    /// Lifetime of the token, seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Write this file once subscribed (a container's health check: start devices only when
    /// their messages have a reader).
    #[arg(long, env = "DPS_WATCH_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Largest number of pooled database connections [default: twice the cores this process
    /// may use]. Keep the sum over all instances near a few per Postgres core: idle backends
    /// that wake one by one cost Postgres CPU on every statement.
    #[arg(long, env = "DPS_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Longest wait for a database connection, milliseconds; past it a request gets 503 with
    /// Retry-After (the database is away or saturated).
    #[arg(long, env = "DPS_DB_ACQUIRE_TIMEOUT_MS", default_value_t = defaults::DB_ACQUIRE_TIMEOUT_MS)]
    pub db_acquire_timeout_ms: u64,
}

impl DatabaseArgs {
    /// `--db-max-connections`, or [`defaults::DB_CONNECTIONS_PER_CORE`] per core this process
    /// may use ([`crate::cpu::cores`]).
    #[must_use]
    pub fn max_connections(&self) -> u32 {
        self.db_max_connections.unwrap_or_else(|| {
            u32::try_from(crate::cpu::cores())
                .unwrap_or(u32::MAX)
                .saturating_mul(defaults::DB_CONNECTIONS_PER_CORE)
        })
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on (HTTPS).
    #[arg(long, env = "DPS_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// PEM certificate chain of the server.
    #[arg(long, env = "DPS_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the server.
    #[arg(long, env = "DPS_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// File holding the 32-byte service key (64 hex digits) that seals issued device keys.
    #[arg(long, env = "DPS_SERVICE_KEY_FILE")]
    pub service_key_file: PathBuf,
    /// The ID scope devices register under.
    #[arg(long, env = "DPS_ID_SCOPE")]
    pub id_scope: String,
    /// Linked IoT hub host names, comma-separated; devices without a pinned hub are spread over
    /// them by a hash of their registration id.
    #[arg(
        long = "iot-hub",
        env = "DPS_IOT_HUBS",
        value_delimiter = ',',
        required = true
    )]
    pub iot_hubs: Vec<String>,
    /// Host name in the `sr` of enrollment API SAS tokens.
    #[arg(long, env = "DPS_SERVICE_HOST_NAME", default_value = defaults::SERVICE_HOST_NAME)]
    pub service_host_name: String,
    /// File of enrollment API shared access policies, one `name=base64key` a line.
    #[arg(long, env = "DPS_ACCESS_POLICY_FILE")]
    pub access_policy_file: Option<PathBuf>,
    /// Seconds an issued challenge (authenticationKey) stays valid (at most a week).
    #[arg(long, env = "DPS_CHALLENGE_TTL", default_value_t = defaults::CHALLENGE_TTL_SECS)]
    pub challenge_ttl: u64,
    /// Longest SAS token lifetime accepted, seconds (at most a year).
    #[arg(long, env = "DPS_SAS_MAX_LIFETIME", default_value_t = defaults::SAS_MAX_LIFETIME_SECS)]
    pub sas_max_lifetime: u64,
    /// Clock skew tolerated on SAS expiry, seconds (at most a day).
    #[arg(long, env = "DPS_CLOCK_SKEW", default_value_t = defaults::CLOCK_SKEW_SECS)]
    pub clock_skew: u64,
    /// Unauthenticated challenges per client address per minute (a device proving its key is
    /// never throttled by them).
    #[arg(long, env = "DPS_REGISTRATION_RATE", default_value_t = defaults::REGISTRATION_RATE)]
    pub registration_rate: u32,
    /// Operation and state polls per device per 10 seconds.
    #[arg(long, env = "DPS_POLL_RATE", default_value_t = defaults::POLL_RATE)]
    pub poll_rate: u32,
    /// Registrations that ask a custom allocation webhook, per device per minute (a device
    /// registering again while its webhook decides gets that decision's operation, uncounted).
    #[arg(long, env = "DPS_WEBHOOK_RATE", default_value_t = defaults::WEBHOOK_RATE)]
    pub webhook_rate: u32,
    /// Largest request body, bytes (1 KiB to 16 MiB).
    #[arg(long, env = "DPS_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Only behind a proxy that sets it: the header naming the client's address for the
    /// challenge throttle (the last address in it counts), e.g. X-Forwarded-For. Without it,
    /// the TCP peer is the client; with it but no proxy, clients could claim any address.
    #[arg(long, env = "DPS_CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,
    /// Open HTTPS connections at most; a connection over the cap is closed at once.
    #[arg(long, env = "DPS_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a client has for the TLS handshake and for each request's headers; an idle
    /// keep-alive connection is closed after as long.
    #[arg(long, env = "DPS_HEADER_READ_TIMEOUT", default_value_t = defaults::HEADER_READ_TIMEOUT_SECS)]
    pub header_read_timeout: u64,
    /// Address of the MQTT brokers' auth hook listener (plain HTTP: bind it to loopback or a
    /// private network). Off unless given; needs --hub-auth-secret-file.
    #[arg(long, env = "DPS_HUB_AUTH_LISTEN", requires = "hub_auth_secret_file")]
    pub hub_auth_listen: Option<SocketAddr>,
    /// File holding the secret the brokers put in the hook URLs (at least 16 characters of
    /// letters, digits, - and _; surrounding whitespace ignored).
    #[arg(long, env = "DPS_HUB_AUTH_SECRET_FILE")]
    pub hub_auth_secret_file: Option<PathBuf>,
    /// Failed hub connects per client address per minute, before the hook refuses unchecked.
    #[arg(long, env = "DPS_HUB_FAILURE_RATE", default_value_t = defaults::HUB_FAILURE_RATE)]
    pub hub_failure_rate: u32,
    /// How long a device key read for a hub check is reused, milliseconds (at most 1000: a
    /// disabled enrollment is refused within this on every instance).
    #[arg(long, env = "DPS_HUB_KEY_CACHE_MS", default_value_t = defaults::HUB_KEY_CACHE_MS)]
    pub hub_key_cache_ms: u64,
    /// Address of the Prometheus metrics listener (`GET /metrics`, plain HTTP: bind it to
    /// loopback or a private network). Off unless given.
    #[arg(long, env = "DPS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long an enrollment's custom allocation webhook may take to answer, milliseconds
    /// (at most 60000); past it the registration fails with a timeout error.
    #[arg(long, env = "DPS_WEBHOOK_TIMEOUT_MS", default_value_t = defaults::WEBHOOK_TIMEOUT_MS)]
    pub webhook_timeout_ms: u64,
    /// PEM CA certificates to trust for allocation webhooks, besides the public web PKI roots.
    #[arg(long, env = "DPS_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Accept http:// allocation webhook URLs (a webhook on the same host; never across a
    /// network: the request carries the device's enrollment).
    #[arg(long, env = "DPS_ALLOW_HTTP_WEBHOOKS")]
    pub allow_http_webhooks: bool,
    /// Credential policies for certificate issuance (DPS 2026-04-01 `csr`): a JSON list of
    /// `{"name", "issuingCertificate", "issuingKey", "chainCertificates", "validityDays",
    /// "keyTypes", "requireTpmResidentKey"}`, paths relative to the file (docs/protocol.md §11).
    /// Enrollments and groups name one in `credentialPolicyName`. Checked at start-up.
    #[arg(long, env = "DPS_CREDENTIAL_POLICY_FILE")]
    pub credential_policy_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The device's registration id; derived from the EK as the Azure TPM clients do if omitted.
    #[arg(long)]
    pub registration_id: Option<String>,
    /// The EK as DPS sends it: base64 of its TPM2B_PUBLIC (or of an EK certificate's DER, with
    /// --ek-ca-file).
    #[arg(long, conflicts_with_all = ["ek_file", "ek_cert"], required_unless_present_any = ["ek_file", "ek_cert"])]
    pub ek_base64: Option<String>,
    /// The EK as a file: TPM2B_PUBLIC (`tpm2_createek -u`, `tpm2_readpublic -o`,
    /// `device-client ek --out`), or a PEM public key (`tpm2_readpublic -f pem`) of an RSA-2048,
    /// RSA-3072, ECC P-256 or P-384 EK, taken as its type's TCG template (L-1, H-6, L-2, H-3).
    #[arg(long, conflicts_with = "ek_cert")]
    pub ek_file: Option<PathBuf>,
    /// The TPM's EK certificate (DER, or PEM with CA certificates after it) instead of its key:
    /// checked against --ek-ca-file, and the EK it certifies (RSA-2048, RSA-3072, ECC P-256 or
    /// P-384) is enrolled as its type's TCG template.
    #[arg(long, requires = "ek_ca_file")]
    pub ek_cert: Option<PathBuf>,
    /// PEM CA certificates trusted for EK certificates (the TPM vendor's roots).
    #[arg(long, env = "DPS_EK_CA_FILE")]
    pub ek_ca_file: Option<PathBuf>,
    /// Device id to assign (default: the registration id).
    #[arg(long)]
    pub device_id: Option<String>,
    /// Pin the device to this IoT hub (default: hashed allocation over the linked hubs).
    #[arg(long)]
    pub iot_hub_host_name: Option<String>,
    /// Enroll the device disabled.
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Args)]
pub struct BulkArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// CSV (`registrationId,endorsementKey[,deviceId[,iotHubHostName[,provisioningStatus]]]`,
    /// EK as base64 TPM2B_PUBLIC, optional header line) or JSONL (one DPS individual enrollment
    /// per line); chosen by the `.jsonl`/`.json` extension.
    pub file: PathBuf,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// PEM CA certificates trusted for EK certificates: with it, an endorsementKey may be the
    /// base64 of an EK certificate's DER, whose checked RSA-2048 EK is enrolled.
    #[arg(long, env = "DPS_EK_CA_FILE")]
    pub ek_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("line {0} of the access policy file is not name=base64key")]
    BadPolicy(usize),
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    #[error(transparent)]
    CredentialPolicies(#[from] crate::issuance::PolicyFileError),
}

impl ServeArgs {
    /// The validated runtime settings; reads the access policy file.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let hubs = LinkedHubs::new(self.iot_hubs.iter().map(|h| h.trim().to_owned()).collect())?;
        let mut settings = Settings::new(&self.id_scope, hubs);
        settings
            .service_host_name
            .clone_from(&self.service_host_name);
        if let Some(path) = &self.access_policy_file {
            settings.access_policies = read_policies(path)?;
        }
        settings.challenge_ttl_secs = self.challenge_ttl;
        settings.sas_max_lifetime_secs = self.sas_max_lifetime;
        settings.clock_skew_secs = self.clock_skew;
        settings.registration_limit = Limit {
            count: self.registration_rate,
            window_secs: defaults::REGISTRATION_WINDOW_SECS,
        };
        settings.poll_limit = Limit {
            count: self.poll_rate,
            window_secs: defaults::POLL_WINDOW_SECS,
        };
        settings.webhook_limit = Limit {
            count: self.webhook_rate,
            window_secs: defaults::WEBHOOK_WINDOW_SECS,
        };
        settings.max_body_bytes = self.max_body_bytes;
        if let Some(path) = &self.hub_auth_secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
            settings.hub_auth_secret = Some(Zeroizing::new(text.trim().to_owned()));
        }
        settings.hub_failure_limit = Limit {
            count: self.hub_failure_rate,
            window_secs: defaults::HUB_FAILURE_WINDOW_SECS,
        };
        settings.hub_key_cache_ms = self.hub_key_cache_ms;
        settings.max_connections = self.max_connections;
        settings.header_read_timeout_secs = self.header_read_timeout;
        settings
            .client_address_header
            .clone_from(&self.client_address_header);
        settings.webhook_timeout_ms = self.webhook_timeout_ms;
        if let Some(path) = &self.webhook_ca_file {
            settings.webhook_ca_pem = Some(
                std::fs::read(path)
                    .map_err(|e| ConfigError::Read(path.display().to_string(), e))?,
            );
        }
        settings.allow_http_webhooks = self.allow_http_webhooks;
        if let Some(path) = &self.credential_policy_file {
            settings.credential_policies = crate::issuance::CredentialPolicies::load(path)?;
        }
        settings.validate()?;
        Ok(settings)
    }
}

/// Reads an access policy file.
pub fn read_policies(path: &std::path::Path) -> Result<Vec<AccessPolicy>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
    parse_policies(&text)
}

/// Parses `name=base64key` lines; blank lines and `#` comments are skipped. Key strength and
/// reserved names are checked with the rest of the settings.
pub fn parse_policies(text: &str) -> Result<Vec<AccessPolicy>, ConfigError> {
    let mut policies = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, key) = line.split_once('=').ok_or(ConfigError::BadPolicy(i + 1))?;
        let key = STANDARD
            .decode(key.trim())
            .map_err(|_| ConfigError::BadPolicy(i + 1))?;
        let name = name.trim();
        if name.is_empty() || key.is_empty() {
            return Err(ConfigError::BadPolicy(i + 1));
        }
        policies.push(AccessPolicy {
            name: name.to_owned(),
            key: Zeroizing::new(key),
        });
    }
    Ok(policies)
}
