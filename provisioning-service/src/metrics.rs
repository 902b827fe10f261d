//! Prometheus metrics (`prometheus-client`, the Prometheus project's Rust client), served on
//! their own listener (`--metrics-listen`, never the device port). Names follow Prometheus
//! conventions (base units, `_total` counters) and mirror what DPS reports in Azure Monitor
//! (`AttestationAttempts`, `RegistrationAttempts`, `DeviceAssignments`; MicrosoftDocs
//! `monitor-iot-dps-reference.md`). No label ever carries a registration or device id, a key,
//! or anything a client chose freely: routes are the matched route templates, hubs are the
//! service's own linked hubs, reasons and statuses are this service's fixed names.
//!
//! Uses: nothing of the crate (the layers table, docs/architecture.md).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

/// Success or failure, as DPS's metrics put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    success,
    failure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AttestationLabels {
    pub status: Outcome,
    /// Always `https` here (DPS also has `mqtt` and `amqp`).
    pub protocol: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `verified`, `pinned`, `failed` (recorded under a `report` policy) or `refused`.
    pub verdict: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RegistrationLabels {
    /// A linked hub, or empty when none was assigned.
    pub iot_hub: String,
    /// `assigned`, `assigning` (a webhook decides) or `failed`.
    pub status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HubLabels {
    pub iot_hub: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `challenge`, `register` or `poll`.
    pub step: &'static str,
    /// The refusal's name (`not_enrolled`, `throttled`, `sas_rejected`, ...).
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of the methods the routes answer ([`method_label`]), else `other`: a client can
    /// send any token as a method, and each new label value would be a series kept forever.
    pub method: &'static str,
    /// The matched route template (`/{id_scope}/registrations/{registration_id}/register`), or
    /// `unmatched`.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RememberedLabels {
    /// `used` or `read_again`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PoolLabels {
    /// `idle` or `in_use`.
    pub state: &'static str,
}

/// The `method` label: the methods some route answers keep their name, anything else is
/// `other` (a route answers those 405, and the label set stays this size whatever arrives).
#[must_use]
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// Every metric of one service instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub attestation_attempts: Family<AttestationLabels, Counter>,
    attestation_verdicts: Family<VerdictLabels, Counter>,
    pub registration_attempts: Family<RegistrationLabels, Counter>,
    pub device_assignments: Family<HubLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub requests: Family<RequestLabels, Histogram>,
    sealing_failures: Counter,
    remembered: Family<RememberedLabels, Counter>,
    pub pool_acquire: Histogram,
    pub pool_returns: Counter,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
}

/// Request and acquire durations: 0.5 ms to ~8 s.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 15)
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let attestation_attempts = Family::<AttestationLabels, Counter>::default();
        registry.register(
            "dps_attestation_attempts",
            "Device attestations (SAS registrations proving a TPM-held key), by outcome",
            attestation_attempts.clone(),
        );
        let attestation_verdicts = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "dps_attestation_verdicts",
            "Platform attestation (AK-signed PCR quotes) judged by the enrollment's policy, by \
             verdict",
            attestation_verdicts.clone(),
        );
        let registration_attempts = Family::<RegistrationLabels, Counter>::default();
        registry.register(
            "dps_registration_attempts",
            "Registrations decided, by hub and status",
            registration_attempts.clone(),
        );
        let device_assignments = Family::<HubLabels, Counter>::default();
        registry.register(
            "dps_device_assignments",
            "Devices assigned to a hub",
            device_assignments.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "dps_refusals",
            "Device requests refused, by step and reason (throttling included)",
            refusals.clone(),
        );
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(seconds_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "dps_http_request_duration_seconds",
            "HTTPS requests by method, matched route and status",
            requests.clone(),
        );
        let sealing_failures = Counter::default();
        registry.register(
            "dps_sealing_failures",
            "Sealed device keys that could not be opened (wrong or missing service key)",
            sealing_failures.clone(),
        );
        let remembered = Family::<RememberedLabels, Counter>::default();
        registry.register(
            "dps_remembered_challenges",
            "SAS steps that found the device's challenge remembered by this instance: used (no \
             read) or read_again (something changed, or the token matched no remembered key)",
            remembered.clone(),
        );
        let pool_acquire = Histogram::new(seconds_buckets());
        registry.register(
            "dps_db_pool_acquire_duration_seconds",
            "Time waited for a database connection",
            pool_acquire.clone(),
        );
        let pool_returns = Counter::default();
        registry.register(
            "dps_db_pool_returns",
            "Database connections handed back to the pool, each confirmed with a round trip (a \
             device step's clean connection waits for the next request instead, store::lease)",
            pool_returns.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "dps_db_pool_connections",
            "Open database connections by state",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "dps_db_pool_max_connections",
            "The pool's connection limit",
            pool_max.clone(),
        );
        Self {
            registry,
            attestation_attempts,
            attestation_verdicts,
            registration_attempts,
            device_assignments,
            refusals,
            requests,
            sealing_failures,
            remembered,
            pool_acquire,
            pool_returns,
            pool_connections,
            pool_max,
        }
    }

    /// One attestation at the SAS step.
    pub fn attestation(&self, status: Outcome) {
        self.attestation_attempts
            .get_or_create(&AttestationLabels {
                status,
                protocol: "https",
            })
            .inc();
    }

    /// One quote judged: `verdict` is one of [`VerdictLabels::verdict`]'s names.
    pub fn attestation_verdict(&self, verdict: &'static str) {
        self.attestation_verdicts
            .get_or_create(&VerdictLabels { verdict })
            .inc();
    }

    /// One registration decided (`assigned` also counts an assignment).
    pub fn registration(&self, hub: Option<&str>, status: &'static str) {
        let iot_hub = hub.unwrap_or_default().to_owned();
        self.registration_attempts
            .get_or_create(&RegistrationLabels {
                iot_hub: iot_hub.clone(),
                status,
            })
            .inc();
        if status == "assigned" {
            self.device_assignments
                .get_or_create(&HubLabels { iot_hub })
                .inc();
        }
    }

    /// A sealed device key that could not be opened.
    pub fn sealing_failure(&self) {
        self.sealing_failures.inc();
    }

    /// A SAS step that found the device's challenge remembered (`registration::recent`).
    pub fn remembered(&self, used: bool) {
        let outcome = if used { "used" } else { "read_again" };
        self.remembered
            .get_or_create(&RememberedLabels { outcome })
            .inc();
    }

    pub fn refusal(&self, step: &'static str, reason: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { step, reason })
            .inc();
    }

    pub fn request(&self, method: &axum::http::Method, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route.to_owned(),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the pool's gauges read now.
    #[must_use]
    pub fn render(&self, pool: &PgPool) -> String {
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let open = i64::from(pool.size());
        self.pool_connections
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool_connections
            .get_or_create(&PoolLabels { state: "in_use" })
            .set((open - idle).max(0));
        self.pool_max
            .set(i64::from(pool.options().get_max_connections()));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
