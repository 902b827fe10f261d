//! `TPMT_SENSITIVE` (Part 2, §12.3.2.4) for a KEYEDHASH object: the private half of the HMAC key.

use zeroize::Zeroizing;

use super::constants::{MAX_DIGEST_SIZE, MAX_SYM_DATA, TPM_ALG_KEYEDHASH};
use crate::error::DecodeError;
use crate::marshal::{put_tpm2b, put_u16, Reader};

const TPMT_SENSITIVE: &str = "TPMT_SENSITIVE";

/// The sensitive area of an HMAC key. Zeroized on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedHashSensitive {
    /// `authValue`: empty for the issued key (it is used with a password session and no auth).
    pub auth_value: Zeroizing<Vec<u8>>,
    /// `seedValue`: obfuscates the key in `unique = H(seedValue || key)`.
    pub seed_value: Zeroizing<Vec<u8>>,
    /// `sensitive.bits`: the HMAC key itself.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyedHashSensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHashSensitive(..)")
    }
}

impl KeyedHashSensitive {
    /// Marshals the `TPMT_SENSITIVE`.
    #[must_use]
    pub fn to_tpmt(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            8 + self.auth_value.len() + self.seed_value.len() + self.key.len(),
        ));
        put_u16(&mut out, TPM_ALG_KEYEDHASH);
        put_tpm2b(&mut out, &self.auth_value);
        put_tpm2b(&mut out, &self.seed_value);
        put_tpm2b(&mut out, &self.key);
        out
    }

    /// Parses a `TPMT_SENSITIVE` that must be a KEYEDHASH one.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let sensitive_type = r.u16(TPMT_SENSITIVE)?;
        if sensitive_type != TPM_ALG_KEYEDHASH {
            return Err(DecodeError::UnsupportedAlgorithm {
                structure: TPMT_SENSITIVE,
                field: "sensitiveType",
                value: sensitive_type,
            });
        }
        let auth_value = Zeroizing::new(r.tpm2b(TPMT_SENSITIVE, MAX_DIGEST_SIZE)?.to_vec());
        let seed_value = Zeroizing::new(r.tpm2b(TPMT_SENSITIVE, MAX_DIGEST_SIZE)?.to_vec());
        let key = Zeroizing::new(r.tpm2b(TPMT_SENSITIVE, MAX_SYM_DATA)?.to_vec());
        r.finish(TPMT_SENSITIVE)?;
        Ok(Self {
            auth_value,
            seed_value,
            key,
        })
    }
}
