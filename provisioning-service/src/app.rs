//! The service's shared state: a Postgres pool, the service key and the settings. Nothing here
//! remembers anything between requests; that is Postgres's job.

use std::sync::Arc;

use sqlx::PgPool;
use zeroize::Zeroizing;

use crate::sealing::Sealer;

/// A fixed-window rate: at most `count` requests per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub window_secs: u64,
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

/// What the service is configured with (see `config::ServeArgs` for each one's meaning).
#[derive(Debug, Clone)]
pub struct Settings {
    pub id_scope: String,
    pub iot_hubs: Vec<String>,
    pub service_host_name: String,
    pub access_policies: Vec<AccessPolicy>,
    pub challenge_ttl_secs: u64,
    pub sas_max_lifetime_secs: u64,
    pub clock_skew_secs: u64,
    pub registration_limit: Limit,
    pub poll_limit: Limit,
    pub max_body_bytes: usize,
}

impl Settings {
    /// Settings with the defaults of the command line, for one scope and its hubs.
    #[must_use]
    pub fn new(id_scope: &str, iot_hubs: Vec<String>) -> Self {
        Self {
            id_scope: id_scope.to_owned(),
            iot_hubs,
            service_host_name: "localhost".to_owned(),
            access_policies: Vec::new(),
            challenge_ttl_secs: 300,
            sas_max_lifetime_secs: 3600,
            clock_skew_secs: 300,
            registration_limit: Limit {
                count: 10,
                window_secs: 60,
            },
            poll_limit: Limit {
                count: 5,
                window_secs: 10,
            },
            max_body_bytes: 96 * 1024,
        }
    }
}

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct App(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub pool: PgPool,
    pub sealer: Sealer,
    pub settings: Settings,
}

impl App {
    #[must_use]
    pub fn new(pool: PgPool, sealer: Sealer, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            pool,
            sealer,
            settings,
        }))
    }

    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.0.sealer
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }
}
