//! The admin page: one static page and its script and style, compiled in (no build chain, no
//! external assets), which use the service API with a policy key the operator types in
//! (`admin/app.js` says how the key is handled). Served on the HTTPS listener under a strict
//! Content-Security-Policy: scripts, styles and requests from this origin only, no framing, no
//! form posts.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::app::App;

const INDEX: &str = include_str!("../../admin/index.html");
const SCRIPT: &str = include_str!("../../admin/app.js");
const STYLE: &str = include_str!("../../admin/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `body` with its content type and the page's security headers.
fn asset(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Minimal HTML escaping for the one value the page is given.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// `GET /admin`: the page, told the service host name its signatures are for.
#[utoipa::path(get, path = "/admin", tag = "operations",
    responses((status = 200, description = "The admin page (HTML)", content_type = "text/html")))]
pub async fn page(State(app): State<App>) -> Response {
    let html = INDEX.replace(
        "{{SERVICE_HOST_NAME}}",
        &escape(&app.settings().service_host_name),
    );
    asset("text/html; charset=utf-8", html)
}

/// `GET /admin/app.js`.
#[utoipa::path(get, path = "/admin/app.js", tag = "operations",
    responses((status = 200, description = "The admin page's script", content_type = "text/javascript")))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT.to_owned())
}

/// `GET /admin/app.css`.
#[utoipa::path(get, path = "/admin/app.css", tag = "operations",
    responses((status = 200, description = "The admin page's style", content_type = "text/css")))]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE.to_owned())
}
