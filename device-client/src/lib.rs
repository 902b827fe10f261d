//! The device side of DPS TPM attestation.
//!
//! [`tpm`] is the one door to the TPM (the only module that uses `tss-esapi`): ensure the EK and
//! SRK, read their public areas, import an `authenticationKey` blob, and HMAC with the imported
//! key. Everything protocol-level comes from `dps-protocol`.

pub mod tpm;
