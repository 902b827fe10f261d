//! The primitives of TPM protected storage, from `RustCrypto` crates, and the outer wrapper that
//! credential protection and duplication share (Part 1 §24.5 "Integrity", §24.4 "Symmetric
//! Encryption"): `TPM2B(HMAC(hmacKey, ciphertext || name)) || AES-CFB(symKey, IV 0, plaintext)`,
//! both keys derived from one seed with KDFa.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, MontyMultiplier, Odd};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use rsa::{Oaep, RsaPrivateKey};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{CryptoError, DecodeError};
use crate::kdf::{kdfa_into, NameHash};
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

/// An RSA public key to encrypt to (an EK or SRK that passed `Public::storage_key`).
///
/// The RSA-OAEP encryption is written here on crypto-bigint's Montgomery arithmetic instead of
/// taken from the `rsa` crate, because it is the service's hot path (two per challenge) and `rsa`
/// runs a public-key operation as if the exponent and modulus were secret: a constant-time
/// modulus set-up (9 µs per RSA-2048 key, here 4) and a fixed-window exponentiation with
/// constant-time table lookups (64 µs per encryption, here 31: `cargo bench -p dps-protocol
/// --bench crypto`).
///
/// Only public values decide the timing here: the modulus (its variable-time set-up) and the
/// exponent (square-and-multiply over its bits). Every operation on the secret message is one
/// of crypto-bigint's constant-time Montgomery multiplications. `tests/it/oaep.rs` checks it
/// byte for byte against `rsa` 0.10 and decrypts it with `rsa` 0.9; swtpm decrypts it in the
/// suite (ActivateCredential and Import).
#[derive(Debug, Clone)]
pub struct EncryptionKey {
    modulus: BoxedMontyParams,
    /// The modulus's length in bytes (k in RFC 8017): the top byte is set.
    size: usize,
    exponent: u32,
}

impl EncryptionKey {
    /// The key of `modulus` (big-endian) and `exponent`; `None` unless the modulus is odd,
    /// 1024 to 8192 bits long with its top byte set, and the exponent odd and above 1.
    #[must_use]
    pub fn new(modulus: &[u8], exponent: u32) -> Option<Self> {
        let size = modulus.len();
        if !(128..=1024).contains(&size)
            || modulus[0] == 0
            || exponent < 3
            || exponent.is_multiple_of(2)
        {
            return None;
        }
        let n = BoxedUint::from_be_slice(modulus, u32::try_from(size * 8).ok()?).ok()?;
        let n = Option::from(Odd::new(n))?;
        Some(Self {
            modulus: BoxedMontyParams::new_vartime(n),
            size,
            exponent,
        })
    }

    /// RSAEP (RFC 8017 §5.1.1): `message^e mod n`, for a message below the modulus, in `size`
    /// bytes. Left-to-right square-and-multiply over the exponent's bits below its top one.
    fn public_operation(&self, message: &BoxedUint) -> Vec<u8> {
        let mut base = BoxedMontyForm::new(message.clone(), &self.modulus);
        let mut power = base.clone();
        // One multiplier for the whole exponentiation, squaring and multiplying in place:
        // `square` and `mul` each build one and a new result (three allocations a step). The
        // multiplier wipes its buffers when dropped; the powers are wiped below.
        let mut multiplier = Multiplier::from(&self.modulus);
        for bit in (0..self.exponent.ilog2()).rev() {
            multiplier.square_assign(&mut power);
            if self.exponent >> bit & 1 == 1 {
                multiplier.mul_assign(&mut power, &base);
            }
        }
        let ciphertext = power.retrieve().to_be_bytes();
        power.zeroize();
        base.zeroize();
        // The precision is whole limbs: the ciphertext is the last `size` bytes (it is below n).
        ciphertext[ciphertext.len() - self.size..].to_vec()
    }
}

/// crypto-bigint's Montgomery multiplier for [`BoxedMontyForm`] (not exported by name).
type Multiplier<'a> = <BoxedMontyForm as crypto_bigint::MontyForm>::Multiplier<'a>;

/// MGF1 (RFC 8017 B.2.1) with `hash`: XORs `mask` with the mask generated from `seed`.
fn mgf1_xor(hash: NameHash, mask: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in (0u32..).zip(mask.chunks_mut(hash.size())) {
        let block = Zeroizing::new(hash.digest(&[seed, &counter.to_be_bytes()]));
        for (byte, m) in chunk.iter_mut().zip(block.iter()) {
            *byte ^= m;
        }
    }
}

/// RSA-OAEP-SHA-256 encryption with a TPM label: [`oaep_encrypt_with`] SHA-256.
pub fn oaep_encrypt(
    key: &EncryptionKey,
    label: &str,
    data: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, CryptoError> {
    oaep_encrypt_with(NameHash::Sha256, key, label, data, rng)
}

/// RSA-OAEP encryption with a TPM label (RFC 8017 §7.1.1), the OAEP hash and MGF1 both `hash`
/// (the receiving key's nameAlg, as TPM 2.0 Part 1 Annex B.4 uses it), drawing the OAEP seed
/// from `rng`.
pub fn oaep_encrypt_with(
    hash: NameHash,
    key: &EncryptionKey,
    label: &str,
    data: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, CryptoError> {
    let (k, h) = (key.size, hash.size());
    if data.len() + 2 * h + 2 > k {
        return Err(CryptoError::Oaep {
            operation: "encryption",
        });
    }
    // EM = 0x00 || maskedSeed || maskedDB, DB = lHash || PS (zeros) || 0x01 || M.
    let mut encoded = Zeroizing::new(vec![0u8; k]);
    let (seed, db) = encoded[1..].split_at_mut(h);
    rng.fill_bytes(seed);
    db[..h].copy_from_slice(&hash.digest(&[label.as_bytes()]));
    let message_at = db.len() - data.len();
    db[message_at - 1] = 1;
    db[message_at..].copy_from_slice(data);
    mgf1_xor(hash, db, seed);
    mgf1_xor(hash, seed, db);
    // The top byte is 0 and the modulus's is not, so the message is below the modulus.
    let Ok(mut message) = BoxedUint::from_be_slice(&encoded, key.modulus.bits_precision()) else {
        unreachable!("the encoded message has the modulus's length")
    };
    let ciphertext = key.public_operation(&message);
    message.zeroize();
    Ok(ciphertext)
}

/// RSA-OAEP decryption with a TPM label and `hash` (the software device model's side).
pub fn oaep_decrypt(
    hash: NameHash,
    key: &RsaPrivateKey,
    label: &str,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let padding = match hash {
        NameHash::Sha256 => Oaep::new_with_label::<Sha256, _>(label),
        NameHash::Sha384 => Oaep::new_with_label::<sha2::Sha384, _>(label),
    };
    key.decrypt(padding, data)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Oaep {
            operation: "decryption",
        })
}

/// The AES key sizes a TPM symmetric definition allows (Part 2, `TPMI_AES_KEY_BITS`), as
/// [`crate::tpm::Public::storage_key`] reads them from a key's public area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AesKeyBits {
    Aes128,
    Aes192,
    Aes256,
}

impl AesKeyBits {
    /// The size for a `keyBits` value, if AES has one.
    #[must_use]
    pub fn from_bits(bits: u16) -> Option<Self> {
        match bits {
            128 => Some(Self::Aes128),
            192 => Some(Self::Aes192),
            256 => Some(Self::Aes256),
            _ => None,
        }
    }
}

/// An AES key whose size is its variant, so no AES call can meet a length it cannot take.
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub(crate) enum AesKey {
    Aes128([u8; 16]),
    Aes192([u8; 24]),
    Aes256([u8; 32]),
}

impl AesKey {
    /// A key of 16, 24 or 32 bytes; `None` for any other length.
    pub(crate) fn from_slice(key: &[u8]) -> Option<Self> {
        Some(match key.len() {
            16 => Self::Aes128(key.try_into().ok()?),
            24 => Self::Aes192(key.try_into().ok()?),
            32 => Self::Aes256(key.try_into().ok()?),
            _ => return None,
        })
    }

    /// A key of `bits` from KDFa(hash, seed, label, context).
    fn derive(hash: NameHash, bits: AesKeyBits, seed: &[u8], label: &[u8], context: &[u8]) -> Self {
        let mut key = match bits {
            AesKeyBits::Aes128 => Self::Aes128([0; 16]),
            AesKeyBits::Aes192 => Self::Aes192([0; 24]),
            AesKeyBits::Aes256 => Self::Aes256([0; 32]),
        };
        let out: &mut [u8] = match &mut key {
            Self::Aes128(k) => k,
            Self::Aes192(k) => k,
            Self::Aes256(k) => k,
        };
        kdfa_into(hash, seed, label, context, &[], out);
        key
    }

    /// AES-CFB with a zero IV (Part 1 §11.4.6.2), in place.
    pub(crate) fn cfb(&self, data: &mut [u8], encrypt: bool) {
        use aes::cipher::generic_array::GenericArray;
        use cfb_mode::{Decryptor, Encryptor};
        let iv = GenericArray::from([0u8; 16]);
        match (self, encrypt) {
            (Self::Aes128(k), true) => {
                Encryptor::<aes::Aes128>::new(&GenericArray::from(*k), &iv).encrypt(data);
            }
            (Self::Aes128(k), false) => {
                Decryptor::<aes::Aes128>::new(&GenericArray::from(*k), &iv).decrypt(data);
            }
            (Self::Aes192(k), true) => {
                Encryptor::<aes::Aes192>::new(&GenericArray::from(*k), &iv).encrypt(data);
            }
            (Self::Aes192(k), false) => {
                Decryptor::<aes::Aes192>::new(&GenericArray::from(*k), &iv).decrypt(data);
            }
            (Self::Aes256(k), true) => {
                Encryptor::<aes::Aes256>::new(&GenericArray::from(*k), &iv).encrypt(data);
            }
            (Self::Aes256(k), false) => {
                Decryptor::<aes::Aes256>::new(&GenericArray::from(*k), &iv).decrypt(data);
            }
        }
    }
}

/// Outer wrap under `seed` for an object named `name`, derived with the protecting key's
/// nameAlg `hash`: `TPM2B(HMAC(KDFa(seed, "INTEGRITY"), ciphertext || name)) || ciphertext` with
/// `ciphertext = AES-CFB(KDFa(seed, "STORAGE", name), plaintext)`.
pub(crate) fn outer_wrap_with(
    hash: NameHash,
    seed: &[u8],
    name: &[u8],
    bits: AesKeyBits,
    plaintext: &[u8],
) -> Vec<u8> {
    let sym_key = AesKey::derive(hash, bits, seed, b"STORAGE", name);
    let mut hmac_key = Zeroizing::new(vec![0u8; hash.size()]);
    kdfa_into(hash, seed, b"INTEGRITY", &[], &[], &mut hmac_key);
    let mut ciphertext = plaintext.to_vec();
    sym_key.cfb(&mut ciphertext, true);
    let integrity = hash.hmac(&hmac_key, &[&ciphertext, name]);
    let mut out = Vec::with_capacity(2 + integrity.len() + ciphertext.len());
    put_tpm2b(&mut out, &integrity);
    out.extend_from_slice(&ciphertext);
    out
}

/// Inverse of [`outer_wrap_with`]: checks the integrity HMAC (constant time) before decrypting.
pub(crate) fn outer_unwrap_with(
    hash: NameHash,
    seed: &[u8],
    name: &[u8],
    bits: AesKeyBits,
    wrapped: &[u8],
    structure: &'static str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut r = Reader::new(wrapped);
    let integrity = r.tpm2b(structure, MAX_DIGEST_SIZE)?;
    let ciphertext = r.take(r.remaining(), structure)?;
    let mut hmac_key = Zeroizing::new(vec![0u8; hash.size()]);
    kdfa_into(hash, seed, b"INTEGRITY", &[], &[], &mut hmac_key);
    if !hash.hmac_verify(&hmac_key, &[ciphertext, name], integrity) {
        return Err(CryptoError::IntegrityCheck { structure });
    }
    let sym_key = AesKey::derive(hash, bits, seed, b"STORAGE", name);
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    sym_key.cfb(&mut plaintext, false);
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
