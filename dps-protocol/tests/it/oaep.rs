//! The service's RSA-OAEP encryption (`crypto::oaep_encrypt`, written on crypto-bigint) against
//! the `rsa` crate: byte for byte with the same OAEP seed, and decrypted by `rsa` 0.9.

use dps_protocol::crypto::{
    oaep_decrypt, oaep_encrypt, EncryptionKey, LABEL_DUPLICATE, LABEL_IDENTITY,
};
use dps_protocol::kdf::NameHash;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

use crate::support::{other_device_keys, software_device_keys};

/// Lends a `rand_core` 0.6 generator to `rsa` 0.10, which asks for the 0.10 traits.
struct RngBridge<'a>(&'a mut ChaCha20Rng);

impl rand_core_oaep::TryRng for RngBridge<'_> {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand::RngCore::next_u32(self.0))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand::RngCore::next_u64(self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::RngCore::fill_bytes(self.0, dst);
        Ok(())
    }
}

impl rand_core_oaep::TryCryptoRng for RngBridge<'_> {}

fn ours(key: &RsaPrivateKey) -> EncryptionKey {
    let e = key.e().to_bytes_be();
    let e = u32::from_be_bytes(
        [&[0u8; 4][e.len()..], &e[..]]
            .concat()
            .try_into()
            .expect("u32"),
    );
    EncryptionKey::new(&key.n().to_bytes_be(), e).expect("valid key")
}

fn reference(key: &RsaPrivateKey) -> rsa_oaep::PublicKey {
    let bits = u32::try_from(key.n().bits()).expect("bits");
    let n = rsa_oaep::BoxedUint::from_be_slice(&key.n().to_bytes_be(), bits).expect("n");
    let e = rsa_oaep::BoxedUint::from_be_slice(&key.e().to_bytes_be(), 32).expect("e");
    rsa_oaep::PublicKey::new(n, e).expect("valid key")
}

/// Keys of 2048 bits (both software devices' EKs and SRKs), one of 3072, and one of 2056: a
/// length a device may claim (`Public::seed_key` takes any whole number of bytes from 2048
/// bits) that is not a whole number of 64-bit limbs.
fn keys() -> Vec<RsaPrivateKey> {
    let (ek, srk) = software_device_keys();
    let (other_ek, other_srk) = other_device_keys();
    let generated = |bits| {
        RsaPrivateKey::new(&mut ChaCha20Rng::seed_from_u64(bits as u64), bits).expect("RSA key")
    };
    vec![
        ek,
        srk,
        other_ek,
        other_srk,
        generated(3072),
        generated(2056),
    ]
}

#[test]
fn oaep_encryption_is_the_rsa_crates_byte_for_byte_with_the_same_seed() {
    for (i, key) in keys().iter().enumerate() {
        let (ours, reference) = (ours(key), reference(key));
        let longest = key.size() - 2 * 32 - 2;
        for label in [LABEL_IDENTITY, LABEL_DUPLICATE, ""] {
            for len in [0, 1, 32, longest] {
                let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                let seed = (i * 1000 + len) as u64;
                let mine = oaep_encrypt(&ours, label, &data, &mut ChaCha20Rng::seed_from_u64(seed))
                    .expect("encrypt");
                let padding = rsa_oaep::Oaep::<sha2_oaep::Sha256>::new_with_label(label.as_bytes());
                let theirs = reference
                    .encrypt(
                        &mut RngBridge(&mut ChaCha20Rng::seed_from_u64(seed)),
                        padding,
                        &data,
                    )
                    .expect("reference encrypt");
                assert_eq!(mine, theirs, "key {i}, label {label:?}, {len} bytes");
                assert_eq!(
                    *oaep_decrypt(NameHash::Sha256, key, label, &mine).expect("decrypt"),
                    data
                );
            }
        }
    }
}

#[test]
fn oaep_encryption_refuses_data_too_long_for_the_key() {
    let (ek, _) = software_device_keys();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let data = vec![1u8; ek.size() - 2 * 32 - 1];
    assert!(oaep_encrypt(&ours(&ek), LABEL_IDENTITY, &data, &mut rng).is_err());
}

#[test]
fn an_encryption_key_needs_an_odd_modulus_of_1024_to_8192_bits_and_an_odd_exponent() {
    let (ek, _) = software_device_keys();
    let n = ek.n().to_bytes_be();
    assert!(EncryptionKey::new(&n, 65_537).is_some());
    let mut even = n.clone();
    *even.last_mut().expect("bytes") &= 0xfe;
    assert!(EncryptionKey::new(&even, 65_537).is_none(), "even modulus");
    assert!(EncryptionKey::new(&n, 65_536).is_none(), "even exponent");
    assert!(EncryptionKey::new(&n, 1).is_none(), "exponent 1");
    assert!(EncryptionKey::new(&n[..127], 65_537).is_none(), "1016 bits");
    assert!(
        EncryptionKey::new(&[0xff; 1025], 65_537).is_none(),
        "8200 bits"
    );
    let mut leading_zero = vec![0];
    leading_zero.extend_from_slice(&n);
    assert!(
        EncryptionKey::new(&leading_zero, 65_537).is_none(),
        "top byte zero"
    );
}
