//! Secrets at rest: the device keys are stored AES-256-GCM-encrypted under the service key,
//! bound to their registration id (associated data), with the key's id stored beside them.
//!
//! **Rotation.** The service key file may hold several keys, one per line (64 hex digits each):
//! the first seals, every one opens. To rotate, put a new key on the first line and keep the old
//! ones below it, on every instance (restarts may be rolling: an instance that does not know the
//! new key yet answers 500 for a device re-sealed under it, so roll out the file before or with
//! the restarts). A device's key is re-sealed under the current key at its next registration
//! (`registration::register`). When `SELECT count(*) FROM registrations WHERE key_id = 'OLD'` and
//! the same for `challenges` are 0, the old line can go.
//!
//! Uses: `settings` (the layers table, docs/architecture.md).

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
    #[error("line {0} of the service key file is not 32 bytes as 64 hex digits (one raw 32-byte key is accepted too)")]
    BadKey(usize),
    #[error("the service key on line {0} is not random (all zeros, a repeated byte or a short pattern); make one with `head -c 32 /dev/urandom | xxd -p -c 64`")]
    WeakKey(usize),
    #[error("sealed with key {0}, which this service does not have")]
    UnknownKey(String),
    #[error("sealed secret does not authenticate")]
    Corrupt,
}

/// One service key and its id (the first 8 bytes of its SHA-256, in hex).
struct ServiceKey {
    id: String,
    cipher: Aes256Gcm,
}

impl ServiceKey {
    fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        Self {
            id: hex::encode(&digest[..8]),
            cipher: Aes256Gcm::new(key.into()),
        }
    }
}

/// The service keys: the current one seals, all of them open.
pub struct Sealer {
    /// Non-empty; the first is the current key.
    keys: Vec<ServiceKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Sealer")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

fn parse_hex_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, key.as_mut()).ok()?;
    Some(key)
}

impl Sealer {
    /// A sealer with one 32-byte key.
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_previous(key, &[])
    }

    /// A sealer whose current key is `current`, still opening what `previous` keys sealed.
    #[must_use]
    pub fn with_previous(current: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        let mut keys = vec![ServiceKey::new(current)];
        keys.extend(previous.iter().map(ServiceKey::new));
        Self { keys }
    }

    /// Reads the keys from a file: one per line as 64 hex digits (blank lines and `#` comments
    /// skipped; the first is current), or a single raw 32-byte key.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| SealError::Read {
            path: path.display().to_string(),
            source,
        })?);
        let mut keys: Vec<Zeroizing<[u8; 32]>> = Vec::new();
        match std::str::from_utf8(&bytes) {
            Ok(text) if !text.trim().is_empty() => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    keys.push(parse_hex_key(line).ok_or(SealError::BadKey(i + 1))?);
                }
            }
            _ if bytes.len() == 32 => {
                let mut key = Zeroizing::new([0u8; 32]);
                key.copy_from_slice(&bytes);
                keys.push(key);
            }
            _ => return Err(SealError::BadKey(1)),
        }
        if let Some(i) = keys
            .iter()
            .position(|k| crate::settings::limits::is_weak_key(k.as_ref()))
        {
            return Err(SealError::WeakKey(i + 1));
        }
        let (current, previous) = keys.split_first().ok_or(SealError::BadKey(1))?;
        let previous: Vec<[u8; 32]> = previous.iter().map(|k| **k).collect();
        let sealer = Self::with_previous(current, &previous);
        let mut previous = previous;
        zeroize::Zeroize::zeroize(&mut previous);
        Ok(sealer)
    }

    fn current(&self) -> &ServiceKey {
        &self.keys[0]
    }

    /// The id of the current key, stored beside what it seals.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.current().id
    }

    /// Encrypts `secret` bound to `context` (the registration id) under the current key:
    /// nonce || ciphertext || tag, with a random nonce from `rng`.
    #[must_use]
    pub fn seal(&self, secret: &[u8], context: &[u8], rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_SIZE];
        rng.fill_bytes(&mut nonce);
        let Ok(ciphertext) = self.current().cipher.encrypt(
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

    /// Decrypts what [`Sealer::seal`] produced with the key named `key_id`, current or previous.
    pub fn open(
        &self,
        sealed: &[u8],
        key_id: &str,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        if sealed.len() < NONCE_SIZE {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_SIZE);
        key.cipher
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

    /// `sealed` under the current key: unchanged if it already is, else opened with its old key
    /// and sealed again. Returns the sealed bytes and their key id.
    pub fn reseal(
        &self,
        sealed: Vec<u8>,
        key_id: String,
        context: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Vec<u8>, String), SealError> {
        if key_id == self.key_id() {
            return Ok((sealed, key_id));
        }
        let secret = self.open(&sealed, &key_id, context)?;
        Ok((self.seal(&secret, context, rng), self.key_id().to_owned()))
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
        assert!(matches!(
            Sealer::from_file(&path),
            Err(SealError::WeakKey(1))
        ));
        std::fs::write(&path, "0102".repeat(16)).unwrap();
        assert!(matches!(
            Sealer::from_file(&path),
            Err(SealError::WeakKey(1))
        ));
        let random = hex::encode(
            (0u8..32)
                .map(|i| i.wrapping_mul(97) ^ 0x5a)
                .collect::<Vec<_>>(),
        );
        std::fs::write(&path, random).unwrap();
        assert!(Sealer::from_file(&path).is_ok());
    }

    #[test]
    fn a_ring_opens_what_old_keys_sealed_and_reseals_under_the_current_one() {
        let (old, new) = ([0x11u8; 32], [0x22u8; 32]);
        let before = Sealer::new(&old);
        let boxed = before.seal(b"device key", b"dev-1", &mut rand::rngs::OsRng);
        let ring = Sealer::with_previous(&new, &[old]);
        assert_ne!(ring.key_id(), before.key_id());
        assert_eq!(
            ring.open(&boxed, before.key_id(), b"dev-1")
                .unwrap()
                .as_slice(),
            b"device key"
        );
        let (resealed, id) = ring
            .reseal(
                boxed,
                before.key_id().to_owned(),
                b"dev-1",
                &mut rand::rngs::OsRng,
            )
            .unwrap();
        assert_eq!(id, ring.key_id());
        let after = Sealer::new(&new);
        assert_eq!(
            after.open(&resealed, &id, b"dev-1").unwrap().as_slice(),
            b"device key"
        );

        // The key file form: current first, previous below.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.key");
        let a = hex::encode(
            (0u8..32)
                .map(|i| i.wrapping_mul(97) ^ 0x5a)
                .collect::<Vec<_>>(),
        );
        let b = hex::encode(
            (0u8..32)
                .map(|i| i.wrapping_mul(31) ^ 0xa5)
                .collect::<Vec<_>>(),
        );
        std::fs::write(&path, format!("# rotated 2026-11-24\n{a}\n{b}\n")).unwrap();
        let from_file = Sealer::from_file(&path).unwrap();
        std::fs::write(&path, format!("{b}\n")).unwrap();
        let only_b = Sealer::from_file(&path).unwrap();
        let sealed = only_b.seal(b"k", b"dev-2", &mut rand::rngs::OsRng);
        assert!(from_file.open(&sealed, only_b.key_id(), b"dev-2").is_ok());
        std::fs::write(&path, format!("{a}\nnot-a-key\n")).unwrap();
        assert!(matches!(
            Sealer::from_file(&path),
            Err(SealError::BadKey(2))
        ));
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
