//! Device keys for hub tokens, read from Postgres and kept for at most a short TTL (one second
//! by default, never more): a broker asks on every connect, and a second of staleness is the
//! bound on how late a revocation (a disabled enrollment, a deleted registration) takes effect
//! on any instance. Postgres stays the only source of truth; this is a read cache.
//!
//! A failed connect caches its answer too ("no such device"), so what it may hold is bounded in
//! bytes as well as in entries: ids reach it only after the username was checked (a linked hub,
//! an IoT Hub device id of at most 128 characters), and past [`MAX_BYTES`] the expired entries
//! go, then, if that is not enough, all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Gatekeeper, HubError};
use crate::enrollment::ProvisioningStatus;
use crate::store::registrations;

/// Entries at most.
const MAX_ENTRIES: usize = 100_000;

/// Bytes of entries at most, counted as their ids plus [`ENTRY_OVERHEAD`].
pub const MAX_BYTES: usize = 16 << 20;

/// What an entry costs beyond its ids: the map's slot, the two strings' headers, the instant,
/// and a key's `Arc` (the key itself is 32 bytes).
const ENTRY_OVERHEAD: usize = 192;

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
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<(String, String), Entry>,
    bytes: usize,
}

fn cost(id: &(String, String)) -> usize {
    id.0.len() + id.1.len() + ENTRY_OVERHEAD
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
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The key of the device assigned to `hub` (lowercase) as `device_id`, or `None`.
    pub async fn get(
        &self,
        keeper: &Gatekeeper,
        hub: &str,
        device_id: &str,
    ) -> Result<Option<Arc<DeviceKey>>, HubError> {
        let id = (hub.to_owned(), device_id.to_owned());
        if let Cached::Fresh(found) = self.cached(&id) {
            return Ok(found);
        }
        let mut conn = keeper.acquire().await?;
        let row = registrations::hub_identity(&mut conn, hub, device_id).await?;
        conn.done();
        let key = match row {
            Some(row) => Some(Arc::new(DeviceKey {
                key: keeper
                    .sealer()
                    .open(&row.sealed_key, &row.key_id, row.registration_id.as_bytes())
                    .inspect_err(|_| keeper.metrics().sealing_failure())?,
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
        match entries.map.get(id) {
            Some((at, key)) if at.elapsed() < self.ttl => Cached::Fresh(key.clone()),
            _ => Cached::Stale,
        }
    }

    fn store(&self, id: (String, String), key: Option<Arc<DeviceKey>>) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let added = cost(&id);
        if entries.map.len() >= MAX_ENTRIES || entries.bytes + added > MAX_BYTES {
            let ttl = self.ttl;
            entries.map.retain(|_, (at, _)| at.elapsed() < ttl);
            entries.bytes = entries.map.keys().map(cost).sum();
            if entries.map.len() >= MAX_ENTRIES || entries.bytes + added > MAX_BYTES {
                entries.map.clear();
                entries.bytes = 0;
            }
        }
        if entries.map.insert(id, (Instant::now(), key)).is_none() {
            entries.bytes += added;
        }
    }

    /// Bytes of entries held, as counted against [`MAX_BYTES`].
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::{DeviceKeys, MAX_BYTES};
    use std::time::Duration;

    /// Issue 25, item 3: a flood of refused ids (each the longest a username may carry) never
    /// holds more than the byte bound, with entries that live long (the first cache) or expire
    /// at once (the second: the bound is kept by dropping the expired ones).
    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let keys = DeviceKeys::new(Duration::from_secs(60));
        let hub = "h".repeat(253);
        for i in 0..200_000 {
            keys.store((hub.clone(), format!("{i:0>128}")), None);
            assert!(keys.bytes() <= MAX_BYTES, "{} bytes", keys.bytes());
        }
        let short = DeviceKeys::new(Duration::from_millis(1));
        short.store(("hub".to_owned(), "old".to_owned()), None);
        std::thread::sleep(Duration::from_millis(5));
        for i in 0..(MAX_BYTES / 200) {
            short.store(("hub".to_owned(), format!("{i}")), None);
        }
        assert!(short.bytes() <= MAX_BYTES);
    }
}
