//! Housekeeping: expired challenges and ended throttle windows are deleted by a periodic sweep,
//! which one instance at a time runs (a transaction-scoped advisory lock; the others skip their
//! turn), bounded in rows per run so it never holds locks for long.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;

/// The advisory lock key of the sweep ("dps-swp" in ASCII).
const SWEEP_LOCK: i64 = 0x0064_7073_2d73_7770;

/// What one sweep deleted; `None` if another instance was sweeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub throttle_rows: u64,
    pub challenges: u64,
}

/// Deletes at most `batch` throttle rows whose window began before `stale_before` and at most
/// `batch` challenges expired by `now`, in the store's lock order. Call it with a transaction
/// (`&mut *tx`) and commit: the advisory lock lasts until then.
pub async fn sweep(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    stale_before: OffsetDateTime,
    batch: i64,
) -> Result<Option<Swept>, StoreError> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let throttle_rows = sqlx::query(
        "DELETE FROM throttle WHERE bucket IN (
             SELECT bucket FROM throttle WHERE window_start < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(stale_before)
    .bind(batch)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let challenges = sqlx::query(
        "DELETE FROM challenges WHERE challenge_id IN (
             SELECT challenge_id FROM challenges WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(batch)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(Some(Swept {
        throttle_rows,
        challenges,
    }))
}
