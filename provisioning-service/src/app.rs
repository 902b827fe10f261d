//! The service's shared state: a Postgres pool, the service key and the validated settings.
//! Nothing here remembers anything between requests (that is Postgres's job) but two caches
//! that Postgres re-checks or bounds: the hub check's device keys, for at most a second, and
//! the challenges this instance issued, until answered (`registration::recent`).

use std::sync::Arc;

use sqlx::PgPool;

use crate::allocation::webhook::WebhookClient;
use crate::cpu::CpuPool;
use crate::hub::keys::DeviceKeys;
use crate::metrics::Metrics;
use crate::registration::RecentChallenges;
use crate::sealing::Sealer;
use crate::settings::{Settings, SettingsError};
use crate::store::lease::{Lease, Spares};

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct App(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    sealer: Sealer,
    settings: Settings,
    device_keys: DeviceKeys,
    cpu: CpuPool,
    webhooks: WebhookClient,
    metrics: Metrics,
    spares: Arc<Spares>,
    recent_challenges: RecentChallenges,
}

impl App {
    /// Refuses settings that break a limit ([`Settings::validate`]), so nothing downstream
    /// checks them again.
    pub fn new(pool: PgPool, sealer: Sealer, settings: Settings) -> Result<Self, SettingsError> {
        settings.validate()?;
        let webhooks = WebhookClient::new(
            std::time::Duration::from_millis(settings.webhook_timeout_ms),
            settings.webhook_ca_pem.as_deref(),
            settings.allow_http_webhooks,
        )
        .map_err(|e| SettingsError::WebhookCa(e.to_string()))?;
        let device_keys =
            DeviceKeys::new(std::time::Duration::from_millis(settings.hub_key_cache_ms));
        let metrics = Metrics::new();
        let spares = Spares::new(metrics.pool_returns.clone());
        Ok(Self(Arc::new(Inner {
            pool,
            sealer,
            settings,
            device_keys,
            cpu: CpuPool::new(),
            webhooks,
            metrics,
            spares,
            recent_challenges: RecentChallenges::default(),
        })))
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

    /// The hub check's short-lived cache of device keys (`hub::keys`).
    #[must_use]
    pub fn device_keys(&self) -> &DeviceKeys {
        &self.0.device_keys
    }

    /// The challenges this instance issued, until answered (`registration::recent`).
    #[must_use]
    pub fn recent_challenges(&self) -> &RecentChallenges {
        &self.0.recent_challenges
    }

    /// The bound on CPU-bound jobs, the challenge's RSA work among them (`cpu`).
    #[must_use]
    pub fn cpu(&self) -> &CpuPool {
        &self.0.cpu
    }

    /// This instance's Prometheus metrics (`metrics`).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// A connection for one request: one a device step just finished with cleanly, else one
    /// from the pool (`store::lease`); the wait measured (`dps_db_pool_acquire_duration_seconds`).
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let started = std::time::Instant::now();
        let lease = self.0.spares.acquire(&self.0.pool).await;
        self.0
            .metrics
            .pool_acquire
            .observe(started.elapsed().as_secs_f64());
        lease
    }

    /// The allocation webhooks' HTTPS client (`allocation::webhook`).
    #[must_use]
    pub fn webhooks(&self) -> &WebhookClient {
        &self.0.webhooks
    }
}
