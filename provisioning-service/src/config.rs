//! Command-line configuration: flags with environment fallbacks; the doc comments are `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::app::{AccessPolicy, Limit, Settings};

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
    Enroll(crate::factory::EnrollArgs),
    /// Enroll many devices from a CSV or JSONL file; re-running it changes nothing.
    BulkEnroll(crate::factory::BulkArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Largest number of pooled database connections.
    #[arg(long, env = "DPS_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on (HTTPS).
    #[arg(long, env = "DPS_LISTEN", default_value = "127.0.0.1:8443")]
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
    #[arg(long, env = "DPS_SERVICE_HOST_NAME", default_value = "localhost")]
    pub service_host_name: String,
    /// File of enrollment API shared access policies, one `name=base64key` a line.
    #[arg(long, env = "DPS_ACCESS_POLICY_FILE")]
    pub access_policy_file: Option<PathBuf>,
    /// Seconds an issued challenge (authenticationKey) stays valid.
    #[arg(long, env = "DPS_CHALLENGE_TTL", default_value_t = 300)]
    pub challenge_ttl: u64,
    /// Longest SAS token lifetime accepted, seconds.
    #[arg(long, env = "DPS_SAS_MAX_LIFETIME", default_value_t = 3600)]
    pub sas_max_lifetime: u64,
    /// Clock skew tolerated on SAS expiry, seconds.
    #[arg(long, env = "DPS_CLOCK_SKEW", default_value_t = 300)]
    pub clock_skew: u64,
    /// Challenges per registration id (and per EK) per minute.
    #[arg(long, env = "DPS_REGISTRATION_RATE", default_value_t = 10)]
    pub registration_rate: u32,
    /// Operation and state polls per device per 10 seconds.
    #[arg(long, env = "DPS_POLL_RATE", default_value_t = 5)]
    pub poll_rate: u32,
    /// Largest request body, bytes.
    #[arg(long, env = "DPS_MAX_BODY_BYTES", default_value_t = 96 * 1024)]
    pub max_body_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("line {0} of the access policy file is not name=base64key")]
    BadPolicy(usize),
    #[error("access policy name \"registration\" is reserved for devices")]
    ReservedPolicyName,
}

impl ServeArgs {
    /// The runtime settings; reads the access policy file.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut settings = Settings::new(&self.id_scope, self.iot_hubs.clone());
        settings
            .service_host_name
            .clone_from(&self.service_host_name);
        if let Some(path) = &self.access_policy_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
            settings.access_policies = parse_policies(&text)?;
        }
        settings.challenge_ttl_secs = self.challenge_ttl;
        settings.sas_max_lifetime_secs = self.sas_max_lifetime;
        settings.clock_skew_secs = self.clock_skew;
        settings.registration_limit = Limit {
            count: self.registration_rate,
            window_secs: 60,
        };
        settings.poll_limit = Limit {
            count: self.poll_rate,
            window_secs: 10,
        };
        settings.max_body_bytes = self.max_body_bytes;
        Ok(settings)
    }
}

/// Parses `name=base64key` lines; blank lines and `#` comments are skipped.
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
        if name == dps_protocol::sas::REGISTRATION_KEY_NAME {
            return Err(ConfigError::ReservedPolicyName);
        }
        policies.push(AccessPolicy {
            name: name.to_owned(),
            key: Zeroizing::new(key),
        });
    }
    Ok(policies)
}
