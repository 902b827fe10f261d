//! Integration tests of `device-client::tpm` on a real software TPM (swtpm), one per test.
#![allow(
    unreachable_pub,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used
)]

mod attestation;
mod certificates;
mod config_reference;
mod ek_types;
mod handshake;
mod hub;
mod mtls;
mod negative;
mod provision;
mod tpm2_tools;
mod vectors;
