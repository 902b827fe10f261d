//! The HTTP surface: one router for the device API and the enrollment API.
//!
//! Uses: `app`, `enrollment`, `hub`, `issuance`, `metrics`, `registration`, `store`, `telemetry`
//! (the layers table, docs/architecture.md).

pub mod admin;
pub mod certificates;
pub mod device_api;
pub mod enrollment_groups;
pub mod error;
pub mod hub_hooks;
pub mod openapi;
pub mod service_api;
mod service_common;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole service as a router (what `serve` runs and tests call).
pub fn router(app: App) -> Router {
    let body_limit = app.settings().max_body_bytes;
    Router::new()
        .route("/{id_scope}/registrations/{registration_id}/register", put(device_api::register))
        .route(
            "/{id_scope}/registrations/{registration_id}/operations/{operation_id}",
            get(device_api::operation_status),
        )
        .route("/{id_scope}/registrations/{registration_id}", post(device_api::registration_state))
        .route("/enrollments", post(service_api::bulk))
        .route("/enrollments/query", post(service_api::query))
        .route(
            "/enrollments/{registration_id}",
            put(service_api::put_enrollment).get(service_api::get_enrollment).delete(service_api::delete_enrollment),
        )
        .route("/enrollments/{registration_id}/attestationmechanism", post(service_api::get_attestation_mechanism))
        .route(
            "/registrations/{registration_id}",
            get(service_api::get_registration).delete(service_api::delete_registration),
        )
        .route("/registrations/{registration_id}/attestationPins", delete(service_api::repin))
        .route("/credentialPolicies/{name}/crl", get(certificates::crl))
        .route("/registrations/{group_id}/query", post(enrollment_groups::registrations))
        .route("/enrollmentGroups", post(enrollment_groups::bulk))
        .route("/enrollmentGroups/query", post(enrollment_groups::query))
        .route(
            "/enrollmentGroups/{group_id}",
            put(enrollment_groups::put).get(enrollment_groups::get).delete(enrollment_groups::delete),
        )
        .route("/enrollmentGroups/{group_id}/attestationmechanism", post(enrollment_groups::attestation_mechanism))
        .route("/healthz", get(openapi::healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/admin", get(admin::page))
        .route("/admin/app.js", get(admin::script))
        .route("/admin/app.css", get(admin::style))
        // Timed per matched route (a route layer: the fallback's 404s are not timed).
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), timed))
        // A path this service does not serve: a DPS error body like every other answer.
        .fallback(|| async { error::ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(with_request_id))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                // The path carries no secrets; query strings and headers are not logged.
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .with_state(app)
}

/// Observes the request's duration by method, matched route template and status.
async fn timed(
    State(app): State<App>,
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    app.metrics().request(
        &method,
        route.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The metrics listener's router: `GET /metrics` in the Prometheus text format.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(app): State<App>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    app.metrics().render(app.pool()),
                )
            }),
        )
        .with_state(app)
}

/// The static words of the routes, as the router spells them. DPS matches paths without regard
/// to case, and the Node service SDK relies on it: it posts a group's attestation mechanism to
/// `/enrollmentgroups/{id}/attestationmechanism` (azure-iot-provisioning-service 1.11.2,
/// dist/provisioningserviceclient.js, `getEnrollmentGroupAttestationMechanism`).
const ROUTE_WORDS: &[&str] = &[
    "enrollmentGroups",
    "enrollments",
    "registrations",
    "attestationmechanism",
    "query",
    "operations",
    "register",
];

/// Rewrites the static words of a request's path to the router's spelling (ids are left as
/// they are: they are case-insensitive where the handlers compare them).
#[must_use]
pub fn canonical_route_case<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let word = |segment: &str| {
        ROUTE_WORDS
            .iter()
            .find(|w| segment.eq_ignore_ascii_case(w))
            .copied()
    };
    let path = request.uri().path();
    if !path
        .split('/')
        .any(|segment| word(segment).is_some_and(|w| w != segment))
    {
        return request;
    }
    let canonical: Vec<&str> = path
        .split('/')
        .map(|segment| word(segment).unwrap_or(segment))
        .collect();
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{}?{query}", canonical.join("/")),
        None => canonical.join("/"),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Runs the request with its id in [`error::REQUEST_ID`].
async fn with_request_id(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    error::REQUEST_ID.scope(id, next.run(request)).await
}

/// Ready when the database answers within a second (a probe must not hang with the database).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = String), (status = 503, body = String)))]
async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    let probe = tokio::time::timeout(READY_TIMEOUT, crate::store::ping(app.pool())).await;
    match probe {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database not reachable")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database not answering"),
    }
}

const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
