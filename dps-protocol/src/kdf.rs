//! KDFa (TPM 2.0 Part 1 §11.4.10.2): NIST SP 800-108 counter mode with HMAC-SHA-256.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Derives `bits / 8` bytes (see [`kdfa_sha256_into`]).
#[must_use]
pub fn kdfa_sha256(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
    kdfa_sha256_into(key, label, context_u, context_v, &mut out);
    out
}

/// Fills `out` with KDFa output of `out.len() * 8` bits:
/// `HMAC(key, [i]u32 || label || 0x00 || context_u || context_v || [bits]u32)` for i = 1, 2, …
///
/// `label` is given without its terminating NUL; KDFa adds it (Part 1: "if the label does not
/// end in a zero octet, one is added"). Sizes are whole bytes everywhere in this protocol.
pub fn kdfa_sha256_into(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    out: &mut [u8],
) {
    let bits = u32::try_from(out.len() * 8).unwrap_or(u32::MAX);
    for (counter, chunk) in (1u32..).zip(out.chunks_mut(32)) {
        // HMAC accepts keys of any length: new_from_slice cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            unreachable!("HMAC takes keys of any size")
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        let block = mac.finalize().into_bytes();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}
