//! Fixed-window counters in Postgres, so every instance sees the same count. A count is one
//! upsert ([`hit_cte!`]) that a protocol step writes into its own statement, so that counting
//! a request costs no round trip of its own.

/// One hit on a throttle bucket, as the body of a `WITH hit AS (...)`: `$bucket_row` is a
/// `SELECT` of one row `(bucket, now, 1)` (no row: nothing counted), `$window_secs` the window's
/// length in seconds. It returns the bucket's `count` and `window_start` after the hit. Fixed
/// windows: the first hit after a window ended starts a new one.
///
/// Written inline rather than calling the PL/pgSQL function `throttle_hit` (migration 0006,
/// which older instances may still call): the function's call and result materialisation cost
/// Postgres more than the upsert itself.
macro_rules! hit_cte {
    ($bucket_row:expr, $window_secs:literal) => {
        concat!(
            "INSERT INTO throttle AS t (bucket, window_start, count) ",
            $bucket_row,
            " ON CONFLICT (bucket) DO UPDATE SET
                 count = CASE WHEN t.window_start <= EXCLUDED.window_start - make_interval(secs => ",
            $window_secs,
            ") THEN 1 ELSE t.count + 1 END,
                 window_start = CASE WHEN t.window_start <= EXCLUDED.window_start - make_interval(secs => ",
            $window_secs,
            ") THEN EXCLUDED.window_start ELSE t.window_start END
             RETURNING t.count, t.window_start"
        )
    };
}
pub(crate) use hit_cte;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;

/// A fixed-window rate: at most `count` requests per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub window_secs: u64,
}

/// A bucket's counter after one hit, as [`hit_cte!`] returns it.
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
    let counted: Counted = sqlx::query_as(concat!(
        "WITH hit AS (",
        hit_cte!("SELECT $1, $2::timestamptz, 1", "$3"),
        ") SELECT count, window_start FROM hit"
    ))
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
