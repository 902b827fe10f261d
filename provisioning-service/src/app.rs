//! The service's wiring: the database, the service key, the validated settings and the
//! metrics, handed to the two halves that decide, the device steps ([`Registrar`]) and the hub
//! check ([`Gatekeeper`]). Only the HTTP layer, the server and `main` hold an `App`. Nothing
//! here remembers anything between requests (that is Postgres's job) but two caches that
//! Postgres re-checks or bounds: the hub check's device keys, for at most a second, and the
//! challenges this instance issued, until answered (`registration::recent`).
//!
//! Uses: `cpu`, `hub`, `issuance`, `metrics`, `registration`, `sealing`, `settings`, `store` (the
//! layers table, docs/architecture.md).

use std::sync::Arc;

use sqlx::PgPool;

use crate::hub::keys::DeviceKeys;
use crate::hub::Gatekeeper;
use crate::issuance::CrlCache;
use crate::metrics::Metrics;
use crate::registration::webhook::WebhookClient;
use crate::registration::Registrar;
use crate::sealing::Sealer;
use crate::settings::{Settings, SettingsError};
use crate::store::lease::{Db, Lease};

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct App(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    db: Db,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    registrar: Registrar,
    gatekeeper: Gatekeeper,
    crls: CrlCache,
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
        let metrics = Arc::new(Metrics::new());
        let db = Db::new(
            pool,
            metrics.pool_returns.clone(),
            metrics.pool_acquire.clone(),
        );
        let (sealer, settings) = (Arc::new(sealer), Arc::new(settings));
        let registrar = Registrar::new(
            db.clone(),
            Arc::clone(&sealer),
            Arc::clone(&settings),
            Arc::clone(&metrics),
            webhooks,
        );
        let gatekeeper = Gatekeeper::new(
            db.clone(),
            sealer,
            Arc::clone(&settings),
            Arc::clone(&metrics),
        );
        Ok(Self(Arc::new(Inner {
            db,
            settings,
            metrics,
            registrar,
            gatekeeper,
            crls: CrlCache::default(),
        })))
    }

    #[must_use]
    pub fn pool(&self) -> &PgPool {
        self.0.db.pool()
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// This instance's Prometheus metrics (`metrics`).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// A connection for one request (`store::lease`), the wait measured
    /// (`dps_db_pool_acquire_duration_seconds`).
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        self.0.db.acquire().await
    }

    /// The device steps' parts (`registration`).
    #[must_use]
    pub fn registrar(&self) -> &Registrar {
        &self.0.registrar
    }

    /// The credential policies' CRLs as last signed (`issuance::CrlCache`).
    #[must_use]
    pub fn crls(&self) -> &CrlCache {
        &self.0.crls
    }

    /// The hub check's parts (`hub`).
    #[must_use]
    pub fn gatekeeper(&self) -> &Gatekeeper {
        &self.0.gatekeeper
    }

    /// The hub check's short-lived cache of device keys (`hub::keys`).
    #[must_use]
    pub fn device_keys(&self) -> &DeviceKeys {
        self.0.gatekeeper.device_keys()
    }

    /// The bound on CPU-bound jobs (`cpu`).
    #[must_use]
    pub fn cpu(&self) -> &crate::cpu::CpuPool {
        self.0.registrar.cpu()
    }
}
