//! Credential protection in software: `TPM2_MakeCredential` (Part 3 §12.6, Part 1 §24.6).
//!
//! A credential sealed to an EK and bound to an object's name can only be recovered by
//! `TPM2_ActivateCredential` on the TPM that holds that EK's private key *and* has an object of
//! that name loaded. In this protocol the credential is the inner wrapping key of the
//! duplicated HMAC key, and the object is the SRK.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::crypto::{oaep_encrypt, outer_wrap, LABEL_IDENTITY, SHA256_SIZE};
use crate::error::CryptoError;
use crate::marshal::tpm2b;
use crate::tpm::{Name, Public, Tpm2bEncryptedSecret, Tpm2bIdObject};

/// The two outputs of `MakeCredential`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `credentialBlob`: `TPMS_ID_OBJECT` = integrity HMAC and the encrypted credential.
    pub id_object: Tpm2bIdObject,
    /// `secret`: the seed, RSA-OAEP encrypted to the EK with label "IDENTITY".
    pub secret: Tpm2bEncryptedSecret,
}

/// Seals `credential` (at most 32 bytes, a `TPM2B_DIGEST` for a SHA-256 EK) to `ek`, bound to
/// `object_name`.
pub fn make_credential(
    ek: &Public,
    object_name: &Name,
    credential: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Credential, CryptoError> {
    if credential.len() > SHA256_SIZE {
        return Err(CryptoError::UnsuitableKey {
            role: "credential",
            reason: "longer than the EK's nameAlg digest",
        });
    }
    let (ek_key, sym_key_bits) = ek.encryption_key("EK")?;
    let mut seed = Zeroizing::new([0u8; SHA256_SIZE]);
    rng.fill_bytes(seed.as_mut());
    let secret = oaep_encrypt(&ek_key, LABEL_IDENTITY, seed.as_ref(), rng)?;
    let plaintext = Zeroizing::new(tpm2b(credential));
    let id_object = outer_wrap(
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
