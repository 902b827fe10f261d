//! Enrollment groups, as far as a TPM-only service can have them. DPS admits only X.509 and
//! symmetric-key attestation in a group ("Devices that use SAS tokens as their attestation
//! mechanism can be provisioned only through an individual enrollment", DPS docs,
//! how-to-revoke-device-access-portal.md), and this service attests TPMs only, so no group can
//! exist here yet: writes are refused with a message that says so, reads find nothing. The
//! routes are DPS's (service.json, 2021-10-01), so the Azure service SDKs get a DPS error body
//! rather than "route not found".

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::service_api::authorize;
use crate::app::App;

const UNSUPPORTED: &str = "enrollment groups take x509 or symmetricKey attestation, which this \
    service does not offer: TPM devices are enrolled individually";

/// `PUT /enrollmentGroups/{id}` and `POST /enrollmentGroups` (bulk): 400, whatever the body.
pub async fn write(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    Err(ApiError::ArgumentInvalid(UNSUPPORTED.to_owned()))
}

/// `GET`/`DELETE /enrollmentGroups/{id}`, `POST /enrollmentGroups/{id}/attestationmechanism`,
/// `POST /registrations/{id}/query` (a group's registration states): no such group.
pub async fn not_found(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    Err(ApiError::NotFound("enrollment group"))
}

/// `POST /enrollmentGroups/query`: an empty page.
pub async fn query(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    Ok(Json(Vec::<serde_json::Value>::new()).into_response())
}
