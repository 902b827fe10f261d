//! Azure IoT Hub Device Provisioning Service (DPS) TPM attestation, done in software.
//!
//! This crate holds everything the provisioning service and the device must agree on byte for
//! byte: TPM 2.0 structure marshalling, object names, KDFa, software `MakeCredential` and
//! `Duplicate`, the DPS `authenticationKey` blob, SAS tokens, registration ids and the JSON wire
//! types.
//!
//! **What it never does.** No sockets, no files, no clock, no randomness of its own, no TPM, no
//! logging. Callers pass bytes in, and time (`now`, Unix seconds) and a cryptographic RNG
//! (`rand_core::CryptoRngCore`) as arguments, so every output is reproducible from a seed and
//! checked against vectors.
//!
//! Data flow of one registration:
//! 1. the device sends `TPM2B_PUBLIC` of its EK and SRK ([`tpm::Public::from_tpm2b`]);
//! 2. the service draws a fresh HMAC key and builds an [`auth_key::AuthenticationKey`] for that
//!    TPM ([`auth_key::AuthenticationKey::build`]): the key is duplicated to the SRK
//!    ([`duplication`]) under an inner wrapping key that is sealed to the EK and bound to the
//!    SRK's name ([`credential`]);
//! 3. the device splits the blob ([`auth_key::AuthenticationKey::from_bytes`]) and hands the
//!    parts to its TPM (`ActivateCredential`, `Import`, `Load`);
//! 4. the device signs a [`sas`] token with the key inside its TPM, and the service verifies it
//!    with the same key.
//!
//! [`software_tpm`] is the device half in software (RSA private keys in memory): it lets unit
//! tests and load generators run both sides without a TPM, and it is checked against the same
//! vectors as swtpm.

pub mod attest;
pub mod auth_key;
pub mod credential;
pub mod crypto;
pub mod duplication;
pub mod ecc;
pub mod ek_cert;
pub mod error;
pub mod kdf;
pub mod marshal;
pub mod registration_id;
pub mod sas;
pub mod software_tpm;
pub mod threats;
pub mod tpm;
pub mod wire;

pub use auth_key::{AuthenticationKey, IssuedKey};
pub use error::{CryptoError, DecodeError, RegistrationIdError, SasError};
pub use registration_id::RegistrationId;
