//! The public areas of the objects in this protocol, as templates a TPM creates them from.

use super::constants::{
    EK_POLICY_SECRET_ENDORSEMENT, TPMA_OBJECT_ADMIN_WITH_POLICY, TPMA_OBJECT_DECRYPT,
    TPMA_OBJECT_FIXED_PARENT, TPMA_OBJECT_FIXED_TPM, TPMA_OBJECT_NO_DA, TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, TPMA_OBJECT_SIGN, TPMA_OBJECT_USER_WITH_AUTH, TPM_ALG_ECDSA,
    TPM_ALG_SHA256,
};
use super::public::{Public, PublicParameters, Scheme, SymDefObject};
use crate::ecc::{TPM_ECC_NIST_P256, TPM_ECC_NIST_P384};

/// Attributes of an attestation key (TCG's AK template, as tss-esapi's `abstraction::ak` and
/// `tpm2_createak` make it): a restricted signing key that never leaves its TPM.
pub const AK_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_USER_WITH_AUTH
    | TPMA_OBJECT_RESTRICTED
    | TPMA_OBJECT_SIGN;

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

/// `authPolicy` of the high-range SHA-256 EK templates (H-1, H-2: TCG EK Credential Profile 2.5,
/// "PolicyB" with SHA-256).
pub const EK_POLICY_B_SHA256: [u8; 32] = [
    0xCA, 0x3D, 0x0A, 0x99, 0xA2, 0xB9, 0x39, 0x06, 0xF7, 0xA3, 0x34, 0x24, 0x14, 0xEF, 0xCF, 0xB3,
    0xA3, 0x85, 0xD4, 0x4C, 0xD1, 0xFD, 0x45, 0x90, 0x89, 0xD1, 0x9B, 0x50, 0x71, 0xC0, 0xB7, 0xA0,
];

/// `authPolicy` of the high-range SHA-384 EK templates (H-3, H-6: TCG EK Credential Profile 2.5,
/// "PolicyB"): `PolicyOR` of PolicyA (PolicySecret(TPM_RH_ENDORSEMENT)) and PolicyC
/// (PolicyAuthorizeNV), each with SHA-384.
pub const EK_POLICY_B_SHA384: [u8; 48] = [
    0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC, 0xF5, 0xFD, 0x3A, 0x1A,
    0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4, 0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA,
    0xCB, 0x47, 0xBA, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
];

fn ecc_storage_key(
    name_alg: u16,
    attributes: u32,
    auth_policy: Vec<u8>,
    (curve_id, aes_bits): (u16, u16),
    (x, y): (Vec<u8>, Vec<u8>),
) -> Public {
    Public {
        name_alg,
        object_attributes: attributes,
        auth_policy,
        parameters: PublicParameters::Ecc {
            symmetric: Some(SymDefObject {
                key_bits: aes_bits,
                ..SymDefObject::AES_128_CFB
            }),
            scheme: Scheme::null(),
            curve_id,
            kdf: Scheme::null(),
            x,
            y,
        },
    }
}

/// The low-range ECC P-256 EK (template L-2: SHA-256, AES-128, PolicyA, no userWithAuth) with
/// point (`x`, `y`); its template has 32 zero bytes in each.
#[must_use]
pub fn ek_ecc_p256(x: Vec<u8>, y: Vec<u8>) -> Public {
    ecc_storage_key(
        TPM_ALG_SHA256,
        EK_ATTRIBUTES,
        EK_POLICY_SECRET_ENDORSEMENT.to_vec(),
        (TPM_ECC_NIST_P256, 128),
        (x, y),
    )
}

/// The high-range ECC P-256 EK (template H-2: SHA-256, AES-128, PolicyB, userWithAuth) with
/// point (`x`, `y`); its template has empty ones.
#[must_use]
pub fn ek_ecc_p256_high(x: Vec<u8>, y: Vec<u8>) -> Public {
    ecc_storage_key(
        TPM_ALG_SHA256,
        EK_ATTRIBUTES | TPMA_OBJECT_USER_WITH_AUTH,
        EK_POLICY_B_SHA256.to_vec(),
        (TPM_ECC_NIST_P256, 128),
        (x, y),
    )
}

/// The high-range ECC P-384 EK (template H-3: SHA-384, AES-256, PolicyB, userWithAuth) with
/// point (`x`, `y`); its template has empty ones.
#[must_use]
pub fn ek_ecc_p384(x: Vec<u8>, y: Vec<u8>) -> Public {
    ecc_storage_key(
        super::constants::TPM_ALG_SHA384,
        EK_ATTRIBUTES | TPMA_OBJECT_USER_WITH_AUTH,
        EK_POLICY_B_SHA384.to_vec(),
        (TPM_ECC_NIST_P384, 256),
        (x, y),
    )
}

/// The high-range RSA-2048 EK (template H-1: SHA-256, AES-128, PolicyB, userWithAuth) with the
/// given modulus; its template has an empty one.
#[must_use]
pub fn ek_rsa2048_high(modulus: Vec<u8>) -> Public {
    rsa_storage_key(
        EK_ATTRIBUTES | TPMA_OBJECT_USER_WITH_AUTH,
        EK_POLICY_B_SHA256.to_vec(),
        modulus,
    )
}

/// The high-range RSA-3072 EK (template H-6: SHA-384, AES-256, PolicyB, userWithAuth) with the
/// given modulus; its template has an empty one.
#[must_use]
pub fn ek_rsa3072(modulus: Vec<u8>) -> Public {
    Public {
        name_alg: super::constants::TPM_ALG_SHA384,
        object_attributes: EK_ATTRIBUTES | TPMA_OBJECT_USER_WITH_AUTH,
        auth_policy: EK_POLICY_B_SHA384.to_vec(),
        parameters: PublicParameters::Rsa {
            symmetric: Some(SymDefObject {
                key_bits: 256,
                ..SymDefObject::AES_128_CFB
            }),
            scheme: Scheme::null(),
            key_bits: 3072,
            exponent: 0,
            modulus,
        },
    }
}

/// The RSA-2048 SRK with the given modulus (a template has an empty one).
#[must_use]
pub fn srk_rsa2048(modulus: Vec<u8>) -> Public {
    rsa_storage_key(SRK_ATTRIBUTES, Vec::new(), modulus)
}

/// The ECC P-256 SRK (TCG TPM v2.0 Provisioning Guidance: SHA-256, AES-128-CFB, the RSA SRK's
/// attributes) with point (`x`, `y`); a template has empty ones.
#[must_use]
pub fn srk_ecc_p256(x: Vec<u8>, y: Vec<u8>) -> Public {
    ecc_storage_key(
        TPM_ALG_SHA256,
        SRK_ATTRIBUTES,
        Vec::new(),
        (TPM_ECC_NIST_P256, 128),
        (x, y),
    )
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
            curve_id: TPM_ECC_NIST_P256,
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
        (TPM_ECC_NIST_P384, super::constants::TPM_ALG_SHA384)
    } else {
        (TPM_ECC_NIST_P256, TPM_ALG_SHA256)
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
