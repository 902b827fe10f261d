//! The SAS step's certificate (DPS 2026-04-01 `csr` → `issuedCertificateChain`,
//! docs/protocol.md §11): the CSR read against the enrollment's credential policy before anything
//! is decided, and the leaf issued once the device is assigned (its hub and device id are in the
//! certificate), recorded with the registration in the same statement.

use std::sync::Arc;

use rand_core::CryptoRngCore;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::{Refusal, StepError};
use crate::issuance::{CredentialPolicy, Csr, CsrRefusal};
use crate::settings::Settings;
use crate::store::registrations::{IssuedRecord, RegistrationRow, Status};

/// A CSR that passed its checks, and the policy to issue under.
pub(super) struct Requested {
    policy: Arc<CredentialPolicy>,
    csr: Csr,
}

/// Reads the request's CSR under the credential policy the enrollment (or its group) names:
/// `None` without a CSR. Refuses, by name, a CSR the policy does not accept, an enrollment that
/// names no policy, and (until the TPM proof is implemented) a policy that requires one.
pub(super) fn requested(
    settings: &Settings,
    registration_id: &str,
    csr: Option<&[u8]>,
    extra: &Value,
) -> Result<Option<Requested>, Refusal> {
    let Some(der) = csr else {
        return Ok(None);
    };
    let empty = serde_json::Map::new();
    let name = crate::enrollment::credential_policy_name(extra.as_object().unwrap_or(&empty))
        .ok()
        .flatten()
        .ok_or(Refusal::Csr(CsrRefusal::NoCredentialPolicy))?;
    let policy = settings
        .credential_policies
        .get(name)
        .ok_or_else(|| Refusal::Csr(CsrRefusal::UnknownCredentialPolicy(name.to_owned())))?;
    let csr = crate::issuance::read_csr(der, registration_id, policy).map_err(Refusal::Csr)?;
    if policy.require_tpm_resident_key {
        return Err(Refusal::Csr(CsrRefusal::ResidencyUnproven));
    }
    Ok(Some(Requested {
        policy: Arc::clone(policy),
        csr,
    }))
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
