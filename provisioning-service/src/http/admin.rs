//! The enrollment API for factories and operators (protocol.md §7), authenticated by a DPS-style
//! service SAS: `sr` = the service host name, `skn` = a shared access policy name. A device's
//! SAS (`skn=registration`) never opens it.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dps_protocol::sas::{SasToken, VerifyPolicy};
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppPath};
use crate::app::App;
use crate::enrollment::{
    BulkEnrollmentError, BulkEnrollmentOperation, BulkEnrollmentOperationResult, BulkMode,
    IndividualEnrollment, QuerySpecification,
};
use crate::registration::{parse_registration_id, registration_result};
use crate::store::{enrollments, registrations, StoreError};

/// Most enrollments in one bulk operation (the DPS limit).
const MAX_BULK: usize = 10_000;
const CONTINUATION: HeaderName = HeaderName::from_static("x-ms-continuation");
const MAX_ITEM_COUNT: HeaderName = HeaderName::from_static("x-ms-max-item-count");

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized("no service SAS token"))?;
    let token = SasToken::parse(value)
        .map_err(|_| ApiError::Unauthorized("malformed service SAS token"))?;
    let settings = app.settings();
    let policy = settings
        .access_policies
        .iter()
        .find(|p| Some(p.name.as_str()) == token.key_name.as_deref())
        .ok_or(ApiError::Unauthorized("no such shared access policy"))?;
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
        .map_err(|_| ApiError::Unauthorized("service SAS token does not verify"))
}

fn if_match(headers: &HeaderMap) -> Result<Option<Uuid>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.trim_matches('"') == "*" {
        return Ok(None);
    }
    etag_uuid(text).map(Some).ok_or_else(|| {
        ApiError::ArgumentInvalid("If-Match is not an etag of this service".to_owned())
    })
}

/// The etag this service issued, as written in a header or body (quoted or not).
fn etag_uuid(text: &str) -> Option<Uuid> {
    Uuid::parse_str(text.trim_matches('"')).ok()
}

fn with_etag(json: IndividualEnrollment, status: StatusCode) -> Response {
    let etag = json.etag.clone().unwrap_or_default();
    let mut response = (status, Json(json)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `PUT /enrollments/{registrationId}`: create or update (with `If-Match`, only that version).
pub async fn put_enrollment(
    State(app): State<App>,
    AppPath(registration_id): AppPath<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<IndividualEnrollment>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    parse_registration_id(&registration_id)?;
    if body.registration_id != registration_id {
        return Err(ApiError::ArgumentInvalid(
            "registrationId in the body does not match the path".to_owned(),
        ));
    }
    let new = body.to_new(Some(&app.settings().iot_hubs))?;
    let precondition = if_match(&headers)?.or(match &body.etag {
        Some(etag) if etag != "*" => Some(etag_uuid(etag).ok_or_else(|| {
            ApiError::ArgumentInvalid("etag is not an etag of this service".to_owned())
        })?),
        _ => None,
    });
    let (row, _) =
        enrollments::upsert(app.pool(), &new, precondition, OffsetDateTime::now_utc()).await?;
    Ok(with_etag(
        IndividualEnrollment::from_row(&row),
        StatusCode::OK,
    ))
}

/// `GET /enrollments/{registrationId}`.
pub async fn get_enrollment(
    State(app): State<App>,
    AppPath(registration_id): AppPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let id = parse_registration_id(&registration_id)?;
    let row = enrollments::get(app.pool(), id.as_str())
        .await?
        .ok_or(ApiError::NotFound("enrollment"))?;
    Ok(with_etag(
        IndividualEnrollment::from_row(&row),
        StatusCode::OK,
    ))
}

/// `DELETE /enrollments/{registrationId}`.
pub async fn delete_enrollment(
    State(app): State<App>,
    AppPath(registration_id): AppPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers)?;
    let id = parse_registration_id(&registration_id)?;
    enrollments::delete(app.pool(), id.as_str(), if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /enrollments`: bulk create, update or delete; one result per failed item.
pub async fn bulk(
    State(app): State<App>,
    headers: HeaderMap,
    AppJson(body): AppJson<BulkEnrollmentOperation>,
) -> Result<Json<BulkEnrollmentOperationResult>, ApiError> {
    authorize(&app, &headers)?;
    if body.enrollments.len() > MAX_BULK {
        return Err(ApiError::ArgumentInvalid(format!(
            "at most {MAX_BULK} enrollments per bulk operation"
        )));
    }
    let now = OffsetDateTime::now_utc();
    let mut errors = Vec::new();
    for enrollment in &body.enrollments {
        match bulk_item(&app, body.mode, enrollment, now).await {
            Ok(()) => {}
            Err(e @ ApiError::Internal(_)) => return Err(e),
            Err(e) => errors.push(BulkEnrollmentError {
                registration_id: enrollment.registration_id.clone(),
                error_code: e.status_and_code().1,
                error_status: e.to_string(),
            }),
        }
    }
    Ok(Json(BulkEnrollmentOperationResult {
        is_successful: errors.is_empty(),
        errors,
    }))
}

/// One enrollment of a bulk operation.
async fn bulk_item(
    app: &App,
    mode: BulkMode,
    enrollment: &IndividualEnrollment,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    if mode == BulkMode::Delete {
        let id = parse_registration_id(&enrollment.registration_id)?;
        return Ok(enrollments::delete(app.pool(), id.as_str(), None).await?);
    }
    let new = enrollment.to_new(Some(&app.settings().iot_hubs))?;
    match mode {
        BulkMode::Create => enrollments::create(app.pool(), &new, now).await.map(|_| ()),
        BulkMode::UpdateIfMatchETag => {
            let etag = enrollment
                .etag
                .as_deref()
                .and_then(etag_uuid)
                .ok_or(ApiError::PreconditionFailed)?;
            enrollments::upsert(app.pool(), &new, Some(etag), now)
                .await
                .map(|_| ())
        }
        BulkMode::Update | BulkMode::Delete => enrollments::upsert(app.pool(), &new, None, now)
            .await
            .map(|_| ()),
    }
    .map_err(ApiError::from)
}

/// `POST /enrollments/query` with `{"query": "*"}`: pages of enrollments, `x-ms-max-item-count`
/// per page (default 100, at most 1000), continued with `x-ms-continuation`.
pub async fn query(
    State(app): State<App>,
    headers: HeaderMap,
    AppJson(spec): AppJson<QuerySpecification>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let query = spec.query.trim();
    if query != "*" && !query.eq_ignore_ascii_case("SELECT * FROM enrollments") {
        return Err(ApiError::ArgumentInvalid(
            "only the query \"*\" is supported".to_owned(),
        ));
    }
    let page_size: i64 = headers
        .get(MAX_ITEM_COUNT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let after = match headers.get(CONTINUATION).and_then(|v| v.to_str().ok()) {
        Some(token) => Some(parse_registration_id(token)?),
        None => None,
    };
    let mut rows = enrollments::page(
        app.pool(),
        after.as_ref().map(dps_protocol::RegistrationId::as_str),
        page_size + 1,
    )
    .await?;
    let more = rows.len() > usize::try_from(page_size).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
    let items: Vec<IndividualEnrollment> =
        rows.iter().map(IndividualEnrollment::from_row).collect();
    let mut response = Json(items).into_response();
    if more {
        if let Some(last) = rows.last() {
            if let Ok(value) = HeaderValue::from_str(&last.registration_id) {
                response.headers_mut().insert(CONTINUATION, value);
            }
        }
    }
    Ok(response)
}

/// `GET /registrations/{registrationId}`: a device's registration state.
pub async fn get_registration(
    State(app): State<App>,
    AppPath(registration_id): AppPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let id = parse_registration_id(&registration_id)?;
    let row = registrations::get_registration(app.pool(), id.as_str())
        .await?
        .ok_or(ApiError::NotFound("registration"))?;
    Ok(Json(registration_result(&row)).into_response())
}

/// `DELETE /registrations/{registrationId}`: forgets the state and the device's key; the device
/// must register again.
pub async fn delete_registration(
    State(app): State<App>,
    AppPath(registration_id): AppPath<String>,
    headers: HeaderMap,
    _uri: Uri,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers)?;
    let id = parse_registration_id(&registration_id)?;
    registrations::delete_registration(app.pool(), id.as_str(), if_match(&headers)?)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("registration"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
