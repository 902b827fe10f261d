//! The TPM's key derivation functions (TPM 2.0 Part 1 §11.4.10): KDFa, NIST SP 800-108 counter
//! mode with HMAC, and KDFe, the SP 800-56A concatenation KDF that turns an ECDH secret into a
//! seed. Both run with a key's nameAlg: SHA-256, or SHA-384 for the high-range P-384 EK.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::tpm::constants::{TPM_ALG_SHA256, TPM_ALG_SHA384};

/// A nameAlg this protocol derives keys with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameHash {
    Sha256,
    Sha384,
}

impl NameHash {
    /// The hash a `TPM_ALG_ID` names, if it is one of these.
    #[must_use]
    pub fn from_alg(alg: u16) -> Option<Self> {
        match alg {
            TPM_ALG_SHA256 => Some(Self::Sha256),
            TPM_ALG_SHA384 => Some(Self::Sha384),
            _ => None,
        }
    }

    /// Its digest size in bytes: the size of seeds, HMAC keys and integrity values.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
        }
    }

    /// HMAC over the concatenation of `parts`.
    #[must_use]
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                unreachable!("HMAC takes keys of any size")
            };
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha256 => run::<Hmac<Sha256>>(key, parts),
            Self::Sha384 => run::<Hmac<Sha384>>(key, parts),
        }
    }

    /// Checks an HMAC tag in constant time.
    #[must_use]
    pub fn hmac_verify(self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        Zeroizing::new(self.hmac(key, parts))
            .as_slice()
            .ct_eq(tag)
            .into()
    }

    /// The hash over the concatenation of `parts`.
    pub(crate) fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            Self::Sha256 => run::<Sha256>(parts),
            Self::Sha384 => run::<Sha384>(parts),
        }
    }
}

/// Fills `out` with KDFa output of `out.len() * 8` bits:
/// `HMAC(key, [i]u32 || label || 0x00 || context_u || context_v || [bits]u32)` for i = 1, 2, …
///
/// `label` is given without its terminating NUL; KDFa adds it (Part 1: "if the label does not
/// end in a zero octet, one is added"). Sizes are whole bytes everywhere in this protocol.
pub fn kdfa_into(
    hash: NameHash,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    out: &mut [u8],
) {
    let bits = u32::try_from(out.len() * 8).unwrap_or(u32::MAX);
    for (counter, chunk) in (1u32..).zip(out.chunks_mut(hash.size())) {
        let block = Zeroizing::new(hash.hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        ));
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// KDFe (Part 1 §11.4.10.3): `bytes` bytes of `H([i]u32 || z || label || party_u || party_v)`
/// for i = 1, 2, … `label` includes its terminating NUL (as the TPM hashes it); for a secret
/// shared with an EK, `z` is the x coordinate of the ECDH point, `party_u` the ephemeral key's
/// x and `party_v` the EK's x, exactly as marshalled.
#[must_use]
pub fn kdfe(
    hash: NameHash,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bytes: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; bytes]);
    for (counter, chunk) in (1u32..).zip(out.chunks_mut(hash.size())) {
        let block =
            Zeroizing::new(hash.digest(&[&counter.to_be_bytes(), z, label, party_u, party_v]));
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    out
}
