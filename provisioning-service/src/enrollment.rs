//! The enrollment API's JSON (the DPS service API shape for individual enrollments), and its
//! validation into what the store writes.

use dps_protocol::tpm::Public;
use dps_protocol::wire::Base64Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::http::error::{timestamp, ApiError};
use crate::registration::{ek_hash, parse_registration_id};
use crate::store::enrollments::{EnrollmentRow, NewEnrollment};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmEnrollment {
    pub endorsement_key: Base64Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_root_key: Option<Base64Bytes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /enrollments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentOperation {
    pub mode: BulkMode,
    pub enrollments: Vec<IndividualEnrollment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BulkMode {
    Create,
    Update,
    UpdateIfMatchETag,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentOperationResult {
    pub is_successful: bool,
    pub errors: Vec<BulkEnrollmentError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkEnrollmentError {
    pub registration_id: String,
    pub error_code: u32,
    pub error_status: String,
}

/// `POST /enrollments/query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuerySpecification {
    pub query: String,
}

const STORAGE_ROOT_KEY: &str = "__storageRootKey";

/// Device ids as IoT Hub allows them: up to 128 ASCII letters, digits and `-.%_*?!(),:=@$'`.
fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.%_*?!(),:=@$'".contains(&b))
}

impl IndividualEnrollment {
    /// Validates and converts, checking the EK is a TPM EK this service can seal to and, when
    /// `linked_hubs` is given, that a pinned hub is one of them.
    pub fn to_new(&self, linked_hubs: Option<&[String]>) -> Result<NewEnrollment, ApiError> {
        let id = parse_registration_id(&self.registration_id)?;
        if self.attestation.kind != "tpm" {
            return Err(ApiError::ArgumentInvalid(
                "only tpm attestation is supported".to_owned(),
            ));
        }
        let tpm =
            self.attestation.tpm.as_ref().ok_or_else(|| {
                ApiError::ArgumentInvalid("attestation.tpm is required".to_owned())
            })?;
        let ek = Public::from_tpm2b(&tpm.endorsement_key.0)
            .map_err(|e| ApiError::ArgumentInvalid(format!("endorsementKey: {e}")))?;
        ek.storage_key("EK")
            .map_err(|e| ApiError::ArgumentInvalid(format!("endorsementKey: {e}")))?;
        if let Some(device_id) = &self.device_id {
            if !valid_device_id(device_id) {
                return Err(ApiError::ArgumentInvalid(
                    "deviceId is not a valid IoT Hub device id".to_owned(),
                ));
            }
        }
        if let (Some(hub), Some(linked_hubs)) = (&self.iot_hub_host_name, linked_hubs) {
            if !linked_hubs.iter().any(|h| h.eq_ignore_ascii_case(hub)) {
                return Err(ApiError::ArgumentInvalid(format!(
                    "iotHubHostName {hub} is not a linked hub"
                )));
            }
        }
        let mut extra = self.extra.clone();
        if let Some(srk) = &tpm.storage_root_key {
            extra.insert(
                STORAGE_ROOT_KEY.to_owned(),
                serde_json::to_value(srk).unwrap_or_default(),
            );
        }
        Ok(NewEnrollment {
            registration_id: id.as_str().to_owned(),
            ek_hash: ek_hash(&tpm.endorsement_key.0),
            endorsement_key: tpm.endorsement_key.0.clone(),
            device_id: self.device_id.clone(),
            iot_hub_host_name: self.iot_hub_host_name.clone(),
            provisioning_status: match self.provisioning_status {
                ProvisioningStatus::Enabled => "enabled",
                ProvisioningStatus::Disabled => "disabled",
            }
            .to_owned(),
            extra: Value::Object(extra),
        })
    }

    /// The stored enrollment as the API returns it.
    #[must_use]
    pub fn from_row(row: &EnrollmentRow) -> Self {
        let mut extra = match &row.extra.0 {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        let storage_root_key = extra
            .remove(STORAGE_ROOT_KEY)
            .and_then(|v| serde_json::from_value::<Base64Bytes>(v).ok());
        Self {
            registration_id: row.registration_id.clone(),
            device_id: row.device_id.clone(),
            attestation: Attestation {
                kind: "tpm".to_owned(),
                tpm: Some(TpmEnrollment {
                    endorsement_key: Base64Bytes(row.endorsement_key.clone()),
                    storage_root_key,
                }),
            },
            iot_hub_host_name: row.iot_hub_host_name.clone(),
            provisioning_status: if row.provisioning_status == "enabled" {
                ProvisioningStatus::Enabled
            } else {
                ProvisioningStatus::Disabled
            },
            etag: Some(row.etag.to_string()),
            created_date_time_utc: Some(timestamp(row.created_at)),
            last_updated_date_time_utc: Some(timestamp(row.updated_at)),
            extra,
        }
    }
}
