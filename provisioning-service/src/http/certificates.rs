//! `GET /credentialPolicies/{name}/crl`: each credential policy's certificate revocation list
//! (DER), public as CRLs are, signed by the policy's issuing CA. Made from the revocations in
//! Postgres at most once a second per instance (`issuance::CrlCache`): a revocation shows on
//! every instance within a second, and asking often costs a cache read.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::error::{ApiError, AppPath};
use super::service_common::connection;
use crate::app::App;
use crate::store::certificates;

/// The CRL's media type (RFC 5280 §4.2.1.13, RFC 2585).
const PKIX_CRL: &str = "application/pkix-crl";

#[utoipa::path(get, path = "/credentialPolicies/{name}/crl", tag = "certificates",
    params(("name" = String, Path)),
    responses((status = 200, description = "The policy's CRL (DER, application/pkix-crl)"),
        (status = 404, body = dps_protocol::wire::ErrorBody)))]
pub async fn crl(
    State(app): State<App>,
    AppPath(name): AppPath<String>,
) -> Result<Response, ApiError> {
    let policy = app
        .settings()
        .credential_policies
        .get(&name)
        .ok_or(ApiError::NotFound("credential policy"))?;
    let der = if let Some(der) = app.crls().fresh(&name) {
        der
    } else {
        let (made, now) = (Instant::now(), OffsetDateTime::now_utc());
        let revoked = certificates::revoked(&mut *connection(&app).await?, &name, now).await?;
        let entries: Vec<_> = revoked
            .into_iter()
            .map(|r| (r.serial, r.revoked_at))
            .collect();
        let der = Arc::new(policy.crl(&entries, now).map_err(ApiError::internal)?);
        app.crls().keep(&name, made, Arc::clone(&der));
        der
    };
    Ok(([(header::CONTENT_TYPE, PKIX_CRL)], der.as_ref().clone()).into_response())
}
