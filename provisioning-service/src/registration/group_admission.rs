//! Zero-touch admission: a device with no individual enrollment that presents its EK
//! certificate joins the first enabled TPM enrollment group (in id order) whose trusted CAs its
//! certificate chains to and whose constraints it meets (docs/protocol.md §9). The challenge that
//! follows proves it holds the certified EK; it joins (gets its individual record) only once it
//! has proven the challenge's key (`join`).

use dps_protocol::ek_cert::{EkCertError, EkCertificate, PathSearch};
use dps_protocol::RegistrationId;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::{ek_hash, Refusal, Registrar, StepError, TpmKeys};
use crate::enrollment::group::TpmEkCertificateAttestation;
use crate::store::device_steps::KeyCandidate;
use crate::store::groups::{self, EnabledGroup, Joining};
use crate::store::StoreError;

/// Which group admits `registration_id` presenting `tpm` (with its EK certificate), and the
/// group's other fields (its policies). Every refusal names its reason (logged; the device
/// sees 401).
pub(super) async fn admit_to_group(
    registrar: &Registrar,
    conn: &mut PgConnection,
    registration_id: &str,
    tpm: &TpmKeys,
) -> Result<(String, serde_json::Value), StepError> {
    let raw = tpm.ek_certificate.as_ref().ok_or(Refusal::NotEnrolled)?;
    // The id is the EK's, so nobody can register in another device's name through a group.
    let derived = RegistrationId::from_endorsement_key(&tpm.ek_bytes);
    if derived.as_str() != registration_id {
        return Err(Refusal::GroupIdNotDerived.into());
    }
    let certificate = EkCertificate::parse(raw).map_err(Refusal::EkCertificate)?;
    if !certificate.certifies(&tpm.ek) {
        return Err(Refusal::EkCertificateMismatch.into());
    }
    // Whether a group may take a certificate without the EK usage is the group's to say.
    let ek_usage = certificate.ek_usage;
    let candidates = groups::enabled(conn).await?;
    let chain = tpm.ek_certificate_chain.clone();
    let id = registration_id.to_owned();
    // Path building verifies signatures against every enabled group: on a blocking thread
    // (`cpu`), within one budget of signature checks for the whole request, and stopped when
    // the request goes away (ek_cert's module doc).
    let admitted = registrar
        .cpu()
        .run(move |abandoned| {
            let mut search = PathSearch::default().abandoned_when(abandoned.flag());
            first_admitting(&candidates, &certificate, &chain, &id, &mut search)
        })
        .await?;
    admitted.map_err(Refusal::EkCertificate)?.ok_or_else(|| {
        if ek_usage {
            Refusal::NoGroupAdmits.into()
        } else {
            Refusal::NotAnEkCertificate.into()
        }
    })
}

/// The first group, in order, that admits the certificate; an error once the request's path
/// search budget is spent (or the request has gone), whatever groups are left.
fn first_admitting(
    groups: &[EnabledGroup],
    certificate: &EkCertificate,
    device_chain: &[Vec<u8>],
    registration_id: &str,
    search: &mut PathSearch,
) -> Result<Option<(String, serde_json::Value)>, EkCertError> {
    for g in groups {
        let Ok(attestation) =
            serde_json::from_value::<TpmEkCertificateAttestation>(g.group.attestation.0.clone())
        else {
            continue;
        };
        if attestation
            .max_devices
            .is_some_and(|cap| g.members >= i64::from(cap))
            || !attestation.allows(certificate, registration_id)
        {
            continue;
        }
        let Ok(mut cas) = attestation.certificates() else {
            continue;
        };
        cas.intermediates.extend_from_slice(device_chain);
        match certificate.chain_within(&cas.anchors, &cas.intermediates, search) {
            Ok(_) => return Ok(Some((g.group.group_id.clone(), g.group.extra.0.clone()))),
            Err(e @ (EkCertError::SearchExhausted { .. } | EkCertError::SearchAbandoned)) => {
                return Err(e)
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

/// Makes the device a member of `group_id` after it proved the key of a challenge that group
/// admitted: its individual record, linked to the group, if the group is still enabled and not
/// full. The EK comes from the request body (the device client sends it on this leg too).
pub(super) async fn join(
    conn: &mut PgConnection,
    registration_id: &str,
    tpm: Option<&TpmKeys>,
    key: &KeyCandidate,
    group_id: &str,
    now: OffsetDateTime,
) -> Result<(), StepError> {
    let tpm = tpm
        .filter(|t| ek_hash(&t.ek_bytes) == key.ek_hash)
        .ok_or(Refusal::AttestationRequired)?;
    let joining = Joining {
        group_id,
        registration_id,
        endorsement_key: &tpm.ek_bytes,
        ek_hash: &key.ek_hash,
    };
    match groups::join(conn, &joining, now).await {
        Ok(true) => {
            tracing::info!(
                registration_id,
                group_id,
                "device joined its enrollment group"
            );
            Ok(())
        }
        Ok(false) => Err(Refusal::GroupClosed.into()),
        Err(StoreError::EkTaken) => Err(Refusal::EnrolledUnderAnotherId.into()),
        Err(e) => Err(e.into()),
    }
}
