//! Object names (Part 1, §16: Name = nameAlg || `H_nameAlg(TPMT_PUBLIC)`).

use sha2::{Digest, Sha256};

use super::constants::TPM_ALG_SHA256;
use super::public::Public;
use crate::error::CryptoError;

/// The Name of a TPM object. Only SHA-256 names are produced: every object of this protocol
/// (the TCG default EK and SRK, the issued HMAC key) uses SHA-256 as its nameAlg.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Name(Vec<u8>);

impl Name {
    /// Computes the name of a public area.
    pub fn of(public: &Public) -> Result<Self, CryptoError> {
        if public.name_alg != TPM_ALG_SHA256 {
            return Err(CryptoError::UnsuitableKey {
                role: "object",
                reason: "nameAlg is not SHA-256",
            });
        }
        let digest = Sha256::digest(public.to_tpmt());
        let mut name = Vec::with_capacity(2 + digest.len());
        name.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        name.extend_from_slice(&digest);
        Ok(Self(name))
    }

    /// Wraps raw name bytes (for example a name read back from a TPM).
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}
