//! `TPMT_PUBLIC` / `TPM2B_PUBLIC` (Part 2, §12.2) for the object types of this protocol: RSA and
//! ECC keys (the EK and SRK) and KEYEDHASH objects (the issued HMAC key).
//!
//! Every field is kept as read, so [`Public::to_tpmt`] re-marshals the input byte for byte;
//! that is what object names are computed over.

use super::constants::{
    MAX_DIGEST_SIZE, MAX_ECC_KEY_BYTES, MAX_PUBLIC_SIZE, MAX_RSA_KEY_BYTES, TPMA_OBJECT_DECRYPT,
    TPMA_OBJECT_RESTRICTED, TPMA_OBJECT_SIGN, TPM_ALG_AES, TPM_ALG_CAMELLIA, TPM_ALG_CFB,
    TPM_ALG_ECC, TPM_ALG_ECDAA, TPM_ALG_ECDH, TPM_ALG_ECDSA, TPM_ALG_ECMQV, TPM_ALG_ECSCHNORR,
    TPM_ALG_HMAC, TPM_ALG_KDF1_SP800_108, TPM_ALG_KDF1_SP800_56A, TPM_ALG_KDF2, TPM_ALG_KEYEDHASH,
    TPM_ALG_MGF1, TPM_ALG_NULL, TPM_ALG_OAEP, TPM_ALG_RSA, TPM_ALG_RSAES, TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA, TPM_ALG_SM2, TPM_ALG_SM4, TPM_ALG_XOR,
};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::crypto::{oaep_encrypt_with, AesKeyBits, EncryptionKey};
use crate::ecc::EccPoint;
use crate::error::{CryptoError, DecodeError};
use crate::kdf::NameHash;
use crate::marshal::{put_tpm2b, put_u16, put_u32, Reader};

const TPMT_PUBLIC: &str = "TPMT_PUBLIC";
/// The shortest RSA key this protocol seals to.
const MIN_RSA_KEY_BITS: u16 = 2048;
const TPM2B_PUBLIC: &str = "TPM2B_PUBLIC";

/// `TPMT_SYM_DEF_OBJECT` when its algorithm is not `TPM_ALG_NULL` (NULL is `None` where used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymDefObject {
    pub algorithm: u16,
    pub key_bits: u16,
    pub mode: u16,
}

impl SymDefObject {
    /// AES-128 in CFB mode, the symmetric definition of the TCG default EK and SRK.
    pub const AES_128_CFB: Self = Self {
        algorithm: TPM_ALG_AES,
        key_bits: 128,
        mode: TPM_ALG_CFB,
    };

    fn read(r: &mut Reader<'_>) -> Result<Option<Self>, DecodeError> {
        let algorithm = r.u16(TPMT_PUBLIC)?;
        match algorithm {
            TPM_ALG_NULL => Ok(None),
            TPM_ALG_AES | TPM_ALG_SM4 | TPM_ALG_CAMELLIA => Ok(Some(Self {
                algorithm,
                key_bits: r.u16(TPMT_PUBLIC)?,
                mode: r.u16(TPMT_PUBLIC)?,
            })),
            value => Err(DecodeError::UnsupportedAlgorithm {
                structure: TPMT_PUBLIC,
                field: "symmetric",
                value,
            }),
        }
    }

    fn write(this: Option<&Self>, out: &mut Vec<u8>) {
        match this {
            None => put_u16(out, TPM_ALG_NULL),
            Some(s) => {
                put_u16(out, s.algorithm);
                put_u16(out, s.key_bits);
                put_u16(out, s.mode);
            }
        }
    }
}

/// A scheme selector and its details (`TPMT_RSA_SCHEME`, `TPMT_ECC_SCHEME`, `TPMT_KDF_SCHEME`,
/// `TPMT_KEYEDHASH_SCHEME`). The details are the u16 fields of the selected `TPMS_SCHEME_*`:
/// none for NULL and RSAES, `[hashAlg]` for most, `[hashAlg, count]` for ECDAA and
/// `[hashAlg, kdf]` for XOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheme {
    pub scheme: u16,
    pub details: Vec<u16>,
}

/// Which scheme union a `Scheme` is read from; decides the detail layout.
#[derive(Clone, Copy)]
enum SchemeKind {
    Rsa,
    Ecc,
    Kdf,
    KeyedHash,
}

impl Scheme {
    /// The NULL scheme.
    #[must_use]
    pub fn null() -> Self {
        Self {
            scheme: TPM_ALG_NULL,
            details: Vec::new(),
        }
    }

    /// HMAC with the given hash (a keyedhash signing scheme).
    #[must_use]
    pub fn hmac(hash_alg: u16) -> Self {
        Self {
            scheme: TPM_ALG_HMAC,
            details: vec![hash_alg],
        }
    }

    fn read(r: &mut Reader<'_>, kind: SchemeKind) -> Result<Self, DecodeError> {
        let scheme = r.u16(TPMT_PUBLIC)?;
        let words = match (kind, scheme) {
            (_, TPM_ALG_NULL) | (SchemeKind::Rsa, TPM_ALG_RSAES) => 0,
            (SchemeKind::Rsa, TPM_ALG_RSASSA | TPM_ALG_RSAPSS | TPM_ALG_OAEP)
            | (
                SchemeKind::Ecc,
                TPM_ALG_ECDSA | TPM_ALG_ECDH | TPM_ALG_SM2 | TPM_ALG_ECSCHNORR | TPM_ALG_ECMQV,
            )
            | (
                SchemeKind::Kdf,
                TPM_ALG_MGF1 | TPM_ALG_KDF1_SP800_56A | TPM_ALG_KDF2 | TPM_ALG_KDF1_SP800_108,
            )
            | (SchemeKind::KeyedHash, TPM_ALG_HMAC) => 1,
            (SchemeKind::Ecc, TPM_ALG_ECDAA) | (SchemeKind::KeyedHash, TPM_ALG_XOR) => 2,
            (_, value) => {
                return Err(DecodeError::UnsupportedAlgorithm {
                    structure: TPMT_PUBLIC,
                    field: "scheme",
                    value,
                })
            }
        };
        let mut details = Vec::with_capacity(words);
        for _ in 0..words {
            details.push(r.u16(TPMT_PUBLIC)?);
        }
        Ok(Self { scheme, details })
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_u16(out, self.scheme);
        for word in &self.details {
            put_u16(out, *word);
        }
    }
}

/// The type-specific part of a public area: `TPMU_PUBLIC_PARMS` and `TPMU_PUBLIC_ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicParameters {
    Rsa {
        symmetric: Option<SymDefObject>,
        scheme: Scheme,
        key_bits: u16,
        /// 0 means the default, 65537.
        exponent: u32,
        modulus: Vec<u8>,
    },
    Ecc {
        symmetric: Option<SymDefObject>,
        scheme: Scheme,
        curve_id: u16,
        kdf: Scheme,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    KeyedHash {
        scheme: Scheme,
        /// `H_nameAlg(seedValue` || sensitive) for a key, as a `TPM2B_DIGEST`.
        unique: Vec<u8>,
    },
}

/// A key a seed is sent to, as `MakeCredential` sends one to an EK and `Duplicate` to a new
/// parent ([`Public::seed_key`]).
#[derive(Clone, Debug)]
pub enum SeedKey {
    Rsa(EncryptionKey),
    Ecc(EccPoint),
}

impl SeedKey {
    /// A fresh seed of `hash`'s size and the secret that carries it to this key: RSA-OAEP with
    /// `hash` and `label`, or an ephemeral ECDH point and KDFe (Part 1, "Secret Sharing").
    /// `label` includes its NUL ([`crate::crypto::LABEL_IDENTITY`], `LABEL_DUPLICATE`).
    pub(crate) fn share_seed(
        &self,
        hash: NameHash,
        label: &str,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
        match self {
            Self::Rsa(key) => {
                let mut seed = Zeroizing::new(vec![0u8; hash.size()]);
                rng.fill_bytes(seed.as_mut());
                let secret = oaep_encrypt_with(hash, key, label, seed.as_ref(), rng)?;
                Ok((seed, secret))
            }
            Self::Ecc(point) => point.share_seed(hash, label.as_bytes(), rng),
        }
    }
}

/// What [`Public`]'s RSA checks return: the key to encrypt to, its nameAlg and AES key size.
struct CheckedRsa<'a> {
    modulus: &'a [u8],
    /// 65537 when the public area says 0.
    exponent: u32,
    hash: NameHash,
    sym_key_bits: AesKeyBits,
}

/// A `TPMT_PUBLIC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Public {
    pub name_alg: u16,
    pub object_attributes: u32,
    pub auth_policy: Vec<u8>,
    pub parameters: PublicParameters,
}

impl Public {
    /// Parses a marshalled `TPM2B_PUBLIC` (size prefix included), as a device sends its EK and
    /// SRK and as `tpm2_readpublic -o` writes them.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = Reader::new(bytes);
        let public = Self::read_tpm2b(&mut outer)?;
        outer.finish(TPM2B_PUBLIC)?;
        Ok(public)
    }

    /// Reads a `TPM2B_PUBLIC` off a reader; the inner `TPMT_PUBLIC` must fill it exactly.
    pub fn read_tpm2b(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let body = reader.tpm2b(TPM2B_PUBLIC, MAX_PUBLIC_SIZE)?;
        if body.is_empty() {
            return Err(DecodeError::InvalidValue {
                structure: TPM2B_PUBLIC,
                field: "size",
                reason: "empty public area",
            });
        }
        Self::from_tpmt(body)
    }

    /// Parses a bare `TPMT_PUBLIC`.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let public = Self::read(&mut r)?;
        r.finish(TPMT_PUBLIC)?;
        Ok(public)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let object_type = r.u16(TPMT_PUBLIC)?;
        let name_alg = r.u16(TPMT_PUBLIC)?;
        let object_attributes = r.u32(TPMT_PUBLIC)?;
        let auth_policy = r.tpm2b(TPMT_PUBLIC, MAX_DIGEST_SIZE)?.to_vec();
        let parameters = match object_type {
            TPM_ALG_RSA => {
                let symmetric = SymDefObject::read(r)?;
                let scheme = Scheme::read(r, SchemeKind::Rsa)?;
                let key_bits = r.u16(TPMT_PUBLIC)?;
                let exponent = r.u32(TPMT_PUBLIC)?;
                let modulus = r.tpm2b(TPMT_PUBLIC, MAX_RSA_KEY_BYTES)?.to_vec();
                PublicParameters::Rsa {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            TPM_ALG_ECC => {
                let symmetric = SymDefObject::read(r)?;
                let scheme = Scheme::read(r, SchemeKind::Ecc)?;
                let curve_id = r.u16(TPMT_PUBLIC)?;
                let kdf = Scheme::read(r, SchemeKind::Kdf)?;
                let x = r.tpm2b(TPMT_PUBLIC, MAX_ECC_KEY_BYTES)?.to_vec();
                let y = r.tpm2b(TPMT_PUBLIC, MAX_ECC_KEY_BYTES)?.to_vec();
                PublicParameters::Ecc {
                    symmetric,
                    scheme,
                    curve_id,
                    kdf,
                    x,
                    y,
                }
            }
            TPM_ALG_KEYEDHASH => {
                let scheme = Scheme::read(r, SchemeKind::KeyedHash)?;
                let unique = r.tpm2b(TPMT_PUBLIC, MAX_DIGEST_SIZE)?.to_vec();
                PublicParameters::KeyedHash { scheme, unique }
            }
            value => {
                return Err(DecodeError::UnsupportedAlgorithm {
                    structure: TPMT_PUBLIC,
                    field: "type",
                    value,
                })
            }
        };
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            parameters,
        })
    }

    /// The `TPM_ALG_ID` of the object type.
    #[must_use]
    pub fn object_type(&self) -> u16 {
        match self.parameters {
            PublicParameters::Rsa { .. } => TPM_ALG_RSA,
            PublicParameters::Ecc { .. } => TPM_ALG_ECC,
            PublicParameters::KeyedHash { .. } => TPM_ALG_KEYEDHASH,
        }
    }

    /// Marshals the `TPMT_PUBLIC`.
    #[must_use]
    pub fn to_tpmt(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(360);
        put_u16(&mut out, self.object_type());
        put_u16(&mut out, self.name_alg);
        put_u32(&mut out, self.object_attributes);
        put_tpm2b(&mut out, &self.auth_policy);
        match &self.parameters {
            PublicParameters::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            } => {
                SymDefObject::write(symmetric.as_ref(), &mut out);
                scheme.write(&mut out);
                put_u16(&mut out, *key_bits);
                put_u32(&mut out, *exponent);
                put_tpm2b(&mut out, modulus);
            }
            PublicParameters::Ecc {
                symmetric,
                scheme,
                curve_id,
                kdf,
                x,
                y,
            } => {
                SymDefObject::write(symmetric.as_ref(), &mut out);
                scheme.write(&mut out);
                put_u16(&mut out, *curve_id);
                kdf.write(&mut out);
                put_tpm2b(&mut out, x);
                put_tpm2b(&mut out, y);
            }
            PublicParameters::KeyedHash { scheme, unique } => {
                scheme.write(&mut out);
                put_tpm2b(&mut out, unique);
            }
        }
        out
    }

    /// Marshals the `TPM2B_PUBLIC` (size prefix included).
    #[must_use]
    pub fn to_tpm2b(&self) -> Vec<u8> {
        crate::marshal::tpm2b(&self.to_tpmt())
    }

    /// Checks that this key can receive a seed — `MakeCredential`'s target (an EK) or a
    /// `Duplicate` parent (an SRK) — and returns it with its nameAlg and AES key size.
    ///
    /// TPM 2.0 Part 1 §24 requires a restricted decryption key with a symmetric algorithm; we
    /// also require AES-CFB and nameAlg SHA-256 or SHA-384, which is what the TCG EK templates
    /// (L-1, L-2, H-1…H-3, H-6) and the SRK templates of the Provisioning Guidance use. Either an
    /// RSA key of at least 2048 bits with exponent 65537, or an ECC key (scheme and KDF
    /// `TPM_ALG_NULL`) on NIST P-256 or P-384 whose point is on its curve. `role` names the key
    /// in errors ("EK", "SRK").
    pub fn seed_key(
        &self,
        role: &'static str,
    ) -> Result<(SeedKey, NameHash, AesKeyBits), CryptoError> {
        let PublicParameters::Ecc {
            symmetric,
            scheme,
            curve_id,
            kdf,
            x,
            y,
        } = &self.parameters
        else {
            let rsa = self.checked_rsa(role)?;
            let key = EncryptionKey::new(rsa.modulus, rsa.exponent)
                .ok_or(CryptoError::InvalidRsaKey { role })?;
            return Ok((SeedKey::Rsa(key), rsa.hash, rsa.sym_key_bits));
        };
        let unsuitable = |reason| CryptoError::UnsuitableKey { role, reason };
        let hash = NameHash::from_alg(self.name_alg)
            .ok_or_else(|| unsuitable("nameAlg is not SHA-256 or SHA-384"))?;
        let bits = self.restricted_decryption_aes(role, symmetric.as_ref())?;
        // A storage key's scheme and KDF are TPM_ALG_NULL (Part 2, TPMS_ECC_PARMS).
        if scheme.scheme != TPM_ALG_NULL || kdf.scheme != TPM_ALG_NULL {
            return Err(unsuitable("an ECC decryption key with a scheme or KDF"));
        }
        let point = EccPoint::new(*curve_id, x, y, role)?;
        Ok((SeedKey::Ecc(point), hash, bits))
    }

    /// [`Public::seed_key`]'s checks without building an RSA key (that costs a modular
    /// reduction): for validating a key where no secret is sent yet.
    pub fn check_seed_key(&self, role: &'static str) -> Result<(), CryptoError> {
        match self.parameters {
            PublicParameters::Ecc { .. } => self.seed_key(role).map(drop),
            _ => self.checked_rsa(role).map(drop),
        }
    }

    /// The checks every key that receives secrets passes: restricted, decrypting, not signing,
    /// with an AES-CFB symmetric definition, whose key size it returns.
    fn restricted_decryption_aes(
        &self,
        role: &'static str,
        symmetric: Option<&SymDefObject>,
    ) -> Result<AesKeyBits, CryptoError> {
        let unsuitable = |reason| CryptoError::UnsuitableKey { role, reason };
        let required = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
        if self.object_attributes & required != required
            || self.object_attributes & TPMA_OBJECT_SIGN != 0
        {
            return Err(unsuitable("not a restricted decryption key"));
        }
        match symmetric {
            Some(SymDefObject {
                algorithm: TPM_ALG_AES,
                key_bits,
                mode: TPM_ALG_CFB,
            }) => AesKeyBits::from_bits(*key_bits)
                .ok_or_else(|| unsuitable("AES key size is not 128, 192 or 256 bits")),
            _ => Err(unsuitable("symmetric algorithm is not AES-CFB")),
        }
    }

    /// The RSA checks of [`Public::seed_key`].
    fn checked_rsa(&self, role: &'static str) -> Result<CheckedRsa<'_>, CryptoError> {
        let unsuitable = |reason| CryptoError::UnsuitableKey { role, reason };
        let hash = NameHash::from_alg(self.name_alg)
            .ok_or_else(|| unsuitable("nameAlg is not SHA-256 or SHA-384"))?;
        let PublicParameters::Rsa {
            symmetric,
            key_bits,
            exponent,
            modulus,
            ..
        } = &self.parameters
        else {
            return Err(unsuitable("not an RSA key"));
        };
        let sym_key_bits = self.restricted_decryption_aes(role, symmetric.as_ref())?;
        // At least RSA-2048 (TCG EK Credential Profile: the default EK is 2048 bits; anything
        // shorter is breakable), keyBits agreeing with the modulus, whose top byte is set.
        if *key_bits < MIN_RSA_KEY_BITS {
            return Err(unsuitable("RSA key shorter than 2048 bits"));
        }
        if modulus.len() * 8 != usize::from(*key_bits) || modulus.first().is_none_or(|&b| b == 0) {
            return Err(unsuitable("keyBits does not match the modulus"));
        }
        // The exponent TPMs use: 0, meaning 2^16 + 1 (Part 2, TPMS_RSA_PARMS), or 2^16 + 1 written
        // out. Others are optional for a TPM and odd ones (3, 2^32 - 1) weaken OAEP or are not
        // prime.
        if *exponent != 0 && *exponent != 65_537 {
            return Err(unsuitable("RSA exponent is not 65537"));
        }
        let exponent = if *exponent == 0 { 65_537 } else { *exponent };
        Ok(CheckedRsa {
            modulus,
            exponent,
            hash,
            sym_key_bits,
        })
    }
}
