//! What the service API's routes for individual enrollments and for TPM enrollment groups
//! share, written once: the service SAS, one item's call (its id and `If-Match`), etags, the
//! paged query with continuation tokens, and the per-item errors of a bulk operation. A group
//! stays a group and an enrollment an enrollment on the wire; only these mechanics are common.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dps_protocol::sas::{SasToken, VerifyPolicy};
use dps_protocol::RegistrationId;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::{ApiError, AppPath};
use crate::app::App;
use crate::enrollment::group::InvalidGroup;
use crate::enrollment::{parse_etag, InvalidEnrollment, QuerySpecification};
use crate::registration::parse_registration_id;
use crate::store::lease::Lease;
use crate::store::StoreError;

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

/// What a route's items are: how their ids are refused and what a missing one is called.
pub trait Collection {
    /// The name a missing item has in a 404.
    const ITEM: &'static str;
    fn parse_id(id: &str) -> Result<RegistrationId, ApiError>;
}

/// Individual enrollments and registration states: ids are registration ids.
pub struct Registrations;

impl Collection for Registrations {
    const ITEM: &'static str = "enrollment";
    fn parse_id(id: &str) -> Result<RegistrationId, ApiError> {
        Ok(parse_registration_id(id)?)
    }
}

/// TPM enrollment groups.
pub struct Groups;

impl Collection for Groups {
    const ITEM: &'static str = "enrollment group";
    fn parse_id(id: &str) -> Result<RegistrationId, ApiError> {
        RegistrationId::parse(id).map_err(|e| InvalidGroup::Id(e).into())
    }
}

/// A service API call on one item, as every such handler takes it: the service SAS checked,
/// the path's id parsed, `If-Match` read.
pub struct ItemCall<C> {
    pub id: RegistrationId,
    pub if_match: Option<Uuid>,
    collection: PhantomData<C>,
}

impl<C: Collection> ItemCall<C> {
    /// What a write must match: `If-Match`, else the body's `etag`, else any version.
    pub fn precondition(&self, body_etag: Option<&str>) -> Result<Option<Uuid>, ApiError> {
        match self.if_match {
            Some(etag) => Ok(Some(etag)),
            None => Ok(parse_etag(body_etag)?),
        }
    }

    /// A store error on the wire, a missing item named as what it is.
    pub fn store_error(err: StoreError) -> ApiError {
        match err {
            StoreError::NotFound => ApiError::NotFound(C::ITEM),
            other => other.into(),
        }
    }
}

impl<C: Collection> FromRequestParts<App> for ItemCall<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        authorize(app, &parts.headers)?;
        let AppPath(path_id) = AppPath::<String>::from_request_parts(parts, app).await?;
        Ok(Self {
            id: C::parse_id(&path_id)?,
            if_match: if_match(&parts.headers)?,
            collection: PhantomData,
        })
    }
}

/// One pooled connection for the request.
pub(super) async fn connection(app: &App) -> Result<Lease<'_>, ApiError> {
    app.acquire().await.map_err(ApiError::internal)
}

/// `If-Match`, as an etag of this service (`*` or absent: any version).
fn if_match(headers: &HeaderMap) -> Result<Option<Uuid>, InvalidEnrollment> {
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

/// The one query supported: everything in `collection` (`*`, or its SQL spelling).
fn query_all(spec: &QuerySpecification, collection: &str) -> Result<(), ApiError> {
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
fn page_request(headers: &HeaderMap) -> Result<(i64, Option<RegistrationId>), ApiError> {
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
fn page_response<R, T: serde::Serialize>(
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

/// `POST /{collection}/query` with `{"query": "*"}`: the caller authorized, the query checked,
/// then one page ([`paged`]).
pub(super) async fn queried<R, T: serde::Serialize>(
    app: &App,
    headers: &HeaderMap,
    spec: &QuerySpecification,
    collection: &str,
    fetch: impl AsyncFnOnce(&mut PgConnection, Option<&str>, i64) -> Result<Vec<R>, StoreError>,
    id: impl Fn(&R) -> &str,
    json: impl Fn(&R) -> T,
) -> Result<Response, ApiError> {
    authorize(app, headers)?;
    query_all(spec, collection)?;
    paged(app, headers, fetch, id, json).await
}

/// One page of a query: `fetch` reads up to one row over the page size after the continuation
/// token, and the page goes out as JSON with the next token.
pub(super) async fn paged<R, T: serde::Serialize>(
    app: &App,
    headers: &HeaderMap,
    fetch: impl AsyncFnOnce(&mut PgConnection, Option<&str>, i64) -> Result<Vec<R>, StoreError>,
    id: impl Fn(&R) -> &str,
    json: impl Fn(&R) -> T,
) -> Result<Response, ApiError> {
    let (page_size, after) = page_request(headers)?;
    let rows = fetch(
        &mut *connection(app).await?,
        after.as_ref().map(RegistrationId::as_str),
        page_size + 1,
    )
    .await?;
    Ok(page_response(rows, page_size, id, json))
}

/// A bulk operation's refused item as DPS reports it (`errorCode`, `errorStatus`); a fault of
/// the service ends the whole operation instead.
pub(super) fn item_error(err: ApiError) -> Result<(u32, String), ApiError> {
    match err {
        e @ (ApiError::Internal(_) | ApiError::Unavailable(_)) => Err(e),
        e => Ok((e.status_and_code().1, e.to_string())),
    }
}
