//! Fixed-window counters in Postgres, so every instance sees the same count. The count itself is
//! the SQL function `throttle_hit` (migration 0006), so that a protocol step can count a request
//! in the same statement as the rest of its work.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;
use crate::settings::Limit;

/// A bucket's counter after one hit, as `throttle_hit` returns it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Counted {
    #[sqlx(rename = "count")]
    pub hits: i32,
    pub window_start: OffsetDateTime,
}

impl Counted {
    /// `Some(seconds until the window ends)` if this hit is over `limit`.
    #[must_use]
    pub fn refusal(self, limit: Limit, now: OffsetDateTime) -> Option<u64> {
        refusal(self.hits, self.window_start, limit, now)
    }
}

/// `limit`'s window in seconds, as the SQL side takes it.
#[must_use]
pub fn window_secs(limit: Limit) -> i64 {
    i64::try_from(limit.window_secs).unwrap_or(i64::MAX)
}

/// Counts one request in `bucket`. Returns `Some(seconds until the window ends)` if this request
/// is over the limit.
pub async fn hit(
    conn: &mut PgConnection,
    bucket: &str,
    limit: Limit,
    now: OffsetDateTime,
) -> Result<Option<u64>, StoreError> {
    let counted: Counted = sqlx::query_as("SELECT * FROM throttle_hit($1, $2, $3)")
        .bind(bucket)
        .bind(now)
        .bind(window_secs(limit))
        .fetch_one(conn)
        .await?;
    Ok(counted.refusal(limit, now))
}

/// `Some(seconds until the window that began at `window_start` ends)` when `count` is over
/// the limit in a window still open at `now`.
fn refusal(
    count: i32,
    window_start: OffsetDateTime,
    limit: Limit,
    now: OffsetDateTime,
) -> Option<u64> {
    let window = window_secs(limit);
    let elapsed = (now - window_start).whole_seconds().max(0);
    let over = u32::try_from(count).unwrap_or(u32::MAX) > limit.count;
    (over && elapsed < window).then(|| u64::try_from((window - elapsed).max(1)).unwrap_or(1))
}

/// Whether `bucket` is at its limit now, without counting: `Some(seconds until the window
/// ends)` if the next [`hit`] would be refused.
pub async fn peek(
    conn: &mut PgConnection,
    bucket: &str,
    limit: Limit,
    now: OffsetDateTime,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(i32, OffsetDateTime)> =
        sqlx::query_as("SELECT count, window_start FROM throttle WHERE bucket = $1")
            .bind(bucket)
            .fetch_optional(conn)
            .await?;
    // At the limit already: the next hit would be over it.
    Ok(row.and_then(|(count, window_start)| {
        refusal(count.saturating_add(1), window_start, limit, now)
    }))
}
