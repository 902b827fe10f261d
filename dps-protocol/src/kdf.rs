//! KDFa (TPM 2.0 Part 1 §11.4.10.2): NIST SP 800-108 counter mode with HMAC-SHA-256.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Derives `bits / 8` bytes:
/// `HMAC(key, [i]u32 || label || 0x00 || context_u || context_v || [bits]u32)` for i = 1, 2, …
///
/// `label` is given without its terminating NUL; KDFa adds it (Part 1: "if the label does not
/// end in a zero octet, one is added"). `bits` is a multiple of 8 everywhere in this protocol.
#[must_use]
pub fn kdfa_sha256(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let len = (bits / 8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter: u32 = 1;
    while out.len() < len {
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
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}
