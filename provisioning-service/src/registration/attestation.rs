//! Remote attestation in the device steps (docs/protocol.md §10), this service's extension of
//! DPS: the challenge step seals a fresh nonce to the EK, bound to the attestation key the
//! device showed; the SAS step judges the quote the device sent back against the enrollment's
//! `attestationPolicy` (`dps_protocol::attest::policy`, where every check lives) and says what
//! to record with the registration. Unmodified DPS clients show no key and send no quote: under
//! mode `none` (the default) nothing here runs for them.

use dps_protocol::attest::challenge;
use dps_protocol::attest::pcrs::{PcrSelect, PcrValues};
use dps_protocol::attest::policy::{self, AttestationPolicy, Evidence, Issued, Mode};
use dps_protocol::tpm::{Name, Public};
use dps_protocol::wire::{
    AttestationChallenge, AttestationRecord, AttestationVerdict, Base64Bytes, Quote,
};
use dps_protocol::CryptoError;
use rand_core::CryptoRngCore;
use serde_json::Value;
use time::OffsetDateTime;

use super::{Refusal, StepError, TpmKeys};
use crate::store::device_steps::{KeyCandidate, KeySource};
use crate::timestamp;

/// The attestation key a device showed with its challenge request: as sent, and parsed.
#[derive(Debug)]
pub struct ShownKey {
    pub bytes: Vec<u8>,
    pub public: Public,
}

/// Parses a shown attestation key. Only the form is checked here (a key a name can be computed
/// for); its attributes are a policy's check, judged at the SAS step with everything else.
pub fn parse_key(bytes: Vec<u8>) -> Result<ShownKey, Refusal> {
    let invalid = |source: CryptoError| Refusal::InvalidKey {
        field: "attestationKey",
        source,
    };
    let public = Public::from_tpm2b(&bytes).map_err(|e| invalid(e.into()))?;
    Name::of(&public).map_err(invalid)?;
    Ok(ShownKey { bytes, public })
}

/// A challenge's attestation half, made on the challenge's core: the credential carrying a
/// fresh nonce (`TPM2B_ID_OBJECT`, `TPM2B_ENCRYPTED_SECRET`), and the nonce's hash to keep.
pub struct Sealed {
    pub credential_blob: Vec<u8>,
    pub encrypted_secret: Vec<u8>,
    pub nonce_hash: [u8; 32],
}

/// Seals a fresh nonce to `tpm`'s EK, bound to its shown key (if it showed one). Made whatever
/// the policy, before it is read: the challenge row is written in the same statement that reads
/// the enrollment (`store::device_steps::challenge_gate`).
pub fn seal(tpm: &TpmKeys, rng: &mut impl CryptoRngCore) -> Result<Option<Sealed>, CryptoError> {
    let Some(key) = &tpm.attestation_key else {
        return Ok(None);
    };
    let nonce = challenge::nonce(rng);
    let credential = challenge::bind(&tpm.ek, &key.public, &nonce, rng)?;
    Ok(Some(Sealed {
        credential_blob: dps_protocol::marshal::tpm2b(credential.id_object.body()),
        encrypted_secret: dps_protocol::marshal::tpm2b(credential.secret.body()),
        nonce_hash: challenge::nonce_hash(&nonce),
    }))
}

/// The policy of an enrollment's (or group's) other fields, checked when it was written.
pub fn policy_of(extra: &Value) -> Result<AttestationPolicy, StepError> {
    let empty = serde_json::Map::new();
    crate::enrollment::attestation_policy(extra.as_object().unwrap_or(&empty))
        .map_err(|e| StepError::Policy(e.to_string()))
}

/// The `401`'s attestation challenge, when the device showed a key and the policy asks for a
/// quote or the enrollment's credential policy for the proof of a TPM-resident key (`certify`,
/// which carries the same nonce). Without a quote to make, the selection is empty.
#[must_use]
pub fn challenge_for(
    policy: &AttestationPolicy,
    certify: bool,
    sealed: Option<&Sealed>,
) -> Option<AttestationChallenge> {
    if policy.mode == Mode::None && !certify {
        return None;
    }
    sealed.map(|s| AttestationChallenge {
        credential_blob: Base64Bytes(s.credential_blob.clone()),
        encrypted_secret: Base64Bytes(s.encrypted_secret.clone()),
        pcr_selection: if policy.mode == Mode::None {
            PcrSelect::new()
        } else {
            policy.selection()
        },
    })
}

/// The SAS step's judgement: what to record with the registration (`None` under mode `none`),
/// or the refusal under `require`. `key` is the key the device proved, `candidates` all its
/// live keys (an earlier challenge's nonce in the quote is a replay), `recorded` what its
/// registration recorded before (the pinned values).
pub fn judge(
    policy: &AttestationPolicy,
    key: &KeyCandidate,
    candidates: &[KeyCandidate],
    quote: Option<&Quote>,
    recorded: Option<&AttestationRecord>,
    now: OffsetDateTime,
) -> Result<Option<AttestationRecord>, Refusal> {
    if policy.mode == Mode::None {
        return Ok(None);
    }
    // Only a challenge carries a nonce: a device registering again with its registration's
    // key brings no fresh evidence.
    let issued = match (
        key.source,
        &key.attestation_key,
        &key.attestation_nonce_hash,
    ) {
        (KeySource::Challenge(_), Some(attestation_key), Some(nonce_hash)) => Some(Issued {
            attestation_key,
            nonce_hash,
        }),
        _ => None,
    };
    let evidence = quote.map(|q| Evidence {
        attest: &q.attest.0,
        signature: &q.signature.0,
        pcrs: &q.pcrs,
    });
    let earlier: Vec<&[u8]> = candidates
        .iter()
        .filter(|c| c.source != key.source)
        .filter_map(|c| c.attestation_nonce_hash.as_deref())
        .collect();
    let pinned = recorded
        .map(|r| &r.pinned_pcrs)
        .filter(|p| policy.pin_on_first_registration && !p.is_empty());
    let record = |verdict, reason, ak_name: Option<&[u8]>, pcrs, pinned_pcrs| AttestationRecord {
        verdict,
        reason,
        attestation_key_name: ak_name.map(hex::encode),
        pcrs,
        pinned_pcrs,
        attested_date_time_utc: timestamp(now),
    };
    match policy::judge(policy, issued, evidence, &earlier, pinned) {
        Ok(proven) => {
            let (verdict, pinned_pcrs) = match pinned {
                Some(pinned) => (AttestationVerdict::Verified, pinned.clone()),
                None if policy.pin_on_first_registration => {
                    (AttestationVerdict::Pinned, proven.pcrs.clone())
                }
                None => (AttestationVerdict::Verified, PcrValues::new()),
            };
            Ok(Some(record(
                verdict,
                None,
                Some(&proven.ak_name),
                proven.pcrs,
                pinned_pcrs,
            )))
        }
        Err(failure) if policy.mode == Mode::Report => {
            tracing::warn!(reason = %failure, "attestation failed (policy: report)");
            Ok(Some(record(
                AttestationVerdict::Failed,
                Some(failure.to_string()),
                None,
                PcrValues::new(),
                pinned.cloned().unwrap_or_default(),
            )))
        }
        Err(failure) => Err(Refusal::Attestation(failure)),
    }
}

/// The metric's name of a recorded verdict.
#[must_use]
pub fn verdict_label(verdict: AttestationVerdict) -> &'static str {
    match verdict {
        AttestationVerdict::Verified => "verified",
        AttestationVerdict::Pinned => "pinned",
        AttestationVerdict::Failed => "failed",
    }
}
