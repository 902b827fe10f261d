//! Challenges (issued, not yet proven keys) and registration states.

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChallengeRow {
    pub registration_id: String,
    pub ek_hash: Vec<u8>,
    pub storage_root_key: Vec<u8>,
    pub sealed_key: Vec<u8>,
    pub key_id: String,
    pub authentication_key: Vec<u8>,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistrationRow {
    pub registration_id: String,
    pub operation_id: Uuid,
    pub status: String,
    pub substatus: Option<String>,
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
}

/// Records a new challenge, replacing any older one: only the newest is live.
pub async fn put_challenge(pool: &PgPool, c: &ChallengeRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO challenges (registration_id, ek_hash, storage_root_key, sealed_key, key_id,
                                 authentication_key, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (registration_id) DO UPDATE SET
             ek_hash = EXCLUDED.ek_hash, storage_root_key = EXCLUDED.storage_root_key,
             sealed_key = EXCLUDED.sealed_key, key_id = EXCLUDED.key_id,
             authentication_key = EXCLUDED.authentication_key,
             issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at",
    )
    .bind(&c.registration_id)
    .bind(&c.ek_hash)
    .bind(&c.storage_root_key)
    .bind(&c.sealed_key)
    .bind(&c.key_id)
    .bind(&c.authentication_key)
    .bind(c.issued_at)
    .bind(c.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The live challenge and the registration state of a device, locked for the rest of `tx`
/// (two concurrent registrations of one device take turns here).
pub async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    registration_id: &str,
) -> Result<(Option<ChallengeRow>, Option<RegistrationRow>), StoreError> {
    let challenge =
        sqlx::query_as("SELECT * FROM challenges WHERE registration_id = $1 FOR UPDATE")
            .bind(registration_id)
            .fetch_optional(&mut **tx)
            .await?;
    let registration =
        sqlx::query_as("SELECT * FROM registrations WHERE registration_id = $1 FOR UPDATE")
            .bind(registration_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok((challenge, registration))
}

pub async fn delete_challenge(
    tx: &mut Transaction<'_, Postgres>,
    registration_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM challenges WHERE registration_id = $1")
        .bind(registration_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the registration state (created or replaced), keeping the first `created_at`.
pub async fn put_registration(
    tx: &mut Transaction<'_, Postgres>,
    r: &RegistrationRow,
) -> Result<RegistrationRow, StoreError> {
    Ok(sqlx::query_as(
        "INSERT INTO registrations (registration_id, operation_id, status, substatus, assigned_hub, device_id,
                                    ek_hash, storage_root_key, sealed_key, key_id, authentication_key,
                                    error_code, error_message, etag, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
         ON CONFLICT (registration_id) DO UPDATE SET
             operation_id = EXCLUDED.operation_id, status = EXCLUDED.status, substatus = EXCLUDED.substatus,
             assigned_hub = EXCLUDED.assigned_hub, device_id = EXCLUDED.device_id, ek_hash = EXCLUDED.ek_hash,
             storage_root_key = EXCLUDED.storage_root_key, sealed_key = EXCLUDED.sealed_key,
             key_id = EXCLUDED.key_id, authentication_key = EXCLUDED.authentication_key,
             error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
             etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at
         RETURNING *",
    )
    .bind(&r.registration_id)
    .bind(r.operation_id)
    .bind(&r.status)
    .bind(&r.substatus)
    .bind(&r.assigned_hub)
    .bind(&r.device_id)
    .bind(&r.ek_hash)
    .bind(&r.storage_root_key)
    .bind(&r.sealed_key)
    .bind(&r.key_id)
    .bind(&r.authentication_key)
    .bind(r.error_code)
    .bind(&r.error_message)
    .bind(r.etag)
    .bind(r.updated_at)
    .fetch_one(&mut **tx)
    .await?)
}

/// The live challenge and the registration state, unlocked (for read-only SAS calls).
pub async fn get_both(
    pool: &PgPool,
    registration_id: &str,
) -> Result<(Option<ChallengeRow>, Option<RegistrationRow>), StoreError> {
    let challenge = sqlx::query_as("SELECT * FROM challenges WHERE registration_id = $1")
        .bind(registration_id)
        .fetch_optional(pool)
        .await?;
    Ok((challenge, get_registration(pool, registration_id).await?))
}

pub async fn get_registration(
    pool: &PgPool,
    registration_id: &str,
) -> Result<Option<RegistrationRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM registrations WHERE registration_id = $1")
            .bind(registration_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Deletes a registration state (and any pending challenge); with `if_match`, only if the etag
/// matches.
pub async fn delete_registration(
    pool: &PgPool,
    registration_id: &str,
    if_match: Option<Uuid>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query(
        "DELETE FROM registrations WHERE registration_id = $1 AND ($2::uuid IS NULL OR etag = $2)",
    )
    .bind(registration_id)
    .bind(if_match)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT registration_id FROM registrations WHERE registration_id = $1")
                .bind(registration_id)
                .fetch_optional(&mut *tx)
                .await?;
        return Err(if exists.is_some() {
            StoreError::PreconditionFailed
        } else {
            StoreError::NotFound
        });
    }
    sqlx::query("DELETE FROM challenges WHERE registration_id = $1")
        .bind(registration_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
