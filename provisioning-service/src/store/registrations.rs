//! Challenges (issued, not yet proven keys) and registration states.

use dps_protocol::wire::AttestationRecord;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;

/// `registrations.status`: DPS's registration status values, as stored. An unknown value in
/// the database is a decode error, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "camelCase")]
pub enum Status {
    Unassigned,
    Assigning,
    Assigned,
    Failed,
    Disabled,
}

/// `registrations.substatus`: DPS's assignment substatus values, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "camelCase")]
pub enum Substatus {
    InitialAssignment,
    DeviceDataMigrated,
    DeviceDataReset,
    ReprovisionedToInitialAssignment,
}

/// Live challenges kept per (registration, client address): a device that retries keeps its
/// newest two; a stranger's flood from another address cannot evict them.
pub const CHALLENGES_PER_ADDRESS: i64 = 2;
/// Live challenges kept per registration, whatever the addresses (bounds the rows a
/// distributed flood can create; the oldest go first).
pub const CHALLENGES_PER_REGISTRATION: i64 = 32;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChallengeRow {
    pub challenge_id: Uuid,
    pub registration_id: String,
    /// The client address the challenge was issued to (the throttle's and eviction's key).
    pub client_address: String,
    pub ek_hash: Vec<u8>,
    pub storage_root_key: Vec<u8>,
    /// The issued HMAC key, sealed under the service key `key_id`.
    pub sealed_key: Vec<u8>,
    pub key_id: String,
    /// The `authenticationKey` blob that carried the key to the TPM.
    pub authentication_key: Vec<u8>,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// The TPM enrollment group that admitted the device, when it has no individual
    /// enrollment yet (it joins once it proves this challenge's key).
    pub group_id: Option<String>,
    /// The attestation key the device showed (`TPM2B_PUBLIC`), and the SHA-256 of the nonce
    /// sealed to it (`dps_protocol::attest::challenge`).
    pub attestation_key: Option<Vec<u8>>,
    pub attestation_nonce_hash: Option<Vec<u8>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistrationRow {
    pub registration_id: String,
    pub operation_id: Uuid,
    pub status: Status,
    pub substatus: Option<Substatus>,
    pub assigned_hub: Option<String>,
    pub device_id: Option<String>,
    pub ek_hash: Vec<u8>,
    pub storage_root_key: Vec<u8>,
    pub sealed_key: Vec<u8>,
    pub key_id: String,
    pub authentication_key: Vec<u8>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub etag: Uuid,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// What the allocation webhook returned for the device (`registrationState.payload`).
    pub payload: Option<Json<Value>>,
    /// The twin the assignment starts with (the enrollment's or the webhook's `initialTwin`).
    pub initial_twin: Option<Json<Value>>,
    /// While `assigning`: when the decision is overdue.
    pub decide_by: Option<OffsetDateTime>,
    /// What the registration's attestation proved, under a policy that asks for it.
    pub attestation: Option<Json<AttestationRecord>>,
    /// The certificate issued for the registration's CSR, leaf first (DER).
    pub certificate_chain: Option<Vec<Vec<u8>>>,
}

/// What is recorded of an issued certificate (`issued_certificates`), written with the
/// registration that returns it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedRecord {
    /// Hex.
    pub serial: String,
    pub credential_policy: String,
    /// SHA-256 of the leaf's DER, hex.
    pub fingerprint: String,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
}

/// Deletes every challenge of a registration (it registered, or it is being deleted).
pub async fn delete_challenges(
    conn: &mut PgConnection,
    registration_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM challenges WHERE registration_id = $1")
        .bind(registration_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets the PCR values pinned with a registration (a new etag: a SAS step decided on the
/// old pins writes nothing). `false`: no such registration.
pub async fn forget_pins(
    conn: &mut PgConnection,
    registration_id: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE registrations
         SET attestation = attestation - 'pinnedPcrs',
             etag = CASE WHEN attestation ? 'pinnedPcrs' THEN gen_random_uuid() ELSE etag END
         WHERE registration_id = $1",
    )
    .bind(registration_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn get_registration(
    conn: &mut PgConnection,
    registration_id: &str,
) -> Result<Option<RegistrationRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM registrations WHERE registration_id = $1")
            .bind(registration_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Deletes a registration state and any pending challenge (with `if_match`, only if the etag
/// matches), in the store's lock order: challenge first, then the registration. Call it in a
/// transaction: a refused precondition must roll the challenge's deletion back.
pub async fn delete_registration(
    conn: &mut PgConnection,
    registration_id: &str,
    if_match: Option<Uuid>,
) -> Result<(), StoreError> {
    delete_challenges(conn, registration_id).await?;
    super::delete_if_match(
        conn,
        "registrations",
        "registration_id",
        registration_id,
        if_match,
    )
    .await
}

/// What the hub half needs to check a device's hub token: its registration, the device key it
/// proved (sealed), and whether its enrollment still admits it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HubIdentityRow {
    pub registration_id: String,
    pub sealed_key: Vec<u8>,
    pub key_id: String,
    /// `None` when the enrollment was deleted.
    pub provisioning_status: Option<super::ProvisioningStatus>,
}

/// The device assigned to `hub` as `device_id` (one at most: `registrations_hub_device`). Its
/// enrollment counts only while it names the EK the key was issued to: an owner who replaced
/// the EK (or deleted and re-created the enrollment with another) has revoked the old TPM, and
/// it reads as deleted here until the new one registers.
pub async fn hub_identity(
    conn: &mut PgConnection,
    hub: &str,
    device_id: &str,
) -> Result<Option<HubIdentityRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT r.registration_id, r.sealed_key, r.key_id,
                CASE WHEN g.provisioning_status = 'disabled' THEN 'disabled'
                     ELSE e.provisioning_status END AS provisioning_status
         FROM registrations r
              LEFT JOIN enrollments e
                     ON e.registration_id = r.registration_id AND e.ek_hash = r.ek_hash
              LEFT JOIN enrollment_groups g ON g.group_id = e.group_id
         WHERE lower(r.assigned_hub) = lower($1) AND r.device_id = $2 AND r.status = 'assigned'",
    )
    .bind(hub)
    .bind(device_id)
    .fetch_optional(conn)
    .await?)
}

/// A device's assignment before this registration (read by `device_steps::register_view`,
/// decided on by `allocation::policy`).
#[derive(Debug, Clone, PartialEq)]
pub struct Previous {
    pub hub: String,
    pub device_id: Option<String>,
    pub initial_twin: Option<Value>,
}
