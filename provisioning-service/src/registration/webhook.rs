//! The custom allocation webhook: DPS's request and response shapes
//! (`MicrosoftDocs/azure-docs: articles/iot-dps/concepts-custom-allocation.md`,
//! `AllocationRequest`/`AllocationResponse`) and the one HTTPS call, bounded in time and size.
//! The webhook URL may carry a key (Azure Functions put theirs in the query), so it is never
//! logged or reported: only its host is.

use std::sync::Arc;
use std::time::Duration;

use dps_protocol::wire::Base64Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::allocation::Failure;
use crate::enrollment::IndividualEnrollment;

/// The largest webhook answer read; a larger one is refused as invalid.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// `deviceRuntimeContext.tpm`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmContext {
    pub endorsement_key: Base64Bytes,
    pub storage_root_key: Base64Bytes,
}

/// `deviceRuntimeContext`: the device asking, and where it was before.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRuntimeContext {
    pub registration_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_iot_hub_host_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_device_id: Option<String>,
    pub tpm: TpmContext,
    /// The device's `payload` from its register body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// What DPS POSTs to the webhook.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRequest {
    pub individual_enrollment: IndividualEnrollment,
    pub device_runtime_context: DeviceRuntimeContext,
    /// The hubs the webhook may choose from (the enrollment's `iotHubs` that are linked, or
    /// every linked hub).
    pub linked_hubs: Vec<String>,
}

/// What the webhook answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationResponse {
    pub iot_hub_host_name: String,
    #[serde(default)]
    pub initial_twin: Option<Value>,
    /// Returned to the device in `registrationState.payload`.
    #[serde(default)]
    pub payload: Option<Value>,
}

/// The webhook's decision, checked: one of the offered hubs (as the service spells it).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub hub: String,
    pub initial_twin: Option<Value>,
    pub payload: Option<Value>,
}

/// The HTTP client of allocation webhooks: no redirects (one could lead to plain http), https
/// only unless the operator allows http, a total timeout per call.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    timeout: Duration,
    /// Calls in flight at most, over every enrollment's webhook: devices decide when the
    /// service calls its owners' webhooks, so the service bounds how many at once.
    calls: Arc<Semaphore>,
}

/// Webhook calls one instance makes at once at most; a call that finds none free waits for one
/// within its timeout.
pub const MAX_CONCURRENT_CALLS: usize = 32;

/// Why the webhook client cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("the allocation webhook client: {0}")]
pub struct ClientBuildError(String);

impl WebhookClient {
    /// `extra_roots_pem`: CA certificates trusted for webhooks besides the public web PKI.
    pub fn new(
        timeout: Duration,
        extra_roots_pem: Option<&[u8]>,
        allow_http: bool,
    ) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(!allow_http)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("provisioning-service/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientBuildError(format!("CA file: {e}")))?;
            if roots.is_empty() {
                return Err(ClientBuildError("CA file holds no certificate".to_owned()));
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self {
            http,
            timeout,
            calls: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
        })
    }

    /// POSTs `request` to `url` and checks the answer: HTTP 2xx, a JSON allocation response
    /// of at most 64 KiB, a hub among `request.linked_hubs`, an object `initialTwin`, and no
    /// NUL character (Postgres's JSON cannot hold one).
    pub async fn decide(
        &self,
        url: &str,
        request: &AllocationRequest,
    ) -> Result<Decision, Failure> {
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        // The wait for a free call counts against the timeout: the decision is due by then.
        let started = tokio::time::Instant::now();
        let _call = tokio::time::timeout(self.timeout, self.calls.acquire())
            .await
            .map_err(|_| Failure::WebhookTimeout(timeout_ms))?
            .map_err(|_| Failure::WebhookTimeout(timeout_ms))?;
        let left = self.timeout.saturating_sub(started.elapsed());
        let on_error = |e: reqwest::Error| {
            if e.is_timeout() {
                Failure::WebhookTimeout(timeout_ms)
            } else {
                // Without the URL: it may hold the webhook's key.
                Failure::WebhookUnreachable(crate::telemetry::error_chain(&e.without_url()))
            }
        };
        let mut response = self
            .http
            .post(url)
            .timeout(left)
            .json(request)
            .send()
            .await
            .map_err(on_error)?;
        if !response.status().is_success() {
            return Err(Failure::WebhookStatus(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(on_error)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::WebhookInvalidResponse(format!(
                    "longer than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: AllocationResponse = serde_json::from_slice(&body)
            .map_err(|e| Failure::WebhookInvalidResponse(e.to_string()))?;
        let hub = request
            .linked_hubs
            .iter()
            .find(|h| h.eq_ignore_ascii_case(&answer.iot_hub_host_name))
            .ok_or_else(|| Failure::WebhookHubNotOffered(answer.iot_hub_host_name.clone()))?;
        if answer.initial_twin.as_ref().is_some_and(|t| !t.is_object()) {
            return Err(Failure::WebhookInvalidResponse(
                "initialTwin is not an object".to_owned(),
            ));
        }
        let nul = [&answer.initial_twin, &answer.payload]
            .into_iter()
            .flatten()
            .any(crate::enrollment::holds_nul);
        if nul {
            return Err(Failure::WebhookInvalidResponse(
                "a string holds the NUL character".to_owned(),
            ));
        }
        Ok(Decision {
            hub: hub.clone(),
            initial_twin: answer.initial_twin,
            payload: answer.payload,
        })
    }
}

/// The webhook's host, for the log (never the whole URL).
#[must_use]
pub fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}
