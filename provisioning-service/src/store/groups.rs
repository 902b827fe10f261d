//! TPM enrollment groups, and the individual records of the devices that joined them.

use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use super::enrollments::map_unique;
use super::ProvisioningStatus;
use super::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub group_id: String,
    pub attestation: Json<serde_json::Value>,
    pub iot_hub_host_name: Option<String>,
    pub provisioning_status: ProvisioningStatus,
    pub extra: Json<serde_json::Value>,
    pub etag: Uuid,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A group as written; etag and timestamps are the store's.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub group_id: String,
    pub attestation: serde_json::Value,
    pub iot_hub_host_name: Option<String>,
    pub provisioning_status: ProvisioningStatus,
    pub extra: serde_json::Value,
}

pub async fn get(conn: &mut PgConnection, group_id: &str) -> Result<Option<GroupRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM enrollment_groups WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// How many devices have joined `group_id`.
pub async fn members(conn: &mut PgConnection, group_id: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM enrollments WHERE group_id = $1")
            .bind(group_id)
            .fetch_one(conn)
            .await?,
    )
}

/// A statement over the group's columns, bound in the order every write here uses: $1 group id
/// … $5 extra, $6 a new etag, $7 `now`.
fn with_columns<'q>(
    sql: &'static str,
    g: &'q NewGroup,
    now: OffsetDateTime,
) -> QueryAs<'q, Postgres, GroupRow, PgArguments> {
    sqlx::query_as(sql)
        .bind(&g.group_id)
        .bind(Json(&g.attestation))
        .bind(&g.iot_hub_host_name)
        .bind(g.provisioning_status)
        .bind(Json(&g.extra))
        .bind(Uuid::new_v4())
        .bind(now)
}

/// Creates or replaces (with `if_match`, only that version). Writing what is stored changes
/// nothing, not even the etag. Returns the stored row.
pub async fn upsert(
    conn: &mut PgConnection,
    g: &NewGroup,
    if_match: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<GroupRow, StoreError> {
    let written = match if_match {
        None => {
            with_columns(
                "INSERT INTO enrollment_groups (group_id, attestation, iot_hub_host_name,
                                                provisioning_status, extra, etag, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (group_id) DO UPDATE SET
                     attestation = EXCLUDED.attestation, iot_hub_host_name = EXCLUDED.iot_hub_host_name,
                     provisioning_status = EXCLUDED.provisioning_status, extra = EXCLUDED.extra,
                     etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at
                 WHERE (enrollment_groups.attestation, enrollment_groups.iot_hub_host_name,
                        enrollment_groups.provisioning_status, enrollment_groups.extra)
                       IS DISTINCT FROM
                       (EXCLUDED.attestation, EXCLUDED.iot_hub_host_name,
                        EXCLUDED.provisioning_status, EXCLUDED.extra)
                 RETURNING *",
                g,
                now,
            )
            .fetch_optional(&mut *conn)
            .await?
        }
        Some(etag) => {
            with_columns(
                "UPDATE enrollment_groups SET attestation = $2, iot_hub_host_name = $3,
                        provisioning_status = $4, extra = $5, etag = $6, updated_at = $7
                 WHERE group_id = $1 AND etag = $8 RETURNING *",
                g,
                now,
            )
            .bind(etag)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    if let Some(row) = written {
        return Ok(row);
    }
    match get(conn, &g.group_id).await? {
        Some(row) if if_match.is_none() => Ok(row),
        Some(_) => Err(StoreError::PreconditionFailed),
        None => Err(StoreError::NotFound),
    }
}

/// Creates; `Exists` if the group id is taken.
pub async fn create(
    conn: &mut PgConnection,
    g: &NewGroup,
    now: OffsetDateTime,
) -> Result<GroupRow, StoreError> {
    with_columns(
        "INSERT INTO enrollment_groups (group_id, attestation, iot_hub_host_name, provisioning_status,
                                        extra, etag, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (group_id) DO NOTHING RETURNING *",
        g,
        now,
    )
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::Exists)
}

/// Deletes (with `if_match`, only that version), and with it the records of the devices that
/// joined.
pub async fn delete(
    conn: &mut PgConnection,
    group_id: &str,
    if_match: Option<Uuid>,
) -> Result<(), StoreError> {
    super::delete_if_match(conn, "enrollment_groups", "group_id", group_id, if_match).await
}

/// A page of groups in id order, after `after`.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<GroupRow>, StoreError> {
    super::page(conn, "enrollment_groups", "group_id", after, limit).await
}

/// An enabled group and how many devices have joined it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EnabledGroup {
    #[sqlx(flatten)]
    pub group: GroupRow,
    pub members: i64,
}

/// The enabled groups, in id order (the order a device is tried against them), in one
/// statement.
pub async fn enabled(conn: &mut PgConnection) -> Result<Vec<EnabledGroup>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT g.*, (SELECT count(*) FROM enrollments e WHERE e.group_id = g.group_id) AS members
         FROM enrollment_groups g WHERE provisioning_status = 'enabled' ORDER BY group_id",
    )
    .fetch_all(conn)
    .await?)
}

/// What a device joining a group is recorded with.
#[derive(Debug, Clone)]
pub struct Joining<'a> {
    pub group_id: &'a str,
    pub registration_id: &'a str,
    pub endorsement_key: &'a [u8],
    pub ek_hash: &'a [u8],
}

/// Records a device as a member of its group: an enabled individual enrollment linked to it,
/// if the group is still enabled and under its cap. One transaction: the group row is locked
/// first, so concurrent joins count one after another. `true`: the registration id is enrolled
/// now (by this join, or meanwhile by another, which then wins); `false`: the group is
/// disabled, deleted or full.
pub async fn join(
    conn: &mut PgConnection,
    j: &Joining<'_>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // The cap as the group holds it now (`tpmEkCertificate.maxDevices`), under the lock.
    let open: Option<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM enrollments WHERE group_id = $1),
                (attestation->>'maxDevices')::bigint
         FROM enrollment_groups WHERE group_id = $1 AND provisioning_status = 'enabled'
         FOR UPDATE",
    )
    .bind(j.group_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((members, cap)) = open else {
        return Ok(false);
    };
    if cap.is_some_and(|cap| members >= cap) {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO enrollments (registration_id, endorsement_key, ek_hash, provisioning_status,
                                  extra, etag, created_at, updated_at, group_id)
         VALUES ($1, $2, $3, 'enabled', '{}'::jsonb, $4, $5, $5, $6)
         ON CONFLICT (registration_id) DO NOTHING",
    )
    .bind(j.registration_id)
    .bind(j.endorsement_key)
    .bind(j.ek_hash)
    .bind(Uuid::new_v4())
    .bind(now)
    .bind(j.group_id)
    .execute(&mut *tx)
    .await
    .map_err(map_unique)?;
    tx.commit().await?;
    Ok(true)
}

/// A page of the registration states of a group's devices, in registration id order.
pub async fn registrations_page(
    conn: &mut PgConnection,
    group_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<super::registrations::RegistrationRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT r.* FROM registrations r JOIN enrollments e USING (registration_id)
         WHERE e.group_id = $1 AND ($2::text IS NULL OR r.registration_id > $2)
         ORDER BY r.registration_id LIMIT $3",
    )
    .bind(group_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
