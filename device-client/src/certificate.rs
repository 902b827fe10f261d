//! The certificate signing request (DPS 2026-04-01 `csr`, docs/protocol.md §11) for the TPM's
//! certificate key: built by rcgen (CN = the registration id, nothing else asked for), its
//! self-signature made inside the TPM — the private key never leaves it. And the issued
//! certificate's lifetime: when `register` renews it, and what a connect says when it expired.
//! [`tls`] makes the identity a rustls client certificate, its key still in the TPM.

pub mod tls;

use std::cell::RefCell;
use std::path::Path;

use dps_protocol::attest::Signature;
use dps_protocol::tpm::{Public, PublicParameters};
use rcgen::{CertificateParams, DnType, PublicKeyData, SignatureAlgorithm, SigningKey};
use sha2::{Digest, Sha256, Sha384};

use crate::tpm::{Tpm, TpmError};

/// `TPM_ECC_NIST_P384`.
const NIST_P384: u16 = 0x0004;

/// The TPM's certificate key, as rcgen signs with it.
struct TpmKey<'t> {
    tpm: RefCell<&'t mut Tpm>,
    /// `0x04 ‖ x ‖ y`.
    point: Vec<u8>,
    p384: bool,
    /// The TPM's failure, if signing failed (rcgen's error has no room for it).
    failed: RefCell<Option<TpmError>>,
}

impl PublicKeyData for TpmKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        if self.p384 {
            &rcgen::PKCS_ECDSA_P384_SHA384
        } else {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }
}

/// The certificate key's ECDSA signature over `message` (hashed here with its curve's hash:
/// SHA-384 for P-384, SHA-256 for P-256), DER `ECDSA-Sig-Value` as X.509 and TLS carry it.
fn sign_ecdsa(tpm: &mut Tpm, p384: bool, message: &[u8]) -> Result<Vec<u8>, TpmError> {
    let digest = if p384 {
        Sha384::digest(message).to_vec()
    } else {
        Sha256::digest(message).to_vec()
    };
    let bytes = tpm.sign_with_certificate_key(&digest)?;
    Signature::parse(&bytes)
        .ok()
        .and_then(|s| s.ecdsa_der())
        .ok_or(TpmError::Unexpected {
            what: "the certificate key's signature is not ECDSA",
        })
}

impl SigningKey for TpmKey<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        sign_ecdsa(&mut self.tpm.borrow_mut(), self.p384, message).map_err(|e| {
            *self.failed.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The certificate key's public area as the point rcgen writes, and whether it is P-384.
fn point_of(public: &[u8]) -> Result<(Vec<u8>, bool), TpmError> {
    let unexpected = TpmError::Unexpected {
        what: "the certificate key is not an ECC key",
    };
    let public = Public::from_tpm2b(public)?;
    let PublicParameters::Ecc { curve_id, x, y, .. } = &public.parameters else {
        return Err(unexpected);
    };
    let p384 = *curve_id == NIST_P384;
    let size = if p384 { 48 } else { 32 };
    let pad = |c: &[u8]| {
        let mut out = vec![0; size - c.len().min(size)];
        out.extend_from_slice(c);
        out
    };
    Ok(([&[0x04][..], &pad(x), &pad(y)].concat(), p384))
}

/// A DER PKCS#10 request for the TPM's certificate key (made and persisted if absent), with
/// CN = `registration_id`, signed by that key in the TPM.
pub fn certificate_request(tpm: &mut Tpm, registration_id: &str) -> Result<Vec<u8>, TpmError> {
    let (point, p384) = point_of(&tpm.certificate_key()?)?;
    let key = TpmKey {
        tpm: RefCell::new(tpm),
        point,
        p384,
        failed: RefCell::new(None),
    };
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, registration_id);
    match params.serialize_request(&key) {
        Ok(csr) => Ok(csr.der().to_vec()),
        Err(_) => Err(key.failed.take().unwrap_or(TpmError::Unexpected {
            what: "the CSR could not be built",
        })),
    }
}

/// The lifetime of the leaf of a chain file (PEM, leaf first): notBefore and notAfter, Unix
/// seconds. `None` when the file is absent or holds no certificate.
#[must_use]
pub fn leaf_validity(chain_file: &Path) -> Option<(i64, i64)> {
    let text = std::fs::read(chain_file).ok()?;
    let der = rustls_pemfile::certs(&mut &*text).next()?.ok()?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).ok()?;
    let validity = leaf.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Why `register` should ask for a certificate again, or `None`: it renews when the device holds
/// none, or when less than a third of the certificate's lifetime is left (a 30-day certificate
/// is renewed from its 20th day, leaving ten days of retries before it expires).
#[must_use]
pub fn renewal_reason(chain_file: &Path, now_unix: i64) -> Option<String> {
    let Some((not_before, not_after)) = leaf_validity(chain_file) else {
        return Some(format!("no certificate in {}", chain_file.display()));
    };
    let left = not_after - now_unix;
    (left * 3 < not_after - not_before).then(|| {
        format!(
            "{} of its {} days left",
            if left > 0 {
                let tenths = left * 10 / 86_400;
                format!("{}.{} days", tenths / 10, tenths % 10)
            } else {
                "none".to_owned()
            },
            (not_after - not_before + 43_200) / 86_400
        )
    })
}
