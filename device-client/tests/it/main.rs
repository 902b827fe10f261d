//! Integration tests of `device-client::tpm` on a real software TPM (swtpm), one per test.
#![allow(unreachable_pub)]

mod handshake;
mod helpers;
mod negative;
mod swtpm;
mod tpm2_tools;
mod vectors;
