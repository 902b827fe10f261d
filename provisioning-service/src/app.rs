//! The service's shared state: a Postgres pool, the service key and the validated settings.
//! Nothing here remembers anything between requests; that is Postgres's job.

use std::sync::Arc;

use sqlx::PgPool;

use crate::sealing::Sealer;
use crate::settings::{Settings, SettingsError};

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct App(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    sealer: Sealer,
    settings: Settings,
}

impl App {
    /// Refuses settings that break a limit ([`Settings::validate`]), so nothing downstream
    /// checks them again.
    pub fn new(pool: PgPool, sealer: Sealer, settings: Settings) -> Result<Self, SettingsError> {
        settings.validate()?;
        Ok(Self(Arc::new(Inner {
            pool,
            sealer,
            settings,
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
}
