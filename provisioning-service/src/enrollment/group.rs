//! TPM enrollment groups: DPS's `EnrollmentGroup` shape (service.json) with an attestation DPS
//! does not have, `tpmEkCertificate` — devices are admitted by their EK certificate's chain to
//! CAs the owner trusts, with optional constraints on the TPM's manufacturer, model and firmware
//! version (from the certificate), a deny list and a cap (docs/protocol.md §9). DPS admits only
//! X.509 and symmetric-key attestation in groups; a group written with those, or with `tpm`,
//! gets a DPS error body saying what this service takes instead.

use dps_protocol::ek_cert::{pem_certificates, EkCertificate};
use dps_protocol::RegistrationId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{InvalidEnrollment, ProvisioningStatus};
use crate::settings::Settings;
use crate::store::groups::{GroupRow, NewGroup};
use crate::timestamp;

/// The attestation type of a TPM enrollment group.
pub const TPM_EK_CERTIFICATE: &str = "tpmEkCertificate";

/// `attestation.tpmEkCertificate`: who may join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TpmEkCertificateAttestation {
    /// PEM certificates (one or a bundle per entry) trusted as anchors: a vendor's root, or
    /// an intermediate the owner pins.
    pub trusted_ca_certificates: Vec<String>,
    /// PEM CA certificates that may sit between an EK certificate and an anchor (untrusted:
    /// they only help build the path, as the device's own do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediate_ca_certificates: Vec<String>,
    /// When not empty, the EK certificate's `tpmManufacturer` must be one of these (e.g.
    /// `id:53544D20`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpm_manufacturers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpm_models: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpm_firmware_versions: Vec<String>,
    /// Registration ids (derived from the EKs) that may never join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_registration_ids: Vec<String>,
    /// At most this many devices join; absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
    /// Admit EK certificates that lack the TCG EK certificate usage (extended key usage
    /// 2.23.133.8.1), as Google's newer "EK/AK CA" issues them to Compute Engine vTPMs. Off by
    /// default: without it a certificate for any key of the vendor's CA (a TLS or AK
    /// certificate) would pass for an EK's. The challenge still proves the device holds the
    /// certified key as a TPM EK.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_certificates_without_ek_usage: bool,
}

/// A group's `attestation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupAttestation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_ek_certificate: Option<TpmEkCertificateAttestation>,
    /// What other attestation types carry (`x509`, `symmetricKey`, `tpm`): refused.
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: Map<String, Value>,
}

/// An enrollment group, in DPS's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    pub enrollment_group_id: String,
    pub attestation: GroupAttestation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// Read-only (ignored when written): how many devices have joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_count: Option<i64>,
    /// The other DPS fields (allocation, re-provisioning, initial twin, capabilities).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

/// `POST /enrollmentGroups`: DPS's `BulkEnrollmentGroupOperation`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentGroupOperation {
    pub mode: super::BulkMode,
    pub enrollment_groups: Vec<EnrollmentGroup>,
}

/// DPS's `BulkEnrollmentGroupOperationResult`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentGroupOperationResult {
    pub is_successful: bool,
    pub errors: Vec<BulkEnrollmentGroupOperationError>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentGroupOperationError {
    pub enrollment_group_id: String,
    pub error_code: u32,
    pub error_status: String,
}

/// Most groups in one bulk operation: DPS's ("Bulk device enrollment group operation with
/// maximum of 10 groups", service.json examples).
pub const MAX_GROUP_BULK: usize = 10;

/// Why a group is refused as written.
#[derive(Debug, thiserror::Error)]
pub enum InvalidGroup {
    #[error("enrollmentGroupId: {0}")]
    Id(#[source] dps_protocol::RegistrationIdError),
    #[error("enrollmentGroupId in the body does not match the path")]
    IdMismatch,
    #[error("enrollment groups here take attestation type \"tpmEkCertificate\" (TPMs admitted by their EK certificate's chain); {0} attestation is not offered by this TPM-only service")]
    UnsupportedAttestation(String),
    #[error("attestation.tpmEkCertificate is required")]
    MissingAttestation,
    #[error(
        "attestation.tpmEkCertificate.trustedCaCertificates must hold at least one CA certificate"
    )]
    NoTrustedCa,
    #[error("attestation.tpmEkCertificate.{field}: {reason}")]
    Certificate { field: &'static str, reason: String },
    #[error("attestation.tpmEkCertificate.deniedRegistrationIds: {0}")]
    DeniedId(#[source] dps_protocol::RegistrationIdError),
    #[error(transparent)]
    Enrollment(#[from] InvalidEnrollment),
}

/// The DER of every certificate in `pems`, each a CA certificate.
fn ca_certificates(field: &'static str, pems: &[String]) -> Result<Vec<Vec<u8>>, InvalidGroup> {
    let mut out = Vec::new();
    for pem in pems {
        let ders = pem_certificates(pem.as_bytes()).map_err(|e| InvalidGroup::Certificate {
            field,
            reason: e.to_string(),
        })?;
        if ders.is_empty() {
            return Err(InvalidGroup::Certificate {
                field,
                reason: "an entry holds no PEM certificate".to_owned(),
            });
        }
        for der in ders {
            let ca = X509Certificate::from_der(&der).is_ok_and(|(_, c)| c.is_ca());
            if !ca {
                return Err(InvalidGroup::Certificate {
                    field,
                    reason: "not a CA certificate".to_owned(),
                });
            }
            out.push(der);
        }
    }
    Ok(out)
}

/// A group's CA certificates as DER: the anchors, and the intermediates that may help build a
/// path to them.
#[derive(Debug, Clone, Default)]
pub struct GroupCas {
    pub anchors: Vec<Vec<u8>>,
    pub intermediates: Vec<Vec<u8>>,
}

impl TpmEkCertificateAttestation {
    /// The anchors and intermediates, as DER.
    pub fn certificates(&self) -> Result<GroupCas, InvalidGroup> {
        Ok(GroupCas {
            anchors: ca_certificates("trustedCaCertificates", &self.trusted_ca_certificates)?,
            intermediates: ca_certificates(
                "intermediateCaCertificates",
                &self.intermediate_ca_certificates,
            )?,
        })
    }

    /// Whether the certificate is an EK certificate this group takes (its EK usage, or the
    /// group's [`Self::allow_certificates_without_ek_usage`]), its TPM meets the constraints,
    /// and its registration id is not denied.
    #[must_use]
    pub fn allows(&self, ek: &EkCertificate, registration_id: &str) -> bool {
        let within = |allowed: &[String], value: &Option<String>| {
            allowed.is_empty()
                || value
                    .as_deref()
                    .is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
        };
        (ek.ek_usage || self.allow_certificates_without_ek_usage)
            && within(&self.tpm_manufacturers, &ek.manufacturer)
            && within(&self.tpm_models, &ek.model)
            && within(&self.tpm_firmware_versions, &ek.firmware_version)
            && !self
                .denied_registration_ids
                .iter()
                .any(|d| d.eq_ignore_ascii_case(registration_id))
    }
}

impl EnrollmentGroup {
    /// Validates and converts: the id, the attestation (every certificate a CA certificate,
    /// the deny list registration ids), the allocation fields as for an individual enrollment.
    pub fn to_new(&self, settings: &Settings) -> Result<NewGroup, InvalidGroup> {
        let id = RegistrationId::parse(&self.enrollment_group_id).map_err(InvalidGroup::Id)?;
        if self.attestation.kind != TPM_EK_CERTIFICATE {
            return Err(InvalidGroup::UnsupportedAttestation(
                self.attestation.kind.clone(),
            ));
        }
        let attestation = self
            .attestation
            .tpm_ek_certificate
            .as_ref()
            .ok_or(InvalidGroup::MissingAttestation)?;
        if attestation.certificates()?.anchors.is_empty() {
            return Err(InvalidGroup::NoTrustedCa);
        }
        let mut attestation = attestation.clone();
        for denied in &mut attestation.denied_registration_ids {
            let id = RegistrationId::parse(denied).map_err(InvalidGroup::DeniedId)?;
            id.as_str().clone_into(denied);
        }
        let strings = [
            &attestation.tpm_manufacturers,
            &attestation.tpm_models,
            &attestation.tpm_firmware_versions,
        ];
        if strings
            .iter()
            .any(|list| list.iter().any(|s| s.contains('\0')))
        {
            return Err(InvalidEnrollment::NulCharacter("enrollment group").into());
        }
        super::check_shared_fields(
            "enrollment group",
            &self.extra,
            self.iot_hub_host_name.as_deref(),
            Some(settings),
        )?;
        Ok(NewGroup {
            group_id: id.as_str().to_owned(),
            attestation: serde_json::to_value(&attestation).unwrap_or_default(),
            iot_hub_host_name: self.iot_hub_host_name.clone(),
            provisioning_status: self.provisioning_status,
            extra: Value::Object(self.extra.clone()),
        })
    }

    /// The stored group as the API returns it.
    #[must_use]
    pub fn from_row(row: &GroupRow) -> Self {
        Self {
            enrollment_group_id: row.group_id.clone(),
            attestation: GroupAttestation {
                kind: TPM_EK_CERTIFICATE.to_owned(),
                tpm_ek_certificate: serde_json::from_value(row.attestation.0.clone()).ok(),
                other: Map::new(),
            },
            iot_hub_host_name: row.iot_hub_host_name.clone(),
            provisioning_status: row.provisioning_status,
            etag: Some(row.etag.to_string()),
            created_date_time_utc: Some(timestamp(row.created_at)),
            last_updated_date_time_utc: Some(timestamp(row.updated_at)),
            device_count: None,
            extra: match &row.extra.0 {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            },
        }
    }
}
