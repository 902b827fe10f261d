//! One error type for the HTTP API, and the one place where the domain's errors
//! ([`Refusal`], [`StepError`], [`EnrollmentError`]) become DPS wire errors (status,
//! `errorCode`, body). Client errors say what was wrong; refusals of credentials are logged with
//! their reason and sent as a bare "Unauthorized"; internal errors are logged in full and
//! reported as one generic line.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dps_protocol::wire::{error_codes, ErrorBody};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::enrollment::group::InvalidGroup;
use crate::enrollment::{EnrollmentError, InvalidEnrollment};
use crate::registration::{Refusal, StepError};
use crate::store::StoreError;
use crate::timestamp;

tokio::task_local! {
    /// The request id of the request being served (set by `http::with_request_id`), reported
    /// as the `trackingId` of its error, so a caller's report leads straight to the log lines.
    pub static REQUEST_ID: String;
}

/// DPS-style error codes not named in `dps_protocol::wire::error_codes`: status × 1000 + n.
pub mod codes {
    pub const CONFLICT: u32 = 409_001;
    pub const PAYLOAD_TOO_LARGE: u32 = 413_001;
    pub const SERVICE_UNAVAILABLE: u32 = 503_000;
}

/// Seconds a caller should wait after a 503.
const UNAVAILABLE_RETRY_AFTER: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (JSON, base64, TPM structure, registration id, api-version).
    #[error("{0}")]
    ArgumentInvalid(String),
    /// 401: no or bad credentials. The reason is logged, never sent: a device learns nothing
    /// about which enrollments exist.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` does not match the current etag.
    #[error("precondition failed: etag does not match")]
    PreconditionFailed,
    /// 413: the body is over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 429: throttled; retry after so many seconds.
    #[error("too many requests")]
    Throttled { retry_after: u64 },
    /// 500: logged with its whole source chain; the caller sees "internal error".
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 503: the database cannot be reached (logged); the caller is told to retry shortly.
    #[error("service unavailable, retry later")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whether `err`, or an error it was caused by, says the database cannot be reached (rather
/// than that a statement failed): no connection within the pool's acquire timeout, a broken
/// connection, Postgres shutting down or starting (SQLSTATE classes 08 and 57P), or a write
/// refused as read-only (25006: a connection that reached a standby, as one made through a
/// proxy around a failover can, until it is replaced).
fn database_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(db) = e.downcast_ref::<sqlx::Error>() {
            return match db {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "25006"),
                _ => false,
            };
        }
        next = e.source();
    }
    false
}

impl ApiError {
    /// A fault of the service: 503 if the database cannot be reached, else 500.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        if database_unavailable(&err) {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Internal(Box::new(err))
        }
    }

    /// The HTTP status and DPS `errorCode` of this error.
    #[must_use]
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            Self::ArgumentInvalid(_) => (StatusCode::BAD_REQUEST, error_codes::ARGUMENT_INVALID),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, error_codes::UNAUTHORIZED),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, error_codes::REGISTRATION_NOT_FOUND),
            Self::Conflict(_) => (StatusCode::CONFLICT, codes::CONFLICT),
            Self::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                error_codes::PRECONDITION_FAILED,
            ),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE),
            Self::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, error_codes::THROTTLED),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_codes::INTERNAL_ERROR,
            ),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::SERVICE_UNAVAILABLE),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidRegistrationId(_)
            | Refusal::RegistrationIdMismatch
            | Refusal::AttestationRequired
            | Refusal::Csr(_)
            | Refusal::InvalidKey { .. }
            | Refusal::EkCertificateChainTooLong => Self::ArgumentInvalid(refusal.to_string()),
            Refusal::NotEnrolled
            | Refusal::EnrolledUnderAnotherId
            | Refusal::EkMismatch
            | Refusal::Disabled
            | Refusal::MissingSas
            | Refusal::UnreadableAuthorization
            | Refusal::MalformedSas(_)
            | Refusal::SasRejected(_)
            | Refusal::NoLiveKey
            | Refusal::GroupIdNotDerived
            | Refusal::EkCertificate(_)
            | Refusal::NotAnEkCertificate
            | Refusal::EkCertificateMismatch
            | Refusal::NoGroupAdmits
            | Refusal::GroupClosed
            | Refusal::Attestation(_) => Self::Unauthorized(refusal.to_string()),
            Refusal::UnknownOperation => Self::NotFound("operation"),
            Refusal::Contended => Self::Conflict(refusal.to_string()),
            Refusal::Throttled { retry_after } => Self::Throttled { retry_after },
        }
    }
}

impl From<StepError> for ApiError {
    fn from(err: StepError) -> Self {
        match err {
            StepError::Refused(refusal) => refusal.into(),
            StepError::Store(e @ StoreError::DeviceIdTaken) => e.into(),
            StepError::Store(_)
            | StepError::Seal(_)
            | StepError::Cpu(_)
            | StepError::Policy(_)
            | StepError::Issue(_) => Self::internal(err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound("enrollment"),
            StoreError::PreconditionFailed => Self::PreconditionFailed,
            StoreError::EkTaken
            | StoreError::Exists
            | StoreError::RepeatedInBatch
            | StoreError::DeviceIdTaken => Self::Conflict(err.to_string()),
            StoreError::Db(_) => Self::internal(err),
        }
    }
}

impl From<InvalidEnrollment> for ApiError {
    fn from(err: InvalidEnrollment) -> Self {
        Self::ArgumentInvalid(err.to_string())
    }
}

impl From<InvalidGroup> for ApiError {
    fn from(err: InvalidGroup) -> Self {
        match err {
            InvalidGroup::Enrollment(e) => e.into(),
            other => Self::ArgumentInvalid(other.to_string()),
        }
    }
}

impl From<EnrollmentError> for ApiError {
    fn from(err: EnrollmentError) -> Self {
        match err {
            EnrollmentError::Invalid(e) => e.into(),
            EnrollmentError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_code) = self.status_and_code();
        let tracking_id = REQUEST_ID
            .try_with(Clone::clone)
            .ok()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let message = match &self {
            Self::Unauthorized(reason) => {
                tracing::info!(%tracking_id, %reason, "unauthorized");
                "Unauthorized".to_owned()
            }
            Self::Unavailable(source) => {
                tracing::warn!(%tracking_id, error = %source, "database unavailable");
                self.to_string()
            }
            Self::Internal(source) => {
                let chain = crate::telemetry::error_chain(source.as_ref());
                tracing::error!(%tracking_id, error = %chain, "internal error");
                "internal error".to_owned()
            }
            other => {
                tracing::info!(%tracking_id, status = status.as_u16(), error = %other, "request refused");
                other.to_string()
            }
        };
        let body = ErrorBody {
            error_code,
            tracking_id,
            message,
            timestamp_utc: timestamp(OffsetDateTime::now_utc()),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            Self::Throttled { retry_after } => Some(retry_after),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        if let Some(value) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// JSON body extractor whose failures are DPS error bodies (400, or 413 over the size limit).
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e: BytesRejection| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::ArgumentInvalid("unreadable request body".to_owned())
                    }
                })?;
        serde_json::from_slice(&bytes)
            .map(AppJson)
            .map_err(|e| ApiError::ArgumentInvalid(format!("invalid JSON body: {e}")))
    }
}

/// Path extractor whose failures are DPS error bodies.
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AppPath(p.0))
            .map_err(|_| ApiError::ArgumentInvalid("invalid path".to_owned()))
    }
}
