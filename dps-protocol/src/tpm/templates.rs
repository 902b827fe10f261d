//! The public areas of the objects in this protocol, as templates a TPM creates them from.

use super::constants::{
    EK_POLICY_SECRET_ENDORSEMENT, TPMA_OBJECT_ADMIN_WITH_POLICY, TPMA_OBJECT_DECRYPT,
    TPMA_OBJECT_FIXED_PARENT, TPMA_OBJECT_FIXED_TPM, TPMA_OBJECT_NO_DA, TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, TPMA_OBJECT_SIGN, TPMA_OBJECT_USER_WITH_AUTH, TPM_ALG_ECDSA,
    TPM_ALG_SHA256,
};
use super::public::{Public, PublicParameters, Scheme, SymDefObject};

/// Attributes of an attestation key (TCG's AK template, as tss-esapi's `abstraction::ak` and
/// `tpm2_createak` make it): a restricted signing key that never leaves its TPM.
pub const AK_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_USER_WITH_AUTH
    | TPMA_OBJECT_RESTRICTED
    | TPMA_OBJECT_SIGN;

/// `TPM_ECC_NIST_P256` and `TPM_ECC_NIST_P384`.
const NIST_P256: u16 = 0x0003;
const NIST_P384: u16 = 0x0004;

/// Attributes of a key a certificate is issued for: a signing key the TPM made and never lets
/// go of (fixedTPM, fixedParent, sensitiveDataOrigin), usable with its (empty) password, and
/// not restricted: it signs what TLS hands it.
pub const CERTIFICATE_KEY_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_USER_WITH_AUTH
    | TPMA_OBJECT_SIGN;

/// Attributes of the TCG default EK (EK Credential Profile 2.0, template L-1).
pub const EK_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_ADMIN_WITH_POLICY
    | TPMA_OBJECT_RESTRICTED
    | TPMA_OBJECT_DECRYPT;

/// Attributes of the SRK (TCG TPM v2.0 Provisioning Guidance, §7.5.1).
pub const SRK_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_USER_WITH_AUTH
    | TPMA_OBJECT_NO_DA
    | TPMA_OBJECT_RESTRICTED
    | TPMA_OBJECT_DECRYPT;

/// Attributes of the issued HMAC key: userWithAuth|noDA|sign (0x00040440). Not fixedTPM or
/// fixedParent, because an imported object must be duplicable. noDA: its authValue is empty, so
/// dictionary-attack protection guards nothing here, while a failed authorization against it
/// (a client killed mid-session, a local process) would spend the TPM's lockout counter, which
/// protects the device's other keys (TPM 2.0 Part 1, "Dictionary Attack Protection").
pub const HMAC_KEY_ATTRIBUTES: u32 =
    TPMA_OBJECT_USER_WITH_AUTH | TPMA_OBJECT_NO_DA | TPMA_OBJECT_SIGN;

fn rsa_storage_key(attributes: u32, auth_policy: Vec<u8>, modulus: Vec<u8>) -> Public {
    Public {
        name_alg: TPM_ALG_SHA256,
        object_attributes: attributes,
        auth_policy,
        parameters: PublicParameters::Rsa {
            symmetric: Some(SymDefObject::AES_128_CFB),
            scheme: Scheme::null(),
            key_bits: 2048,
            exponent: 0,
            modulus,
        },
    }
}

/// The TCG default RSA-2048 EK with the given modulus (a template has 256 zero bytes there).
#[must_use]
pub fn ek_rsa2048(modulus: Vec<u8>) -> Public {
    rsa_storage_key(
        EK_ATTRIBUTES,
        EK_POLICY_SECRET_ENDORSEMENT.to_vec(),
        modulus,
    )
}

/// The RSA-2048 SRK with the given modulus (a template has an empty one).
#[must_use]
pub fn srk_rsa2048(modulus: Vec<u8>) -> Public {
    rsa_storage_key(SRK_ATTRIBUTES, Vec::new(), modulus)
}

/// The issued HMAC-SHA-256 key; `unique` = SHA-256(seedValue || key).
#[must_use]
pub fn hmac_sha256_key(unique: Vec<u8>) -> Public {
    Public {
        name_alg: TPM_ALG_SHA256,
        object_attributes: HMAC_KEY_ATTRIBUTES,
        auth_policy: Vec::new(),
        parameters: PublicParameters::KeyedHash {
            scheme: Scheme::hmac(TPM_ALG_SHA256),
            unique,
        },
    }
}

/// An ECDSA P-256/SHA-256 attestation key with public point (`x`, `y`) (32 bytes each).
#[must_use]
pub fn ak_ecdsa_p256(x: Vec<u8>, y: Vec<u8>) -> Public {
    Public {
        name_alg: TPM_ALG_SHA256,
        object_attributes: AK_ATTRIBUTES,
        auth_policy: Vec::new(),
        parameters: PublicParameters::Ecc {
            symmetric: None,
            scheme: Scheme {
                scheme: TPM_ALG_ECDSA,
                details: vec![TPM_ALG_SHA256],
            },
            curve_id: NIST_P256,
            kdf: Scheme::null(),
            x,
            y,
        },
    }
}

/// The template of a certificate key: ECDSA on P-384 with SHA-384 (`p384`), else P-256 with
/// SHA-256; the TPM fills in the point.
#[must_use]
pub fn certificate_key_ecdsa(p384: bool) -> Public {
    let (curve_id, hash) = if p384 {
        (NIST_P384, super::constants::TPM_ALG_SHA384)
    } else {
        (NIST_P256, TPM_ALG_SHA256)
    };
    Public {
        name_alg: TPM_ALG_SHA256,
        object_attributes: CERTIFICATE_KEY_ATTRIBUTES,
        auth_policy: Vec::new(),
        parameters: PublicParameters::Ecc {
            symmetric: None,
            scheme: Scheme {
                scheme: TPM_ALG_ECDSA,
                details: vec![hash],
            },
            curve_id,
            kdf: Scheme::null(),
            x: Vec::new(),
            y: Vec::new(),
        },
    }
}
