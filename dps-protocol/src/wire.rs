//! The JSON bodies of the DPS device API (docs/protocol.md §2), shared by the service and the device
//! client. Binary fields are [`Base64Bytes`]: decoded at the serde boundary, once.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::attest::pcrs::{PcrSelect, PcrValues};

/// Bytes carried as standard base64 in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl std::fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(Base64Bytes)
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

/// `tpm` of a registration request: the device's EK and SRK as marshalled `TPM2B_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub endorsement_key: Base64Bytes,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub storage_root_key: Base64Bytes,
    /// This service's extension (DPS clients do not send it): the EK certificate as the TPM
    /// holds it (DER, perhaps with its NV header or fill), for admission by a TPM enrollment
    /// group (docs/protocol.md §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub endorsement_key_certificate: Option<Base64Bytes>,
    /// Extension: CA certificates between the EK certificate and its vendor's root (DER), as
    /// found on the TPM. Untrusted: only helps build the path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, format = Byte))]
    pub endorsement_key_certificate_chain: Vec<Base64Bytes>,
    /// Extension, first call: the attestation key's `TPM2B_PUBLIC`. With it, an enrollment
    /// whose `attestationPolicy` asks for a quote answers with an [`AttestationChallenge`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub attestation_key: Option<Base64Bytes>,
    /// Extension, SAS call: the quote answering that challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// Extension, SAS call with a `csr`: the proof that the CSR's key lives in this TPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certify: Option<KeyCertification>,
}

/// A `TPM2_Certify` of a key by the attestation key, with the attestation challenge's nonce as
/// qualifying data (docs/protocol.md §11): the key's public area and what the TPM signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyCertification {
    /// The certified key's `TPM2B_PUBLIC`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub public: Base64Bytes,
    /// `TPMS_ATTEST` (type certify), exactly as the TPM signed it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub attest: Base64Bytes,
    /// `TPMT_SIGNATURE` by the attestation key.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Base64Bytes,
}

/// A `TPM2_Quote` by the attestation key, with the challenge's nonce as qualifying data, and
/// the PCR values it covers (docs/protocol.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// `TPMS_ATTEST`, exactly as the TPM signed it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub attest: Base64Bytes,
    /// `TPMT_SIGNATURE`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Base64Bytes,
    /// The values of the quoted PCRs: `{"sha256": {"0": "hex", …}}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub pcrs: PcrValues,
}

/// Extension of the `401` challenge, sent only to a device that showed an attestation key:
/// `MakeCredential` of a fresh nonce to the EK, bound to the key's name, and the PCRs to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AttestationChallenge {
    /// `TPM2B_ID_OBJECT`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub credential_blob: Base64Bytes,
    /// `TPM2B_ENCRYPTED_SECRET`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub encrypted_secret: Base64Bytes,
    /// `{"sha256": [0, 7]}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub pcr_selection: PcrSelect,
}

impl TpmAttestation {
    /// The EK and SRK, with no certificate.
    #[must_use]
    pub fn keys(endorsement_key: Vec<u8>, storage_root_key: Vec<u8>) -> Self {
        Self {
            endorsement_key: Base64Bytes(endorsement_key),
            storage_root_key: Base64Bytes(storage_root_key),
            endorsement_key_certificate: None,
            endorsement_key_certificate_chain: Vec::new(),
            attestation_key: None,
            quote: None,
            certify: None,
        }
    }
}

/// Body of `PUT /{idScope}/registrations/{registrationId}/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistration {
    pub registration_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmAttestation>,
    /// DPS 2026-04-01: a PKCS#10 certificate signing request (DER, base64, no PEM armour)
    /// whose CN is the registration id; the answer carries `issuedCertificateChain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub csr: Option<Base64Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// The judgement of a registration's attestation evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum AttestationVerdict {
    /// Every check passed.
    Verified,
    /// Every check passed and the values were pinned (first use).
    Pinned,
    /// A check failed under a `report` policy: recorded, not refused.
    Failed,
}

/// What a registration's attestation proved, as stored with it and shown by the service API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AttestationRecord {
    pub verdict: AttestationVerdict,
    /// The failed check (`failed` only), e.g. `PcrMismatch: PCR 7 of sha256 …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attestation key's name (nameAlg ‖ digest), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_key_name: Option<String>,
    /// The quoted PCR values.
    #[serde(default, skip_serializing_if = "PcrValues::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub pcrs: PcrValues,
    /// The values pinned on first use, required of every later registration.
    #[serde(default, skip_serializing_if = "PcrValues::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub pinned_pcrs: PcrValues,
    pub attested_date_time_utc: String,
}

/// The `401` body of the first register call: the blob, and the `skn` the device's SAS tokens
/// must carry. The Azure Node.js client refuses a challenge without `keyName`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TpmChallenge {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub authentication_key: Base64Bytes,
    /// Always sent; read leniently (empty if absent).
    #[serde(default)]
    pub key_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extension: the attestation challenge, when the device showed an attestation key and
    /// its enrollment's policy asks for a quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationChallenge>,
}

/// `registrationState.tpm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TpmRegistrationResult {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub authentication_key: Base64Bytes,
}

/// `status` of an operation and of a registration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RegistrationStatus {
    Unassigned,
    Assigning,
    Assigned,
    Failed,
    Disabled,
}

/// `substatus` of an assigned registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RegistrationSubstatus {
    InitialAssignment,
    DeviceDataMigrated,
    DeviceDataReset,
    ReprovisionedToInitialAssignment,
}

/// `registrationState`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistrationResult {
    pub registration_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub status: RegistrationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<RegistrationSubstatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmRegistrationResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// DPS 2026-04-01: the certificate issued for the registration's CSR, leaf first, then
    /// each issuer up to the root (DER, base64). Not in a status lookup's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>, format = Byte))]
    pub issued_certificate_chain: Option<Vec<Base64Bytes>>,
    /// Extension, service API only: what the device's registration proved of its platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationRecord>,
}

/// Body of `202` (register, operation still running) and `200` (operation done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOperationStatus {
    pub operation_id: String,
    pub status: RegistrationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<DeviceRegistrationResult>,
}

/// The error body DPS writes with every 4xx/5xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_code: u32,
    pub tracking_id: String,
    pub message: String,
    pub timestamp_utc: String,
}

/// DPS `errorCode` values: the HTTP status followed by three digits.
pub mod error_codes {
    /// 400: an argument is invalid (bad JSON, base64, TPM structure, registration id).
    pub const ARGUMENT_INVALID: u32 = 400_004;
    /// 401: authentication failed (no or bad SAS, key not issued).
    pub const UNAUTHORIZED: u32 = 401_002;
    /// 404: no such registration or enrollment.
    pub const REGISTRATION_NOT_FOUND: u32 = 404_201;
    /// 412: precondition (etag) failed.
    pub const PRECONDITION_FAILED: u32 = 412_002;
    /// 429: throttled; see `Retry-After`.
    pub const THROTTLED: u32 = 429_001;
    /// 500: internal error.
    pub const INTERNAL_ERROR: u32 = 500_000;
}

/// The date of a DPS `api-version` (`YYYY-MM-DD`, optionally `-preview`), comparable as text;
/// `None` when it is not one.
#[must_use]
pub fn api_version_date(version: &str) -> Option<&str> {
    let date = version.strip_suffix("-preview").unwrap_or(version);
    let well_formed = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    well_formed.then_some(date)
}
