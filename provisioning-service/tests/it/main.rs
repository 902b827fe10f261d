//! Integration tests of the service: real Postgres (a fresh database per test, from
//! `#[sqlx::test]`; `scripts/test.sh` starts the cluster) and real TPMs (swtpm) on the device
//! side, over HTTPS on loopback.
#![allow(
    unreachable_pub,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used
)]

mod abuse;
mod enrollments;
mod factory;
mod helpers;
mod register;
#[allow(dead_code)] // state_dir is only used by device-client's tests
#[path = "../../../device-client/tests/it/swtpm.rs"]
mod swtpm;
