//! Hub assignment as DPS does it, per enrollment: the service's linked hubs
//! ([`LinkedHubs`]), the enrollment's allocation and re-provisioning policy ([`policy`]), and
//! why an allocation failed, a [`Failure`], which a registration records as `failed` with its
//! code and message. The custom allocation webhook is called from `registration::webhook`.
//! Decisions on data only: it uses `settings` and `store`'s types, nothing above them.
//!
//! Uses: `settings`, `store` (the layers table, docs/architecture.md).

pub mod policy;

use sha2::{Digest, Sha256};

pub use crate::settings::LinkedHubs;

/// Why no hub was assigned. The registration is left `failed` with [`Failure::code`] and the
/// message; nothing else changes. The codes are this service's, in DPS's form (HTTP status ×
/// 1000 + n; docs/protocol.md lists them): DPS does not publish codes for these cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the enrollment's allocation cannot be used: {0}")]
    Misconfigured(String),
    #[error("none of the enrollment's iotHubs is linked to this service")]
    NoHub,
    #[error("the allocation webhook did not answer within {0} ms")]
    WebhookTimeout(u64),
    #[error("the allocation webhook cannot be reached: {0}")]
    WebhookUnreachable(String),
    #[error("the allocation webhook answered HTTP {0}")]
    WebhookStatus(u16),
    #[error("the allocation webhook's answer is not an allocation response: {0}")]
    WebhookInvalidResponse(String),
    #[error("the allocation webhook chose {0}, which is not one of the hubs it was offered")]
    WebhookHubNotOffered(String),
    #[error("the allocation was not decided in time (the deciding instance stopped)")]
    Undecided,
    #[error("the device id is already assigned to another device on that hub")]
    DeviceIdTaken,
}

impl Failure {
    /// The registration state's `errorCode`.
    #[must_use]
    pub fn code(&self) -> i32 {
        match self {
            Self::Misconfigured(_) => 400_301,
            Self::NoHub => 400_302,
            Self::WebhookHubNotOffered(_) => 400_303,
            Self::DeviceIdTaken => 409_301,
            Self::WebhookUnreachable(_) => 502_301,
            Self::WebhookStatus(_) => 502_302,
            Self::WebhookInvalidResponse(_) => 502_303,
            Self::WebhookTimeout(_) => 504_301,
            Self::Undecided => 504_302,
        }
    }
}

/// The hub of `hubs` (not empty) that `registration_id` hashes to: `hubs[H(id) mod n]`, stable
/// for a registration id, evenly spread, the same on every instance.
#[must_use]
pub fn hashed<'a>(registration_id: &str, hubs: &'a [String]) -> Option<&'a str> {
    let digest = Sha256::digest(registration_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::try_from(hubs.len()).ok().filter(|&n| n > 0)?;
    let index = usize::try_from(u64::from_be_bytes(first) % n).ok()?;
    hubs.get(index).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(
                hashed(id, hubs.as_slice()),
                Some(hubs.as_slice()[*expected].as_str()),
                "{id}"
            );
        }
        let mut counts = [0; 3];
        for i in 0..3000 {
            let hub = hashed(&format!("device-{i}"), hubs.as_slice()).unwrap();
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
