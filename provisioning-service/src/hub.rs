//! The hub half: a provisioned device connects to an MQTT broker (the self-hosted stand-in for
//! IoT Hub) exactly as it would to IoT Hub, and the broker asks this service, through an auth
//! hook (`http::hub_hooks`), whether to admit it. Only this service and the device's TPM hold
//! the device key, so only this service can check the device's hub token.
//!
//! What a device presents (IoT Hub's MQTT convention, docs/hub.md): client id = device id;
//! username = `{hub}/{deviceId}/?api-version=…` (or the older suffix without `?`); password =
//! `SharedAccessSignature sr={hub}%2Fdevices%2F{deviceId}&sig=…&se=…` with no `skn`. A back-end
//! application presents a service token of an access policy instead: `sr={hub}`, `skn={policy}`.
//!
//! [`authenticate`] decides who is connecting; [`topics::allowed`] what it may publish and
//! subscribe to. Device keys are looked up through [`keys::DeviceKeys`], a cache of at most one
//! second, so disabling an enrollment or deleting a registration refuses the next connect
//! within a second on every instance.
//!
//! Uses: `enrollment`, `metrics`, `sealing`, `settings`, `store`, `telemetry` (the layers table,
//! docs/architecture.md).

pub mod keys;
pub mod topics;

use std::sync::Arc;

use dps_protocol::sas::{SasToken, VerifyPolicy};
use dps_protocol::SasError;
use time::OffsetDateTime;

use crate::enrollment::ProvisioningStatus;
use crate::metrics::Metrics;
use crate::sealing::{SealError, Sealer};
use crate::settings::Settings;
use crate::store::lease::{Db, Lease};
use crate::store::{self, StoreError};

/// What the hub check uses: the database, the service key (device keys are sealed), the
/// settings, the metrics and the short-lived key cache. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gatekeeper {
    db: Db,
    sealer: Arc<Sealer>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    keys: Arc<keys::DeviceKeys>,
}

impl Gatekeeper {
    #[must_use]
    pub fn new(
        db: Db,
        sealer: Arc<Sealer>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let keys =
            keys::DeviceKeys::new(std::time::Duration::from_millis(settings.hub_key_cache_ms));
        Self {
            db,
            sealer,
            settings,
            metrics,
            keys: Arc::new(keys),
        }
    }

    async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        self.db.acquire().await
    }

    fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The short-lived cache of device keys (`keys`).
    #[must_use]
    pub fn device_keys(&self) -> &keys::DeviceKeys {
        &self.keys
    }
}

/// The longest username considered (an IoT Hub device username is a host name of at most 253
/// bytes, a device id of at most 128 and the SDKs' query: well under this). Anything longer is
/// refused before any lookup, cache entry or throttle row.
pub const MAX_USERNAME_BYTES: usize = 1024;

/// What a broker forwards from an MQTT CONNECT, and the hub that broker serves.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The linked hub whose broker is asking (from its hook URL): a username must name it.
    pub hub: &'a str,
    pub client_id: Option<&'a str>,
    pub username: &'a str,
    pub password: &'a str,
    /// The MQTT client's address, when the broker reports it (for the failure throttle).
    pub peer: Option<&'a str>,
}

/// Who a broker's client is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A provisioned device, on the hub it was assigned to.
    Device {
        hub: String,
        device_id: String,
        /// The token's `se`: the broker should end the session then (where it can).
        expires_at: u64,
    },
    /// A back-end application holding an access policy's key.
    Backend {
        hub: String,
        policy: String,
        expires_at: u64,
    },
}

impl Principal {
    #[must_use]
    pub fn expires_at(&self) -> u64 {
        match self {
            Self::Device { expires_at, .. } | Self::Backend { expires_at, .. } => *expires_at,
        }
    }
}

/// Why a broker's client is refused. Logged, never returned to the broker beyond "deny".
#[derive(Debug, thiserror::Error)]
pub enum HubRefusal {
    #[error("username is not {{hub}}/{{deviceId}}/?api-version=…")]
    MalformedUsername,
    #[error("the username names hub {claimed}, this broker serves another")]
    OtherHub { claimed: String },
    #[error("the client id is not the device id")]
    ClientIdMismatch,
    #[error("password is not a SAS token: {0}")]
    MalformedToken(#[source] SasError),
    #[error("a device token carries no skn")]
    UnexpectedKeyName,
    #[error("no device {device_id} is assigned to {hub}")]
    NotAssigned { hub: String, device_id: String },
    #[error("the device's enrollment is disabled or deleted")]
    NotEnabled,
    #[error("no access policy {0}")]
    UnknownPolicy(String),
    #[error("token refused: {0}")]
    TokenRejected(#[source] SasError),
    #[error("too many failed attempts; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
}

/// What authentication fails with: a refusal, or a fault of the service.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Refused(#[from] HubRefusal),
    #[error("database")]
    Store(#[from] StoreError),
    #[error("a sealed device key cannot be opened")]
    Seal(#[from] SealError),
}

impl From<sqlx::Error> for HubError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(err))
    }
}

impl HubError {
    /// The refusal, if this is one (tests match on it).
    #[must_use]
    pub fn refusal(&self) -> Option<&HubRefusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// Whether the client behind an authenticated `username` is still admitted: a device must still
/// be assigned to that hub with its enrollment enabled (within the key cache's second), so a
/// broker that asks per publish or subscription (VerneMQ, EMQX, go-auth; RabbitMQ per topic)
/// stops a revoked device's live session there too. Back-end applications hold a policy key
/// from the configuration and stay admitted.
/// `broker_hub` is the hub of the broker asking: a username of another hub is not admitted.
pub async fn still_admitted(
    keeper: &Gatekeeper,
    broker_hub: &str,
    username: &str,
) -> Result<bool, HubError> {
    if !serves(broker_hub, username) {
        return Ok(false);
    }
    match topics::Identity::of_username(username) {
        None => Ok(false),
        Some(topics::Identity::Backend(_)) => Ok(true),
        Some(topics::Identity::Device(device_id)) => {
            match admitted_key(keeper, broker_hub, device_id).await {
                Ok(_) => Ok(true),
                Err(HubError::Refused(_)) => Ok(false),
                Err(fault) => Err(fault),
            }
        }
    }
}

/// The key of the device assigned to `hub` (lowercase) as `device_id`, if its enrollment still
/// admits it.
async fn admitted_key(
    keeper: &Gatekeeper,
    hub: &str,
    device_id: &str,
) -> Result<Arc<keys::DeviceKey>, HubError> {
    let key = keeper
        .device_keys()
        .get(keeper, hub, device_id)
        .await?
        .ok_or_else(|| HubRefusal::NotAssigned {
            hub: hub.to_owned(),
            device_id: device_id.to_owned(),
        })?;
    if key.status != Some(ProvisioningStatus::Enabled) {
        return Err(HubRefusal::NotEnabled.into());
    }
    Ok(key)
}

/// What follows the username's hub, which must be `broker_hub` (lowercase): devices of one hub
/// are not admitted on another's broker (device ids are unique only per hub, and topics carry
/// no hub).
fn after_hub<'u>(broker_hub: &str, username: &'u str) -> Result<&'u str, HubRefusal> {
    if username.len() > MAX_USERNAME_BYTES {
        return Err(HubRefusal::MalformedUsername);
    }
    let (hub, rest) = split_hub(username)?;
    if hub.eq_ignore_ascii_case(broker_hub) {
        Ok(rest)
    } else {
        Err(HubRefusal::OtherHub {
            claimed: hub.to_ascii_lowercase(),
        })
    }
}

/// Whether `username` names `broker_hub` (and is not too long to consider).
#[must_use]
pub fn serves(broker_hub: &str, username: &str) -> bool {
    after_hub(broker_hub, username).is_ok()
}

/// `{hub}/{rest}`: the hub and what follows its slash.
fn split_hub(username: &str) -> Result<(&str, &str), HubRefusal> {
    username
        .split_once('/')
        .filter(|(hub, _)| !hub.is_empty())
        .ok_or(HubRefusal::MalformedUsername)
}

/// The device id of a device username's remainder: `{deviceId}/`, then nothing, a query
/// (`?api-version=…&DeviceClientType=…`, what the Azure SDKs send) or the older
/// `api-version=…` without `?`. A module identity (`{deviceId}/{moduleId}/…`) is refused.
fn device_of(rest: &str) -> Result<&str, HubRefusal> {
    let (device_id, suffix) = rest.split_once('/').ok_or(HubRefusal::MalformedUsername)?;
    let suffix_ok =
        suffix.is_empty() || suffix.starts_with('?') || suffix.starts_with("api-version=");
    if !crate::enrollment::valid_device_id(device_id) || !suffix_ok {
        return Err(HubRefusal::MalformedUsername);
    }
    Ok(device_id)
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

/// Decides who is connecting. Failed attempts are counted in Postgres (every instance sees
/// them): per client address when the broker reports one, and past the limit that address is
/// refused without any check until its window ends. A broker that reports no address (RabbitMQ,
/// mosquitto-go-auth) gets its failures counted per identity, but there a good token is
/// still admitted: anyone who can reach the broker could otherwise lock a device out by failing
/// in its name; over the limit the failures are logged as an attack on that identity. Only an
/// identity that exists has a row of its own (`failure_bucket`): a flood of invented usernames
/// shares one, so the throttle table grows with the fleet, not with the flood.
pub async fn authenticate(
    keeper: &Gatekeeper,
    credentials: Credentials<'_>,
    now: OffsetDateTime,
) -> Result<Principal, HubError> {
    let limit = keeper.settings().hub_failure_limit;
    if credentials.peer.is_some() {
        let bucket = failure_bucket(&credentials, None);
        let mut conn = keeper.acquire().await?;
        if let Some(retry_after) = store::throttle::peek(&mut conn, &bucket, limit, now).await? {
            return Err(HubRefusal::Throttled { retry_after }.into());
        }
        conn.done();
    }
    let outcome = verify(keeper, credentials, now).await;
    if let Err(HubError::Refused(refusal)) = &outcome {
        let bucket = failure_bucket(&credentials, Some(refusal));
        let mut conn = keeper.acquire().await?;
        if store::throttle::hit(&mut conn, &bucket, limit, now)
            .await?
            .is_some()
        {
            tracing::warn!(
                username = credentials.username,
                peer = credentials.peer,
                "hub connect failures over the limit"
            );
        }
    }
    outcome
}

/// Where a failure is counted: the client's address when the broker reports one; else the
/// identity the username names when the refusal says it exists (a wrong token for a real
/// device or policy), else one bucket for every username that names nothing.
fn failure_bucket(credentials: &Credentials<'_>, refusal: Option<&HubRefusal>) -> String {
    if let Some(peer) = credentials.peer {
        return format!("hub-fail:addr:{peer}");
    }
    // Refusals reached only once the device's key or the policy was found.
    let exists = matches!(
        refusal,
        Some(HubRefusal::TokenRejected(_) | HubRefusal::NotEnabled)
    );
    // Keyed by the identity, not the username, whose query suffix is free text.
    match topics::Identity::of_username(credentials.username) {
        Some(topics::Identity::Device(id)) if exists => {
            format!("hub-fail:device:{}/{id}", credentials.hub)
        }
        Some(topics::Identity::Backend(_)) if exists => {
            format!("hub-fail:backend:{}", credentials.hub)
        }
        _ => "hub-fail:unknown".to_owned(),
    }
}

async fn verify(
    keeper: &Gatekeeper,
    credentials: Credentials<'_>,
    now: OffsetDateTime,
) -> Result<Principal, HubError> {
    let settings = keeper.settings();
    let hub = credentials.hub;
    let rest = after_hub(hub, credentials.username)?;
    let token = SasToken::parse(credentials.password).map_err(HubRefusal::MalformedToken)?;
    let mut policy = VerifyPolicy {
        resource: "",
        key_name: None,
        now: unix(now),
        max_skew: settings.clock_skew_secs,
        max_lifetime: settings.sas_max_lifetime_secs,
    };
    if let Some(name) = token.key_name.as_deref() {
        let access = settings
            .access_policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| HubRefusal::UnknownPolicy(name.to_owned()))?;
        policy.resource = hub;
        policy.key_name = Some(name);
        token
            .verify(&access.key, &policy)
            .map_err(HubRefusal::TokenRejected)?;
        return Ok(Principal::Backend {
            policy: name.to_owned(),
            hub: hub.to_owned(),
            expires_at: token.expiry,
        });
    }
    let device_id = device_of(rest)?;
    if credentials.client_id.is_some_and(|c| c != device_id) {
        return Err(HubRefusal::ClientIdMismatch.into());
    }
    let key = admitted_key(keeper, hub, device_id).await?;
    let resource = format!("{hub}/devices/{device_id}");
    policy.resource = &resource;
    token
        .verify(&key.key, &policy)
        .map_err(HubRefusal::TokenRejected)?;
    Ok(Principal::Device {
        hub: hub.to_owned(),
        device_id: device_id.to_owned(),
        expires_at: token.expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_as_the_azure_sdks_write_them() {
        for (username, device) in [
            ("hub.example/dev-1/?api-version=2021-04-12", "dev-1"),
            (
                "hub.example/dev-1/?api-version=2021-04-12&DeviceClientType=c%2F1.0",
                "dev-1",
            ),
            ("hub.example/dev-1/api-version=2016-11-14", "dev-1"),
            ("hub.example/dev-1/", "dev-1"),
        ] {
            let (hub, rest) = split_hub(username).unwrap();
            assert_eq!(hub, "hub.example");
            assert_eq!(device_of(rest).unwrap(), device);
        }
        for bad in [
            "hub.example",
            "/dev-1/",
            "hub.example/dev-1",
            "hub.example//?api-version=1",
            "hub.example/dev-1/module-1/?api-version=2021-04-12",
        ] {
            assert!(
                split_hub(bad)
                    .and_then(|(_, rest)| device_of(rest))
                    .is_err(),
                "{bad}"
            );
        }
    }
}
