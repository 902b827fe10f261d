//! The DPS service API for factories and operators (docs/protocol.md §7):
//! individual enrollments and registration states, authenticated by a DPS-style service SAS
//! (`sr` = the service host name, `skn` = a shared access policy name). A device's SAS
//! (`skn=registration`) never opens it. The handlers parse headers and call [`crate::enrollment`]
//! or the store; every failure is mapped to the wire in `http::error`.

use crate::enrollment::Attestation;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dps_protocol::sas::{SasToken, VerifyPolicy};
use dps_protocol::wire::{DeviceRegistrationResult, ErrorBody};
use dps_protocol::RegistrationId;
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppPath};
use crate::app::App;
use crate::enrollment::{
    self, parse_etag, BulkEnrollmentError, BulkEnrollmentOperation, BulkEnrollmentOperationResult,
    IndividualEnrollment, InvalidEnrollment, QuerySpecification,
};
use crate::registration::{parse_registration_id, registration_result};
use crate::store::enrollments::EnrollmentRow;
use crate::store::lease::Lease;
use crate::store::{self, registrations, StoreError};

const CONTINUATION: HeaderName = HeaderName::from_static("x-ms-continuation");
const MAX_ITEM_COUNT: HeaderName = HeaderName::from_static("x-ms-max-item-count");
/// Page size of a query without `x-ms-max-item-count`, and the largest page.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

pub(super) fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |reason: &str| ApiError::Unauthorized(reason.to_owned());
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("no service SAS token"))?;
    let token = SasToken::parse(value).map_err(|_| unauthorized("malformed service SAS token"))?;
    let settings = app.settings();
    let policy = settings
        .access_policies
        .iter()
        .find(|p| Some(p.name.as_str()) == token.key_name.as_deref())
        .ok_or_else(|| unauthorized("no such shared access policy"))?;
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    token
        .verify(
            &policy.key,
            &VerifyPolicy {
                resource: &settings.service_host_name,
                key_name: Some(&policy.name),
                now,
                max_skew: settings.clock_skew_secs,
                max_lifetime: settings.sas_max_lifetime_secs,
            },
        )
        .map_err(|e| unauthorized(&format!("service SAS token refused: {e}")))
}

/// A service API call on one enrollment or registration, as every such handler takes it: the
/// service SAS checked, the path's registration id parsed (kept as written too, to compare with
/// a body), `If-Match` read.
pub struct OneRegistration {
    id: RegistrationId,
    if_match: Option<Uuid>,
}

impl FromRequestParts<App> for OneRegistration {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        authorize(app, &parts.headers)?;
        let AppPath(path_id) = AppPath::<String>::from_request_parts(parts, app).await?;
        Ok(Self {
            id: parse_registration_id(&path_id)?,
            if_match: if_match(&parts.headers)?,
        })
    }
}

/// One pooled connection for the request.
pub(super) async fn connection(app: &App) -> Result<Lease<'_>, ApiError> {
    app.acquire().await.map_err(ApiError::internal)
}

/// The enrollment of `id`, or 404.
async fn enrollment(app: &App, id: &RegistrationId) -> Result<EnrollmentRow, ApiError> {
    store::enrollments::get(&mut *connection(app).await?, id.as_str())
        .await?
        .ok_or(ApiError::NotFound("enrollment"))
}

/// `If-Match`, as an etag of this service (`*` or absent: any version).
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<Uuid>, InvalidEnrollment> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => parse_etag(Some(value.to_str().map_err(|_| InvalidEnrollment::Etag)?)),
    }
}

/// `json` with its `etag` also in the `ETag` header.
pub(super) fn with_etag(json: impl serde::Serialize, etag: Uuid) -> Response {
    let mut response = Json(json).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
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
    call: OneRegistration,
    AppJson(body): AppJson<IndividualEnrollment>,
) -> Result<Response, ApiError> {
    // Compared as ids (any case: DPS ids are case-insensitive); a body id that does not parse
    // is refused with the rest of the body's checks.
    if RegistrationId::parse(&body.registration_id).is_ok_and(|id| id != call.id) {
        return Err(InvalidEnrollment::RegistrationIdMismatch.into());
    }
    let precondition = match call.if_match {
        Some(etag) => Some(etag),
        None => parse_etag(body.etag.as_deref())?,
    };
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
    call: OneRegistration,
) -> Result<Response, ApiError> {
    Ok(enrollment_response(&enrollment(&app, &call.id).await?))
}

/// `DELETE /enrollments/{registrationId}`.
#[utoipa::path(delete, path = "/enrollments/{registration_id}", tag = "enrollments",
    params(("registration_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete_enrollment(
    State(app): State<App>,
    call: OneRegistration,
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
    let errors: Vec<BulkEnrollmentError> = refused
        .into_iter()
        .map(|(registration_id, e)| {
            let e = ApiError::from(e);
            BulkEnrollmentError {
                registration_id,
                error_code: e.status_and_code().1,
                error_status: e.to_string(),
            }
        })
        .collect();
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
    authorize(&app, &headers)?;
    query_all(&spec, "enrollments")?;
    let (page_size, after) = page_request(&headers)?;
    let rows = store::enrollments::page(
        &mut *connection(&app).await?,
        after.as_ref().map(RegistrationId::as_str),
        page_size + 1,
    )
    .await?;
    Ok(page_response(
        rows,
        page_size,
        |r| &r.registration_id,
        IndividualEnrollment::from_row,
    ))
}

/// The one query supported: everything in `collection` (`*`, or its SQL spelling).
pub(super) fn query_all(spec: &QuerySpecification, collection: &str) -> Result<(), ApiError> {
    let query = spec.query.trim();
    if query == "*" || query.eq_ignore_ascii_case(&format!("SELECT * FROM {collection}")) {
        Ok(())
    } else {
        Err(ApiError::ArgumentInvalid(
            "only the query \"*\" is supported".to_owned(),
        ))
    }
}

/// A query's page size (`x-ms-max-item-count`: default 100, at most 1000) and where it
/// continues (`x-ms-continuation`: the last id of the previous page).
pub(super) fn page_request(headers: &HeaderMap) -> Result<(i64, Option<RegistrationId>), ApiError> {
    let page_size: i64 = headers
        .get(MAX_ITEM_COUNT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    let after = match headers.get(CONTINUATION).and_then(|v| v.to_str().ok()) {
        Some(token) => Some(parse_registration_id(token)?),
        None => None,
    };
    Ok((page_size, after))
}

/// A page of `rows` (fetched one over `page_size`, to know whether more follow) as JSON, with
/// `x-ms-continuation` set to the page's last id when more follow.
pub(super) fn page_response<R, T: serde::Serialize>(
    mut rows: Vec<R>,
    page_size: i64,
    id: impl Fn(&R) -> &str,
    json: impl Fn(&R) -> T,
) -> Response {
    let page_len = usize::try_from(page_size).unwrap_or(usize::MAX);
    let more = rows.len() > page_len;
    rows.truncate(page_len);
    let items: Vec<T> = rows.iter().map(json).collect();
    let mut response = Json(items).into_response();
    if more {
        if let Some(value) = rows
            .last()
            .and_then(|last| HeaderValue::from_str(id(last)).ok())
        {
            response.headers_mut().insert(CONTINUATION, value);
        }
    }
    response
}

/// A registration row as the service API returns it: DPS's `DeviceRegistrationState` has no
/// `tpm` (the key blob is the device's; service.json).
pub(super) fn service_registration_state(
    row: &registrations::RegistrationRow,
) -> DeviceRegistrationResult {
    let mut state = registration_result(row);
    state.tpm = None;
    state
}

/// `GET /registrations/{registrationId}`: a device's registration state.
#[utoipa::path(get, path = "/registrations/{registration_id}", tag = "registrations",
    params(("registration_id" = String, Path)),
    responses((status = 200, body = DeviceRegistrationResult), (status = 404, body = ErrorBody)))]
pub async fn get_registration(
    State(app): State<App>,
    call: OneRegistration,
) -> Result<Response, ApiError> {
    let row = registrations::get_registration(&mut *connection(&app).await?, call.id.as_str())
        .await?
        .ok_or(ApiError::NotFound("registration"))?;
    Ok(Json(service_registration_state(&row)).into_response())
}

/// `POST /enrollments/{registrationId}/attestationmechanism`: the enrollment's attestation
/// (`{type, tpm}`), as `IndividualEnrollment_GetAttestationMechanism` answers it.
#[utoipa::path(post, path = "/enrollments/{registration_id}/attestationmechanism", tag = "enrollments",
    params(("registration_id" = String, Path)),
    responses((status = 200, body = Attestation), (status = 404, body = ErrorBody)))]
pub async fn get_attestation_mechanism(
    State(app): State<App>,
    call: OneRegistration,
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
    call: OneRegistration,
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
