//! The DPS device API (docs/protocol.md §2): parse the request, call [`crate::registration`],
//! shape the response.

use dps_protocol::wire::{DeviceRegistrationResult, ErrorBody, RegistrationOperationStatus};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dps_protocol::sas::SasToken;
use dps_protocol::sas::REGISTRATION_KEY_NAME;
use dps_protocol::wire::{
    api_version_date, Base64Bytes, DeviceRegistration, RegistrationStatus, TpmChallenge,
};
use dps_protocol::RegistrationId;
use time::OffsetDateTime;

use super::error::{ApiError, AppJson, AppPath};
use crate::app::App;
use crate::metrics::Outcome;
use crate::registration::{self, Refusal, StepError};

/// The oldest api-version of the DPS device API: DPS's general-availability version (its first
/// stable management API is `Microsoft.Devices/provisioningServices@2017-11-15`, as listed in
/// Azure/bicep-types-az); older dates were previews no client sends any more.
const OLDEST_API_VERSION: &str = "2017-11-15";

/// Seconds a device should wait before polling an operation.
const RETRY_AFTER_SECS: &str = "1";

/// `api-version` must be present and look like a DPS version (`YYYY-MM-DD`, optionally
/// `-preview`) no older than the first one. Newer versions are accepted: the clients move ahead
/// (aziot-identityd 1.4–1.6 send `2021-06-01`, the Azure SDKs `2019-03-31` up to
/// `2021-11-01-preview`) and the TPM flow has not changed.
fn check_api_version(uri: &Uri) -> Result<(), ApiError> {
    let version = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("api-version="))
        .ok_or_else(|| ApiError::ArgumentInvalid("api-version is required".to_owned()))?;
    if api_version_date(version).is_some_and(|date| date >= OLDEST_API_VERSION) {
        Ok(())
    } else {
        Err(ApiError::ArgumentInvalid(format!(
            "unsupported api-version {version}"
        )))
    }
}

fn check_scope(app: &App, id_scope: &str) -> Result<(), ApiError> {
    if id_scope.eq_ignore_ascii_case(&app.settings().id_scope) {
        Ok(())
    } else {
        Err(ApiError::NotFound("idScope"))
    }
}

/// Who is asking, for the challenge throttle: the TCP peer's address, or, when the operator
/// says a trusted proxy sets it (`--client-address-header`), the last address in that header
/// (the one the proxy appended; earlier ones are the client's own claims).
fn client_address(app: &App, peer: SocketAddr, headers: &HeaderMap) -> String {
    app.settings()
        .client_address_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map_or_else(|| peer.ip().to_string(), str::to_owned)
}

/// The `Authorization` header, if any. One that is present but not visible ASCII is a malformed
/// token, never "no header": that would answer with a fresh challenge and replace the device's
/// live key.
fn authorization(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| Refusal::UnreadableAuthorization))
        .transpose()
}

/// Counts a refused step in the metrics (`dps_refusals_total{step, reason}`).
fn counted<T>(app: &App, step: &'static str, result: Result<T, StepError>) -> Result<T, StepError> {
    if let Err(StepError::Refused(refusal)) = &result {
        app.metrics().refusal(step, refusal.name());
    }
    result
}

/// A refusal before a step runs (a malformed request or token), counted like the step's own.
fn refused(app: &App, step: &'static str, refusal: Refusal) -> ApiError {
    app.metrics().refusal(step, refusal.name());
    refusal.into()
}

fn with_retry_after(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

/// `PUT /{idScope}/registrations/{registrationId}/register`: without `Authorization`, the TPM
/// challenge (`401 {authenticationKey}`); with a SAS, the registration: always `202`, carrying
/// the decision when it is already made (docs/protocol.md §2, the compatibility table).
#[tracing::instrument(skip_all, fields(registration_id = %registration_id))]
#[utoipa::path(put, path = "/{id_scope}/registrations/{registration_id}/register", tag = "device",
    params(("id_scope" = String, Path), ("registration_id" = String, Path), ("api-version" = String, Query)),
    request_body = DeviceRegistration,
    responses(
        (status = 202, description = "Registered: the operation status, with the registration state when already decided (assigning, with Retry-After, while a custom allocation webhook decides)", body = RegistrationOperationStatus),
        (status = 401, description = "The TPM challenge (no Authorization), or refused", body = TpmChallenge),
        (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn register(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppPath((id_scope, registration_id)): AppPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    AppJson(body): AppJson<DeviceRegistration>,
) -> Result<Response, ApiError> {
    check_api_version(&uri)?;
    check_scope(&app, &id_scope)?;
    let step = if headers.contains_key(header::AUTHORIZATION) {
        "register"
    } else {
        "challenge"
    };
    let request =
        registration::parse_request(&registration_id, body).map_err(|r| refused(&app, step, r))?;
    let now = OffsetDateTime::now_utc();
    match authorization(&headers).map_err(|r| refused(&app, step, r))? {
        None => {
            let client = client_address(&app, peer, &headers);
            let challenge = counted(
                &app,
                step,
                registration::challenge(app.registrar(), &request, &client, now).await,
            )?;
            let body = TpmChallenge {
                authentication_key: Base64Bytes(challenge.authentication_key),
                key_name: REGISTRATION_KEY_NAME.to_owned(),
                message: Some("Unauthorized".to_owned()),
                attestation: challenge.attestation,
            };
            Ok((StatusCode::UNAUTHORIZED, Json(body)).into_response())
        }
        Some(value) => {
            let token = registration::parse_sas(value).map_err(|r| refused(&app, step, r))?;
            let result = counted(
                &app,
                step,
                registration::register(
                    app.registrar(),
                    &request,
                    &token,
                    now,
                    &mut rand::rngs::OsRng,
                )
                .await,
            );
            // DPS's AttestationAttempts: the SAS step is where a device proves its TPM.
            match &result {
                Ok(_) => app.metrics().attestation(Outcome::success),
                Err(StepError::Refused(_)) => app.metrics().attestation(Outcome::failure),
                Err(_) => {}
            }
            Ok(registered_response(result?))
        }
    }
}

/// What every SAS-authenticated device call checks first: api-version, scope, registration
/// id, and that a SAS token is present and well-formed.
fn sas_request(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    id_scope: &str,
    registration_id: &str,
) -> Result<(RegistrationId, SasToken), ApiError> {
    check_api_version(uri)?;
    check_scope(app, id_scope)?;
    let id = registration::parse_registration_id(registration_id)?;
    let header = authorization(headers)?.ok_or(Refusal::MissingSas)?;
    Ok((id, registration::parse_sas(header)?))
}

/// `GET /{idScope}/registrations/{registrationId}/operations/{operationId}`.
#[tracing::instrument(skip_all, fields(registration_id = %registration_id))]
#[utoipa::path(get, path = "/{id_scope}/registrations/{registration_id}/operations/{operation_id}", tag = "device",
    params(("id_scope" = String, Path), ("registration_id" = String, Path), ("operation_id" = String, Path), ("api-version" = String, Query)),
    responses(
        (status = 200, description = "Decided", body = RegistrationOperationStatus),
        (status = 202, description = "Still assigning (Retry-After)", body = RegistrationOperationStatus),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn operation_status(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppPath((id_scope, registration_id, operation_id)): AppPath<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, token) = sas_request(&app, &uri, &headers, &id_scope, &registration_id)?;
    let client = client_address(&app, peer, &headers);
    let status = counted(
        &app,
        "poll",
        registration::operation_status(
            app.registrar(),
            &id,
            &operation_id,
            &token,
            &client,
            OffsetDateTime::now_utc(),
        )
        .await,
    )?;
    Ok(operation_response(status))
}

/// The poll's answer: 202 with Retry-After while assigning, 200 once decided. aziot-identityd
/// 1.4–1.6 accepts either on the poll (`identity/aziot-cloud-client-async/src/dps/mod.rs`
/// line 245 in 1.6.0: `&[hyper::StatusCode::OK, hyper::StatusCode::ACCEPTED]`).
fn operation_response(status: RegistrationOperationStatus) -> Response {
    if status.status == RegistrationStatus::Assigning {
        with_retry_after((StatusCode::ACCEPTED, Json(status)).into_response())
    } else {
        Json(status).into_response()
    }
}

/// The SAS-authenticated register's answer: `202` whatever was decided, as DPS answers it.
/// aziot-identityd 1.4–1.6 accepts nothing else here (`dps/mod.rs` line 209 in 1.6.0:
/// `parse::<OperationStatus, ServiceError>(&[hyper::StatusCode::ACCEPTED])`) and then polls.
/// A decision already made stays in the body: the Azure Node SDK and this project's client
/// read the body's `status`, not the status code, and finish on `assigned` without a poll.
/// Retry-After only while `assigning`, when a poll is due.
fn registered_response(status: RegistrationOperationStatus) -> Response {
    let polling = status.status == RegistrationStatus::Assigning;
    let response = (StatusCode::ACCEPTED, Json(status)).into_response();
    if polling {
        with_retry_after(response)
    } else {
        response
    }
}

/// `POST /{idScope}/registrations/{registrationId}`: the device's registration state.
#[tracing::instrument(skip_all, fields(registration_id = %registration_id))]
#[utoipa::path(post, path = "/{id_scope}/registrations/{registration_id}", tag = "device",
    params(("id_scope" = String, Path), ("registration_id" = String, Path), ("api-version" = String, Query)),
    responses((status = 200, body = DeviceRegistrationResult), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn registration_state(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppPath((id_scope, registration_id)): AppPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (id, token) = sas_request(&app, &uri, &headers, &id_scope, &registration_id)?;
    // The body (a DeviceRegistration, optional) is not needed, but a `csr` in it is refused,
    // as DPS's 2026-04-01 `csr` description says.
    if serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|b| b.get("csr").is_some_and(|c| !c.is_null()))
    {
        return Err(refused(
            &app,
            "poll",
            Refusal::Csr(crate::issuance::CsrRefusal::OnStatusLookup),
        ));
    }
    let client = client_address(&app, peer, &headers);
    let state = counted(
        &app,
        "poll",
        registration::device_state(
            app.registrar(),
            &id,
            &token,
            &client,
            OffsetDateTime::now_utc(),
        )
        .await,
    )?;
    Ok(Json(state).into_response())
}
