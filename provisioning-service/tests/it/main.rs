//! Integration tests of the service: real Postgres (a fresh database per test, from
//! `#[sqlx::test]`; `scripts/test.sh` starts the cluster) and real TPMs (swtpm) on the device
//! side, over HTTPS on loopback; the fixtures are `test-support`'s.
#![allow(
    unreachable_pub,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used
)]

mod abuse;
mod admin_page;
mod allocation;
mod certificates;
mod config_reference;
mod enrollments;
mod factory;
mod groups;
mod housekeeping;
mod hub;
mod layers;
mod lease;
mod listener;
mod metrics;
mod node;
mod node_device_sdk;
mod node_service_sdk;
mod openapi;
mod outage;
mod register;
mod round_trips;
