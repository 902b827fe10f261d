//! The primitives of TPM protected storage, from `RustCrypto` crates, and the outer wrapper that
//! credential protection and duplication share (Part 1 §24.5 "Integrity", §24.4 "Symmetric
//! Encryption"): `TPM2B(HMAC(hmacKey, ciphertext || name)) || AES-CFB(symKey, IV 0, plaintext)`,
//! both keys derived from one seed with KDFa.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{CryptoError, DecodeError};
use crate::kdf::kdfa_sha256;
use crate::marshal::{put_tpm2b, Reader};
use crate::tpm::constants::MAX_DIGEST_SIZE;

/// Size of a SHA-256 digest, and of every seed and HMAC key in this protocol.
pub const SHA256_SIZE: usize = 32;

/// OAEP label of `MakeCredential` secrets (Part 1 §24.6): "IDENTITY" with its NUL.
pub const LABEL_IDENTITY: &str = "IDENTITY\0";
/// OAEP label of duplication seeds (Part 1 §24.5): "DUPLICATE" with its NUL.
pub const LABEL_DUPLICATE: &str = "DUPLICATE\0";

/// SHA-256 over the concatenation of `parts`.
#[must_use]
pub fn sha256(parts: &[&[u8]]) -> [u8; SHA256_SIZE] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac_sha256_mac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any size")
    };
    for p in parts {
        mac.update(p);
    }
    mac
}

/// HMAC-SHA-256 over the concatenation of `parts`.
#[must_use]
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; SHA256_SIZE] {
    hmac_sha256_mac(key, parts).finalize().into_bytes().into()
}

/// Checks an HMAC-SHA-256 tag in constant time.
#[must_use]
pub fn hmac_sha256_verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    hmac_sha256_mac(key, parts).verify_slice(tag).is_ok()
}

/// RSA-OAEP-SHA-256 encryption with a TPM label.
pub fn oaep_encrypt(
    key: &RsaPublicKey,
    label: &str,
    data: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, CryptoError> {
    key.encrypt(rng, Oaep::new_with_label::<Sha256, _>(label), data)
        .map_err(|_| CryptoError::Oaep {
            operation: "encryption",
        })
}

/// RSA-OAEP-SHA-256 decryption with a TPM label (the software device model's side).
pub fn oaep_decrypt(
    key: &RsaPrivateKey,
    label: &str,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    key.decrypt(Oaep::new_with_label::<Sha256, _>(label), data)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Oaep {
            operation: "decryption",
        })
}

/// AES-CFB with a zero IV (Part 1 §11.4.6.2), in place. The key length picks AES-128/192/256.
pub fn aes_cfb(key: &[u8], data: &mut [u8], encrypt: bool) {
    let iv = [0u8; 16];
    macro_rules! run {
        ($aes:ty) => {{
            let Ok(cipher) = cfb_mode::Encryptor::<$aes>::new_from_slices(key, &iv) else {
                unreachable!("key length checked by the match")
            };
            if encrypt {
                cipher.encrypt(data);
            } else {
                let Ok(cipher) = cfb_mode::Decryptor::<$aes>::new_from_slices(key, &iv) else {
                    unreachable!("key length checked by the match")
                };
                cipher.decrypt(data);
            }
        }};
    }
    match key.len() {
        16 => run!(aes::Aes128),
        24 => run!(aes::Aes192),
        32 => run!(aes::Aes256),
        n => unreachable!("AES key of {n} bytes; storage_key() admits 16, 24 or 32"),
    }
}

/// Outer wrap under `seed` for an object named `name`:
/// `TPM2B(HMAC(KDFa(seed, "INTEGRITY"), ciphertext || name)) || ciphertext` with
/// `ciphertext = AES-CFB(KDFa(seed, "STORAGE", name), plaintext)`.
#[must_use]
pub fn outer_wrap(seed: &[u8], name: &[u8], sym_key_len: usize, plaintext: &[u8]) -> Vec<u8> {
    let sym_key = kdfa_sha256(seed, b"STORAGE", name, &[], (sym_key_len * 8) as u32);
    let hmac_key = kdfa_sha256(seed, b"INTEGRITY", &[], &[], (SHA256_SIZE * 8) as u32);
    let mut ciphertext = plaintext.to_vec();
    aes_cfb(&sym_key, &mut ciphertext, true);
    let integrity = hmac_sha256(&hmac_key, &[&ciphertext, name]);
    let mut out = Vec::with_capacity(2 + SHA256_SIZE + ciphertext.len());
    put_tpm2b(&mut out, &integrity);
    out.extend_from_slice(&ciphertext);
    out
}

/// Inverse of [`outer_wrap`]: checks the integrity HMAC (constant time) before decrypting.
pub fn outer_unwrap(
    seed: &[u8],
    name: &[u8],
    sym_key_len: usize,
    wrapped: &[u8],
    structure: &'static str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut r = Reader::new(wrapped);
    let integrity = r.tpm2b(structure, MAX_DIGEST_SIZE)?;
    let ciphertext = r.take(r.remaining(), structure)?;
    let hmac_key = kdfa_sha256(seed, b"INTEGRITY", &[], &[], (SHA256_SIZE * 8) as u32);
    if !hmac_sha256_verify(&hmac_key, &[ciphertext, name], integrity) {
        return Err(CryptoError::IntegrityCheck { structure });
    }
    let sym_key = kdfa_sha256(seed, b"STORAGE", name, &[], (sym_key_len * 8) as u32);
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    aes_cfb(&sym_key, &mut plaintext, false);
    Ok(plaintext)
}

/// Reads one TPM2B from decrypted bytes that must hold exactly it.
pub(crate) fn single_tpm2b<'a>(
    bytes: &'a [u8],
    structure: &'static str,
    max: usize,
) -> Result<&'a [u8], DecodeError> {
    let mut r = Reader::new(bytes);
    let inner = r.tpm2b(structure, max)?;
    r.finish(structure)?;
    Ok(inner)
}
