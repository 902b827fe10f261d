//! The DPS `authenticationKey` blob: what the service returns in its first `401` and the device
//! hands to its TPM. Six size-prefixed fields, in this order (docs/protocol.md §4; the order the
//! Azure clients read them in):
//!
//! 1. `TPM2B_ID_OBJECT` credentialBlob — `MakeCredential` of the inner wrapping key to the EK,
//!    bound to the SRK's name
//! 2. `TPM2B_ENCRYPTED_SECRET` secret — its seed, for the EK
//! 3. `TPM2B_PRIVATE` duplicate — the HMAC key, inner- and outer-wrapped to the SRK
//! 4. `TPM2B_ENCRYPTED_SECRET` inSymSeed — the outer seed, for the SRK
//! 5. `TPM2B_PUBLIC` the HMAC key's public area
//! 6. `TPM2B_DATA` encUriData — sent empty; read if present, as aziot-tpmd stops after five

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::credential::{make_credential, Credential};
use crate::crypto::sha256;
use crate::duplication::{duplicate, Duplicate, INNER_KEY_SIZE};
use crate::error::{CryptoError, DecodeError};
use crate::marshal::Reader;
use crate::tpm::templates::hmac_sha256_key;
use crate::tpm::{
    KeyedHashSensitive, Name, Public, PublicParameters, Tpm2bData, Tpm2bEncryptedSecret,
    Tpm2bIdObject, Tpm2bPrivate,
};

const BLOB: &str = "authenticationKey";

/// Size of the issued HMAC-SHA-256 key.
pub const HMAC_KEY_SIZE: usize = 32;

/// The six parts of an `authenticationKey` blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationKey {
    pub credential_blob: Tpm2bIdObject,
    pub secret: Tpm2bEncryptedSecret,
    pub duplicate: Tpm2bPrivate,
    pub in_sym_seed: Tpm2bEncryptedSecret,
    pub public: Public,
    pub enc_uri_data: Tpm2bData,
}

/// A freshly issued device key (the HMAC key the service keeps, sealed) and the blob that
/// carries it to the one TPM.
pub struct IssuedKey {
    pub device_key: Zeroizing<[u8; HMAC_KEY_SIZE]>,
    pub blob: AuthenticationKey,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey").finish_non_exhaustive()
    }
}

impl AuthenticationKey {
    /// Service side: draws a new HMAC key and wraps it for the one TPM that holds both the
    /// private EK of `ek` and the private SRK of `srk`.
    pub fn issue(
        ek: &Public,
        srk: &Public,
        rng: &mut impl CryptoRngCore,
    ) -> Result<IssuedKey, CryptoError> {
        let mut hmac_key = Zeroizing::new([0u8; HMAC_KEY_SIZE]);
        rng.fill_bytes(hmac_key.as_mut());
        let blob = Self::build(ek, srk, hmac_key.as_ref(), rng)?;
        Ok(IssuedKey {
            device_key: hmac_key,
            blob,
        })
    }

    /// Service side: wraps a given HMAC key (at most 128 bytes, `MAX_SYM_DATA`) for one TPM.
    pub fn build(
        ek: &Public,
        srk: &Public,
        hmac_key: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CryptoError> {
        // Both keys must be usable before any randomness is spent.
        ek.check_seed_key("EK")?;
        srk.check_seed_key("SRK")?;
        let mut seed_value = Zeroizing::new(vec![0u8; 32]);
        rng.fill_bytes(&mut seed_value);
        let mut inner_key = Zeroizing::new([0u8; INNER_KEY_SIZE]);
        rng.fill_bytes(inner_key.as_mut());

        let public = hmac_sha256_key(sha256(&[&seed_value, hmac_key]).to_vec());
        let sensitive = KeyedHashSensitive {
            auth_value: Zeroizing::new(Vec::new()),
            seed_value,
            key: Zeroizing::new(hmac_key.to_vec()),
        };
        let Duplicate {
            duplicate,
            in_sym_seed,
        } = duplicate(srk, &public, &sensitive.to_tpmt(), &inner_key, rng)?;
        let Credential { id_object, secret } =
            make_credential(ek, &Name::of(srk)?, inner_key.as_ref(), rng)?;
        Ok(Self {
            credential_blob: id_object,
            secret,
            duplicate,
            in_sym_seed,
            public,
            enc_uri_data: Tpm2bData::default(),
        })
    }

    /// Marshals the blob (what goes, base64-encoded, into `authenticationKey`).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.credential_blob.write(&mut out);
        self.secret.write(&mut out);
        self.duplicate.write(&mut out);
        self.in_sym_seed.write(&mut out);
        crate::marshal::put_tpm2b(&mut out, &self.public.to_tpmt());
        self.enc_uri_data.write(&mut out);
        out
    }

    /// Device side: splits a blob into its parts. The sixth field may be absent; nothing may
    /// follow it. The public area must describe a KEYEDHASH object.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let credential_blob = Tpm2bIdObject::read(&mut r)?;
        let secret = Tpm2bEncryptedSecret::read(&mut r)?;
        let duplicate = Tpm2bPrivate::read(&mut r)?;
        let in_sym_seed = Tpm2bEncryptedSecret::read(&mut r)?;
        let public = Public::read_tpm2b(&mut r)?;
        if !matches!(public.parameters, PublicParameters::KeyedHash { .. }) {
            return Err(DecodeError::InvalidValue {
                structure: BLOB,
                field: "public",
                reason: "not a KEYEDHASH object",
            });
        }
        let enc_uri_data = if r.remaining() == 0 {
            Tpm2bData::default()
        } else {
            Tpm2bData::read(&mut r)?
        };
        r.finish(BLOB)?;
        Ok(Self {
            credential_blob,
            secret,
            duplicate,
            in_sym_seed,
            public,
            enc_uri_data,
        })
    }
}
