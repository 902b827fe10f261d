//! Hub assignment: an enrollment's pinned hub, else a hashed allocation over the linked hubs
//! (stable for a registration id, evenly spread, the same on every instance).

use sha2::{Digest, Sha256};

use crate::settings::SettingsError;

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

    /// The hub for `registration_id`: `pinned` if set, else `hubs[H(id) mod n]`.
    #[must_use]
    pub fn assign<'a>(&'a self, registration_id: &str, pinned: Option<&'a str>) -> &'a str {
        if let Some(hub) = pinned {
            return hub;
        }
        let digest = Sha256::digest(registration_id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let index = u64::from_be_bytes(first) % self.0.len() as u64;
        // `index < len`, and the list is not empty.
        let index = usize::try_from(index).unwrap_or_default();
        &self.0[index]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_wins() {
        let hubs = LinkedHubs::new(vec!["a.example".to_owned()]).unwrap();
        assert_eq!(hubs.assign("x", Some("pinned.example")), "pinned.example");
    }

    #[test]
    fn empty_and_malformed_lists_are_refused() {
        assert_eq!(LinkedHubs::new(vec![]), Err(SettingsError::NoLinkedHub));
        assert!(matches!(
            LinkedHubs::new(vec!["hub.example/x".to_owned()]),
            Err(SettingsError::BadHubName(_))
        ));
    }

    /// Expected indices computed independently: `sha256sum` of the id, first 8 bytes as a
    /// big-endian integer, modulo 3 (`printf device-1 | sha256sum | cut -c1-16`, then Python's
    /// `int(h, 16) % 3`).
    #[test]
    fn hashing_matches_an_independent_computation_and_spreads_evenly() {
        let hubs = LinkedHubs::new(
            ["a.example", "b.example", "c.example"]
                .map(String::from)
                .to_vec(),
        )
        .unwrap();
        for (id, expected) in EXPECTED {
            assert_eq!(hubs.assign(id, None), hubs.as_slice()[*expected], "{id}");
        }
        let mut counts = [0; 3];
        for i in 0..3000 {
            let hub = hubs.assign(&format!("device-{i}"), None);
            counts[hubs.as_slice().iter().position(|h| h == hub).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 850), "{counts:?}");
    }

    const EXPECTED: &[(&str, usize)] = &[
        ("device-1", 2),
        ("device-2", 0),
        ("sensor-42", 1),
        ("abc", 0),
    ];
}
