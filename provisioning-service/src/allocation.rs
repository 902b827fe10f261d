//! Hub assignment: an enrollment's pinned hub, else a hashed allocation over the linked hubs
//! (stable for a registration id, evenly spread, the same on every instance).

use sha2::{Digest, Sha256};

/// Picks the hub for `registration_id`: `pinned` if set, else `hubs[H(id) mod n]`.
#[must_use]
pub fn assign_hub<'a>(
    registration_id: &str,
    pinned: Option<&'a str>,
    hubs: &'a [String],
) -> Option<&'a str> {
    if let Some(hub) = pinned {
        return Some(hub);
    }
    if hubs.is_empty() {
        return None;
    }
    let digest = Sha256::digest(registration_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let index = u64::from_be_bytes(first) % hubs.len() as u64;
    hubs.get(usize::try_from(index).ok()?).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_wins_and_hashing_is_stable_and_spread() {
        let hubs: Vec<String> = ["a.example", "b.example", "c.example"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            assign_hub("x", Some("pinned.example"), &hubs),
            Some("pinned.example")
        );
        assert_eq!(assign_hub("x", None, &[]), None);
        assert_eq!(
            assign_hub("device-1", None, &hubs),
            assign_hub("device-1", None, &hubs)
        );
        let mut counts = [0; 3];
        for i in 0..3000 {
            let hub = assign_hub(&format!("device-{i}"), None, &hubs).unwrap();
            counts[hubs.iter().position(|h| h == hub).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 850), "{counts:?}");
    }
}
