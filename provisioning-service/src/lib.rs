//! A self-hosted provisioning service, wire-compatible with Azure IoT Hub DPS for TPM
//! attestation. Start at [`registration`] to see how a device is admitted and assigned, at
//! [`enrollment`] for the device list a factory fills, and at [`store`] for every SQL statement
//! and the lock order. The service keeps no state between requests: Postgres is its only memory,
//! so any number of instances can serve one device's steps.
//!
//! - [`http`]: the router; `http::device_api` (`/{idScope}/registrations/...`) and
//!   `http::service_api` (`/enrollments`, `/registrations`) parse requests and call the domain;
//!   `http::error` maps every domain error to a DPS status and `errorCode`;
//! - [`registration`]: the decision logic of each device step, with its refusals named;
//! - [`enrollment`]: validation and writes of individual enrollments (API, bulk and factory)
//!   and of TPM enrollment groups (`enrollment::group`);
//! - [`hub`]: the hub half, answering MQTT brokers' auth hooks (`http::hub_hooks`) for
//!   provisioned devices and back-end applications;
//! - [`store`]: the SQL, one connection per request and one transaction per step;
//! - [`sealing`]: issued HMAC keys are stored encrypted under the service key;
//! - [`allocation`]: hub assignment per enrollment (policies, the webhook, re-provisioning);
//! - [`metrics`]: the Prometheus metrics, on their own listener;
//! - [`settings`] (what the service runs with, validated at start-up) and [`config`] (the
//!   command line that produces them); [`factory`]: the CSV/JSONL files of `bulk-enroll`.
//!
//! What it never does: log or return a key, token or blob; keep a device's state in memory;
//! trust a device before it proved its TPM.

pub mod allocation;
pub mod app;
pub mod config;
pub mod cpu;
pub mod crl_sync;
pub mod enrollment;
pub mod factory;
pub mod http;
pub mod hub;
pub mod issuance;
pub mod metrics;
pub mod registration;
pub mod sealing;
pub mod server;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod watch;

/// The schema, applied at start-up and to every test database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub use app::App;
pub use settings::Settings;

/// A time as DPS writes timestamps (RFC 3339).
#[must_use]
pub fn timestamp(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
