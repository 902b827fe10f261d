//! Secrets at rest: the HMAC keys issued to devices are stored AES-256-GCM-encrypted under the
//! service key, bound to their registration id (associated data), with the key's id stored
//! beside them so keys can be rotated.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const NONCE_SIZE: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the service key file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the service key file must hold 32 bytes, as 64 hex digits or raw")]
    BadKey,
    #[error("the service key is not random (all zeros, a repeated byte or a short pattern); make one with `head -c 32 /dev/urandom | xxd -p -c 64`")]
    WeakKey,
    #[error("sealed with key {0}, which this service does not have")]
    UnknownKey(String),
    #[error("sealed secret does not authenticate")]
    Corrupt,
}

/// The service key.
pub struct Sealer {
    key_id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for a 32-byte key. Its id is the first 8 bytes of SHA-256 of the key, in hex.
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let key_id = hex::encode(&digest[..8]);
        Self {
            key_id,
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Reads the key from a file: 64 hex digits (surrounding whitespace ignored) or 32 raw bytes.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| SealError::Read {
            path: path.display().to_string(),
            source,
        })?);
        let text = std::str::from_utf8(&bytes)
            .map(str::trim)
            .unwrap_or_default();
        let mut key = Zeroizing::new([0u8; 32]);
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
                let pair = std::str::from_utf8(chunk).map_err(|_| SealError::BadKey)?;
                key[i] = u8::from_str_radix(pair, 16).map_err(|_| SealError::BadKey)?;
            }
        } else if bytes.len() == 32 {
            key.copy_from_slice(&bytes);
        } else {
            return Err(SealError::BadKey);
        }
        if crate::settings::limits::is_weak_key(key.as_ref()) {
            return Err(SealError::WeakKey);
        }
        Ok(Self::new(&key))
    }

    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `secret` bound to `context` (the registration id): nonce || ciphertext || tag,
    /// with a random nonce from `rng`.
    #[must_use]
    pub fn seal(&self, secret: &[u8], context: &[u8], rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_SIZE];
        rng.fill_bytes(&mut nonce);
        let Ok(ciphertext) = self.cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: context,
            },
        ) else {
            unreachable!("AES-GCM encryption of a short secret cannot fail")
        };
        let mut out = Vec::with_capacity(NONCE_SIZE + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts what [`Sealer::seal`] produced with the key named `key_id`.
    pub fn open(
        &self,
        sealed: &[u8],
        key_id: &str,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if key_id != self.key_id {
            return Err(SealError::UnknownKey(key_id.to_owned()));
        }
        if sealed.len() < NONCE_SIZE {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_SIZE);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_service_keys_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.key");
        std::fs::write(&path, "00".repeat(32)).unwrap();
        assert!(matches!(Sealer::from_file(&path), Err(SealError::WeakKey)));
        std::fs::write(&path, "0102".repeat(16)).unwrap();
        assert!(matches!(Sealer::from_file(&path), Err(SealError::WeakKey)));
        let random = hex::encode(
            (0u8..32)
                .map(|i| i.wrapping_mul(97) ^ 0x5a)
                .collect::<Vec<_>>(),
        );
        std::fs::write(&path, random).unwrap();
        assert!(Sealer::from_file(&path).is_ok());
    }

    #[test]
    fn seal_open_and_refusals() {
        let sealer = Sealer::new(&[7; 32]);
        let boxed = sealer.seal(b"hmac key", b"device-1", &mut rand::rngs::OsRng);
        assert_eq!(
            sealer
                .open(&boxed, sealer.key_id(), b"device-1")
                .unwrap()
                .as_slice(),
            b"hmac key"
        );
        assert!(matches!(
            sealer.open(&boxed, sealer.key_id(), b"device-2"),
            Err(SealError::Corrupt)
        ));
        assert!(matches!(
            sealer.open(&boxed, "other", b"device-1"),
            Err(SealError::UnknownKey(_))
        ));
        let mut flipped = boxed.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            sealer.open(&flipped, sealer.key_id(), b"device-1"),
            Err(SealError::Corrupt)
        ));
        assert!(matches!(
            Sealer::new(&[8; 32]).open(&boxed, sealer.key_id(), b"device-1"),
            Err(SealError::UnknownKey(_))
        ));
    }
}
