//! TPM endorsement key certificates: parse what a device read from its NV index, build a path
//! to a CA its owner trusts, and read what the TCG EK credential profile puts in it
//! (manufacturer, model and firmware version in the subject alternative name; the EK
//! certificate extended key usage; the certified key).
//!
//! **Why `x509-parser`.** Real EK certificates break strict parsers: Nuvoton encodes its issuer
//! as one multi-valued RDN whose SET OF is not DER-sorted, TPM 1.2-era certificates carry an
//! `id-RSAES-OAEP` key, the SAN is critical and holds a directoryName, the subject is empty.
//! The RustCrypto `x509-cert`/`der` stack refuses unsorted SET OF by design, and `webpki`
//! refuses critical extensions it does not know and any key but the web's; `x509-parser`
//! (Rusticata, maintained) decodes BER leniently and verifies signatures with `ring`
//! (RSA PKCS#1 v1.5 incl. SHA-1 for these legacy chains, RSA-PSS, ECDSA P-256/P-384).
//!
//! **How a path is built.** Vendors reissue CAs under the same name with the same key, spell
//! one name with different string types, and name issuers by serial numbers that do not exist
//! (see `../shared/ek-certs/README.md`). So a certificate's issuer is any candidate whose key
//! verifies its signature: candidates whose name or key identifier matches are tried first,
//! then the rest, depth first, until a trust anchor signs. Names are never trusted on their
//! own; an anchor is matched by its exact DER.
//!
//! **What is not checked, on purpose.** Validity dates: a TPM outlives its EK certificate
//! (several vendor leaves here expired in 2023–2024 on chips still in service), and the proof
//! that matters — the device holds this EK's private key — is made fresh by credential
//! activation at every registration. Revocation: vendors publish no usable CRLs for EK CAs;
//! the owner's deny list stands in for it.
//!
//! Nothing here does I/O; callers pass bytes.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::{FromDer, X509Name};
use x509_parser::public_key::{PublicKey, RSAPublicKey};

use crate::tpm::{Public, PublicParameters};

/// The longest path accepted, leaf excluded (the vendor chains here are at most three CAs).
const MAX_DEPTH: usize = 5;

/// TCG attribute OIDs (TCG EK Credential Profile 2.x §3.2.9 and §4): `tcg-at-tpmManufacturer`,
/// `tcg-at-tpmModel`, `tcg-at-tpmVersion`, and `tcg-kp-EKCertificate`.
const TPM_MANUFACTURER: &[u64] = &[2, 23, 133, 2, 1];
const TPM_MODEL: &[u64] = &[2, 23, 133, 2, 2];
const TPM_VERSION: &[u64] = &[2, 23, 133, 2, 3];
const EK_CERTIFICATE_USAGE: &[u64] = &[2, 23, 133, 8, 1];

/// The TCG PC Client header some TPMs store before the certificate in NV
/// (`TCG_PCCLIENT_STORED_CERT`: tag 0x1001, type 0, size, then `TCG_FULL_CERT` tag 0x1002).
const NV_HEADER_LEN: usize = 7;

/// Why an EK certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EkCertError {
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
    #[error("not PEM certificates: {0}")]
    Pem(String),
    #[error("a CA certificate, not an EK certificate")]
    CaAsLeaf,
    #[error("no chain to a trusted CA")]
    Untrusted,
}

/// The OID of `arcs` (constants of this module: always well-formed).
fn oid(arcs: &[u64]) -> Option<Oid<'static>> {
    Oid::from(arcs).ok()
}

/// The key an EK certificate certifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertifiedKey {
    /// Modulus without leading zero bytes.
    Rsa {
        modulus: Vec<u8>,
        exponent: u32,
    },
    /// The uncompressed point, `04 || x || y`.
    Ec {
        point: Vec<u8>,
    },
    Other,
}

/// A parsed EK certificate: its DER (NV framing and padding removed) and what the TCG profile
/// puts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificate {
    pub der: Vec<u8>,
    /// `tpmManufacturer` from the subject alternative name (e.g. `id:53544D20`).
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// `tpmVersion`: the firmware version (e.g. `id:00490004`).
    pub firmware_version: Option<String>,
    /// Whether the extended key usage names `tcg-kp-EKCertificate` (2.23.133.8.1).
    pub ek_usage: bool,
    pub key: CertifiedKey,
}

/// The certificate in `raw` as read from an NV index: a TCG PC Client header before it and
/// fill bytes after it are dropped; the DER itself is the crate's to delimit.
fn certificate_der(raw: &[u8]) -> Result<&[u8], EkCertError> {
    let body = match raw {
        [0x10, 0x01, 0x00, _, _, 0x10, 0x02, ..] => &raw[NV_HEADER_LEN..],
        _ => raw,
    };
    let (rest, _) =
        X509Certificate::from_der(body).map_err(|e| EkCertError::Parse(e.to_string()))?;
    Ok(&body[..body.len() - rest.len()])
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, EkCertError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| EkCertError::Parse(e.to_string()))
}

/// The first attribute `arcs` of a name, as text.
fn attribute(name: &X509Name<'_>, arcs: &[u64]) -> Option<String> {
    name.iter_by_oid(&oid(arcs)?)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

fn certified_key(cert: &X509Certificate<'_>) -> CertifiedKey {
    let spki = cert.public_key();
    let rsa = |key: &RSAPublicKey<'_>| {
        let modulus = key
            .modulus
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect();
        let exponent = key.try_exponent().ok().and_then(|e| u32::try_from(e).ok());
        exponent.map_or(CertifiedKey::Other, |exponent| CertifiedKey::Rsa {
            modulus,
            exponent,
        })
    };
    match spki.parsed() {
        Ok(PublicKey::RSA(key)) => rsa(&key),
        Ok(PublicKey::EC(point)) => CertifiedKey::Ec {
            point: point.data().to_vec(),
        },
        // TPM 1.2-era EKs: an id-RSAES-OAEP key, whose bits are still an RSAPublicKey.
        _ => RSAPublicKey::from_der(&spki.subject_public_key.data)
            .map_or(CertifiedKey::Other, |(_, key)| rsa(&key)),
    }
}

impl EkCertificate {
    /// Parses an EK certificate as a device read it (DER, possibly framed or padded).
    /// Refuses a CA certificate presented as a leaf.
    pub fn parse(raw: &[u8]) -> Result<Self, EkCertError> {
        let der = certificate_der(raw)?;
        let cert = parse_der(der)?;
        if cert.is_ca() {
            return Err(EkCertError::CaAsLeaf);
        }
        let (mut manufacturer, mut model, mut firmware_version) = (None, None, None);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DirectoryName(dn) = name {
                    manufacturer = manufacturer.or_else(|| attribute(dn, TPM_MANUFACTURER));
                    model = model.or_else(|| attribute(dn, TPM_MODEL));
                    firmware_version = firmware_version.or_else(|| attribute(dn, TPM_VERSION));
                }
            }
        }
        let ek_usage = cert.extended_key_usage().ok().flatten().is_some_and(|eku| {
            eku.value
                .other
                .iter()
                .any(|o| Some(o) == oid(EK_CERTIFICATE_USAGE).as_ref())
        });
        Ok(Self {
            der: der.to_vec(),
            manufacturer,
            model,
            firmware_version,
            ek_usage,
            key: certified_key(&cert),
        })
    }

    /// Whether the certified key is exactly `ek` (an RSA EK's modulus and exponent; the TPM's
    /// exponent 0 means 65537).
    #[must_use]
    pub fn certifies(&self, ek: &Public) -> bool {
        match (&self.key, &ek.parameters) {
            (
                CertifiedKey::Rsa { modulus, exponent },
                PublicParameters::Rsa {
                    modulus: ek_modulus,
                    exponent: ek_exponent,
                    ..
                },
            ) => {
                let ek_exponent = if *ek_exponent == 0 {
                    65_537
                } else {
                    *ek_exponent
                };
                let ek_modulus: Vec<u8> = ek_modulus
                    .iter()
                    .skip_while(|b| **b == 0)
                    .copied()
                    .collect();
                *modulus == ek_modulus && *exponent == ek_exponent
            }
            (CertifiedKey::Ec { point }, PublicParameters::Ecc { x, y, .. }) => {
                point.first() == Some(&0x04) && point[1..] == [x.as_slice(), y.as_slice()].concat()
            }
            _ => false,
        }
    }

    /// Builds a path from this certificate to one of `anchors` (DER; trusted as they are,
    /// self-signed or not) through `intermediates` (DER; untrusted: the group's and the
    /// device's). Every link is a verified signature by a CA certificate. Returns the path's
    /// certificates above the leaf, anchor last.
    pub fn chain_to(
        &self,
        anchors: &[Vec<u8>],
        intermediates: &[Vec<u8>],
    ) -> Result<Vec<Vec<u8>>, EkCertError> {
        let leaf = parse_der(&self.der)?;
        // Unparsable candidates cannot sign anything: skip them.
        let candidates: Vec<(X509Certificate<'_>, bool)> = anchors
            .iter()
            .map(|d| (d, true))
            .chain(intermediates.iter().map(|d| (d, false)))
            .filter_map(|(d, anchor)| parse_der(d).ok().map(|c| (c, anchor)))
            .filter(|(c, _)| c.is_ca())
            .collect();
        let mut path = Vec::new();
        if extend(&leaf, &candidates, &mut path) {
            Ok(path
                .iter()
                .map(|&i| candidates[i].0.as_raw().to_vec())
                .collect())
        } else {
            Err(EkCertError::Untrusted)
        }
    }
}

/// Whether `issuer` is the likely signer of `cert`: the key identifiers agree, or the names do
/// when compared attribute by attribute as text (string types and case aside).
fn likely_issuer(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    let key_ids = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        });
    let subject_key = issuer
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski),
            _ => None,
        });
    if let (Some(aki), Some(ski)) = (key_ids, subject_key) {
        if aki.0 == ski.0 {
            return true;
        }
    }
    let text = |name: &X509Name<'_>| -> Vec<(String, String)> {
        let mut attrs: Vec<_> = name
            .iter_attributes()
            .map(|a| {
                (
                    a.attr_type().to_id_string(),
                    a.as_str().unwrap_or_default().trim().to_lowercase(),
                )
            })
            .collect();
        attrs.sort();
        attrs
    };
    text(cert.issuer()) == text(issuer.subject())
}

/// Depth-first: appends to `path` the candidates from `cert` up to an anchor.
fn extend(
    cert: &X509Certificate<'_>,
    candidates: &[(X509Certificate<'_>, bool)],
    path: &mut Vec<usize>,
) -> bool {
    if path.len() >= MAX_DEPTH {
        return false;
    }
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|i| !path.contains(i))
        .collect();
    order.sort_by_key(|&i| !likely_issuer(cert, &candidates[i].0));
    for i in order {
        let (issuer, anchor) = &candidates[i];
        if cert.verify_signature(Some(issuer.public_key())).is_err() {
            continue;
        }
        path.push(i);
        if *anchor || extend(issuer, candidates, path) {
            return true;
        }
        path.pop();
    }
    false
}

/// The certificates of a PEM bundle, as DER.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, EkCertError> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| EkCertError::Pem(e.to_string()))?;
        if item.label == "CERTIFICATE" {
            out.push(item.contents);
        }
    }
    Ok(out)
}
