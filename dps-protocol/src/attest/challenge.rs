//! The attestation challenge: a fresh nonce sealed to the enrolled EK with `MakeCredential`,
//! bound to the attestation key's name (TCG's device identity procedure, as quoted in
//! `../shared/design/attested-identity.md` §2.1 step g).
//!
//! `TPM2_ActivateCredential` gives the nonce back only on the TPM that holds that EK *and* has
//! an object of that name loaded; the device then quotes with the nonce as qualifying data. So a
//! quote carrying the nonce was signed by an AK that sits beside the enrolled EK, after the
//! challenge was issued. The verifier keeps only the nonce's SHA-256 ([`nonce_hash`]): what it
//! stores cannot answer a challenge.

use rand_core::CryptoRngCore;

use crate::credential::{make_credential, Credential};
use crate::crypto::sha256;
use crate::error::CryptoError;
use crate::tpm::{Name, Public};

/// Bytes of a nonce: a SHA-256 EK's `MakeCredential` carries at most a SHA-256 digest, and
/// every TPM takes 32 bytes of qualifying data.
pub const NONCE_SIZE: usize = 32;

/// A fresh nonce.
pub fn nonce(rng: &mut impl CryptoRngCore) -> [u8; NONCE_SIZE] {
    let mut nonce = [0; NONCE_SIZE];
    rng.fill_bytes(&mut nonce);
    nonce
}

/// What the verifier keeps of a nonce.
#[must_use]
pub fn nonce_hash(nonce: &[u8]) -> [u8; 32] {
    sha256(&[nonce])
}

/// Whether `extra_data` (a quote's or certification's qualifying data) is the nonce of
/// `nonce_hash`, compared in constant time.
#[must_use]
pub fn nonce_matches(extra_data: &[u8], nonce_hash: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(
        &self::nonce_hash(extra_data)[..],
        nonce_hash,
    ))
}

/// Seals `nonce` to `ek`, bound to the name of `attestation_key`.
pub fn bind(
    ek: &Public,
    attestation_key: &Public,
    nonce: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Credential, CryptoError> {
    make_credential(ek, &Name::of(attestation_key)?, nonce, rng)
}
