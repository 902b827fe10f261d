//! TPM enrollment groups on DPS's routes (service.json: `EnrollmentGroup_*`,
//! `DeviceRegistrationState_Query`): create/replace, get, delete, query, the attestation
//! mechanism, and the registration states of a group's devices. Groups take attestation type
//! `tpmEkCertificate` (`enrollment::group`); a group written with DPS's `x509` or
//! `symmetricKey` (or `tpm`) gets a 400 DPS error body saying what this service takes instead.

use crate::enrollment::group::GroupAttestation;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dps_protocol::wire::{DeviceRegistrationResult, ErrorBody};
use dps_protocol::RegistrationId;
use time::OffsetDateTime;

use super::error::{ApiError, AppJson};
use super::service_api::service_registration_state;
use super::service_common::{
    authorize, connection, item_error, paged, queried, with_etag, Collection, Groups, ItemCall,
};
use crate::app::App;
use crate::enrollment::group::{
    BulkEnrollmentGroupOperation, BulkEnrollmentGroupOperationError,
    BulkEnrollmentGroupOperationResult, EnrollmentGroup, InvalidGroup, MAX_GROUP_BULK,
};
use crate::enrollment::{parse_etag, BulkMode, QuerySpecification};
use crate::store::groups::{self, GroupRow};
use crate::store::StoreError;

async fn group(app: &App, id: &RegistrationId) -> Result<GroupRow, ApiError> {
    groups::get(&mut *connection(app).await?, id.as_str())
        .await?
        .ok_or(ApiError::NotFound(<Groups as Collection>::ITEM))
}

/// `PUT /enrollmentGroups/{id}`: create or replace (with `If-Match` or a body etag, only that
/// version).
#[utoipa::path(put, path = "/enrollmentGroups/{group_id}", tag = "enrollment groups",
    params(("group_id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = EnrollmentGroup,
    responses((status = 200, body = EnrollmentGroup), (status = 400, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn put(
    State(app): State<App>,
    call: ItemCall<Groups>,
    AppJson(body): AppJson<EnrollmentGroup>,
) -> Result<Response, ApiError> {
    let id = &call.id;
    if RegistrationId::parse(&body.enrollment_group_id).is_ok_and(|b| &b != id) {
        return Err(InvalidGroup::IdMismatch.into());
    }
    let precondition = call.precondition(body.etag.as_deref())?;
    let new = body.to_new(app.settings())?;
    let row = groups::upsert(
        &mut *connection(&app).await?,
        &new,
        precondition,
        OffsetDateTime::now_utc(),
    )
    .await
    .map_err(ItemCall::<Groups>::store_error)?;
    Ok(with_etag(EnrollmentGroup::from_row(&row), row.etag))
}

/// `GET /enrollmentGroups/{id}`, with how many devices have joined (`deviceCount`, this
/// service's read-only extension).
#[utoipa::path(get, path = "/enrollmentGroups/{group_id}", tag = "enrollment groups",
    params(("group_id" = String, Path)),
    responses((status = 200, body = EnrollmentGroup), (status = 404, body = ErrorBody)))]
pub async fn get(State(app): State<App>, call: ItemCall<Groups>) -> Result<Response, ApiError> {
    let id = &call.id;
    let row = group(&app, id).await?;
    let mut json = EnrollmentGroup::from_row(&row);
    json.device_count = Some(groups::members(&mut *connection(&app).await?, id.as_str()).await?);
    Ok(with_etag(json, row.etag))
}

/// `DELETE /enrollmentGroups/{id}`: the group and the records of the devices that joined it;
/// their registration states stay, as in DPS, but admit nobody any more.
#[utoipa::path(delete, path = "/enrollmentGroups/{group_id}", tag = "enrollment groups",
    params(("group_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    call: ItemCall<Groups>,
) -> Result<StatusCode, ApiError> {
    let id = &call.id;
    groups::delete(&mut *connection(&app).await?, id.as_str(), call.if_match)
        .await
        .map_err(ItemCall::<Groups>::store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /enrollmentGroups/{id}/attestationmechanism`.
#[utoipa::path(post, path = "/enrollmentGroups/{group_id}/attestationmechanism", tag = "enrollment groups",
    params(("group_id" = String, Path)),
    responses((status = 200, body = GroupAttestation), (status = 404, body = ErrorBody)))]
pub async fn attestation_mechanism(
    State(app): State<App>,
    call: ItemCall<Groups>,
) -> Result<Response, ApiError> {
    let id = &call.id;
    let row = group(&app, id).await?;
    Ok(Json(EnrollmentGroup::from_row(&row).attestation).into_response())
}

/// `POST /enrollmentGroups/query` with `{"query": "*"}`, paged as enrollments are.
#[utoipa::path(post, path = "/enrollmentGroups/query", tag = "enrollment groups",
    params(("x-ms-max-item-count" = Option<i64>, Header), ("x-ms-continuation" = Option<String>, Header)),
    request_body = QuerySpecification,
    responses((status = 200, body = Vec<EnrollmentGroup>)))]
pub async fn query(
    State(app): State<App>,
    headers: HeaderMap,
    AppJson(spec): AppJson<QuerySpecification>,
) -> Result<Response, ApiError> {
    queried(
        &app,
        &headers,
        &spec,
        "enrollmentGroups",
        groups::page,
        |r| &r.group_id,
        EnrollmentGroup::from_row,
    )
    .await
}

/// `POST /registrations/{id}/query`: the registration states of the group's devices, paged.
#[utoipa::path(post, path = "/registrations/{group_id}/query", tag = "registrations",
    params(("group_id" = String, Path), ("x-ms-max-item-count" = Option<i64>, Header), ("x-ms-continuation" = Option<String>, Header)),
    responses((status = 200, body = Vec<DeviceRegistrationResult>), (status = 404, body = ErrorBody)))]
pub async fn registrations(
    State(app): State<App>,
    headers: HeaderMap,
    call: ItemCall<Groups>,
) -> Result<Response, ApiError> {
    let id = &call.id;
    group(&app, id).await?;
    paged(
        &app,
        &headers,
        async |conn, after, limit| {
            groups::registrations_page(conn, id.as_str(), after, limit).await
        },
        |r| &r.registration_id,
        service_registration_state,
    )
    .await
}

/// `POST /enrollmentGroups`: DPS's bulk operation over at most 10 groups, item by item; one
/// error per refused group.
#[utoipa::path(post, path = "/enrollmentGroups", tag = "enrollment groups",
    request_body = BulkEnrollmentGroupOperation,
    responses((status = 200, body = BulkEnrollmentGroupOperationResult), (status = 400, body = ErrorBody)))]
pub async fn bulk(
    State(app): State<App>,
    headers: HeaderMap,
    AppJson(body): AppJson<BulkEnrollmentGroupOperation>,
) -> Result<Json<BulkEnrollmentGroupOperationResult>, ApiError> {
    authorize(&app, &headers)?;
    if body.enrollment_groups.len() > MAX_GROUP_BULK {
        return Err(ApiError::ArgumentInvalid(format!(
            "at most {MAX_GROUP_BULK} enrollment groups per bulk operation"
        )));
    }
    let mut conn = connection(&app).await?;
    let now = OffsetDateTime::now_utc();
    let mut errors = Vec::new();
    for group in &body.enrollment_groups {
        let outcome: Result<(), ApiError> = async {
            if body.mode == BulkMode::Delete {
                let id =
                    RegistrationId::parse(&group.enrollment_group_id).map_err(InvalidGroup::Id)?;
                let etag = parse_etag(group.etag.as_deref())?;
                return groups::delete(&mut conn, id.as_str(), etag)
                    .await
                    .map_err(ItemCall::<Groups>::store_error);
            }
            let new = group.to_new(app.settings())?;
            match body.mode {
                BulkMode::Create => groups::create(&mut conn, &new, now).await.map(drop),
                BulkMode::Update => groups::upsert(&mut conn, &new, None, now).await.map(drop),
                _ => {
                    let etag =
                        parse_etag(group.etag.as_deref())?.ok_or(StoreError::PreconditionFailed)?;
                    groups::upsert(&mut conn, &new, Some(etag), now)
                        .await
                        .map(drop)
                }
            }
            .map_err(ItemCall::<Groups>::store_error)
        }
        .await;
        if let Err(e) = outcome {
            let (error_code, error_status) = item_error(e)?;
            errors.push(BulkEnrollmentGroupOperationError {
                enrollment_group_id: group.enrollment_group_id.clone(),
                error_code,
                error_status,
            });
        }
    }
    Ok(Json(BulkEnrollmentGroupOperationResult {
        is_successful: errors.is_empty(),
        errors,
    }))
}
