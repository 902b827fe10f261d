//! Unit tests of `dps-protocol` against fixed vectors (`tests/vectors/`), no TPM, no I/O but
//! reading the vector files.
#![allow(
    unreachable_pub,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used
)]

mod attest;
mod attest_certify;
mod attest_policy;
mod decode;
mod ecc_ek;
mod handshake;
mod no_panic;
mod oaep;
mod registration_id;
mod sas;
mod support;
mod vectors;
