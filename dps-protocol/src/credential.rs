//! Credential protection in software: `TPM2_MakeCredential` (Part 3 §12.6, Part 1 §24.6).
//!
//! A credential sealed to an EK and bound to an object's name can only be recovered by
//! `TPM2_ActivateCredential` on the TPM that holds that EK's private key *and* has an object of
//! that name loaded. In this protocol the credential is the inner wrapping key of the
//! duplicated HMAC key, and the object is the SRK (or a nonce, and the attestation key).
//!
//! The EK may be RSA (the seed RSA-OAEP encrypted with the EK's nameAlg: SHA-256, or SHA-384 for
//! the high-range RSA-3072 EK) or ECC P-256/P-384 (the seed shared by ECDH, [`crate::ecc`]); the seed's size, KDFa and the integrity HMAC follow the EK's
//! nameAlg, the encryption its AES key size.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::crypto::{outer_wrap_with, LABEL_IDENTITY};
use crate::error::CryptoError;
use crate::marshal::tpm2b;
use crate::tpm::{Name, Public, Tpm2bEncryptedSecret, Tpm2bIdObject};

/// The two outputs of `MakeCredential`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `credentialBlob`: `TPMS_ID_OBJECT` = integrity HMAC and the encrypted credential.
    pub id_object: Tpm2bIdObject,
    /// `secret`: the seed, RSA-OAEP encrypted to the EK with label "IDENTITY", or for an ECC EK
    /// the ephemeral point it is shared with (`TPMS_ECC_POINT`).
    pub secret: Tpm2bEncryptedSecret,
}

/// Seals `credential` (at most the EK nameAlg's digest size, a `TPM2B_DIGEST`) to `ek`, bound
/// to `object_name`.
pub fn make_credential(
    ek: &Public,
    object_name: &Name,
    credential: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Credential, CryptoError> {
    let (ek_key, hash, sym_key_bits) = ek.seed_key("EK")?;
    if credential.len() > hash.size() {
        return Err(CryptoError::UnsuitableKey {
            role: "credential",
            reason: "longer than the EK's nameAlg digest",
        });
    }
    let (seed, secret) = ek_key.share_seed(hash, LABEL_IDENTITY, rng)?;
    let plaintext = Zeroizing::new(tpm2b(credential));
    let id_object = outer_wrap_with(
        hash,
        seed.as_ref(),
        object_name.as_bytes(),
        sym_key_bits,
        &plaintext,
    );
    Ok(Credential {
        id_object: Tpm2bIdObject::new(id_object)?,
        secret: Tpm2bEncryptedSecret::new(secret)?,
    })
}
