//! The device half of the protocol in software: an EK and an SRK whose RSA private keys are held
//! in memory, and the checks a TPM makes in `ActivateCredential`, `Import` and `Load`.
//!
//! For unit tests (both sides meet without a TPM) and load generators that drive thousands of
//! devices, where swtpm cannot go. It is proven against the same vectors as swtpm
//! (`tests/vectors.rs` here, `device-client/tests` there); it is not a TPM and guards nothing.

use rand_core::CryptoRngCore;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::auth_key::AuthenticationKey;
use crate::crypto::{
    oaep_decrypt, outer_unwrap, sha256, single_tpm2b, AesKey, LABEL_DUPLICATE, LABEL_IDENTITY,
};
use crate::error::{CryptoError, DecodeError};
use crate::marshal::Reader;
use crate::tpm::constants::{MAX_DIGEST_SIZE, MAX_SENSITIVE_SIZE};
use crate::tpm::templates::{ek_rsa2048, srk_rsa2048};
use crate::tpm::{
    KeyedHashSensitive, Name, Public, PublicParameters, Tpm2bEncryptedSecret, Tpm2bIdObject,
    Tpm2bPrivate,
};

/// A software stand-in for a TPM's EK and SRK.
pub struct SoftwareTpm {
    ek_key: RsaPrivateKey,
    ek: Public,
    srk_key: RsaPrivateKey,
    srk: Public,
}

impl std::fmt::Debug for SoftwareTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareTpm").finish_non_exhaustive()
    }
}

fn modulus(key: &RsaPrivateKey) -> Vec<u8> {
    key.n().to_bytes_be()
}

impl SoftwareTpm {
    /// A device whose EK and SRK (TCG default RSA-2048 templates) have these private keys.
    #[must_use]
    pub fn new(ek_key: RsaPrivateKey, srk_key: RsaPrivateKey) -> Self {
        let ek = ek_rsa2048(modulus(&ek_key));
        let srk = srk_rsa2048(modulus(&srk_key));
        Self {
            ek_key,
            ek,
            srk_key,
            srk,
        }
    }

    /// A device with fresh RSA-2048 keys.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<Self, CryptoError> {
        let mut key = || {
            RsaPrivateKey::new(rng, 2048).map_err(|_| CryptoError::InvalidRsaKey { role: "new" })
        };
        Ok(Self::new(key()?, key()?))
    }

    #[must_use]
    pub fn ek_public(&self) -> &Public {
        &self.ek
    }

    #[must_use]
    pub fn srk_public(&self) -> &Public {
        &self.srk
    }

    /// `TPM2_ActivateCredential` with the SRK as the activated object: recovers the credential.
    pub fn activate_credential(
        &self,
        id_object: &Tpm2bIdObject,
        secret: &Tpm2bEncryptedSecret,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.activate_credential_for(&Name::of(&self.srk)?, id_object, secret)
    }

    /// `TPM2_ActivateCredential` with the object named `object` (an attestation key) activated.
    pub fn activate_credential_for(
        &self,
        object: &Name,
        id_object: &Tpm2bIdObject,
        secret: &Tpm2bEncryptedSecret,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let sym_key_bits = self.ek.storage_key("EK")?;
        let seed = oaep_decrypt(&self.ek_key, LABEL_IDENTITY, secret.body())?;
        let plaintext = outer_unwrap(
            &seed,
            object.as_bytes(),
            sym_key_bits,
            id_object.body(),
            Tpm2bIdObject::STRUCTURE,
        )?;
        let credential = single_tpm2b(&plaintext, Tpm2bIdObject::STRUCTURE, MAX_DIGEST_SIZE)?;
        Ok(Zeroizing::new(credential.to_vec()))
    }

    /// `TPM2_Import` under the SRK with an inner wrapper, then Load's public/sensitive binding
    /// check: returns the imported sensitive area.
    pub fn import(
        &self,
        inner_key: &[u8],
        public: &Public,
        duplicate: &Tpm2bPrivate,
        in_sym_seed: &Tpm2bEncryptedSecret,
    ) -> Result<KeyedHashSensitive, CryptoError> {
        const STRUCTURE: &str = Tpm2bPrivate::STRUCTURE;
        let sym_key_bits = self.srk.storage_key("SRK")?;
        let inner_key = AesKey::from_slice(inner_key).ok_or(CryptoError::UnsuitableKey {
            role: "inner wrapping",
            reason: "not an AES key length",
        })?;
        let name = Name::of(public)?;
        let seed = oaep_decrypt(&self.srk_key, LABEL_DUPLICATE, in_sym_seed.body())?;
        let mut inner = outer_unwrap(
            &seed,
            name.as_bytes(),
            sym_key_bits,
            duplicate.body(),
            STRUCTURE,
        )?;
        inner_key.cfb(&mut inner, false);

        let mut r = Reader::new(&inner);
        let integrity = r.tpm2b(STRUCTURE, MAX_DIGEST_SIZE)?;
        let rest = r.take(r.remaining(), STRUCTURE)?;
        let expected = sha256(&[rest, name.as_bytes()]);
        if !bool::from(expected.as_slice().ct_eq(integrity)) {
            return Err(CryptoError::IntegrityCheck {
                structure: STRUCTURE,
            });
        }
        let sensitive = KeyedHashSensitive::from_tpmt(single_tpm2b(
            rest,
            "TPM2B_SENSITIVE",
            MAX_SENSITIVE_SIZE,
        )?)?;

        // Load: the public area must commit to this sensitive area.
        let PublicParameters::KeyedHash { unique, .. } = &public.parameters else {
            return Err(CryptoError::Decode(DecodeError::InvalidValue {
                structure: "TPMT_PUBLIC",
                field: "type",
                reason: "not a KEYEDHASH object",
            }));
        };
        let binding = sha256(&[&sensitive.seed_value, &sensitive.key]);
        if !bool::from(binding.as_slice().ct_eq(unique)) {
            return Err(CryptoError::IntegrityCheck {
                structure: "TPMT_PUBLIC",
            });
        }
        Ok(sensitive)
    }

    /// The whole device side of one blob: activate, import, load. Returns the HMAC key.
    pub fn import_authentication_key(
        &self,
        blob: &AuthenticationKey,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let inner_key = self.activate_credential(&blob.credential_blob, &blob.secret)?;
        let sensitive =
            self.import(&inner_key, &blob.public, &blob.duplicate, &blob.in_sym_seed)?;
        Ok(sensitive.key)
    }
}
