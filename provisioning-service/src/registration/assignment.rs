//! What the SAS step assigns, by the enrollment's allocation (`allocation::policy`): a hub now,
//! `failed` with the reason, or `assigning` while a custom allocation webhook decides in the
//! background. The webhook's decision is written by whichever instance asked it, guarded by the
//! etag of the `assigning` state; a decision that never comes is turned into `failed` by the
//! next poll on any instance once it is overdue ([`settle_overdue`]).

use dps_protocol::wire::Base64Bytes;
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Registrar;
use crate::allocation::policy::{Allocation, Plan, Previous};
use crate::allocation::Failure;
use crate::enrollment::IndividualEnrollment;
use crate::registration::webhook::{self, AllocationRequest, DeviceRuntimeContext, TpmContext};
use crate::store::device_steps::{self, Admission};
use crate::store::registrations::{RegistrationRow, Status, Substatus};
use crate::store::{enrollments, StoreError};

/// Seconds past the webhook timeout before an `assigning` state counts as overdue: time for
/// the deciding instance to write its decision.
const DECISION_GRACE_SECS: i64 = 5;

/// The decision fields of a registration state.
#[derive(Debug, Clone)]
pub(super) struct Decided {
    status: Status,
    substatus: Option<Substatus>,
    hub: Option<String>,
    device_id: Option<String>,
    payload: Option<Value>,
    initial_twin: Option<Value>,
    failure: Option<Failure>,
}

impl Decided {
    fn assigned(
        hub: String,
        device_id: String,
        (substatus, initial_twin): (Substatus, Option<Value>),
        payload: Option<Value>,
    ) -> Self {
        Self {
            status: Status::Assigned,
            substatus: Some(substatus),
            hub: Some(hub),
            device_id: Some(device_id),
            payload,
            initial_twin,
            failure: None,
        }
    }

    fn failed(failure: Failure) -> Self {
        Self {
            status: Status::Failed,
            substatus: None,
            hub: None,
            device_id: None,
            payload: None,
            initial_twin: None,
            failure: Some(failure),
        }
    }

    fn assigning() -> Self {
        Self {
            status: Status::Assigning,
            substatus: None,
            hub: None,
            device_id: None,
            payload: None,
            initial_twin: None,
            failure: None,
        }
    }

    /// Writes the decision into `row` (a new etag, updated now).
    pub(super) fn apply(self, row: &mut RegistrationRow, now: OffsetDateTime) {
        row.status = self.status;
        row.substatus = self.substatus;
        row.assigned_hub = self.hub;
        row.device_id = self.device_id;
        row.payload = self.payload.map(Json);
        row.initial_twin = self.initial_twin.map(Json);
        row.error_code = self.failure.as_ref().map(Failure::code);
        row.error_message = self.failure.as_ref().map(ToString::to_string);
        row.etag = Uuid::new_v4();
        row.updated_at = now;
    }
}

/// A webhook call to make once the `assigning` state is written.
#[derive(Debug)]
pub(super) struct WebhookJob {
    url: String,
    registration_id: String,
    device: DeviceContext,
    offered: Vec<String>,
    allocation: Allocation,
    previous: Option<Previous>,
    device_id: String,
}

/// What the device presents that the webhook sees: its SRK and register payload (the EK is the
/// enrollment's).
#[derive(Debug, Clone)]
pub(super) struct DeviceContext {
    pub storage_root_key: Vec<u8>,
    pub payload: Option<Value>,
}

/// Decides the SAS step's assignment for `registration_id` under `enrollment`: the decision
/// now, or `assigning` and the webhook call to make. An enrollment whose allocation fields no
/// longer parse (written before they were checked) fails the registration with the reason.
pub(super) fn plan(
    registrar: &Registrar,
    registration_id: &str,
    enrollment: &Admission,
    previous: Option<&Previous>,
    device: DeviceContext,
) -> (Decided, Option<WebhookJob>) {
    let extra = enrollment.extra.as_object().cloned().unwrap_or_default();
    let allocation = match Allocation::read(&extra, enrollment.iot_hub_host_name.as_deref()) {
        Ok(a) => a,
        Err(e) => return (Decided::failed(Failure::Misconfigured(e.to_string())), None),
    };
    let previous = previous.cloned();
    let device_id = enrollment
        .device_id
        .clone()
        .unwrap_or_else(|| registration_id.to_owned());
    let linked = &registrar.settings().linked_hubs;
    match allocation.plan(linked, registration_id, previous.as_ref()) {
        Err(failure) => (Decided::failed(failure), None),
        Ok(Plan::Hub(hub)) => {
            let settled = allocation.settle(&hub, previous.as_ref(), None);
            (Decided::assigned(hub, device_id, settled, None), None)
        }
        Ok(Plan::Webhook {
            definition,
            offered,
        }) => {
            let job = WebhookJob {
                url: definition.webhook_url.clone(),
                registration_id: registration_id.to_owned(),
                device,
                offered,
                allocation: allocation.clone(),
                previous,
                device_id,
            };
            (Decided::assigning(), Some(job))
        }
    }
}

/// When an `assigning` state written `now` is overdue.
#[must_use]
pub(super) fn decide_by(registrar: &Registrar, now: OffsetDateTime) -> OffsetDateTime {
    let timeout_ms = i64::try_from(registrar.settings().webhook_timeout_ms).unwrap_or(i64::MAX);
    now + time::Duration::milliseconds(timeout_ms) + time::Duration::seconds(DECISION_GRACE_SECS)
}

/// Asks the webhook and writes its decision on `assigning` (the row as written, at its etag).
/// Runs in the background of the SAS step; every outcome is written or, if the device
/// registered again meanwhile, dropped.
pub(super) async fn run_webhook(registrar: Registrar, job: WebhookJob, assigning: RegistrationRow) {
    let id = assigning.registration_id.clone();
    let host = webhook::host_of(&job.url);
    let decided = match ask(&registrar, job).await {
        Ok(decided) => decided,
        Err(e) => {
            tracing::error!(registration_id = %id, error = %crate::telemetry::error_chain(&e), "allocation: cannot read the enrollment");
            Decided::failed(Failure::Undecided)
        }
    };
    if let Some(failure) = &decided.failure {
        tracing::warn!(registration_id = %id, webhook = %host, reason = %failure, "allocation failed");
    } else {
        tracing::info!(registration_id = %id, webhook = %host, hub = decided.hub.as_deref(), "device assigned by the allocation webhook");
    }
    if let Err(e) = write(&registrar, decided, assigning).await {
        tracing::error!(registration_id = %id, error = %crate::telemetry::error_chain(&e), "allocation: cannot write the decision");
    }
}

/// The webhook's decision, as the registration's.
async fn ask(registrar: &Registrar, job: WebhookJob) -> Result<Decided, StoreError> {
    let mut conn = registrar.acquire().await?;
    let Some(row) = enrollments::get(&mut conn, &job.registration_id).await? else {
        return Ok(Decided::failed(Failure::Misconfigured(
            "the enrollment was deleted".to_owned(),
        )));
    };
    drop(conn);
    let request = AllocationRequest {
        individual_enrollment: IndividualEnrollment::from_row(&row),
        device_runtime_context: DeviceRuntimeContext {
            registration_id: job.registration_id,
            current_iot_hub_host_name: job.previous.as_ref().map(|p| p.hub.clone()),
            current_device_id: job.previous.as_ref().and_then(|p| p.device_id.clone()),
            tpm: TpmContext {
                endorsement_key: Base64Bytes(row.endorsement_key),
                storage_root_key: Base64Bytes(job.device.storage_root_key),
            },
            payload: job.device.payload,
        },
        linked_hubs: job.offered,
    };
    Ok(
        match registrar.webhooks().decide(&job.url, &request).await {
            Ok(decision) => {
                let settled = job.allocation.settle(
                    &decision.hub,
                    job.previous.as_ref(),
                    decision.initial_twin,
                );
                Decided::assigned(decision.hub, job.device_id, settled, decision.payload)
            }
            Err(failure) => Decided::failed(failure),
        },
    )
}

/// Counts a written registration state in the metrics (`dps_registration_attempts_total`,
/// `dps_device_assignments_total`).
pub(super) fn count(registrar: &Registrar, row: &RegistrationRow) {
    let status = match row.status {
        Status::Assigned => "assigned",
        Status::Assigning => "assigning",
        Status::Failed => "failed",
        Status::Unassigned => "unassigned",
        Status::Disabled => "disabled",
    };
    registrar
        .metrics()
        .registration(row.assigned_hub.as_deref(), status);
}

/// Writes `decided` on the `assigning` row at its etag; a device id already taken on the hub
/// fails the registration instead.
async fn write(
    registrar: &Registrar,
    decided: Decided,
    assigning: RegistrationRow,
) -> Result<Option<RegistrationRow>, StoreError> {
    let mut conn = registrar.acquire().await?;
    let now = OffsetDateTime::now_utc();
    let mut row = assigning.clone();
    decided.apply(&mut row, now);
    let written = match device_steps::decide(&mut conn, &row, assigning.etag).await {
        Err(StoreError::DeviceIdTaken) => {
            let mut row = assigning.clone();
            Decided::failed(Failure::DeviceIdTaken).apply(&mut row, now);
            device_steps::decide(&mut conn, &row, assigning.etag).await
        }
        other => other,
    }?;
    if let Some(row) = &written {
        count(registrar, row);
    }
    Ok(written)
}

/// `row` as a poll should see it: an `assigning` state past its `decide_by` becomes `failed`
/// (the instance that was deciding stopped), written once by whichever instance sees it first.
pub(super) async fn settle_overdue(
    registrar: &Registrar,
    row: RegistrationRow,
    now: OffsetDateTime,
) -> Result<RegistrationRow, StoreError> {
    let overdue = row.status == Status::Assigning && row.decide_by.is_some_and(|t| t <= now);
    if !overdue {
        return Ok(row);
    }
    let id = row.registration_id.clone();
    if let Some(written) = write(registrar, Decided::failed(Failure::Undecided), row).await? {
        tracing::warn!(registration_id = %id, "allocation overdue: registration failed");
        return Ok(written);
    }
    // Decided meanwhile by someone else: read what they wrote.
    let mut conn = registrar.acquire().await?;
    crate::store::registrations::get_registration(&mut conn, &id)
        .await?
        .ok_or(StoreError::NotFound)
}
