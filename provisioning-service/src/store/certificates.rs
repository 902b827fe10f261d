//! Issued certificates (`issued_certificates`): written with the registration that returns them
//! (`device_steps::assign`), revoked by the enrollment triggers of migration 0015, read here for
//! the CRLs.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;

/// A revoked certificate, as a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Revoked {
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
}

/// The certificates of `policy` revoked and not yet expired at `now` (an expired certificate
/// needs no CRL entry, RFC 5280 §3.3), oldest revocation first.
pub async fn revoked(
    conn: &mut PgConnection,
    policy: &str,
    now: OffsetDateTime,
) -> Result<Vec<Revoked>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT serial, revoked_at FROM issued_certificates
         WHERE credential_policy = $1 AND revoked_at IS NOT NULL AND not_after > $2
         ORDER BY revoked_at, serial",
    )
    .bind(policy)
    .bind(now)
    .fetch_all(conn)
    .await?)
}
