//! Object names (Part 1, §16: Name = nameAlg || `H_nameAlg(TPMT_PUBLIC)`).

use sha2::{Digest, Sha256, Sha384};

use super::constants::{TPM_ALG_SHA256, TPM_ALG_SHA384};
use super::public::Public;
use crate::error::CryptoError;

/// The Name of a TPM object. SHA-256 and SHA-384 names are produced: the TCG default EK and
/// SRK and the issued HMAC key use SHA-256; a P-384 attestation key uses SHA-384.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Name(Vec<u8>);

impl Name {
    /// Computes the name of a public area.
    pub fn of(public: &Public) -> Result<Self, CryptoError> {
        let body = public.to_tpmt();
        let digest = match public.name_alg {
            TPM_ALG_SHA256 => Sha256::digest(body).to_vec(),
            TPM_ALG_SHA384 => Sha384::digest(body).to_vec(),
            _ => {
                return Err(CryptoError::UnsuitableKey {
                    role: "object",
                    reason: "nameAlg is not SHA-256 or SHA-384",
                })
            }
        };
        let mut name = Vec::with_capacity(2 + digest.len());
        name.extend_from_slice(&public.name_alg.to_be_bytes());
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
