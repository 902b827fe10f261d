//! The device side of DPS TPM attestation.
//!
//! - [`tpm`]: the one door to the TPM (the only module that uses `tss-esapi`): ensure the EK and
//!   SRK, read their public areas, import an `authenticationKey` blob, HMAC with the key;
//! - [`dps`]: the DPS device API over HTTPS, with DPS error bodies as typed errors;
//! - [`provision`]: first-boot provisioning as a persisted state machine.
//!
//! Everything protocol-level comes from `dps-protocol`.

pub mod dps;
pub mod provision;
pub mod tpm;
