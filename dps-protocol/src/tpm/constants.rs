//! TPM 2.0 constants, each from TPM 2.0 Library Part 2 unless noted, and the size limits we
//! enforce when decoding.

// TPM_ALG_ID (Part 2, Table 9).
pub const TPM_ALG_RSA: u16 = 0x0001;
pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_HMAC: u16 = 0x0005;
pub const TPM_ALG_AES: u16 = 0x0006;
pub const TPM_ALG_MGF1: u16 = 0x0007;
pub const TPM_ALG_KEYEDHASH: u16 = 0x0008;
pub const TPM_ALG_XOR: u16 = 0x000A;
pub const TPM_ALG_SHA256: u16 = 0x000B;
pub const TPM_ALG_SHA384: u16 = 0x000C;
pub const TPM_ALG_SHA512: u16 = 0x000D;
pub const TPM_ALG_NULL: u16 = 0x0010;
pub const TPM_ALG_SM3_256: u16 = 0x0012;
pub const TPM_ALG_SM4: u16 = 0x0013;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAES: u16 = 0x0015;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
pub const TPM_ALG_OAEP: u16 = 0x0017;
pub const TPM_ALG_ECDSA: u16 = 0x0018;
pub const TPM_ALG_ECDH: u16 = 0x0019;
pub const TPM_ALG_ECDAA: u16 = 0x001A;
pub const TPM_ALG_SM2: u16 = 0x001B;
pub const TPM_ALG_ECSCHNORR: u16 = 0x001C;
pub const TPM_ALG_ECMQV: u16 = 0x001D;
pub const TPM_ALG_KDF1_SP800_56A: u16 = 0x0020;
pub const TPM_ALG_KDF2: u16 = 0x0021;
pub const TPM_ALG_KDF1_SP800_108: u16 = 0x0022;
pub const TPM_ALG_ECC: u16 = 0x0023;
pub const TPM_ALG_SYMCIPHER: u16 = 0x0025;
pub const TPM_ALG_CAMELLIA: u16 = 0x0026;
pub const TPM_ALG_CFB: u16 = 0x0043;

// TPMA_OBJECT bits (Part 2, Table 31).
pub const TPMA_OBJECT_FIXED_TPM: u32 = 1 << 1;
pub const TPMA_OBJECT_ST_CLEAR: u32 = 1 << 2;
pub const TPMA_OBJECT_FIXED_PARENT: u32 = 1 << 4;
pub const TPMA_OBJECT_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
pub const TPMA_OBJECT_USER_WITH_AUTH: u32 = 1 << 6;
pub const TPMA_OBJECT_ADMIN_WITH_POLICY: u32 = 1 << 7;
pub const TPMA_OBJECT_NO_DA: u32 = 1 << 10;
pub const TPMA_OBJECT_ENCRYPTED_DUPLICATION: u32 = 1 << 11;
pub const TPMA_OBJECT_RESTRICTED: u32 = 1 << 16;
pub const TPMA_OBJECT_DECRYPT: u32 = 1 << 17;
pub const TPMA_OBJECT_SIGN: u32 = 1 << 18;

/// Persistent handle of the RSA-2048 EK (TCG TPM v2.0 Provisioning Guidance, Table 2).
pub const EK_PERSISTENT_HANDLE: u32 = 0x8101_0001;
/// Persistent handle of the SRK (TCG TPM v2.0 Provisioning Guidance, Table 2).
pub const SRK_PERSISTENT_HANDLE: u32 = 0x8100_0001;
/// Where the Azure clients (aziot-tpmd) persist the device key, the HMAC key DPS issues.
pub const DEVICE_KEY_PERSISTENT_HANDLE: u32 = 0x8100_0100;
/// Where this project's device client persists its attestation key: the endorsement
/// hierarchy's range, beside the EK (the AK is the EK's child); tpm2-software's remote
/// attestation tutorial uses the same handle.
pub const AK_PERSISTENT_HANDLE: u32 = 0x8101_0002;
/// Where this project's device client persists the key its certificate is issued for: the
/// owner hierarchy's range, under the SRK, next to the device key.
pub const CERTIFICATE_KEY_PERSISTENT_HANDLE: u32 = 0x8100_0102;

/// `authPolicy` of the TCG default EK templates: `PolicySecret(TPM_RH_ENDORSEMENT)` with SHA-256
/// (TCG EK Credential Profile 2.0, B.3.3).
pub const EK_POLICY_SECRET_ENDORSEMENT: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

// Size limits. Part 2 sizes each TPM2B by the C structure it may hold; those depend on the
// implementation's MAX_* constants. We accept the largest algorithms a TPM may carry in this
// protocol: SHA-512 digests, RSA-4096, ECC P-521, and derive every maximum from them.

/// `MAX_DIGEST_SIZE`: SHA-512.
pub const MAX_DIGEST_SIZE: usize = 64;
/// `MAX_RSA_KEY_BYTES`: RSA-4096.
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// `MAX_ECC_KEY_BYTES`: P-521.
pub const MAX_ECC_KEY_BYTES: usize = 66;
/// `MAX_SYM_DATA` (Part 2, `TPM2B_SENSITIVE_DATA`).
pub const MAX_SYM_DATA: usize = 128;

/// `sizeof(TPMT_PUBLIC)`: type, nameAlg, objectAttributes, authPolicy, the largest parameters
/// (`TPMS_ECC_PARMS`, 18 bytes) and the largest unique (an RSA modulus).
pub const MAX_PUBLIC_SIZE: usize = 2 + 2 + 4 + (2 + MAX_DIGEST_SIZE) + 18 + (2 + MAX_RSA_KEY_BYTES);
/// `sizeof(TPMS_ID_OBJECT)`: integrityHMAC and encIdentity, both `TPM2B_DIGEST`.
pub const MAX_ID_OBJECT_SIZE: usize = 2 * (2 + MAX_DIGEST_SIZE);
/// `sizeof(TPMU_ENCRYPTED_SECRET)`: the largest member is an RSA-encrypted seed.
pub const MAX_ENCRYPTED_SECRET_SIZE: usize = MAX_RSA_KEY_BYTES;
/// `sizeof(TPMT_SENSITIVE)`: type, authValue, seedValue and the largest sensitive member (an RSA
/// private key as `TPM2B_PRIVATE_KEY_RSA`, `MAX_RSA_KEY_BYTES` * 5 / 2).
pub const MAX_SENSITIVE_SIZE: usize =
    2 + (2 + MAX_DIGEST_SIZE) + (2 + MAX_DIGEST_SIZE) + (2 + MAX_RSA_KEY_BYTES * 5 / 2);
/// sizeof(_PRIVATE): integrityOuter, integrityInner and `TPM2B_SENSITIVE`.
pub const MAX_PRIVATE_SIZE: usize =
    (2 + MAX_DIGEST_SIZE) + (2 + MAX_DIGEST_SIZE) + (2 + MAX_SENSITIVE_SIZE);
/// `sizeof(TPMT_HA)`, the buffer of `TPM2B_DATA`.
pub const MAX_DATA_SIZE: usize = 2 + MAX_DIGEST_SIZE;
