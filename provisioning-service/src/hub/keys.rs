//! Device keys for hub tokens, read from Postgres and kept for at most a short TTL (one second
//! by default, never more): a broker asks on every connect, and a second of staleness is the
//! bound on how late a revocation (a disabled enrollment, a deleted registration) takes effect
//! on any instance. Postgres stays the only source of truth; this is a read cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::HubError;
use crate::app::App;
use crate::enrollment::ProvisioningStatus;
use crate::store::registrations;

/// Entries at most; past it the cache starts over (a flood of unknown ids cannot grow it).
const MAX_ENTRIES: usize = 100_000;

/// A device's key as the hub check needs it.
pub struct DeviceKey {
    pub registration_id: String,
    pub key: Zeroizing<Vec<u8>>,
    pub status: Option<ProvisioningStatus>,
}

type Entry = (Instant, Option<Arc<DeviceKey>>);

/// A cache answer: a fresh entry (a key, or the knowledge that there is none), or go ask.
enum Cached {
    Fresh(Option<Arc<DeviceKey>>),
    Stale,
}

/// The cache; one per service instance.
pub struct DeviceKeys {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The key of the device assigned to `hub` (lowercase) as `device_id`, or `None`.
    pub async fn get(
        &self,
        app: &App,
        hub: &str,
        device_id: &str,
    ) -> Result<Option<Arc<DeviceKey>>, HubError> {
        let id = (hub.to_owned(), device_id.to_owned());
        if let Cached::Fresh(found) = self.cached(&id) {
            return Ok(found);
        }
        let mut conn = app.acquire().await?;
        let row = registrations::hub_identity(&mut conn, hub, device_id).await?;
        conn.done();
        let key = match row {
            Some(row) => Some(Arc::new(DeviceKey {
                key: app
                    .sealer()
                    .open(&row.sealed_key, &row.key_id, row.registration_id.as_bytes())
                    .inspect_err(|_| app.metrics().sealing_failure())?,
                registration_id: row.registration_id,
                status: row.provisioning_status,
            })),
            None => None,
        };
        self.store(id, key.clone());
        Ok(key)
    }

    fn cached(&self, id: &(String, String)) -> Cached {
        let Ok(entries) = self.entries.lock() else {
            return Cached::Stale;
        };
        match entries.get(id) {
            Some((at, key)) if at.elapsed() < self.ttl => Cached::Fresh(key.clone()),
            _ => Cached::Stale,
        }
    }

    fn store(&self, id: (String, String), key: Option<Arc<DeviceKey>>) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(id, (Instant::now(), key));
        }
    }
}
