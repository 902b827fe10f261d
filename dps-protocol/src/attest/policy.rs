//! An enrollment's `attestationPolicy` (this service's extension of DPS enrollments) and the
//! judgement of one registration's evidence against it: the attestation key the device showed
//! with its challenge, the quote it sent with its SAS, and the PCR values it reported.
//!
//! The checks, in order, each with its own [`Failure`]: evidence present; the AK a restricted
//! signing key that never left its TPM; the quote's signature, magic and type; its nonce the
//! challenge's (else an earlier challenge's: stale; else the AK was not beside the EK); its
//! selection the one asked for; its digest over the reported values; each expected value, then
//! each pinned one.

use serde::{Deserialize, Serialize};

use super::challenge::nonce_matches;
use super::pcrs::{self, Bank, InvalidPcrs, PcrSelect, PcrValues};
use super::{check_attestation_key, verify_quote_by, AttestError, ClockInfo, PcrValue, Signature};
use crate::error::DecodeError;
use crate::tpm::{Name, Public};

/// What a policy does with attestation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No attestation: the registration is what DPS does.
    #[default]
    None,
    /// Judge and record the verdict; never refuse.
    Report,
    /// Refuse a registration whose evidence fails any check.
    Require,
}

/// `attestationPolicy` of an individual enrollment or an enrollment group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationPolicy {
    pub mode: Mode,
    /// The PCRs to quote; by default those of `pcrs`, or SHA-256 PCRs 0–7 (firmware, boot
    /// loader and Secure Boot state) when `pcrs` is empty too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub quote: Option<PcrSelect>,
    /// Expected values, per bank and index (hex).
    #[serde(default, skip_serializing_if = "PcrValues::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub pcrs: PcrValues,
    /// Trust on first use: the first verified quote's values are recorded with the
    /// registration and required of every later one, until an operator re-pins.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pin_on_first_registration: bool,
}

/// Why a policy is refused as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    #[error(transparent)]
    Pcrs(#[from] InvalidPcrs),
    #[error("PCR {index} of {bank} has an expected value but is not quoted")]
    NotQuoted { bank: Bank, index: u8 },
}

/// SHA-256 PCRs 0–7: what is quoted when a policy names nothing.
fn default_selection() -> PcrSelect {
    PcrSelect::from([(Bank::Sha256, (0..8).collect())])
}

impl AttestationPolicy {
    /// Checks the selection and the expected values, and that every expected value is quoted.
    pub fn check(&self) -> Result<(), InvalidPolicy> {
        pcrs::check_values(&self.pcrs)?;
        let selection = self.selection();
        pcrs::check_select(&selection)?;
        for (bank, values) in &self.pcrs {
            for index in values.keys() {
                if !selection.get(bank).is_some_and(|s| s.contains(index)) {
                    return Err(InvalidPolicy::NotQuoted {
                        bank: *bank,
                        index: *index,
                    });
                }
            }
        }
        Ok(())
    }

    /// The PCRs the device is asked to quote.
    #[must_use]
    pub fn selection(&self) -> PcrSelect {
        if let Some(select) = &self.quote {
            return select.clone();
        }
        if self.pcrs.is_empty() {
            return default_selection();
        }
        self.pcrs
            .iter()
            .map(|(bank, values)| (*bank, values.keys().copied().collect()))
            .collect()
    }
}

/// Why evidence fails a policy. The names are what logs and the admin page show; the device
/// learns only that attestation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No attestation key with the challenge, or no quote with the SAS.
    #[error("QuoteMissing: the device sent no attestation key or no quote")]
    QuoteMissing,
    #[error("AkAttributes: {0}")]
    AkAttributes(&'static str),
    #[error("AkUnsupported: {0}")]
    AkUnsupported(String),
    /// The nonce in the quote is no challenge's: the AK could not activate the credential,
    /// so it is not beside the enrolled EK.
    #[error("AkNotBound: the quote does not carry the challenge's nonce")]
    AkNotBound,
    /// The nonce is an earlier challenge's: a replayed quote.
    #[error("QuoteStale: the quote carries an earlier challenge's nonce")]
    QuoteStale,
    #[error("QuoteInvalid: {0}")]
    QuoteInvalid(AttestError),
    /// The TPM quoted other PCRs than asked (a bank it has not allocated comes back empty).
    #[error("SelectionMismatch: the quote covers other PCRs than the ones asked for")]
    SelectionMismatch,
    #[error("PcrMismatch: PCR {index} of {bank} is not the expected value")]
    PcrMismatch { bank: Bank, index: u8 },
}

impl Failure {
    /// The failure's name, a bounded set (for logs and the registration record).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::QuoteMissing => "QuoteMissing",
            Self::AkAttributes(_) => "AkAttributes",
            Self::AkUnsupported(_) => "AkUnsupported",
            Self::AkNotBound => "AkNotBound",
            Self::QuoteStale => "QuoteStale",
            Self::QuoteInvalid(_) => "QuoteInvalid",
            Self::SelectionMismatch => "SelectionMismatch",
            Self::PcrMismatch { .. } => "PcrMismatch",
        }
    }
}

impl From<AttestError> for Failure {
    fn from(e: AttestError) -> Self {
        match e {
            AttestError::AkAttributes(what) => Self::AkAttributes(what),
            AttestError::AkUnsupported(what) => Self::AkUnsupported(what.to_owned()),
            AttestError::SelectionMismatch => Self::SelectionMismatch,
            other => Self::QuoteInvalid(other),
        }
    }
}

/// What the service kept from the challenge: the AK's `TPM2B_PUBLIC` and the nonce's hash
/// (`challenge::nonce_hash`).
#[derive(Debug, Clone, Copy)]
pub struct Issued<'a> {
    pub attestation_key: &'a [u8],
    pub nonce_hash: &'a [u8],
}

/// What the device sent with its SAS: the `TPMS_ATTEST` bytes, the `TPMT_SIGNATURE` and the
/// PCR values it read.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub attest: &'a [u8],
    pub signature: &'a [u8],
    pub pcrs: &'a PcrValues,
}

/// What a quote that passed proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The AK's name (nameAlg ‖ digest).
    pub ak_name: Vec<u8>,
    /// The quoted values (exactly the selection).
    pub pcrs: PcrValues,
    pub clock: ClockInfo,
}

/// Judges one registration's evidence. `earlier` are the nonce hashes of the device's other
/// challenges (to tell a replay from an unbound AK); `pinned` the values recorded on first use.
pub fn judge(
    policy: &AttestationPolicy,
    issued: Option<Issued<'_>>,
    evidence: Option<Evidence<'_>>,
    earlier: &[&[u8]],
    pinned: Option<&PcrValues>,
) -> Result<Proven, Failure> {
    let (Some(issued), Some(evidence)) = (issued, evidence) else {
        return Err(Failure::QuoteMissing);
    };
    let ak = Public::from_tpm2b(issued.attestation_key)?;
    check_attestation_key(&ak)?;
    let signature = Signature::parse(evidence.signature)?;
    let selection = policy.selection();
    let reported: Vec<PcrValue> = evidence
        .pcrs
        .iter()
        .flat_map(|(bank, values)| {
            values.iter().map(|(index, value)| PcrValue {
                bank: bank.alg(),
                index: *index,
                value: value.0.clone(),
            })
        })
        .collect();
    let quote = verify_quote_by(
        &ak,
        evidence.attest,
        &signature,
        |extra| nonce_matches(extra, issued.nonce_hash),
        &pcrs::to_selection(&selection),
        &reported,
    )
    .map_err(|e| match e {
        AttestError::NonceMismatch => {
            let extra = super::Attest::parse(evidence.attest)
                .map(|a| a.extra_data)
                .unwrap_or_default();
            if earlier.iter().any(|hash| nonce_matches(&extra, hash)) {
                Failure::QuoteStale
            } else {
                Failure::AkNotBound
            }
        }
        other => other.into(),
    })?;
    let quoted = pcrs::restrict(evidence.pcrs, &selection);
    for expected in std::iter::once(&policy.pcrs).chain(pinned) {
        for (bank, values) in expected {
            for (index, value) in values {
                if quoted.get(bank).and_then(|q| q.get(index)) != Some(value) {
                    return Err(Failure::PcrMismatch {
                        bank: *bank,
                        index: *index,
                    });
                }
            }
        }
    }
    let ak_name = Name::of(&ak)
        .map_err(|_| Failure::QuoteInvalid(AttestError::AkUnsupported("nameAlg")))?
        .as_bytes()
        .to_vec();
    Ok(Proven {
        ak_name,
        pcrs: quoted,
        clock: quote.clock_info,
    })
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Self::QuoteInvalid(e.into())
    }
}
