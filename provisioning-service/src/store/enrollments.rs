//! Individual enrollments.

use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{is_unique_violation, StoreError};
use crate::enrollment::ProvisioningStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EnrollmentRow {
    pub registration_id: String,
    pub endorsement_key: Vec<u8>,
    pub ek_hash: Vec<u8>,
    pub device_id: Option<String>,
    pub iot_hub_host_name: Option<String>,
    pub provisioning_status: ProvisioningStatus,
    pub extra: Json<serde_json::Value>,
    pub etag: Uuid,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An enrollment as written; etag and timestamps are the store's.
#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub registration_id: String,
    pub endorsement_key: Vec<u8>,
    pub ek_hash: Vec<u8>,
    pub device_id: Option<String>,
    pub iot_hub_host_name: Option<String>,
    pub provisioning_status: ProvisioningStatus,
    pub extra: serde_json::Value,
}

/// A statement over the enrollment's columns, bound in the order every write here uses:
/// $1 registration id … $7 extra, $8 a new etag, $9 `now`.
fn with_columns<'q>(
    sql: &'static str,
    e: &'q NewEnrollment,
    now: OffsetDateTime,
) -> QueryAs<'q, Postgres, EnrollmentRow, PgArguments> {
    sqlx::query_as(sql)
        .bind(&e.registration_id)
        .bind(&e.endorsement_key)
        .bind(&e.ek_hash)
        .bind(&e.device_id)
        .bind(&e.iot_hub_host_name)
        .bind(e.provisioning_status)
        .bind(Json(&e.extra))
        .bind(Uuid::new_v4())
        .bind(now)
}

fn map_unique(err: sqlx::Error) -> StoreError {
    if is_unique_violation(&err, "enrollments_ek_hash_key") {
        StoreError::EkTaken
    } else {
        StoreError::Db(err)
    }
}

pub async fn get(
    conn: &mut PgConnection,
    registration_id: &str,
) -> Result<Option<EnrollmentRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM enrollments WHERE registration_id = $1")
            .bind(registration_id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The enrollment of an EK, by the SHA-256 of its `TPM2B_PUBLIC` (unique).
pub async fn get_by_ek_hash(
    conn: &mut PgConnection,
    ek_hash: &[u8],
) -> Result<Option<EnrollmentRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM enrollments WHERE ek_hash = $1")
            .bind(ek_hash)
            .fetch_optional(conn)
            .await?,
    )
}

/// Creates only: `Exists` if the registration id exists.
pub async fn create(
    conn: &mut PgConnection,
    e: &NewEnrollment,
    now: OffsetDateTime,
) -> Result<EnrollmentRow, StoreError> {
    with_columns(
        "INSERT INTO enrollments (registration_id, endorsement_key, ek_hash, device_id, iot_hub_host_name,
                                  provisioning_status, extra, etag, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (registration_id) DO NOTHING
         RETURNING *",
        e,
        now,
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_unique)?
    .ok_or(StoreError::Exists)
}

/// Creates or updates. With `if_match`, only updates an enrollment whose etag matches. Writing
/// what is already stored changes nothing (not even the etag), so re-running a bulk load is a
/// no-op. Returns the stored row and whether it changed.
pub async fn upsert(
    conn: &mut PgConnection,
    e: &NewEnrollment,
    if_match: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<(EnrollmentRow, bool), StoreError> {
    let written: Option<EnrollmentRow> = if let Some(etag) = if_match {
        with_columns(
            "UPDATE enrollments SET endorsement_key = $2, ek_hash = $3, device_id = $4,
                    iot_hub_host_name = $5, provisioning_status = $6, extra = $7, etag = $8, updated_at = $9
             WHERE registration_id = $1 AND etag = $10
             RETURNING *",
            e,
            now,
        )
        .bind(etag)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_unique)?
    } else {
        with_columns(
            "INSERT INTO enrollments (registration_id, endorsement_key, ek_hash, device_id, iot_hub_host_name,
                                      provisioning_status, extra, etag, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (registration_id) DO UPDATE SET
                 endorsement_key = EXCLUDED.endorsement_key, ek_hash = EXCLUDED.ek_hash,
                 device_id = EXCLUDED.device_id, iot_hub_host_name = EXCLUDED.iot_hub_host_name,
                 provisioning_status = EXCLUDED.provisioning_status, extra = EXCLUDED.extra,
                 etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at
             WHERE (enrollments.endorsement_key, enrollments.device_id, enrollments.iot_hub_host_name,
                    enrollments.provisioning_status, enrollments.extra)
                   IS DISTINCT FROM
                   (EXCLUDED.endorsement_key, EXCLUDED.device_id, EXCLUDED.iot_hub_host_name,
                    EXCLUDED.provisioning_status, EXCLUDED.extra)
             RETURNING *",
            e,
            now,
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_unique)?
    };
    if let Some(row) = written {
        return Ok((row, true));
    }
    match get(conn, &e.registration_id).await? {
        Some(row) if if_match.is_none() || if_match == Some(row.etag) => Ok((row, false)),
        Some(_) => Err(StoreError::PreconditionFailed),
        None => Err(StoreError::NotFound),
    }
}

/// Deletes; with `if_match`, only if the etag matches.
pub async fn delete(
    conn: &mut PgConnection,
    registration_id: &str,
    if_match: Option<Uuid>,
) -> Result<(), StoreError> {
    super::delete_if_match(conn, "enrollments", registration_id, if_match).await
}

/// A page of enrollments in registration id order, after `after`.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<EnrollmentRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT * FROM enrollments WHERE ($1::text IS NULL OR registration_id > $1)
         ORDER BY registration_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
