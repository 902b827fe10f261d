//! Individual enrollments.

use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ProvisioningStatus;
use super::{is_unique_violation, StoreError};

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
    /// The TPM enrollment group this device joined (its record was made when it did).
    pub group_id: Option<String>,
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

/// The upsert's conflict clause, shared by [`upsert`] and [`put_batch`]: an existing enrollment
/// is replaced only if something in it differs, so writing what is stored changes nothing (not
/// even the etag) and a re-run bulk load is a no-op.
macro_rules! update_if_changed {
    () => {
        "ON CONFLICT (registration_id) DO UPDATE SET
             endorsement_key = EXCLUDED.endorsement_key, ek_hash = EXCLUDED.ek_hash,
             device_id = EXCLUDED.device_id, iot_hub_host_name = EXCLUDED.iot_hub_host_name,
             provisioning_status = EXCLUDED.provisioning_status, extra = EXCLUDED.extra,
             etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at
         WHERE (enrollments.endorsement_key, enrollments.device_id, enrollments.iot_hub_host_name,
                enrollments.provisioning_status, enrollments.extra)
               IS DISTINCT FROM
               (EXCLUDED.endorsement_key, EXCLUDED.device_id, EXCLUDED.iot_hub_host_name,
                EXCLUDED.provisioning_status, EXCLUDED.extra)"
    };
}

pub(super) fn map_unique(err: sqlx::Error) -> StoreError {
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
            concat!(
                "INSERT INTO enrollments (registration_id, endorsement_key, ek_hash, device_id, iot_hub_host_name,
                                          provisioning_status, extra, etag, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ",
                update_if_changed!(),
                " RETURNING *"
            ),
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
    super::delete_if_match(
        conn,
        "enrollments",
        "registration_id",
        registration_id,
        if_match,
    )
    .await
}

/// A page of enrollments in registration id order, after `after`.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<EnrollmentRow>, StoreError> {
    super::page(conn, "enrollments", "registration_id", after, limit).await
}

/// What [`put_batch`] did with one enrollment of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    Written,
    /// Already stored exactly so: nothing changed, not even the etag.
    Unchanged,
    Refused(BatchRefusal),
}

/// Why [`put_batch`] refused an enrollment (nothing of it was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRefusal {
    /// Its EK is enrolled under another registration id (stored, or earlier in the batch).
    EkTaken,
    /// Create only: the registration id exists.
    Exists,
    /// The registration id appears earlier in the same batch.
    Repeated,
}

impl From<BatchRefusal> for StoreError {
    fn from(r: BatchRefusal) -> Self {
        match r {
            BatchRefusal::EkTaken => StoreError::EkTaken,
            BatchRefusal::Exists => StoreError::Exists,
            BatchRefusal::Repeated => StoreError::RepeatedInBatch,
        }
    }
}

/// Creates (`create_only`) or creates-or-updates a batch of enrollments in one statement: the
/// rows travel as arrays (`UNNEST`), are checked against the table and each other, and the
/// admitted ones are upserted together. Same rules as [`create`] and [`upsert`] one by one
/// (writing what is stored changes nothing), with one difference: an EK that another row of
/// the same batch frees is still taken for this batch. Returns one outcome per input row, in
/// order. A concurrent writer taking an EK between the check and the insert fails the whole
/// statement (`EkTaken` as a database error); the caller can then go row by row.
pub async fn put_batch(
    conn: &mut PgConnection,
    batch: &[NewEnrollment],
    create_only: bool,
    now: OffsetDateTime,
) -> Result<Vec<BatchOutcome>, StoreError> {
    let line: Vec<i32> = (0..).take(batch.len()).collect();
    let column = |f: fn(&NewEnrollment) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    let rows: Vec<(i32, bool, bool, bool, bool, bool)> = sqlx::query_as(
        concat!(
            "WITH input AS (
             SELECT * FROM UNNEST($1::int[], $2::text[], $3::bytea[], $4::bytea[], $5::text[],
                                  $6::text[], $7::text[], $8::jsonb[])
                 AS i(line, registration_id, endorsement_key, ek_hash, device_id,
                      iot_hub_host_name, provisioning_status, extra)
         ), checked AS (
             SELECT i.*,
                    EXISTS (SELECT 1 FROM enrollments e
                            WHERE e.ek_hash = i.ek_hash AND e.registration_id <> i.registration_id)
                      OR row_number() OVER (PARTITION BY i.ek_hash ORDER BY i.line) > 1 AS ek_taken,
                    row_number() OVER (PARTITION BY i.registration_id ORDER BY i.line) > 1 AS repeated,
                    EXISTS (SELECT 1 FROM enrollments e WHERE e.registration_id = i.registration_id) AS existed
             FROM input i
         ), written AS (
             INSERT INTO enrollments (registration_id, endorsement_key, ek_hash, device_id, iot_hub_host_name,
                                      provisioning_status, extra, etag, created_at, updated_at)
             SELECT registration_id, endorsement_key, ek_hash, device_id, iot_hub_host_name,
                    provisioning_status, extra, gen_random_uuid(), $9, $9
             FROM checked
             WHERE NOT ek_taken AND NOT repeated AND NOT ($10 AND existed) ",
            update_if_changed!(),
            " RETURNING registration_id
         )
         SELECT c.line, c.ek_taken, c.repeated, c.existed, $10 AS create_only,
                w.registration_id IS NOT NULL AS written
         FROM checked c LEFT JOIN written w ON w.registration_id = c.registration_id AND NOT c.repeated
         ORDER BY c.line"
        ),
    )
    .bind(&line)
    .bind(batch.iter().map(|e| e.registration_id.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|e| e.endorsement_key.as_slice()).collect::<Vec<_>>())
    .bind(batch.iter().map(|e| e.ek_hash.as_slice()).collect::<Vec<_>>())
    .bind(column(|e| e.device_id.clone()))
    .bind(column(|e| e.iot_hub_host_name.clone()))
    .bind(batch.iter().map(|e| e.provisioning_status).collect::<Vec<_>>())
    .bind(batch.iter().map(|e| Json(&e.extra)).collect::<Vec<_>>())
    .bind(now)
    .bind(create_only)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_unique)?;
    Ok(rows
        .into_iter()
        .map(|(_, ek_taken, repeated, existed, create_only, written)| {
            if repeated {
                BatchOutcome::Refused(BatchRefusal::Repeated)
            } else if ek_taken {
                BatchOutcome::Refused(BatchRefusal::EkTaken)
            } else if create_only && existed {
                BatchOutcome::Refused(BatchRefusal::Exists)
            } else if written {
                BatchOutcome::Written
            } else {
                BatchOutcome::Unchanged
            }
        })
        .collect())
}

/// SHA-256 of an EK's `TPM2B_PUBLIC`: how enrollments, registrations and throttles know an EK.
#[must_use]
pub fn ek_hash(ek_tpm2b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(ek_tpm2b).to_vec()
}
