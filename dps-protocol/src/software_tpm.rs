//! The device half of the protocol in software: an EK and an SRK whose private keys (RSA, or ECC
//! P-256/P-384) are held in memory, and the checks a TPM makes in `ActivateCredential`, `Import`
//! and `Load`.
//!
//! For unit tests (both sides meet without a TPM) and load generators that drive thousands of
//! devices, where swtpm cannot go. It is proven against the same vectors as swtpm
//! (`tests/vectors.rs` here, `device-client/tests` there) and against tpm2-tools'
//! `tpm2_makecredential`; it is not a TPM and guards nothing.

use rand_core::CryptoRngCore;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::auth_key::AuthenticationKey;
use crate::crypto::{
    oaep_decrypt, outer_unwrap_with, sha256, single_tpm2b, AesKey, LABEL_DUPLICATE, LABEL_IDENTITY,
};
use crate::ecc::{EccCurve, EccPrivateKey};
use crate::error::{CryptoError, DecodeError};
use crate::kdf::NameHash;
use crate::marshal::Reader;
use crate::tpm::constants::{MAX_DIGEST_SIZE, MAX_SENSITIVE_SIZE};
use crate::tpm::templates::{ek_ecc_p256, ek_ecc_p384, ek_rsa2048, srk_ecc_p256, srk_rsa2048};
use crate::tpm::{
    KeyedHashSensitive, Name, Public, PublicParameters, Tpm2bEncryptedSecret, Tpm2bIdObject,
    Tpm2bPrivate,
};

/// The private half of a key a seed is sent to.
pub enum PrivateSeedKey {
    /// Boxed: ten times the size of an ECC key.
    Rsa(Box<RsaPrivateKey>),
    Ecc(EccPrivateKey),
}

impl PrivateSeedKey {
    /// The seed `secret` carries (`label` with its NUL), as the TPM recovers it.
    fn recover_seed(
        &self,
        hash: NameHash,
        label: &str,
        secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            Self::Rsa(key) => oaep_decrypt(hash, key, label, secret),
            Self::Ecc(key) => key.recover_seed(hash, label.as_bytes(), secret),
        }
    }

    /// The public area of the TCG EK template this key fits: L-1 (RSA-2048), L-2 (P-256) or
    /// H-3 (P-384).
    fn ek_public(&self) -> Public {
        match self {
            Self::Rsa(key) => ek_rsa2048(key.n().to_bytes_be()),
            Self::Ecc(key) => {
                let point = key.point();
                let (x, y) = (point.x.clone(), point.y.clone());
                match point.curve {
                    EccCurve::P256 => ek_ecc_p256(x, y),
                    EccCurve::P384 => ek_ecc_p384(x, y),
                }
            }
        }
    }

    /// The public area of the SRK template this key fits (RSA-2048 or ECC P-256; a P-384 key
    /// gets the P-256 template's attributes on its own curve).
    fn srk_public(&self) -> Public {
        match self {
            Self::Rsa(key) => srk_rsa2048(key.n().to_bytes_be()),
            Self::Ecc(key) => {
                let point = key.point();
                let mut public = srk_ecc_p256(point.x.clone(), point.y.clone());
                if let PublicParameters::Ecc { curve_id, .. } = &mut public.parameters {
                    *curve_id = point.curve.tpm_id();
                }
                public
            }
        }
    }
}

/// A software stand-in for a TPM's EK and SRK.
pub struct SoftwareTpm {
    ek_key: PrivateSeedKey,
    ek: Public,
    srk_key: PrivateSeedKey,
    srk: Public,
}

impl std::fmt::Debug for SoftwareTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareTpm").finish_non_exhaustive()
    }
}

impl SoftwareTpm {
    /// A device whose EK and SRK (TCG default RSA-2048 templates) have these private keys.
    #[must_use]
    pub fn new(ek_key: RsaPrivateKey, srk_key: RsaPrivateKey) -> Self {
        Self::with_keys(
            PrivateSeedKey::Rsa(Box::new(ek_key)),
            PrivateSeedKey::Rsa(Box::new(srk_key)),
        )
    }

    /// A device with these EK and SRK keys, each in the TCG template of its type.
    #[must_use]
    pub fn with_keys(ek_key: PrivateSeedKey, srk_key: PrivateSeedKey) -> Self {
        Self {
            ek: ek_key.ek_public(),
            ek_key,
            srk: srk_key.srk_public(),
            srk_key,
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
        let (_, hash, sym_key_bits) = self.ek.seed_key("EK")?;
        let seed = self
            .ek_key
            .recover_seed(hash, LABEL_IDENTITY, secret.body())?;
        let plaintext = outer_unwrap_with(
            hash,
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
        let (_, hash, sym_key_bits) = self.srk.seed_key("SRK")?;
        let inner_key = AesKey::from_slice(inner_key).ok_or(CryptoError::UnsuitableKey {
            role: "inner wrapping",
            reason: "not an AES key length",
        })?;
        let name = Name::of(public)?;
        let seed = self
            .srk_key
            .recover_seed(hash, LABEL_DUPLICATE, in_sym_seed.body())?;
        let mut inner = outer_unwrap_with(
            hash,
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
