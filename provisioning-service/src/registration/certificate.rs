//! The SAS step's certificate (DPS 2026-04-01 `csr` → `issuedCertificateChain`,
//! docs/protocol.md §11): the CSR read against the enrollment's credential policy before anything
//! is decided — with, under `requireTpmResidentKey`, the proof that its key lives in the TPM (a
//! `TPM2_Certify` by the attestation key bound at the challenge, over that challenge's nonce) —
//! and the leaf issued once the device is assigned (its hub and device id are in the
//! certificate), recorded with the registration in the same statement.

use std::sync::Arc;

use rand_core::CryptoRngCore;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use dps_protocol::attest::{challenge, verify_certify, Signature};
use dps_protocol::tpm::{Public, PublicParameters};
use dps_protocol::wire::KeyCertification;

use super::{Refusal, RegisterRequest, StepError};
use crate::issuance::{CredentialPolicy, Csr, CsrRefusal};
use crate::settings::Settings;
use crate::store::device_steps::{KeyCandidate, KeySource};
use crate::store::registrations::{IssuedRecord, RegistrationRow, Status};

/// A CSR that passed its checks, and the policy to issue under.
pub(super) struct Requested {
    policy: Arc<CredentialPolicy>,
    csr: Csr,
}

/// The credential policy the enrollment's (or group's) other fields name, if any.
fn named_policy<'s>(
    settings: &'s Settings,
    extra: &Value,
) -> Result<Option<&'s Arc<CredentialPolicy>>, Refusal> {
    let empty = serde_json::Map::new();
    let Some(name) = crate::enrollment::credential_policy_name(extra.as_object().unwrap_or(&empty))
        .ok()
        .flatten()
    else {
        return Ok(None);
    };
    settings
        .credential_policies
        .get(name)
        .map(Some)
        .ok_or_else(|| Refusal::Csr(CsrRefusal::UnknownCredentialPolicy(name.to_owned())))
}

/// Whether the enrollment's credential policy wants the proof of a TPM-resident key: then the
/// challenge step sends the attestation challenge whose nonce the certification carries.
pub(super) fn wants_residency_proof(settings: &Settings, extra: &Value) -> bool {
    named_policy(settings, extra)
        .ok()
        .flatten()
        .is_some_and(|p| p.require_tpm_resident_key)
}

/// Reads the request's CSR under the credential policy the enrollment (or its group) names:
/// `None` without a CSR. Refuses, by name, a CSR the policy does not accept, an enrollment that
/// names no policy, and under `requireTpmResidentKey` a CSR whose key is not proven to live in
/// the TPM that proved `key` (the key the SAS token was signed with).
pub(super) fn requested(
    settings: &Settings,
    request: &RegisterRequest,
    key: &KeyCandidate,
    extra: &Value,
) -> Result<Option<Requested>, Refusal> {
    let Some(der) = request.csr.as_deref() else {
        return Ok(None);
    };
    let policy =
        named_policy(settings, extra)?.ok_or(Refusal::Csr(CsrRefusal::NoCredentialPolicy))?;
    let id = request.registration_id.as_str();
    let csr = crate::issuance::read_csr(der, id, policy).map_err(Refusal::Csr)?;
    if policy.require_tpm_resident_key {
        let certification = request.tpm.as_ref().and_then(|t| t.certify.as_ref());
        prove_residency(&csr, key, certification).map_err(Refusal::Csr)?;
    }
    Ok(Some(Requested {
        policy: Arc::clone(policy),
        csr,
    }))
}

/// Checks that `csr`'s key lives in the TPM: `certification` is a `TPM2_Certify` of it by the
/// attestation key shown with `key`'s challenge, over that challenge's nonce
/// (`dps_protocol::attest::verify_certify`), and the certified public area is the CSR's key.
fn prove_residency(
    csr: &Csr,
    key: &KeyCandidate,
    certification: Option<&KeyCertification>,
) -> Result<(), CsrRefusal> {
    let (KeySource::Challenge(_), Some(ak), Some(nonce_hash), Some(certification)) = (
        key.source,
        key.attestation_key.as_deref(),
        key.attestation_nonce_hash.as_deref(),
        certification,
    ) else {
        return Err(CsrRefusal::ResidencyUnproven);
    };
    let fails = |e: &dyn std::fmt::Display| CsrRefusal::Residency(e.to_string());
    let ak = Public::from_tpm2b(ak).map_err(|e| fails(&e))?;
    let certified = Public::from_tpm2b(&certification.public.0).map_err(|e| fails(&e))?;
    let signature = Signature::parse(&certification.signature.0).map_err(|e| fails(&e))?;
    let nonce_matches = |extra: &[u8]| challenge::nonce_matches(extra, nonce_hash);
    verify_certify(
        &ak,
        &certification.attest.0,
        &signature,
        nonce_matches,
        &certified,
    )
    .map_err(|e| fails(&e))?;
    let PublicParameters::Ecc { x, y, .. } = &certified.parameters else {
        return Err(CsrRefusal::NotTheCsrKey);
    };
    let point: Vec<u8> = [&[0x04][..], x, y].concat();
    if point != csr.key.point {
        return Err(CsrRefusal::NotTheCsrKey);
    }
    Ok(())
}

/// Issues the certificate of `requested` for `row`, once decided: only an assigned device gets
/// one (its hub and device id name it). Sets the row's chain; returns what to record.
pub(super) fn issue(
    requested: Option<&Requested>,
    row: &mut RegistrationRow,
    rng: &mut impl CryptoRngCore,
) -> Result<Option<IssuedRecord>, StepError> {
    let (Some(requested), Status::Assigned, Some(hub), Some(device_id)) = (
        requested,
        row.status,
        row.assigned_hub.as_deref(),
        row.device_id.as_deref(),
    ) else {
        return Ok(None);
    };
    let issued = requested
        .policy
        .issue(
            &requested.csr,
            &row.registration_id,
            hub,
            device_id,
            row.updated_at,
            rng,
        )
        .map_err(StepError::Issue)?;
    let rfc3339 = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let record = IssuedRecord {
        serial: hex::encode(&issued.serial),
        credential_policy: requested.policy.name.clone(),
        fingerprint: hex::encode(issued.fingerprint),
        not_before: rfc3339(issued.not_before),
        not_after: rfc3339(issued.not_after),
    };
    row.certificate_chain = Some(issued.chain);
    Ok(Some(record))
}
