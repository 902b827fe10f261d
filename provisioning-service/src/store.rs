//! Every SQL statement of the service. Runtime-checked queries (`query_as` + `FromRow`), so the
//! build needs no database; each function is covered by the integration tests.
//!
//! **One connection per request.** Every function takes `&mut PgConnection`: a pooled
//! connection, or an open transaction (`&mut *tx`) where a service-API call needs several
//! statements to be one. The device steps need none: each of their statements
//! (`device_steps`) is atomic on its own and re-checks what the step read before it writes.
//! A request never holds two connections (with a pool of N, N concurrent requests cannot wait
//! on each other).
//!
//! **Lock order.** A transaction that writes or locks more than one of these tables takes their
//! rows in this order, so two steps can never wait on each other in a cycle:
//!
//! 1. `throttle` (the challenge step's counters; in the same statement as the challenge when
//!    its key was issued first: `device_steps::challenge_gate`),
//! 2. `challenges` (a new challenge first takes its registration's advisory lock, which
//!    nothing else waits on, and nothing holding it waits on a throttle row:
//!    `device_steps::put_challenge`),
//! 3. `registrations`.
//!
//! `enrollments` rows are only read by the device steps (never locked), and enrollment writes
//! touch no other table. The housekeeping sweep deletes in the same order.
//!
//! Uses: nothing of the crate (the layers table, docs/architecture.md).

pub mod certificates;
pub mod device_steps;
pub mod enrollments;
pub mod groups;
pub mod housekeeping;
pub mod lease;
pub mod registrations;
pub mod throttle;

/// What a store call can fail with, beyond the database itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("etag does not match")]
    PreconditionFailed,
    #[error("this endorsement key is enrolled under another registration id")]
    EkTaken,
    #[error("an enrollment with this registration id exists")]
    Exists,
    #[error("this registration id appears earlier in the same batch")]
    RepeatedInBatch,
    #[error("another registration holds this device id on this hub")]
    DeviceIdTaken,
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// Deletes the row whose `key` column is `id` from `table` (with `if_match`, only if its etag
/// matches): `NotFound` if there is none, `PreconditionFailed` if the etag differs.
async fn delete_if_match(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    key: &'static str,
    id: &str,
    if_match: Option<uuid::Uuid>,
) -> Result<(), StoreError> {
    // `table` and `key` are this module's constants, never input.
    let deleted = sqlx::query(&format!(
        "DELETE FROM {table} WHERE {key} = $1 AND ($2::uuid IS NULL OR etag = $2)"
    ))
    .bind(id)
    .bind(if_match)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if deleted == 1 {
        return Ok(());
    }
    let exists: Option<i32> =
        sqlx::query_scalar(&format!("SELECT 1 FROM {table} WHERE {key} = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Err(match exists {
        Some(_) => StoreError::PreconditionFailed,
        None => StoreError::NotFound,
    })
}

/// A page of `table`'s rows in `key` order, after `after`, at most `limit` (the service API's
/// queries page enrollments and groups alike).
async fn page<R>(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    key: &'static str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<R>, StoreError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    // `table` and `key` are this module's constants, never input.
    Ok(sqlx::query_as(&format!(
        "SELECT * FROM {table} WHERE ($1::text IS NULL OR {key} > $1) ORDER BY {key} LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Whether `err` is a unique violation of `constraint`.
pub(crate) fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint))
}

/// The pool every service instance uses: `max_connections`, and no wait for a connection longer
/// than `acquire_timeout`, so that while the database is away requests fail fast (503) instead
/// of queueing for sqlx's default 30 s.
///
/// No ping before each checkout (sqlx's default): it cost a round trip per request. A broken
/// connection shows as the request's error instead (503) and is not returned to the pool, and
/// every connection is replaced periodically, so a restarted or failed-over Postgres is picked
/// up without a probe per request. (sqlx 0.8 still confirms every return to the pool with a
/// Sync, `PoolConnection::return_to_pool`; a device step's clean connection goes to the next
/// request instead, [`lease`].)
///
/// All `max_connections` are opened at start and kept open (sqlx reopens one that closes): a
/// request waiting for a connection stops waiting when another request hands it one
/// ([`lease`]), and had the pool been opening a connection for it, the abandoned connect would
/// cost Postgres a backend started and ended for nothing. With the pool full, a wait is only
/// ever for a free connection, which is free to abandon. (Measured: 32 requests sharing 4
/// connections opened 962 backends in 2 s while the pool started empty, none when full.)
#[must_use]
pub fn pool_options(
    max_connections: u32,
    acquire_timeout: std::time::Duration,
) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .min_connections(max_connections)
        .max_lifetime(std::time::Duration::from_secs(30 * 60))
}

/// Whether the database answers a statement (the readiness probe).
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Whether an enrollment (or group) admits its devices: stored as text in `provisioning_status`,
/// and DPS's `provisioningStatus` on the wire.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}
