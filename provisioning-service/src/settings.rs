//! What a running service is configured with, its defaults (the one place they are written) and
//! the limits every value must keep, checked once at start-up by [`Settings::validate`] so no
//! code path has to cap or second-guess a setting where it is used.
//!
//! Uses: `issuance`, `store` (the layers table, docs/architecture.md).

use zeroize::Zeroizing;

/// The defaults, shared by the command line (`config`) and [`Settings::new`].
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8443";
    pub const SERVICE_HOST_NAME: &str = "localhost";
    pub const CHALLENGE_TTL_SECS: u64 = 300;
    pub const SAS_MAX_LIFETIME_SECS: u64 = 3600;
    pub const CLOCK_SKEW_SECS: u64 = 300;
    /// Challenges per client address per [`REGISTRATION_WINDOW_SECS`].
    pub const REGISTRATION_RATE: u32 = 10;
    pub const REGISTRATION_WINDOW_SECS: u64 = 60;
    /// Operation and state polls per device per [`POLL_WINDOW_SECS`].
    pub const POLL_RATE: u32 = 5;
    /// Registrations that call a custom allocation webhook, per device per minute.
    pub const WEBHOOK_RATE: u32 = 6;
    pub const WEBHOOK_WINDOW_SECS: u64 = 60;
    pub const POLL_WINDOW_SECS: u64 = 10;
    pub const MAX_BODY_BYTES: usize = 96 * 1024;
    /// Pooled database connections per core this process may use, unless set: a pool larger
    /// than the statements an instance can have in flight only adds Postgres backends that each
    /// wake for a share of the work, and that costs Postgres CPU on every statement (measured:
    /// docs/operations.md, "Sizing").
    pub const DB_CONNECTIONS_PER_CORE: u32 = 2;
    pub const DB_ACQUIRE_TIMEOUT_MS: u64 = 2000;
    /// Open HTTPS connections at most; more are closed at accept.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// Seconds a client has to finish the TLS handshake, and each request's headers (an idle
    /// keep-alive connection is closed after it too).
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
    /// Failed hub connects per client address (or claimed identity) per
    /// [`HUB_FAILURE_WINDOW_SECS`].
    pub const HUB_FAILURE_RATE: u32 = 20;
    pub const HUB_FAILURE_WINDOW_SECS: u64 = 60;
    /// How long a device key read for a hub check may be reused, milliseconds.
    pub const HUB_KEY_CACHE_MS: u64 = 1000;
    /// How long an allocation webhook may take, milliseconds (AWS IoT's pre-provisioning hook
    /// allows 5 s; DPS does not publish its own).
    pub const WEBHOOK_TIMEOUT_MS: u64 = 5000;
}

/// The largest accepted values: beyond them a setting is a typo, not a choice, and a time
/// added to `now` could overflow a timestamp.
pub mod limits {
    /// A week.
    pub const MAX_CHALLENGE_TTL_SECS: u64 = 7 * 86_400;
    /// A year: DPS device tokens are short-lived, but operators script long-lived service tokens.
    pub const MAX_SAS_LIFETIME_SECS: u64 = 365 * 86_400;
    /// A day.
    pub const MAX_CLOCK_SKEW_SECS: u64 = 86_400;
    /// 16 MiB: a bulk operation of 10,000 enrollments with their EKs fits in about 6 MiB.
    pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
    /// A policy key shorter than this is guessable; the Azure portal issues 32-byte keys.
    pub const MIN_POLICY_KEY_BYTES: usize = 16;
    /// Whether `key` is too regular to be random: fewer than 8 distinct byte values (an all-zero
    /// key, a repeated byte, a short pattern). A random key of 16 bytes or more has this
    /// property with negligible probability.
    #[must_use]
    pub fn is_weak_key(key: &[u8]) -> bool {
        let mut seen = [false; 256];
        for &b in key {
            seen[usize::from(b)] = true;
        }
        seen.iter().filter(|&&s| s).count() < 8
    }

    /// The brokers' shared secret, at least this many characters.
    pub const MIN_HUB_AUTH_SECRET_LEN: usize = 16;
    /// A revocation takes effect on every instance within this (the hub key cache's bound).
    pub const MAX_HUB_KEY_CACHE_MS: u64 = 1000;
    /// A webhook slower than a minute is broken; the device polls meanwhile.
    pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 60_000;
}

pub use crate::store::throttle::Limit;

/// The IoT hubs linked to this service: never empty, so every device gets a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedHubs(Vec<String>);

impl LinkedHubs {
    /// Refuses an empty list and names that are not DNS host names.
    pub fn new(hubs: Vec<String>) -> Result<Self, SettingsError> {
        if hubs.is_empty() {
            return Err(SettingsError::NoLinkedHub);
        }
        if let Some(bad) = hubs.iter().find(|h| !is_host_name(h)) {
            return Err(SettingsError::BadHubName(bad.clone()));
        }
        Ok(Self(hubs))
    }

    #[must_use]
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether `hub` is one of them (host names compare case-insensitively).
    #[must_use]
    pub fn contains(&self, hub: &str) -> bool {
        self.0.iter().any(|h| h.eq_ignore_ascii_case(hub))
    }

    /// The linked spelling of `hub`, if it is linked.
    #[must_use]
    pub fn find(&self, hub: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.eq_ignore_ascii_case(hub))
            .map(String::as_str)
    }
}

/// Letters, digits, `-` and dots, 1..=253 bytes, no empty label.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A named shared access policy of the enrollment API, with its key.
#[derive(Clone)]
pub struct AccessPolicy {
    pub name: String,
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a configuration is refused at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("at least one IoT hub must be linked")]
    NoLinkedHub,
    #[error("IoT hub host name {0:?} is not a DNS name")]
    BadHubName(String),
    #[error("the ID scope must not be empty")]
    EmptyIdScope,
    #[error("{name} must be between {min} and {max}, not {value}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("access policy {0:?} has a weak key: fewer than {min} bytes, or not random", min = limits::MIN_POLICY_KEY_BYTES)]
    WeakPolicyKey(String),
    #[error("access policy name {0:?} is used twice")]
    DuplicatePolicy(String),
    #[error("access policy name \"registration\" is reserved for devices")]
    ReservedPolicyName,
    #[error("webhook CA file: {0}")]
    WebhookCa(String),
    #[error("the hub auth secret must be at least {min} URL-safe characters (letters, digits, -, _)", min = limits::MIN_HUB_AUTH_SECRET_LEN)]
    WeakHubAuthSecret,
    #[error("IoT hub {0:?} has the service host name: a hub back end's token would open the enrollment API (set --service-host-name)")]
    HubIsServiceHost(String),
}

/// What the service is configured with (see `config::ServeArgs` for each one's meaning).
#[derive(Debug, Clone)]
pub struct Settings {
    pub id_scope: String,
    pub linked_hubs: LinkedHubs,
    pub service_host_name: String,
    pub access_policies: Vec<AccessPolicy>,
    pub challenge_ttl_secs: u64,
    pub sas_max_lifetime_secs: u64,
    pub clock_skew_secs: u64,
    pub registration_limit: Limit,
    pub poll_limit: Limit,
    /// SAS registrations that call a custom allocation webhook, per device.
    pub webhook_limit: Limit,
    pub max_body_bytes: usize,
    /// The secret brokers put in the hook URLs; `None` when the hook listener is off.
    pub hub_auth_secret: Option<Zeroizing<String>>,
    pub hub_failure_limit: Limit,
    pub hub_key_cache_ms: u64,
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    /// A header a trusted proxy sets to the client's address (`X-Forwarded-For`); `None`: the
    /// TCP peer is the client.
    pub client_address_header: Option<String>,
    pub webhook_timeout_ms: u64,
    /// PEM CA certificates trusted for allocation webhooks besides the public web PKI.
    pub webhook_ca_pem: Option<Vec<u8>>,
    /// Allow `http://` webhook URLs (tests, a webhook on the same host).
    pub allow_http_webhooks: bool,
    /// The credential policies enrollments name in `credentialPolicyName` (certificate
    /// issuance; empty: no certificates are issued).
    pub credential_policies: crate::issuance::CredentialPolicies,
}

impl Settings {
    /// Settings with the defaults, for one scope and its hubs.
    #[must_use]
    pub fn new(id_scope: &str, linked_hubs: LinkedHubs) -> Self {
        Self {
            id_scope: id_scope.to_owned(),
            linked_hubs,
            service_host_name: defaults::SERVICE_HOST_NAME.to_owned(),
            access_policies: Vec::new(),
            challenge_ttl_secs: defaults::CHALLENGE_TTL_SECS,
            sas_max_lifetime_secs: defaults::SAS_MAX_LIFETIME_SECS,
            clock_skew_secs: defaults::CLOCK_SKEW_SECS,
            registration_limit: Limit {
                count: defaults::REGISTRATION_RATE,
                window_secs: defaults::REGISTRATION_WINDOW_SECS,
            },
            poll_limit: Limit {
                count: defaults::POLL_RATE,
                window_secs: defaults::POLL_WINDOW_SECS,
            },
            webhook_limit: Limit {
                count: defaults::WEBHOOK_RATE,
                window_secs: defaults::WEBHOOK_WINDOW_SECS,
            },
            max_body_bytes: defaults::MAX_BODY_BYTES,
            hub_auth_secret: None,
            hub_failure_limit: Limit {
                count: defaults::HUB_FAILURE_RATE,
                window_secs: defaults::HUB_FAILURE_WINDOW_SECS,
            },
            hub_key_cache_ms: defaults::HUB_KEY_CACHE_MS,
            max_connections: defaults::MAX_CONNECTIONS,
            header_read_timeout_secs: defaults::HEADER_READ_TIMEOUT_SECS,
            client_address_header: None,
            webhook_timeout_ms: defaults::WEBHOOK_TIMEOUT_MS,
            webhook_ca_pem: None,
            allow_http_webhooks: false,
            credential_policies: crate::issuance::CredentialPolicies::default(),
        }
    }

    /// Checks every value against [`limits`]; `App::new` refuses settings that fail.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.id_scope.trim().is_empty() {
            return Err(SettingsError::EmptyIdScope);
        }
        self.validate_ranges()?;
        // Hub back-end tokens (`sr={hub}`) and enrollment-API tokens (`sr={service host}`) are
        // signed with the same policy keys: only distinct names keep them apart.
        if let Some(hub) = self.linked_hubs.find(&self.service_host_name) {
            return Err(SettingsError::HubIsServiceHost(hub.to_owned()));
        }
        if let Some(secret) = &self.hub_auth_secret {
            let url_safe = secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if secret.len() < limits::MIN_HUB_AUTH_SECRET_LEN || !url_safe {
                return Err(SettingsError::WeakHubAuthSecret);
            }
        }
        for (i, policy) in self.access_policies.iter().enumerate() {
            if policy.name == dps_protocol::sas::REGISTRATION_KEY_NAME {
                return Err(SettingsError::ReservedPolicyName);
            }
            if policy.key.len() < limits::MIN_POLICY_KEY_BYTES || limits::is_weak_key(&policy.key) {
                return Err(SettingsError::WeakPolicyKey(policy.name.clone()));
            }
            if self.access_policies[..i]
                .iter()
                .any(|p| p.name == policy.name)
            {
                return Err(SettingsError::DuplicatePolicy(policy.name.clone()));
            }
        }
        Ok(())
    }

    /// Every numeric setting within its bounds.
    fn validate_ranges(&self) -> Result<(), SettingsError> {
        let range = |name, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(SettingsError::OutOfRange {
                    name,
                    value,
                    min,
                    max,
                })
            }
        };
        range(
            "challenge TTL (s)",
            self.challenge_ttl_secs,
            1,
            limits::MAX_CHALLENGE_TTL_SECS,
        )?;
        range(
            "SAS max lifetime (s)",
            self.sas_max_lifetime_secs,
            1,
            limits::MAX_SAS_LIFETIME_SECS,
        )?;
        range(
            "clock skew (s)",
            self.clock_skew_secs,
            0,
            limits::MAX_CLOCK_SKEW_SECS,
        )?;
        range(
            "registration rate",
            self.registration_limit.count.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "poll rate",
            self.poll_limit.count.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "webhook rate",
            self.webhook_limit.count.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "max body bytes",
            self.max_body_bytes as u64,
            1024,
            limits::MAX_BODY_BYTES as u64,
        )?;
        range(
            "hub failure rate",
            self.hub_failure_limit.count.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "hub key cache (ms)",
            self.hub_key_cache_ms,
            0,
            limits::MAX_HUB_KEY_CACHE_MS,
        )?;
        range("max connections", self.max_connections as u64, 1, 1_000_000)?;
        range(
            "header read timeout (s)",
            self.header_read_timeout_secs,
            1,
            300,
        )?;
        range(
            "webhook timeout (ms)",
            self.webhook_timeout_ms,
            1,
            limits::MAX_WEBHOOK_TIMEOUT_MS,
        )?;
        Ok(())
    }

    /// The longest throttle window: a counter whose window began earlier is over.
    #[must_use]
    pub fn longest_throttle_window(&self) -> time::Duration {
        let secs = [
            self.registration_limit.window_secs,
            self.poll_limit.window_secs,
            self.webhook_limit.window_secs,
            self.hub_failure_limit.window_secs,
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        // Windows are minutes; a day bounds the subtraction from `now` whatever they become.
        time::Duration::seconds(i64::try_from(secs.min(86_400)).unwrap_or(86_400))
    }

    /// The challenge TTL as a duration (at most a week once validated, so it fits).
    #[must_use]
    pub fn challenge_ttl(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.challenge_ttl_secs).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs() -> LinkedHubs {
        LinkedHubs::new(vec!["hub.example".to_owned()]).unwrap()
    }

    #[test]
    fn empty_and_malformed_lists_are_refused() {
        assert_eq!(LinkedHubs::new(vec![]), Err(SettingsError::NoLinkedHub));
        assert!(matches!(
            LinkedHubs::new(vec!["hub.example/x".to_owned()]),
            Err(SettingsError::BadHubName(_))
        ));
    }

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        let ok = Settings::new("0ne0001", hubs());
        assert_eq!(ok.validate(), Ok(()));

        let mut s = ok.clone();
        s.challenge_ttl_secs = limits::MAX_CHALLENGE_TTL_SECS + 1;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::OutOfRange { .. })
        ));

        let mut s = ok.clone();
        s.access_policies = vec![AccessPolicy {
            name: "factory".to_owned(),
            key: Zeroizing::new(vec![1]),
        }];
        assert_eq!(
            s.validate(),
            Err(SettingsError::WeakPolicyKey("factory".to_owned()))
        );

        let mut s = ok.clone();
        s.access_policies = vec![AccessPolicy {
            name: "factory".to_owned(),
            key: Zeroizing::new(vec![0; 32]),
        }];
        assert_eq!(
            s.validate(),
            Err(SettingsError::WeakPolicyKey("factory".to_owned()))
        );

        let mut s = ok.clone();
        s.access_policies = vec![AccessPolicy {
            name: "registration".to_owned(),
            key: Zeroizing::new(vec![1; 32]),
        }];
        assert_eq!(s.validate(), Err(SettingsError::ReservedPolicyName));

        // Issue 25, item 6: a hub named like the service (the demo had both `localhost`) made
        // a hub back end's password an enrollment-API token, and an admin token a broker login.
        let mut s = ok;
        s.linked_hubs.as_slice()[0]
            .to_uppercase()
            .clone_into(&mut s.service_host_name);
        assert!(matches!(
            s.validate(),
            Err(SettingsError::HubIsServiceHost(_))
        ));
    }
}
