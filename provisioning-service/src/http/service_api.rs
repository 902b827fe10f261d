//! The DPS service API for factories and operators (docs/protocol.md §7):
//! individual enrollments and registration states, authenticated by a DPS-style service SAS
//! (`sr` = the service host name, `skn` = a shared access policy name). A device's SAS
//! (`skn=registration`) never opens it. The handlers parse headers and call [`crate::enrollment`]
//! or the store; every failure is mapped to the wire in `http::error`.

use crate::enrollment::Attestation;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dps_protocol::wire::{DeviceRegistrationResult, ErrorBody};
use dps_protocol::RegistrationId;
use time::OffsetDateTime;

use super::error::{ApiError, AppJson};
use super::service_common::{
    authorize, connection, item_error, queried, with_etag, ItemCall, Registrations,
};
use crate::app::App;
use crate::enrollment::{
    self, BulkEnrollmentError, BulkEnrollmentOperation, BulkEnrollmentOperationResult,
    IndividualEnrollment, InvalidEnrollment, QuerySpecification,
};
use crate::registration::registration_result;
use crate::store::enrollments::EnrollmentRow;
use crate::store::{self, registrations, StoreError};

/// The enrollment of `id`, or 404.
async fn enrollment(app: &App, id: &RegistrationId) -> Result<EnrollmentRow, ApiError> {
    store::enrollments::get(&mut *connection(app).await?, id.as_str())
        .await?
        .ok_or(ApiError::NotFound("enrollment"))
}

/// An enrollment as the API returns it, its etag also in the `ETag` header.
fn enrollment_response(row: &EnrollmentRow) -> Response {
    with_etag(IndividualEnrollment::from_row(row), row.etag)
}

/// `PUT /enrollments/{registrationId}`: create or update (with `If-Match` or a body etag, only
/// that version).
#[utoipa::path(put, path = "/enrollments/{registration_id}", tag = "enrollments",
    params(("registration_id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = IndividualEnrollment,
    responses((status = 200, body = IndividualEnrollment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn put_enrollment(
    State(app): State<App>,
    call: ItemCall<Registrations>,
    AppJson(body): AppJson<IndividualEnrollment>,
) -> Result<Response, ApiError> {
    // Compared as ids (any case: DPS ids are case-insensitive); a body id that does not parse
    // is refused with the rest of the body's checks.
    if RegistrationId::parse(&body.registration_id).is_ok_and(|id| id != call.id) {
        return Err(InvalidEnrollment::RegistrationIdMismatch.into());
    }
    let precondition = call.precondition(body.etag.as_deref())?;
    let (row, _) = enrollment::put(
        app.pool(),
        &body,
        precondition,
        Some(app.settings()),
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok(enrollment_response(&row))
}

/// `GET /enrollments/{registrationId}`.
#[utoipa::path(get, path = "/enrollments/{registration_id}", tag = "enrollments",
    params(("registration_id" = String, Path)),
    responses((status = 200, body = IndividualEnrollment), (status = 404, body = ErrorBody)))]
pub async fn get_enrollment(
    State(app): State<App>,
    call: ItemCall<Registrations>,
) -> Result<Response, ApiError> {
    Ok(enrollment_response(&enrollment(&app, &call.id).await?))
}

/// `DELETE /enrollments/{registrationId}`.
#[utoipa::path(delete, path = "/enrollments/{registration_id}", tag = "enrollments",
    params(("registration_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete_enrollment(
    State(app): State<App>,
    call: ItemCall<Registrations>,
) -> Result<StatusCode, ApiError> {
    let mut conn = connection(&app).await?;
    store::enrollments::delete(&mut conn, call.id.as_str(), call.if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /enrollments`: bulk create, update or delete; one result per refused item.
#[utoipa::path(post, path = "/enrollments", tag = "enrollments",
    request_body = BulkEnrollmentOperation,
    responses((status = 200, body = BulkEnrollmentOperationResult), (status = 400, body = ErrorBody)))]
pub async fn bulk(
    State(app): State<App>,
    headers: HeaderMap,
    AppJson(body): AppJson<BulkEnrollmentOperation>,
) -> Result<Json<BulkEnrollmentOperationResult>, ApiError> {
    authorize(&app, &headers)?;
    let refused =
        enrollment::bulk(app.pool(), &body, app.settings(), OffsetDateTime::now_utc()).await?;
    let mut errors = Vec::new();
    for (registration_id, e) in refused {
        let (error_code, error_status) = item_error(e.into())?;
        errors.push(BulkEnrollmentError {
            registration_id,
            error_code,
            error_status,
        });
    }
    Ok(Json(BulkEnrollmentOperationResult {
        is_successful: errors.is_empty(),
        errors,
    }))
}

/// `POST /enrollments/query` with `{"query": "*"}`: pages of enrollments, `x-ms-max-item-count`
/// per page (default 100, at most 1000), continued with `x-ms-continuation`.
#[utoipa::path(post, path = "/enrollments/query", tag = "enrollments",
    params(("x-ms-max-item-count" = Option<i64>, Header), ("x-ms-continuation" = Option<String>, Header)),
    request_body = QuerySpecification,
    responses((status = 200, body = Vec<IndividualEnrollment>)))]
pub async fn query(
    State(app): State<App>,
    headers: HeaderMap,
    AppJson(spec): AppJson<QuerySpecification>,
) -> Result<Response, ApiError> {
    queried(
        &app,
        &headers,
        &spec,
        "enrollments",
        store::enrollments::page,
        |r| &r.registration_id,
        IndividualEnrollment::from_row,
    )
    .await
}

/// A registration row as the service API returns it: DPS's `DeviceRegistrationState` has no
/// `tpm` (the key blob is the device's; service.json); this service adds what the
/// registration's attestation proved.
pub(super) fn service_registration_state(
    row: &registrations::RegistrationRow,
) -> DeviceRegistrationResult {
    let mut state = registration_result(row);
    state.tpm = None;
    state.attestation = row.attestation.as_ref().map(|a| a.0.clone());
    state
}

/// `GET /registrations/{registrationId}`: a device's registration state.
#[utoipa::path(get, path = "/registrations/{registration_id}", tag = "registrations",
    params(("registration_id" = String, Path)),
    responses((status = 200, body = DeviceRegistrationResult), (status = 404, body = ErrorBody)))]
pub async fn get_registration(
    State(app): State<App>,
    call: ItemCall<Registrations>,
) -> Result<Response, ApiError> {
    let row = registrations::get_registration(&mut *connection(&app).await?, call.id.as_str())
        .await?
        .ok_or(ApiError::NotFound("registration"))?;
    Ok(Json(service_registration_state(&row)).into_response())
}

/// `DELETE /registrations/{registrationId}/attestationPins` (this service's own): forgets the
/// PCR values pinned on the device's first attested registration, so that its next verified
/// quote pins anew (after a firmware update, say). 204 whether or not anything was pinned.
#[utoipa::path(delete, path = "/registrations/{registration_id}/attestationPins", tag = "registrations",
    params(("registration_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn repin(
    State(app): State<App>,
    call: ItemCall<Registrations>,
) -> Result<StatusCode, ApiError> {
    let found = registrations::forget_pins(&mut *connection(&app).await?, call.id.as_str()).await?;
    if !found {
        return Err(ApiError::NotFound("registration"));
    }
    tracing::info!(
        registration_id = call.id.as_str(),
        "attestation pins forgotten"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /enrollments/{registrationId}/attestationmechanism`: the enrollment's attestation
/// (`{type, tpm}`), as `IndividualEnrollment_GetAttestationMechanism` answers it.
#[utoipa::path(post, path = "/enrollments/{registration_id}/attestationmechanism", tag = "enrollments",
    params(("registration_id" = String, Path)),
    responses((status = 200, body = Attestation), (status = 404, body = ErrorBody)))]
pub async fn get_attestation_mechanism(
    State(app): State<App>,
    call: ItemCall<Registrations>,
) -> Result<Response, ApiError> {
    let row = enrollment(&app, &call.id).await?;
    Ok(Json(IndividualEnrollment::from_row(&row).attestation).into_response())
}

/// `DELETE /registrations/{registrationId}`: forgets the state and the device's key; the device
/// must register again.
#[utoipa::path(delete, path = "/registrations/{registration_id}", tag = "registrations",
    params(("registration_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete_registration(
    State(app): State<App>,
    call: ItemCall<Registrations>,
) -> Result<StatusCode, ApiError> {
    let mut tx = app.pool().begin().await.map_err(ApiError::internal)?;
    match registrations::delete_registration(&mut tx, call.id.as_str(), call.if_match).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("registration")),
        Err(other) => return Err(other.into()),
    }
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
