//! Fixed-window counters in Postgres, so every instance sees the same count.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;
use crate::settings::Limit;

/// Counts one request in `bucket`. Returns `Some(seconds until the window ends)` if this request
/// is over the limit.
pub async fn hit(
    conn: &mut PgConnection,
    bucket: &str,
    limit: Limit,
    now: OffsetDateTime,
) -> Result<Option<u64>, StoreError> {
    let window = i64::try_from(limit.window_secs).unwrap_or(i64::MAX);
    let (count, window_start): (i32, OffsetDateTime) = sqlx::query_as(
        "INSERT INTO throttle (bucket, window_start, count) VALUES ($1, $2, 1)
         ON CONFLICT (bucket) DO UPDATE SET
             count = CASE WHEN throttle.window_start <= $2 - make_interval(secs => $3::bigint) THEN 1 ELSE throttle.count + 1 END,
             window_start = CASE WHEN throttle.window_start <= $2 - make_interval(secs => $3::bigint) THEN $2 ELSE throttle.window_start END
         RETURNING count, window_start",
    )
    .bind(bucket)
    .bind(now)
    .bind(window)
    .fetch_one(conn)
    .await?;
    Ok(refusal(count, window_start, limit.count, window, now))
}

/// `Some(seconds until the window that began at `window_start` ends)` when `count` is over
/// `allowed` in a window still open at `now`.
fn refusal(
    count: i32,
    window_start: OffsetDateTime,
    allowed: u32,
    window: i64,
    now: OffsetDateTime,
) -> Option<u64> {
    let elapsed = (now - window_start).whole_seconds().max(0);
    let over = u32::try_from(count).unwrap_or(u32::MAX) > allowed;
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
    let window = i64::try_from(limit.window_secs).unwrap_or(i64::MAX);
    let row: Option<(i32, OffsetDateTime)> =
        sqlx::query_as("SELECT count, window_start FROM throttle WHERE bucket = $1")
            .bind(bucket)
            .fetch_optional(conn)
            .await?;
    // At the limit already: the next hit would be over it.
    Ok(row.and_then(|(count, window_start)| {
        refusal(
            count.saturating_add(1),
            window_start,
            limit.count,
            window,
            now,
        )
    }))
}
