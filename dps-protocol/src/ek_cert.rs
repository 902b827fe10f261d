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
//! (Rusticata, maintained) decodes BER leniently and verifies signatures with `aws-lc-rs`
//! (RSA PKCS#1 v1.5 incl. SHA-1 for these legacy chains, RSA-PSS, ECDSA P-256/P-384).
//!
//! **How a path is built.** Vendors reissue CAs under the same name with the same key, spell
//! one name with different string types, and name issuers by serial numbers that do not exist
//! (see `../shared/ek-certs/README.md`). So a certificate's issuer is any candidate whose key
//! verifies its signature: candidates whose name or key identifier matches are tried first,
//! then the rest, breadth first, until a trust anchor signs. Names are never trusted on their
//! own; an anchor is matched by its exact DER.
//!
//! **What a path search may cost.** The candidates come partly from a stranger (the device's
//! chain), and "any candidate whose key verifies" lets one key sign many certificates that all
//! verify each other: searched path by path, N of them cost about N⁵ signature checks. So the
//! search reaches each candidate once (breadth first, shortest path), duplicates are dropped,
//! a signature is checked at most once per pair of certificates, and a [`PathSearch`] caps the
//! checks one request may spend over every search it makes ([`MAX_SIGNATURE_CHECKS`]) and
//! stops when its caller gives up on it.
//!
//! **What is not checked, on purpose.** Validity dates: a TPM outlives its EK certificate
//! (several vendor leaves here expired in 2023–2024 on chips still in service), and the proof
//! that matters — the device holds this EK's private key — is made fresh by credential
//! activation at every registration. Revocation: vendors publish no usable CRLs for EK CAs;
//! the owner's deny list stands in for it.
//!
//! Nothing here does I/O; callers pass bytes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::{FromDer, X509Name};
use x509_parser::public_key::{PublicKey, RSAPublicKey};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::crypto::sha256;
use crate::tpm::{Public, PublicParameters};

/// The longest path accepted, leaf excluded (the vendor chains here are at most three CAs).
const MAX_DEPTH: usize = 5;

/// The most CA certificates a device may send beside its EK certificate: the vendor chains
/// here are at most three CAs; a TPM's NV holds one or two.
pub const MAX_PRESENTED_CHAIN: usize = 8;

/// Signature checks one request's path searches may spend together. A legitimate search
/// spends a few per group tried (the vendor chains: two to six; a pair already checked for an
/// earlier group is not checked again). At ECDSA P-384's cost, the dearest verification here
/// (0.8 ms on the benchmark machine; `benches/ek_path.rs`), the cap keeps one request's core
/// for about 0.1 s.
pub const MAX_SIGNATURE_CHECKS: u32 = 128;

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
    #[error("path search stopped after {checks} signature checks")]
    SearchExhausted { checks: u32 },
    #[error("path search abandoned by its caller")]
    SearchAbandoned,
}

/// The budget of one request's path searches: signature checks left, the verdicts already
/// reached (per pair of certificates, by their SHA-256), and whether the caller gave up.
#[derive(Debug)]
pub struct PathSearch {
    left: u32,
    spent: u32,
    verdicts: HashMap<([u8; 32], [u8; 32]), bool>,
    abandoned: Option<Arc<AtomicBool>>,
}

impl Default for PathSearch {
    fn default() -> Self {
        Self::new(MAX_SIGNATURE_CHECKS)
    }
}

impl PathSearch {
    #[must_use]
    pub fn new(max_checks: u32) -> Self {
        Self {
            left: max_checks,
            spent: 0,
            verdicts: HashMap::new(),
            abandoned: None,
        }
    }

    /// Stops at the next signature check once `flag` is set (the request that wanted the
    /// answer has gone).
    #[must_use]
    pub fn abandoned_when(mut self, flag: Arc<AtomicBool>) -> Self {
        self.abandoned = Some(flag);
        self
    }

    /// Signature checks made so far.
    #[must_use]
    pub fn spent(&self) -> u32 {
        self.spent
    }

    /// Whether `issuer`'s key verifies `cert`'s signature, each pair checked once.
    fn verifies(&mut self, cert: &Node<'_>, issuer: &Node<'_>) -> Result<bool, EkCertError> {
        if self
            .abandoned
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Err(EkCertError::SearchAbandoned);
        }
        if let Some(&verdict) = self.verdicts.get(&(cert.id, issuer.id)) {
            return Ok(verdict);
        }
        if self.left == 0 {
            return Err(EkCertError::SearchExhausted { checks: self.spent });
        }
        self.left -= 1;
        self.spent += 1;
        let verdict = cert
            .cert
            .verify_signature(Some(issuer.cert.public_key()))
            .is_ok();
        self.verdicts.insert((cert.id, issuer.id), verdict);
        Ok(verdict)
    }
}

/// A certificate in a path search, known by the SHA-256 of its DER.
struct Node<'a> {
    cert: X509Certificate<'a>,
    id: [u8; 32],
    anchor: bool,
}

impl<'a> Node<'a> {
    fn new(cert: X509Certificate<'a>, anchor: bool) -> Self {
        let id = sha256(&[cert.as_raw()]);
        Self { cert, id, anchor }
    }
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

impl CertifiedKey {
    fn of_rsa(key: &RSAPublicKey<'_>) -> Self {
        let modulus = key
            .modulus
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect();
        let exponent = key.try_exponent().ok().and_then(|e| u32::try_from(e).ok());
        exponent.map_or(Self::Other, |exponent| Self::Rsa { modulus, exponent })
    }

    /// The key of a DER SubjectPublicKeyInfo (a certificate's, or a PEM `PUBLIC KEY`'s).
    fn of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Self {
        match spki.parsed() {
            Ok(PublicKey::RSA(key)) => Self::of_rsa(&key),
            Ok(PublicKey::EC(point)) => Self::Ec {
                point: point.data().to_vec(),
            },
            // TPM 1.2-era EKs: an id-RSAES-OAEP key, whose bits are still an RSAPublicKey.
            _ => Self::from_pkcs1_der(&spki.subject_public_key.data).unwrap_or(Self::Other),
        }
    }

    /// The key of a DER PKCS#1 RSAPublicKey (a PEM `RSA PUBLIC KEY`'s).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, EkCertError> {
        match RSAPublicKey::from_der(der) {
            Ok(([], key)) => Ok(Self::of_rsa(&key)),
            Ok(_) => Err(EkCertError::Parse("bytes after the public key".to_owned())),
            Err(e) => Err(EkCertError::Parse(e.to_string())),
        }
    }

    /// The key of a DER SubjectPublicKeyInfo, as `tpm2_readpublic -f pem` and OpenSSL write
    /// an EK's public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, EkCertError> {
        match SubjectPublicKeyInfo::from_der(der) {
            Ok(([], spki)) => Ok(Self::of_spki(&spki)),
            Ok(_) => Err(EkCertError::Parse("bytes after the public key".to_owned())),
            Err(e) => Err(EkCertError::Parse(e.to_string())),
        }
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
            key: CertifiedKey::of_spki(cert.public_key()),
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
    /// device's), within a fresh [`PathSearch`]. Every link is a verified signature by a CA
    /// certificate. Returns the path's certificates above the leaf, anchor last.
    pub fn chain_to(
        &self,
        anchors: &[Vec<u8>],
        intermediates: &[Vec<u8>],
    ) -> Result<Vec<Vec<u8>>, EkCertError> {
        self.chain_within(anchors, intermediates, &mut PathSearch::default())
    }

    /// [`Self::chain_to`], spending from `search` (shared by one request's searches).
    pub fn chain_within(
        &self,
        anchors: &[Vec<u8>],
        intermediates: &[Vec<u8>],
        search: &mut PathSearch,
    ) -> Result<Vec<Vec<u8>>, EkCertError> {
        let leaf = Node::new(parse_der(&self.der)?, false);
        // Each certificate once (an anchor wins over the same DER as an intermediate);
        // unparsable candidates and non-CAs cannot sign anything: skip them.
        let mut seen = HashSet::new();
        let candidates: Vec<Node<'_>> = anchors
            .iter()
            .map(|d| (d, true))
            .chain(intermediates.iter().map(|d| (d, false)))
            .filter_map(|(d, anchor)| parse_der(d).ok().map(|c| Node::new(c, anchor)))
            .filter(|n| n.cert.is_ca() && seen.insert(n.id))
            .collect();
        let path = shortest_path(&leaf, &candidates, search)?;
        Ok(path
            .iter()
            .map(|&i| candidates[i].cert.as_raw().to_vec())
            .collect())
    }
}

/// Breadth first from `leaf`: each candidate is reached at most once, by the first certificate
/// it signs, so a search costs at most one check per (reached certificate, candidate) pair.
/// Returns the candidates from the leaf's issuer up to an anchor.
fn shortest_path(
    leaf: &Node<'_>,
    candidates: &[Node<'_>],
    search: &mut PathSearch,
) -> Result<Vec<usize>, EkCertError> {
    // signed[i]: which certificate candidate i was found to sign (None: the leaf).
    let mut signed: Vec<Option<Option<usize>>> = vec![None; candidates.len()];
    let mut level: Vec<Option<usize>> = vec![None];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for &at in &level {
            let cert = at.map_or(leaf, |i| &candidates[i]);
            let mut order: Vec<usize> = (0..candidates.len())
                .filter(|&i| signed[i].is_none())
                .collect();
            order.sort_by_key(|&i| !likely_issuer(&cert.cert, &candidates[i].cert));
            for i in order {
                if !search.verifies(cert, &candidates[i])? {
                    continue;
                }
                signed[i] = Some(at);
                if candidates[i].anchor {
                    let mut path = vec![i];
                    while let Some(Some(below)) = signed[path[path.len() - 1]] {
                        path.push(below);
                    }
                    path.reverse();
                    return Ok(path);
                }
                next.push(Some(i));
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Err(EkCertError::Untrusted)
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

/// One PEM block (RFC 7468): `label` (`CERTIFICATE`, `X509 CRL`) around `der` in base64, 64
/// characters a line.
#[must_use]
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END ");
    text.push_str(label);
    text.push_str("-----\n");
    text
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
