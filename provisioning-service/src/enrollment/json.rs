//! The enrollment API's JSON: the DPS service API's shapes for individual enrollments and bulk
//! operations (Microsoft's DPS REST specification, service API 2021-10-01:
//! `IndividualEnrollment`, `BulkEnrollmentOperation`, `BulkEnrollmentOperationResult`,
//! `QuerySpecification`).

use dps_protocol::wire::Base64Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::store::ProvisioningStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TpmEnrollment {
    #[schema(value_type = String, format = Byte)]
    pub endorsement_key: Base64Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub storage_root_key: Option<Base64Bytes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attestation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmEnrollment>,
}

impl Attestation {
    /// TPM attestation with this EK (`TPM2B_PUBLIC`).
    #[must_use]
    pub fn tpm(endorsement_key: Vec<u8>) -> Self {
        Self {
            kind: "tpm".to_owned(),
            tpm: Some(TpmEnrollment {
                endorsement_key: Base64Bytes(endorsement_key),
                storage_root_key: None,
            }),
        }
    }
}

/// An individual enrollment. Fields this service does not interpret (`initialTwin`,
/// `capabilities`, `allocationPolicy`, `iotHubs`, `reprovisionPolicy`, ...) are stored and
/// returned as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollment {
    pub registration_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub attestation: Attestation,
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
    /// Read-only (ignored when written): the TPM enrollment group the device joined, for a
    /// record made when it did (this service's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

/// `POST /enrollments`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentOperation {
    pub mode: BulkMode,
    pub enrollments: Vec<IndividualEnrollment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum BulkMode {
    Create,
    Update,
    UpdateIfMatchETag,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentOperationResult {
    pub is_successful: bool,
    pub errors: Vec<BulkEnrollmentError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentError {
    pub registration_id: String,
    pub error_code: u32,
    pub error_status: String,
}

/// `POST /enrollments/query`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuerySpecification {
    pub query: String,
}
