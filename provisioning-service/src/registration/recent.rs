//! The challenges this instance issued, remembered until answered or expired, with what the
//! challenge step read beside them: the enrollment, the device's assignment and their etags.
//!
//! A device usually sends its SAS on the connection that brought its challenge, so the SAS step
//! here can skip its read (one statement of three in a registration): it checks the token with
//! a remembered key and writes at once. The write re-checks in Postgres that the challenge is
//! still there to consume and that the enrollment, its group and the registration are still at
//! the etags remembered (`store::device_steps::assign`). If anything changed, if the token
//! matches no remembered key, or if the device comes back to another instance, the step reads
//! Postgres as before. Postgres stays the only source of truth; nothing here decides alone, and
//! a restart loses nothing but the saving.
//!
//! Keys are held as they are at rest: sealed with the service key.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::allocation::policy::Previous;
use crate::store::device_steps::{Admission, KeyCandidate, KeySource, Observed, RegisterView};
use crate::store::registrations::ChallengeRow;
use dps_protocol::wire::AttestationRecord;

/// Devices at most; past it, expired entries go, and if that is not enough the memory starts
/// over (a flood of challenges cannot grow it). A device's SAS follows its challenge within
/// seconds, so at hundreds of registrations a second only hundreds are waiting at once.
const MAX_DEVICES: usize = 10_000;

/// Challenges remembered per device, newest kept: a device answers its latest.
const PER_DEVICE: usize = 2;

/// What is remembered of one device.
struct Remembered {
    /// Newest first, with their expiry.
    challenges: Vec<(KeyCandidate, OffsetDateTime)>,
    enrollment: Admission,
    previous: Option<Previous>,
    attested: Option<AttestationRecord>,
    observed: Observed,
}

/// One per service instance.
#[derive(Default)]
pub struct RecentChallenges {
    devices: Mutex<HashMap<String, Remembered>>,
}

impl std::fmt::Debug for RecentChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentChallenges").finish_non_exhaustive()
    }
}

impl RecentChallenges {
    /// Remembers challenge `row`, just recorded for a device its individual `enrollment`
    /// admitted, with the device's assignment and registration etag read in the same
    /// statement.
    pub fn remember(
        &self,
        row: &ChallengeRow,
        enrollment: Admission,
        previous: Option<Previous>,
        attested: Option<AttestationRecord>,
        registration_etag: Option<uuid::Uuid>,
        now: OffsetDateTime,
    ) {
        let challenge = KeyCandidate {
            source: KeySource::Challenge(row.challenge_id),
            sealed_key: row.sealed_key.clone(),
            key_id: row.key_id.clone(),
            ek_hash: row.ek_hash.clone(),
            storage_root_key: row.storage_root_key.clone(),
            authentication_key: row.authentication_key.clone(),
            group_id: None,
            attestation_key: row.attestation_key.clone(),
            attestation_nonce_hash: row.attestation_nonce_hash.clone(),
        };
        let observed = Observed {
            enrollment_etag: enrollment.etag,
            group_etag: enrollment.group_etag,
            registration_etag,
        };
        let Ok(mut devices) = self.devices.lock() else {
            return;
        };
        if devices.len() >= MAX_DEVICES && !devices.contains_key(&row.registration_id) {
            devices.retain(|_, d| {
                d.challenges.retain(|(_, expires_at)| *expires_at > now);
                !d.challenges.is_empty()
            });
            if devices.len() >= MAX_DEVICES {
                devices.clear();
            }
        }
        // The device's earlier challenges stay; the newest read is the one the next write will
        // be checked against.
        let mut challenges = devices
            .remove(&row.registration_id)
            .map(|d| d.challenges)
            .unwrap_or_default();
        challenges.insert(0, (challenge, row.expires_at));
        challenges.truncate(PER_DEVICE);
        devices.insert(
            row.registration_id.clone(),
            Remembered {
                challenges,
                enrollment,
                previous,
                attested,
                observed,
            },
        );
    }

    /// The SAS step's view of `registration_id` as remembered: its live challenges, newest
    /// first, and what was read with them. `None` if nothing live is remembered.
    pub fn recall(&self, registration_id: &str, now: OffsetDateTime) -> Option<RegisterView> {
        let devices = self.devices.lock().ok()?;
        let device = devices.get(registration_id)?;
        let candidates: Vec<KeyCandidate> = device
            .challenges
            .iter()
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(c, _)| c.clone())
            .collect();
        (!candidates.is_empty()).then(|| RegisterView {
            candidates,
            enrollment: Some(device.enrollment.clone()),
            previous: device.previous.clone(),
            attested: device.attested.clone(),
            observed: Some(device.observed),
            // A remembered view holds challenges only: no registration key's decision.
            deciding: None,
        })
    }

    /// Forgets `registration_id`'s challenges: it registered, which consumed them all.
    pub fn forget(&self, registration_id: &str) {
        if let Ok(mut devices) = self.devices.lock() {
            devices.remove(registration_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrollment::ProvisioningStatus;
    use time::Duration;
    use uuid::Uuid;

    fn enrollment() -> Admission {
        Admission {
            ek_hash: vec![1; 32],
            provisioning_status: ProvisioningStatus::Enabled,
            device_id: None,
            iot_hub_host_name: None,
            extra: serde_json::json!({}),
            etag: Uuid::new_v4(),
            group_etag: None,
        }
    }

    fn challenge(id: &str, issued_at: OffsetDateTime, ttl: Duration) -> ChallengeRow {
        ChallengeRow {
            challenge_id: Uuid::new_v4(),
            registration_id: id.to_owned(),
            client_address: "192.0.2.1".to_owned(),
            ek_hash: vec![1; 32],
            storage_root_key: vec![2; 8],
            sealed_key: vec![3; 8],
            key_id: "k".to_owned(),
            authentication_key: vec![4; 8],
            issued_at,
            expires_at: issued_at + ttl,
            group_id: None,
            attestation_key: None,
            attestation_nonce_hash: None,
        }
    }

    fn ids(view: &RegisterView) -> Vec<KeySource> {
        view.candidates.iter().map(|c| c.source).collect()
    }

    #[test]
    fn a_device_recalls_its_newest_live_challenges_until_it_registers() {
        let recent = RecentChallenges::default();
        let now = OffsetDateTime::now_utc();
        let rows: Vec<_> = (0..3)
            .map(|_| challenge("dev", now, Duration::minutes(5)))
            .collect();
        for row in &rows {
            recent.remember(row, enrollment(), None, None, None, now);
        }
        let view = recent.recall("dev", now).unwrap();
        let newest: Vec<_> = rows
            .iter()
            .rev()
            .take(PER_DEVICE)
            .map(|r| KeySource::Challenge(r.challenge_id))
            .collect();
        assert_eq!(ids(&view), newest);
        assert!(
            view.observed.is_some(),
            "a recalled view says what it rests on"
        );
        assert!(
            recent.recall("dev", now + Duration::minutes(5)).is_none(),
            "expired"
        );
        assert!(recent.recall("other", now).is_none());
        recent.forget("dev");
        assert!(recent.recall("dev", now).is_none(), "registered");
    }

    /// A flood of challenges cannot grow the memory past its bound: expired entries go first,
    /// then everything.
    #[test]
    fn the_memory_is_bounded() {
        let recent = RecentChallenges::default();
        let now = OffsetDateTime::now_utc();
        let short = Duration::seconds(1);
        for i in 0..MAX_DEVICES - 1 {
            recent.remember(
                &challenge(&format!("d{i}"), now, short),
                enrollment(),
                None,
                None,
                None,
                now,
            );
        }
        let live = challenge("live", now, Duration::minutes(5));
        recent.remember(&live, enrollment(), None, None, None, now);
        let later = now + Duration::seconds(2);
        recent.remember(
            &challenge("new", later, short),
            enrollment(),
            None,
            None,
            None,
            later,
        );
        let len = || recent.devices.lock().unwrap().len();
        assert_eq!(len(), 2, "the expired went, the live stayed");
        assert!(recent.recall("live", later).is_some());
        for i in 0..MAX_DEVICES {
            recent.remember(
                &challenge(&format!("e{i}"), later, short),
                enrollment(),
                None,
                None,
                None,
                later,
            );
        }
        assert!(len() <= MAX_DEVICES, "{}", len());
    }
}
