//! TPM attestation as a verifier reads it: the attestation key's public area (`TPM2B_PUBLIC`),
//! the `TPMS_ATTEST` a TPM signs (TPM 2.0 Part 2 §10.12) and its `TPMT_SIGNATURE` (§11.3.4),
//! and the checks a quote must pass before its PCR values mean anything
//! (`../shared/design/ecc-and-quotes.md` §B5–B6):
//!
//! - the attestation key is a restricted signing key that never left its TPM
//!   ([`check_attestation_key`]): a restricted key signs only digests the TPM computed itself
//!   (`TPM2_Sign` refuses a digest that starts with `TPM_GENERATED_VALUE`), which is what stops a
//!   hand-made `TPMS_ATTEST` signed by an ordinary key;
//! - the signature verifies with that key, in the key's own scheme ([`verify_signature`]);
//! - `magic` is `TPM_GENERATED_VALUE` and the type is a quote;
//! - `extraData` is the verifier's nonce (a replayed quote carries an old one);
//! - the returned PCR selection is the one asked for (a TPM silently drops a bank it has not
//!   allocated and quotes an empty selection);
//! - `pcrDigest` is the signing scheme's hash over the reported PCR values, in selection order.
//!
//! Nothing here does I/O; signatures are verified with `aws-lc-rs`, already the verifier of the EK
//! certificates (`ek_cert`). Submodules: [`pcrs`] (PCR banks, selections and values as JSON
//! carries them), [`challenge`] (the nonce bound to the attestation key) and [`policy`] (an
//! enrollment's attestation policy, and the judgement of one registration's evidence).

pub mod challenge;
pub mod pcrs;
pub mod policy;

use crate::crypto::sha256;
use crate::error::DecodeError;
use crate::marshal::{put_tpm2b, put_u16, put_u32, Reader};
use crate::tpm::constants::{
    MAX_DIGEST_SIZE, MAX_ECC_KEY_BYTES, MAX_RSA_KEY_BYTES, TPMA_OBJECT_DECRYPT,
    TPMA_OBJECT_FIXED_PARENT, TPMA_OBJECT_FIXED_TPM, TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, TPMA_OBJECT_SIGN, TPM_ALG_ECDSA, TPM_ALG_RSASSA,
    TPM_ALG_SHA256, TPM_ALG_SHA384,
};
use crate::tpm::{Public, PublicParameters};

/// `TPM_GENERATED_VALUE` (Part 2 §6.2): the first four bytes of everything a TPM attests.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_CERTIFY` and `TPM_ST_ATTEST_QUOTE` (Part 2 §6.9).
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ECC_NIST_P256` and `TPM_ECC_NIST_P384` (Part 2 §6.4).
pub const TPM_ECC_NIST_P256: u16 = 0x0003;
pub const TPM_ECC_NIST_P384: u16 = 0x0004;

/// `TPMS_PCR_SELECT`'s bitmap is at most `PCR_SELECT_MAX` bytes (24 PCRs need 3; Part 2 §10.6).
const MAX_PCR_SELECT: usize = 4;
/// Banks in one `TPML_PCR_SELECTION` at most (`HASH_COUNT`; a TPM has a handful).
const MAX_BANKS: u32 = 16;
/// `TPM2B_DATA` (extraData) holds at most a digest's worth (`sizeof(TPMT_HA)`).
const MAX_EXTRA_DATA: usize = 2 + MAX_DIGEST_SIZE;
/// `TPM2B_NAME`: an algorithm id and a digest, or a handle.
const MAX_NAME: usize = 2 + MAX_DIGEST_SIZE;

const TPMS_ATTEST: &str = "TPMS_ATTEST";
const TPMT_SIGNATURE: &str = "TPMT_SIGNATURE";

/// Why attestation evidence is refused. Each check has its own variant, so a refusal says
/// exactly which one failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the attestation key is not a restricted signing key that never left its TPM: {0}")]
    AkAttributes(&'static str),
    #[error("unsupported attestation key: {0}")]
    AkUnsupported(&'static str),
    #[error("the signature is not the attestation key's scheme")]
    SchemeMismatch,
    #[error("the signature does not verify with the attestation key")]
    BadSignature,
    #[error("magic 0x{0:08x} is not TPM_GENERATED_VALUE")]
    NotTpmGenerated(u32),
    #[error("attestation type 0x{got:04x}, expected 0x{expected:04x}")]
    WrongType { expected: u16, got: u16 },
    #[error("the attestation carries another nonce")]
    NonceMismatch,
    #[error("the quote covers another PCR selection than the one asked for")]
    SelectionMismatch,
    #[error("no value reported for PCR {index} of bank 0x{bank:04x}")]
    MissingPcr { bank: u16, index: u8 },
    #[error("the reported PCR values do not hash to the quoted digest")]
    DigestMismatch,
    #[error("the certified key could leave its TPM or is not a plain signing key: {0}")]
    CertifiedKeyAttributes(&'static str),
    #[error("the certification names another object than the public area given")]
    NameMismatch,
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// One bank's `TPMS_PCR_SELECTION`: its hash and the PCR indices selected, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub bank: u16,
    pub pcrs: Vec<u8>,
}

/// What is attested (`TPMU_ATTEST`, the two kinds this service reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// `TPMS_QUOTE_INFO`.
    Quote {
        pcr_select: Vec<PcrSelection>,
        pcr_digest: Vec<u8>,
    },
    /// `TPMS_CERTIFY_INFO`: the certified object's name and qualified name.
    Certify {
        name: Vec<u8>,
        qualified_name: Vec<u8>,
    },
}

/// A parsed `TPMS_ATTEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub magic: u32,
    pub kind: u16,
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub attested: Attested,
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u8_at(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    Ok(r.take(1, TPMS_ATTEST)?[0])
}

fn u64_at(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let high = u64::from(r.u32(TPMS_ATTEST)?);
    let low = u64::from(r.u32(TPMS_ATTEST)?);
    Ok(high << 32 | low)
}

fn read_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, DecodeError> {
    let count = r.u32(TPMS_ATTEST)?;
    if count > MAX_BANKS {
        return Err(DecodeError::SizeTooLarge {
            structure: "TPML_PCR_SELECTION",
            max: MAX_BANKS as usize,
            got: count as usize,
        });
    }
    let mut banks = Vec::new();
    for _ in 0..count {
        let bank = r.u16(TPMS_ATTEST)?;
        let size = usize::from(u8_at(r)?);
        if size > MAX_PCR_SELECT {
            return Err(DecodeError::SizeTooLarge {
                structure: "TPMS_PCR_SELECTION",
                max: MAX_PCR_SELECT,
                got: size,
            });
        }
        let bitmap = r.take(size, TPMS_ATTEST)?;
        let pcrs = (0..size * 8)
            .filter(|&i| bitmap[i / 8] & (1 << (i % 8)) != 0)
            .filter_map(|i| u8::try_from(i).ok())
            .collect();
        banks.push(PcrSelection { bank, pcrs });
    }
    Ok(banks)
}

impl Attest {
    /// Marshals a `TPMS_ATTEST` as a TPM does (what a software device signs; the parser's
    /// inverse, held to the swtpm vector).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        put_u32(&mut out, self.magic);
        put_u16(&mut out, self.kind);
        put_tpm2b(&mut out, &self.qualified_signer);
        put_tpm2b(&mut out, &self.extra_data);
        put_u64(&mut out, self.clock_info.clock);
        put_u32(&mut out, self.clock_info.reset_count);
        put_u32(&mut out, self.clock_info.restart_count);
        out.push(u8::from(self.clock_info.safe));
        put_u64(&mut out, self.firmware_version);
        match &self.attested {
            Attested::Quote {
                pcr_select,
                pcr_digest,
            } => {
                put_u32(&mut out, u32::try_from(pcr_select.len()).unwrap_or(0));
                for selection in pcr_select {
                    put_u16(&mut out, selection.bank);
                    // Three bytes hold PCRs 0–23, as every PC Client TPM selects them.
                    let mut bitmap = [0u8; 3];
                    for &i in &selection.pcrs {
                        if let Some(byte) = bitmap.get_mut(usize::from(i / 8)) {
                            *byte |= 1 << (i % 8);
                        }
                    }
                    out.push(3);
                    out.extend_from_slice(&bitmap);
                }
                put_tpm2b(&mut out, pcr_digest);
            }
            Attested::Certify {
                name,
                qualified_name,
            } => {
                put_tpm2b(&mut out, name);
                put_tpm2b(&mut out, qualified_name);
            }
        }
        out
    }

    /// Parses the exact bytes a TPM signed; refuses trailing bytes and attestation kinds other
    /// than quote and certify.
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32(TPMS_ATTEST)?;
        let kind = r.u16(TPMS_ATTEST)?;
        let qualified_signer = r.tpm2b(TPMS_ATTEST, MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b(TPMS_ATTEST, MAX_EXTRA_DATA)?.to_vec();
        let clock_info = ClockInfo {
            clock: u64_at(&mut r)?,
            reset_count: r.u32(TPMS_ATTEST)?,
            restart_count: r.u32(TPMS_ATTEST)?,
            safe: u8_at(&mut r)? != 0,
        };
        let firmware_version = u64_at(&mut r)?;
        let attested = match kind {
            TPM_ST_ATTEST_QUOTE => Attested::Quote {
                pcr_select: read_selection(&mut r)?,
                pcr_digest: r.tpm2b(TPMS_ATTEST, MAX_DIGEST_SIZE)?.to_vec(),
            },
            TPM_ST_ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b(TPMS_ATTEST, MAX_NAME)?.to_vec(),
                qualified_name: r.tpm2b(TPMS_ATTEST, MAX_NAME)?.to_vec(),
            },
            value => {
                return Err(DecodeError::UnsupportedAlgorithm {
                    structure: TPMS_ATTEST,
                    field: "type",
                    value,
                })
            }
        };
        r.finish(TPMS_ATTEST)?;
        Ok(Self {
            magic,
            kind,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
        })
    }
}

/// A parsed `TPMT_SIGNATURE` of the two schemes attestation keys use here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Ecdsa { hash: u16, r: Vec<u8>, s: Vec<u8> },
    Rsassa { hash: u16, sig: Vec<u8> },
}

impl Signature {
    /// Marshals a `TPMT_SIGNATURE`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Ecdsa { hash, r, s } => {
                put_u16(&mut out, TPM_ALG_ECDSA);
                put_u16(&mut out, *hash);
                put_tpm2b(&mut out, r);
                put_tpm2b(&mut out, s);
            }
            Self::Rsassa { hash, sig } => {
                put_u16(&mut out, TPM_ALG_RSASSA);
                put_u16(&mut out, *hash);
                put_tpm2b(&mut out, sig);
            }
        }
        out
    }

    /// An ECDSA signature as X.509 and TLS carry it (`ECDSA-Sig-Value ::= SEQUENCE { r
    /// INTEGER, s INTEGER }`, DER); `None` for RSASSA, whose bytes are already that form.
    #[must_use]
    pub fn ecdsa_der(&self) -> Option<Vec<u8>> {
        match self {
            Self::Ecdsa { r, s, .. } => {
                let mut body = der_integer(r);
                body.extend(der_integer(s));
                Some(der_tagged(0x30, &body))
            }
            Self::Rsassa { .. } => None,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let scheme = r.u16(TPMT_SIGNATURE)?;
        let hash = r.u16(TPMT_SIGNATURE)?;
        let signature = match scheme {
            TPM_ALG_ECDSA => Self::Ecdsa {
                hash,
                r: r.tpm2b(TPMT_SIGNATURE, MAX_ECC_KEY_BYTES)?.to_vec(),
                s: r.tpm2b(TPMT_SIGNATURE, MAX_ECC_KEY_BYTES)?.to_vec(),
            },
            TPM_ALG_RSASSA => Self::Rsassa {
                hash,
                sig: r.tpm2b(TPMT_SIGNATURE, MAX_RSA_KEY_BYTES)?.to_vec(),
            },
            value => {
                return Err(DecodeError::UnsupportedAlgorithm {
                    structure: TPMT_SIGNATURE,
                    field: "sigAlg",
                    value,
                })
            }
        };
        r.finish(TPMT_SIGNATURE)?;
        Ok(signature)
    }
}

/// The attributes of an attestation key: restricted, sign, not decrypt, fixedTPM, fixedParent,
/// sensitiveDataOrigin (TCG's AK template; Keylime defines the same set but never checks it,
/// ecc-and-quotes.md §B6); and a scheme this verifier checks: ECDSA P-256/SHA-256,
/// ECDSA P-384/SHA-384 or RSASSA-2048/SHA-256.
pub fn check_attestation_key(ak: &Public) -> Result<(), AttestError> {
    let wrong = wrong_attribute(
        ak.object_attributes,
        &[
            (TPMA_OBJECT_RESTRICTED, "not restricted"),
            (TPMA_OBJECT_SIGN, "not a signing key"),
            (TPMA_OBJECT_FIXED_TPM, "not fixedTPM"),
            (TPMA_OBJECT_FIXED_PARENT, "not fixedParent"),
            (TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, "not sensitiveDataOrigin"),
        ],
        &[(TPMA_OBJECT_DECRYPT, "a decryption key")],
    );
    if let Some(what) = wrong {
        return Err(AttestError::AkAttributes(what));
    }
    scheme_of(ak).map(drop)
}

/// The first of `required` attribute bits clear in `attributes`, else the first of `forbidden`
/// set, by the name given with it.
fn wrong_attribute(
    attributes: u32,
    required: &[(u32, &'static str)],
    forbidden: &[(u32, &'static str)],
) -> Option<&'static str> {
    required
        .iter()
        .find(|(bit, _)| attributes & bit == 0)
        .or_else(|| forbidden.iter().find(|(bit, _)| attributes & bit != 0))
        .map(|(_, what)| *what)
}

/// How `ak` signs: the `aws-lc-rs` algorithm, the TPM hash, and the key bytes it takes.
fn scheme_of(
    ak: &Public,
) -> Result<
    (
        &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
        u16,
        Vec<u8>,
    ),
    AttestError,
> {
    match &ak.parameters {
        PublicParameters::Ecc {
            scheme,
            curve_id,
            x,
            y,
            ..
        } if scheme.scheme == TPM_ALG_ECDSA => {
            let (algorithm, hash, size): (
                &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
                _,
                _,
            ) = match (*curve_id, scheme.details.first().copied()) {
                (TPM_ECC_NIST_P256, Some(TPM_ALG_SHA256)) => (
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                    TPM_ALG_SHA256,
                    32,
                ),
                (TPM_ECC_NIST_P384, Some(TPM_ALG_SHA384)) => (
                    &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
                    TPM_ALG_SHA384,
                    48,
                ),
                _ => return Err(AttestError::AkUnsupported("ECDSA curve and hash")),
            };
            let mut point = vec![0x04];
            point.extend_from_slice(&left_pad(x, size)?);
            point.extend_from_slice(&left_pad(y, size)?);
            Ok((algorithm, hash, point))
        }
        PublicParameters::Rsa {
            scheme,
            key_bits: 2048,
            exponent,
            modulus,
            ..
        } if scheme.scheme == TPM_ALG_RSASSA && scheme.details.first() == Some(&TPM_ALG_SHA256) => {
            let exponent = if *exponent == 0 { 65_537 } else { *exponent };
            Ok((
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                TPM_ALG_SHA256,
                rsa_public_key_der(modulus, exponent),
            ))
        }
        _ => Err(AttestError::AkUnsupported(
            "not ECDSA P-256/P-384 or RSASSA-2048",
        )),
    }
}

/// `bytes` as exactly `size` big-endian bytes (a TPM may drop leading zeros).
fn left_pad(bytes: &[u8], size: usize) -> Result<Vec<u8>, AttestError> {
    let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    if bytes.len() > size {
        return Err(AttestError::BadSignature);
    }
    let mut out = vec![0; size - bytes.len()];
    out.extend_from_slice(bytes);
    Ok(out)
}

/// A DER INTEGER of the unsigned big-endian `bytes` (leading zeros dropped, a zero added
/// where the top bit is set). The DER written here is this small; a DER crate would be the
/// only one for it.
fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    let mut value = Vec::with_capacity(bytes.len() + 1);
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        value.push(0);
    }
    value.extend_from_slice(bytes);
    der_tagged(0x02, &value)
}

/// A DER element: `tag`, the definite length of `value`, `value`.
fn der_tagged(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(u8::try_from(len).unwrap_or(0)),
        0x80..=0xff => out.extend([0x81, u8::try_from(len).unwrap_or(0)]),
        _ => {
            let [high, low] = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
            out.extend([0x82, high, low]);
        }
    }
    out.extend_from_slice(value);
    out
}

/// DER `RSAPublicKey { modulus, publicExponent }`, as `aws-lc-rs` reads an RSA key.
fn rsa_public_key_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    let mut body = der_integer(modulus);
    body.extend(der_integer(&exponent.to_be_bytes()));
    der_tagged(0x30, &body)
}

/// Verifies `signature` over `message` (the `TPMS_ATTEST` bytes) with `ak`, in `ak`'s scheme.
pub fn verify_signature(
    ak: &Public,
    message: &[u8],
    signature: &Signature,
) -> Result<(), AttestError> {
    let (algorithm, hash, key) = scheme_of(ak)?;
    let raw = match (signature, &ak.parameters) {
        (Signature::Ecdsa { hash: h, r, s }, PublicParameters::Ecc { .. }) if *h == hash => {
            let size = (key.len() - 1) / 2;
            let mut raw = left_pad(r, size)?;
            raw.extend(left_pad(s, size)?);
            raw
        }
        (Signature::Rsassa { hash: h, sig }, PublicParameters::Rsa { .. }) if *h == hash => {
            sig.clone()
        }
        _ => return Err(AttestError::SchemeMismatch),
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, key)
        .verify(message, &raw)
        .map_err(|_| AttestError::BadSignature)
}

/// The scheme's hash of `data`.
fn digest(hash: u16, data: &[u8]) -> Vec<u8> {
    match hash {
        TPM_ALG_SHA384 => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, data)
            .as_ref()
            .to_vec(),
        _ => sha256(&[data]).to_vec(),
    }
}

/// A PCR value as the device reports it: bank, index, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValue {
    pub bank: u16,
    pub index: u8,
    pub value: Vec<u8>,
}

/// Checks a quote: `ak`'s attributes, the signature over `attest` (the exact bytes the TPM
/// signed), magic and type, `nonce` in `extraData`, the returned selection against
/// `requested`, and `pcrDigest` against the scheme's hash of `values` taken in the quote's
/// selection order (banks as listed, indices ascending). Returns the parsed attestation.
pub fn verify_quote(
    ak: &Public,
    attest: &[u8],
    signature: &Signature,
    nonce: &[u8],
    requested: &[PcrSelection],
    values: &[PcrValue],
) -> Result<Attest, AttestError> {
    // Compared in constant time: a nonce is not secret, but nothing is lost by it.
    let nonce_matches = |extra: &[u8]| bool::from(subtle::ConstantTimeEq::ct_eq(extra, nonce));
    verify_quote_by(ak, attest, signature, nonce_matches, requested, values)
}

/// What every attestation must be before its contents count: signed, in its own scheme, by an
/// attestation key ([`check_attestation_key`]), and generated by the TPM (magic
/// `TPM_GENERATED_VALUE`). Returns it parsed.
fn signed_by_ak(ak: &Public, attest: &[u8], signature: &Signature) -> Result<Attest, AttestError> {
    check_attestation_key(ak)?;
    verify_signature(ak, attest, signature)?;
    let parsed = Attest::parse(attest)?;
    if parsed.magic != TPM_GENERATED_VALUE {
        return Err(AttestError::NotTpmGenerated(parsed.magic));
    }
    Ok(parsed)
}

/// [`verify_quote`], with the nonce judged by `nonce_matches` (given `extraData`): a verifier
/// that keeps only the nonce's hash compares hashes.
pub fn verify_quote_by(
    ak: &Public,
    attest: &[u8],
    signature: &Signature,
    nonce_matches: impl FnOnce(&[u8]) -> bool,
    requested: &[PcrSelection],
    values: &[PcrValue],
) -> Result<Attest, AttestError> {
    let parsed = signed_by_ak(ak, attest, signature)?;
    let Attested::Quote {
        pcr_select,
        pcr_digest,
    } = &parsed.attested
    else {
        return Err(AttestError::WrongType {
            expected: TPM_ST_ATTEST_QUOTE,
            got: parsed.kind,
        });
    };
    if !nonce_matches(&parsed.extra_data) {
        return Err(AttestError::NonceMismatch);
    }
    if !same_selection(pcr_select, requested) {
        return Err(AttestError::SelectionMismatch);
    }
    let (_, hash, _) = scheme_of(ak)?;
    let mut concatenated = Vec::new();
    for selection in pcr_select {
        for &index in &selection.pcrs {
            let value = values
                .iter()
                .find(|v| v.bank == selection.bank && v.index == index)
                .ok_or(AttestError::MissingPcr {
                    bank: selection.bank,
                    index,
                })?;
            concatenated.extend_from_slice(&value.value);
        }
    }
    if digest(hash, &concatenated) != *pcr_digest {
        return Err(AttestError::DigestMismatch);
    }
    Ok(parsed)
}

/// The attributes of a key a certificate may be issued for: a signing key the TPM generated
/// and can never let go of — fixedTPM, fixedParent, sensitiveDataOrigin, sign — and neither
/// restricted (it signs what TLS gives it) nor a decryption key.
pub fn check_resident_key(key: &Public) -> Result<(), AttestError> {
    let wrong = wrong_attribute(
        key.object_attributes,
        &[
            (TPMA_OBJECT_FIXED_TPM, "not fixedTPM"),
            (TPMA_OBJECT_FIXED_PARENT, "not fixedParent"),
            (TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, "not sensitiveDataOrigin"),
            (TPMA_OBJECT_SIGN, "not a signing key"),
        ],
        &[
            (TPMA_OBJECT_RESTRICTED, "restricted"),
            (TPMA_OBJECT_DECRYPT, "a decryption key"),
        ],
    );
    wrong.map_or(Ok(()), |what| {
        Err(AttestError::CertifiedKeyAttributes(what))
    })
}

/// Checks a `TPM2_Certify` of `certified` by `ak` (`attested-identity.md` §8 step 3): the AK's
/// attributes and signature, magic, type certify, the nonce in `extraData` (judged by
/// `nonce_matches`), `attested.name` = Name(`certified`), and `certified` a key that never
/// leaves its TPM ([`check_resident_key`]). Returns the parsed attestation.
pub fn verify_certify(
    ak: &Public,
    attest: &[u8],
    signature: &Signature,
    nonce_matches: impl FnOnce(&[u8]) -> bool,
    certified: &Public,
) -> Result<Attest, AttestError> {
    let parsed = signed_by_ak(ak, attest, signature)?;
    let Attested::Certify { name, .. } = &parsed.attested else {
        return Err(AttestError::WrongType {
            expected: TPM_ST_ATTEST_CERTIFY,
            got: parsed.kind,
        });
    };
    if !nonce_matches(&parsed.extra_data) {
        return Err(AttestError::NonceMismatch);
    }
    let expected = crate::tpm::Name::of(certified)
        .map_err(|_| AttestError::AkUnsupported("the certified key's nameAlg"))?;
    if name.as_slice() != expected.as_bytes() {
        return Err(AttestError::NameMismatch);
    }
    check_resident_key(certified)?;
    Ok(parsed)
}

/// Whether two selections name the same PCRs of the same banks, in whatever order the banks
/// are listed. A bank listed twice in the quote is a mismatch; a bank listed with no PCR (what a
/// TPM returns for a bank it has not allocated) is not the bank's PCRs.
fn same_selection(quoted: &[PcrSelection], requested: &[PcrSelection]) -> bool {
    let as_map = |list: &[PcrSelection]| {
        let mut map = std::collections::BTreeMap::new();
        for s in list {
            if map.insert(s.bank, s.pcrs.clone()).is_some() {
                return None;
            }
        }
        Some(map)
    };
    matches!((as_map(quoted), as_map(requested)), (Some(q), Some(r)) if q == r)
}
