//! Individual enrollments: the device list a factory fills (one EK per registration id). This
//! module validates what the enrollment API and the factory CLI send, and performs their writes
//! through `store::enrollments`; `json` holds the DPS service API's shapes, `http::service_api`
//! the handlers, `factory` the file formats.
//!
//! Uses: `allocation`, `settings`, `store` (the layers table, docs/architecture.md).

pub mod group;
mod json;

pub use json::{
    Attestation, BulkEnrollmentError, BulkEnrollmentOperation, BulkEnrollmentOperationResult,
    BulkMode, IndividualEnrollment, ProvisioningStatus, QuerySpecification, TpmEnrollment,
};

use dps_protocol::attest::policy::AttestationPolicy;
use dps_protocol::tpm::Public;
use dps_protocol::wire::Base64Bytes;
use dps_protocol::{CryptoError, RegistrationIdError};
use serde::Deserialize;
use serde_json::{Map, Value};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::allocation::policy::{Allocation, InvalidAllocation};
use crate::settings::Settings;
use crate::store::enrollments::ek_hash;
use crate::store::enrollments::{self, BatchOutcome, EnrollmentRow, NewEnrollment};
use crate::store::StoreError;
use crate::timestamp;

/// Most enrollments in one bulk operation: DPS's limit (the service API's
/// `BulkEnrollmentOperation` description, "up to 10,000 enrollments").
pub const MAX_BULK: usize = 10_000;

/// Where an optional storage root key is kept in `extra` (DPS stores it; we do not use it).
const STORAGE_ROOT_KEY: &str = "__storageRootKey";

/// Why an enrollment is refused as written.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEnrollment {
    #[error("registrationId: {0}")]
    RegistrationId(#[source] RegistrationIdError),
    #[error("registrationId in the body does not match the path")]
    RegistrationIdMismatch,
    #[error("only tpm attestation is supported, not {0:?}")]
    UnsupportedAttestation(String),
    #[error("attestation.tpm is required")]
    MissingTpm,
    #[error("endorsementKey: {0}")]
    EndorsementKey(#[source] CryptoError),
    #[error("deviceId is not a valid IoT Hub device id")]
    DeviceId,
    #[error("iotHubHostName {0} is not a linked hub")]
    HubNotLinked(String),
    #[error("etag is not an etag of this service")]
    Etag,
    #[error("at most {MAX_BULK} enrollments per bulk operation")]
    TooManyInBulk,
    #[error("{0}")]
    Allocation(#[from] InvalidAllocation),
    #[error("attestationPolicy: {0}")]
    AttestationPolicy(String),
    #[error("credentialPolicyName: {0}")]
    CredentialPolicy(String),
    /// Postgres's JSON type cannot hold U+0000; DPS's fields never need it.
    #[error("{0}: a string holds the NUL character (\\u0000)")]
    NulCharacter(&'static str),
}

/// Whether a JSON value holds U+0000 in any string or key.
pub(crate) fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Checks the DPS fields an individual enrollment and an enrollment group share alike: no NUL
/// character in the other fields (`what` names the object) or in `iotHubHostName`, the
/// allocation fields readable ([`Allocation::read`]) and, when the service's `settings` are
/// given, every hub named linked and a webhook https.
pub(crate) fn check_shared_fields(
    what: &'static str,
    extra: &Map<String, Value>,
    iot_hub_host_name: Option<&str>,
    settings: Option<&Settings>,
) -> Result<(), InvalidEnrollment> {
    if extra.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
        return Err(InvalidEnrollment::NulCharacter(what));
    }
    if iot_hub_host_name.is_some_and(|h| h.contains('\0')) {
        return Err(InvalidEnrollment::NulCharacter("iotHubHostName"));
    }
    let allocation = Allocation::read(extra, iot_hub_host_name)?;
    attestation_policy(extra)?;
    let credential_policy = credential_policy_name(extra)?;
    if let Some(settings) = settings {
        if let Some(name) = credential_policy {
            if settings.credential_policies.get(name).is_none() {
                return Err(InvalidEnrollment::CredentialPolicy(format!(
                    "{name} is not a credential policy of this service"
                )));
            }
        }
        if let Some(hub) = iot_hub_host_name {
            if !settings.linked_hubs.contains(hub) {
                return Err(InvalidEnrollment::HubNotLinked(hub.to_owned()));
            }
        }
        allocation.check(&settings.linked_hubs, settings.allow_http_webhooks)?;
    }
    Ok(())
}

/// The `attestationPolicy` of an enrollment's or group's other fields (`extra`), checked
/// (`dps_protocol::attest::policy`); absent or `null` is mode `none`, what DPS does.
pub fn attestation_policy(
    extra: &Map<String, Value>,
) -> Result<AttestationPolicy, InvalidEnrollment> {
    let policy = match extra.get("attestationPolicy") {
        None | Some(Value::Null) => return Ok(AttestationPolicy::default()),
        Some(value) => AttestationPolicy::deserialize(value)
            .map_err(|e| InvalidEnrollment::AttestationPolicy(e.to_string()))?,
    };
    policy
        .check()
        .map_err(|e| InvalidEnrollment::AttestationPolicy(e.to_string()))?;
    Ok(policy)
}

/// The `credentialPolicyName` of an enrollment's or group's other fields (DPS 2026-04-01: the
/// policy that issues its devices' certificates); absent or `null`: none.
pub fn credential_policy_name(
    extra: &Map<String, Value>,
) -> Result<Option<&str>, InvalidEnrollment> {
    match extra.get("credentialPolicyName") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => Ok(Some(name)),
        Some(_) => Err(InvalidEnrollment::CredentialPolicy(
            "not a string".to_owned(),
        )),
    }
}

/// What an enrollment operation fails with.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error(transparent)]
    Invalid(#[from] InvalidEnrollment),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EnrollmentError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(err))
    }
}

/// Device ids as IoT Hub allows them: up to 128 ASCII letters, digits and `-.%_*?!(),:=@$'`.
pub(crate) fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.%_*?!(),:=@$'".contains(&b))
}

/// An etag this service issued, as written in a header or a body (quoted or not); `*` and
/// absence mean "any version" (`None`).
pub fn parse_etag(text: Option<&str>) -> Result<Option<Uuid>, InvalidEnrollment> {
    match text.map(|t| t.trim().trim_matches('"')) {
        None | Some("*") => Ok(None),
        Some(t) => Uuid::parse_str(t)
            .map(Some)
            .map_err(|_| InvalidEnrollment::Etag),
    }
}

impl IndividualEnrollment {
    /// Validates and converts, checking the EK is a TPM EK this service can seal to, the
    /// allocation fields ([`Allocation::read`]) and, when the service's `settings` are given,
    /// that every hub named is linked and a webhook is https (the factory CLI writes to the
    /// database without knowing the service's settings, and takes those as given).
    pub fn to_new(&self, settings: Option<&Settings>) -> Result<NewEnrollment, InvalidEnrollment> {
        let id = dps_protocol::RegistrationId::parse(&self.registration_id)
            .map_err(InvalidEnrollment::RegistrationId)?;
        if self.attestation.kind != "tpm" {
            return Err(InvalidEnrollment::UnsupportedAttestation(
                self.attestation.kind.clone(),
            ));
        }
        let tpm = self
            .attestation
            .tpm
            .as_ref()
            .ok_or(InvalidEnrollment::MissingTpm)?;
        Public::from_tpm2b(&tpm.endorsement_key.0)
            .map_err(CryptoError::from)
            .and_then(|ek| ek.check_seed_key("EK"))
            .map_err(InvalidEnrollment::EndorsementKey)?;
        if self
            .device_id
            .as_deref()
            .is_some_and(|d| !valid_device_id(d))
        {
            return Err(InvalidEnrollment::DeviceId);
        }
        check_shared_fields(
            "enrollment",
            &self.extra,
            self.iot_hub_host_name.as_deref(),
            settings,
        )?;
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
            provisioning_status: self.provisioning_status,
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
            provisioning_status: row.provisioning_status,
            etag: Some(row.etag.to_string()),
            created_date_time_utc: Some(timestamp(row.created_at)),
            last_updated_date_time_utc: Some(timestamp(row.updated_at)),
            enrollment_group_id: row.group_id.clone(),
            extra,
        }
    }
}

/// Creates or updates one enrollment (with `if_match`, only that version). Writing what is
/// stored changes nothing. Returns the stored row and whether it changed.
pub async fn put(
    pool: &PgPool,
    enrollment: &IndividualEnrollment,
    if_match: Option<Uuid>,
    settings: Option<&Settings>,
    now: OffsetDateTime,
) -> Result<(EnrollmentRow, bool), EnrollmentError> {
    let new = enrollment.to_new(settings)?;
    let mut conn = pool.acquire().await?;
    Ok(enrollments::upsert(&mut conn, &new, if_match, now).await?)
}

/// One enrollment of a bulk operation done item by item: `delete`, or `updateIfMatchETag`
/// (create and update go in batches, [`put_many`]).
async fn bulk_item(
    pool: &PgPool,
    mode: BulkMode,
    enrollment: &IndividualEnrollment,
    settings: &Settings,
    now: OffsetDateTime,
) -> Result<(), EnrollmentError> {
    let mut conn = pool.acquire().await?;
    if mode == BulkMode::Delete {
        let id = dps_protocol::RegistrationId::parse(&enrollment.registration_id)
            .map_err(InvalidEnrollment::RegistrationId)?;
        return Ok(enrollments::delete(&mut conn, id.as_str(), None).await?);
    }
    let new = enrollment.to_new(Some(settings))?;
    let etag = parse_etag(enrollment.etag.as_deref())?.ok_or(StoreError::PreconditionFailed)?;
    enrollments::upsert(&mut conn, &new, Some(etag), now).await?;
    Ok(())
}

/// Enrollments written per statement by [`put_many`].
pub const BATCH: usize = 1_000;

/// What writing one enrollment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Changed,
    Unchanged,
}

/// Creates (`create_only`) or creates-or-updates many enrollments, [`BATCH`] per statement
/// (`store::enrollments::put_batch`): one outcome per item, in order. Each item is validated on
/// its own and refused on its own; the call fails as a whole only when the database does. A
/// batch that meets a concurrent writer is done again item by item.
pub async fn put_many(
    pool: &PgPool,
    items: &[IndividualEnrollment],
    create_only: bool,
    settings: Option<&Settings>,
    now: OffsetDateTime,
) -> Result<Vec<Result<Written, EnrollmentError>>, EnrollmentError> {
    let mut outcomes = Vec::with_capacity(items.len());
    let mut conn = pool.acquire().await?;
    for chunk in items.chunks(BATCH) {
        let mut results: Vec<Result<Written, EnrollmentError>> = Vec::with_capacity(chunk.len());
        let mut valid = Vec::with_capacity(chunk.len());
        let mut at = Vec::with_capacity(chunk.len());
        for item in chunk {
            match item.to_new(settings) {
                Ok(new) => {
                    at.push(results.len());
                    valid.push(new);
                    results.push(Ok(Written::Unchanged));
                }
                Err(e) => results.push(Err(e.into())),
            }
        }
        match enrollments::put_batch(&mut conn, &valid, create_only, now).await {
            Ok(batch) => {
                for (i, outcome) in at.into_iter().zip(batch) {
                    results[i] = match outcome {
                        BatchOutcome::Written => Ok(Written::Changed),
                        BatchOutcome::Unchanged => Ok(Written::Unchanged),
                        BatchOutcome::Refused(r) => Err(StoreError::from(r).into()),
                    };
                }
            }
            Err(StoreError::EkTaken) => {
                for (i, new) in at.into_iter().zip(&valid) {
                    match one_by_one(&mut conn, new, create_only, now).await {
                        Err(EnrollmentError::Store(StoreError::Db(e))) => return Err(e.into()),
                        outcome => results[i] = outcome,
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        outcomes.extend(results);
    }
    Ok(outcomes)
}

/// One enrollment on its own (the fallback of [`put_many`]).
async fn one_by_one(
    conn: &mut sqlx::PgConnection,
    new: &NewEnrollment,
    create_only: bool,
    now: OffsetDateTime,
) -> Result<Written, EnrollmentError> {
    if create_only {
        enrollments::create(conn, new, now).await?;
        return Ok(Written::Changed);
    }
    let (_, changed) = enrollments::upsert(conn, new, None, now).await?;
    Ok(if changed {
        Written::Changed
    } else {
        Written::Unchanged
    })
}

/// A bulk operation: create and update in batches ([`put_many`]), update-if-match and delete
/// item by item; returns the refused items with their reasons. Fails as a whole only when the
/// database does.
pub async fn bulk(
    pool: &PgPool,
    operation: &BulkEnrollmentOperation,
    settings: &Settings,
    now: OffsetDateTime,
) -> Result<Vec<(String, EnrollmentError)>, EnrollmentError> {
    if operation.enrollments.len() > MAX_BULK {
        return Err(InvalidEnrollment::TooManyInBulk.into());
    }
    let mut refused = Vec::new();
    if matches!(operation.mode, BulkMode::Create | BulkMode::Update) {
        let create_only = operation.mode == BulkMode::Create;
        let outcomes = put_many(
            pool,
            &operation.enrollments,
            create_only,
            Some(settings),
            now,
        )
        .await?;
        for (item, outcome) in operation.enrollments.iter().zip(outcomes) {
            if let Err(e) = outcome {
                refused.push((item.registration_id.clone(), e));
            }
        }
        return Ok(refused);
    }
    for enrollment in &operation.enrollments {
        match bulk_item(pool, operation.mode, enrollment, settings, now).await {
            Ok(()) => {}
            Err(e @ EnrollmentError::Store(StoreError::Db(_))) => return Err(e),
            Err(e) => refused.push((enrollment.registration_id.clone(), e)),
        }
    }
    Ok(refused)
}
