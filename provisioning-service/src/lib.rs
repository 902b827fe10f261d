//! A self-hosted provisioning service, wire-compatible with Azure IoT Hub DPS for TPM
//! attestation.
//!
//! - [`http`]: the device API (`/{idScope}/registrations/...`) and the enrollment API
//!   (`/enrollments`, `/registrations`), one router;
//! - [`registration`]: the decision logic of each device step;
//! - [`store`]: every SQL statement; Postgres is the service's only memory, so any number of
//!   instances can serve one device's steps;
//! - [`sealing`]: issued HMAC keys are stored encrypted under the service key.

pub mod allocation;
pub mod app;
pub mod config;
pub mod enrollment;
pub mod factory;
pub mod http;
pub mod registration;
pub mod sealing;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;

/// The schema, applied at start-up and to every test database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub use app::{App, Settings};
