//! The device side of DPS TPM attestation: what runs on the device at first boot. Start at
//! [`provision::provision`], which drives the whole exchange from a state file; everything that
//! touches the TPM is in [`tpm`], everything on the wire in [`dps`].
//!
//! - [`tpm`]: the one door to the TPM (the only module that uses `tss-esapi`): ensure the EK and
//!   SRK, read their public areas, import an `authenticationKey` blob into the device key, HMAC
//!   with it;
//! - [`dps`]: the DPS device API over HTTPS, with DPS error bodies as typed errors;
//! - [`provision`]: first-boot provisioning as a state machine persisted after every step, so a
//!   device killed anywhere finishes on its next run;
//! - [`hub`]: after provisioning, MQTT over TLS to the assigned hub with TPM-signed tokens.
//!
//! What it never does: hold the device key outside the TPM, log a token or a blob, or trust a
//! service it cannot authenticate (TLS with the web PKI roots plus an optional CA file).
//! Everything protocol-level comes from `dps-protocol`.

pub mod certificate;
pub mod dps;
pub mod hub;
pub mod provision;
pub mod tpm;
