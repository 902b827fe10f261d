//! Duplication in software: what `TPM2_Duplicate` produces (Part 1 §23.3, §24), for an object
//! created outside any TPM, wrapped to a new parent (the device's SRK) with both an inner
//! (symmetric, caller-chosen key) and an outer wrapper under a seed sent to the parent: RSA-OAEP
//! to an RSA SRK, ECDH to an ECC one (label "DUPLICATE" either way), the outer wrapper derived
//! with the parent's nameAlg and AES key size.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::crypto::{outer_wrap_with, sha256, AesKey, LABEL_DUPLICATE, SHA256_SIZE};
use crate::error::CryptoError;
use crate::marshal::put_tpm2b;
use crate::tpm::{Name, Public, Tpm2bEncryptedSecret, Tpm2bPrivate};

/// The inner wrapping key: AES-128 (the Import symmetricAlg is AES-128-CFB; docs/protocol.md §6).
pub const INNER_KEY_SIZE: usize = 16;

/// The outputs of a duplication, as `TPM2_Import` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// `duplicate`: outer-wrapped, inner-wrapped sensitive area.
    pub duplicate: Tpm2bPrivate,
    /// `inSymSeed`: the outer seed, RSA-OAEP encrypted to the parent with label "DUPLICATE", or
    /// for an ECC parent the ephemeral point it is shared with.
    pub in_sym_seed: Tpm2bEncryptedSecret,
}

/// Wraps the marshalled `TPMT_SENSITIVE` of the object described by `object_public` to
/// `parent`, with `inner_key` as the inner (AES-128-CFB) wrapping key.
pub fn duplicate(
    parent: &Public,
    object_public: &Public,
    sensitive: &[u8],
    inner_key: &[u8; INNER_KEY_SIZE],
    rng: &mut impl CryptoRngCore,
) -> Result<Duplicate, CryptoError> {
    let (parent_key, parent_hash, sym_key_bits) = parent.seed_key("SRK")?;
    let name = Name::of(object_public)?;

    // Inner wrapper: TPM2B(H(TPM2B(sensitive) || name)) || TPM2B(sensitive), under the inner key.
    let mut sized_sensitive = Zeroizing::new(Vec::with_capacity(2 + sensitive.len()));
    put_tpm2b(&mut sized_sensitive, sensitive);
    let inner_integrity = sha256(&[&sized_sensitive, name.as_bytes()]);
    let mut enc_sensitive =
        Zeroizing::new(Vec::with_capacity(2 + SHA256_SIZE + sized_sensitive.len()));
    put_tpm2b(&mut enc_sensitive, &inner_integrity);
    enc_sensitive.extend_from_slice(&sized_sensitive);
    AesKey::Aes128(*inner_key).cfb(&mut enc_sensitive, true);

    // Outer wrapper: a fresh seed, sent to the parent.
    let (seed, in_sym_seed) = parent_key.share_seed(parent_hash, LABEL_DUPLICATE, rng)?;
    let duplicate = outer_wrap_with(
        parent_hash,
        seed.as_ref(),
        name.as_bytes(),
        sym_key_bits,
        &enc_sensitive,
    );
    Ok(Duplicate {
        duplicate: Tpm2bPrivate::new(duplicate)?,
        in_sym_seed: Tpm2bEncryptedSecret::new(in_sym_seed)?,
    })
}
