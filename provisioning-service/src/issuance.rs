//! Certificate issuance as DPS 2026-04-01 does it (`csr` → `issuedCertificateChain`): the
//! operator's credential policies, a CSR read and checked, and a leaf issued with this service's
//! profile, of which the request decides nothing but the key.
//!
//! - **Credential policies** (`--credential-policy-file`, checked at start-up): a name that
//!   enrollments and groups give as `credentialPolicyName`, the issuing CA's certificate and key
//!   (PEM), the certificates above it up to the root, the validity (7–90 days, as DPS), and the
//!   key types accepted (ECDSA P-384, as DPS; P-256 where the policy allows it, since many TPMs
//!   cannot make P-384 keys).
//! - **A CSR** ([`read_csr`]): PKCS#10 in DER, its self-signature verified, its CN the
//!   registration id (compared as ids are: case-insensitively), its key an ECDSA key of a curve
//!   the policy accepts. Each refusal is a named [`CsrRefusal`].
//! - **The profile** ([`CredentialPolicy::issue`]): subject CN = registration id, a URI SAN
//!   `https://{hub}/devices/{deviceId}` (the identity the device holds on its hub), basic
//!   constraints CA:false, key usage digitalSignature, extended key usage clientAuth, a random
//!   serial, notBefore five minutes back, the policy's lifetime, subject and authority key
//!   identifiers.
//!
//! Why these crates: `x509-parser` (already the EK certificate parser) parses the CSR and verifies
//! its self-signature; `rcgen` writes and signs the certificate. Both do their signatures with
//! `aws-lc-rs` (the workspace's Cargo.toml says why: P-384 is four times faster than in `ring`). rcgen's own CSR
//! reader is not used: it copies the request's basic constraints (CA:true), names and usages into
//! the certificate, refuses requests carrying other extensions, and names the key's algorithm
//! after the request's *signature* algorithm — a P-384 key signed with SHA-256 would be written
//! as a P-256 key.
//!
//! Uses: nothing of the crate (the layers table, docs/architecture.md).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::RngCore;
use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// DPS's bounds on a certificate's lifetime (`concept-certificate-renewal.md`: "The validity
/// period ranges from 7 to 90 days").
pub const VALIDITY_DAYS: std::ops::RangeInclusive<u32> = 7..=90;
/// How far back `notBefore` goes, for devices whose clock runs behind.
const BACKDATE: Duration = Duration::minutes(5);

/// A key type a policy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
}

impl KeyType {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
        }
    }

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// One policy as the file writes it; paths are relative to the file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyEntry {
    name: String,
    issuing_certificate: String,
    issuing_key: String,
    /// PEM files of the certificates above the issuing CA, up to the root.
    #[serde(default)]
    chain_certificates: Vec<String>,
    #[serde(default = "default_validity_days")]
    validity_days: u32,
    #[serde(default = "default_key_types")]
    key_types: Vec<KeyType>,
    #[serde(default)]
    require_tpm_resident_key: bool,
}

fn default_validity_days() -> u32 {
    30
}

fn default_key_types() -> Vec<KeyType> {
    vec![KeyType::EcdsaP384]
}

/// Why the credential policy file is refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the credential policy file is not a JSON list of policies: {0}")]
    Json(String),
    #[error("credential policy {name}: {reason}")]
    Invalid { name: String, reason: String },
}

/// An operator's credential policy: what it issues, and with which CA.
pub struct CredentialPolicy {
    pub name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The issuing CA's certificate, then each above it up to the root (DER).
    chain: Vec<Vec<u8>>,
    pub validity_days: u32,
    pub key_types: Vec<KeyType>,
    /// Issue only for a key proven to live in the device's TPM.
    pub require_tpm_resident_key: bool,
    /// How the CRL names the issuing CA's key (its authority key identifier): the CA
    /// certificate's subject key identifier as written, for OpenSSL matches a CRL to its CA by
    /// it (an OpenSSL-made CA's is a SHA-1 hash, rcgen's default a truncated SHA-256).
    key_identifier: KeyIdMethod,
}

impl std::fmt::Debug for CredentialPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialPolicy")
            .field("name", &self.name)
            .field("validity_days", &self.validity_days)
            .field("key_types", &self.key_types)
            .field("require_tpm_resident_key", &self.require_tpm_resident_key)
            .finish_non_exhaustive()
    }
}

/// The service's credential policies, by name.
#[derive(Debug, Clone, Default)]
pub struct CredentialPolicies(BTreeMap<String, Arc<CredentialPolicy>>);

/// The DER certificates of a PEM file.
fn pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certificates: Vec<Vec<u8>> = rustls_pemfile::certs(&mut text.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certificates)
}

impl CredentialPolicy {
    /// Reads and checks one policy: the CA certificate parses and is a CA, the key is its key,
    /// the lifetime is within DPS's bounds, some key type is accepted.
    fn load(entry: PolicyEntry, dir: &Path) -> Result<Self, String> {
        if !VALIDITY_DAYS.contains(&entry.validity_days) {
            return Err(format!(
                "validityDays {} is not within 7 to 90",
                entry.validity_days
            ));
        }
        if entry.key_types.is_empty() {
            return Err("keyTypes is empty".to_owned());
        }
        // The issuing CA first; any certificates after it in its file, then the listed ones.
        let mut chain = pem_certificates(&dir.join(&entry.issuing_certificate))?;
        for path in &entry.chain_certificates {
            chain.extend(pem_certificates(&dir.join(path))?);
        }
        let key_path = dir.join(&entry.issuing_key);
        let key_pem = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{}: not a usable private key ({e})", key_path.display()))?;
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&chain[0])
            .map_err(|e| format!("the issuing certificate does not parse: {e}"))?;
        if !ca.is_ca() {
            return Err("the issuing certificate is not a CA certificate".to_owned());
        }
        if ca.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err("the issuing key is not the issuing certificate's key".to_owned());
        }
        let key_identifier = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let issuer = Issuer::from_ca_cert_der(&chain[0].clone().into(), key)
            .map_err(|e| format!("the issuing certificate: {e}"))?;
        Ok(Self {
            name: entry.name,
            issuer,
            chain,
            validity_days: entry.validity_days,
            key_types: entry.key_types,
            require_tpm_resident_key: entry.require_tpm_resident_key,
            key_identifier,
        })
    }

    /// Issues the leaf for `csr` (already read, [`read_csr`]): the chain to return, leaf first,
    /// and what to record of it.
    pub fn issue(
        &self,
        csr: &Csr,
        registration_id: &str,
        hub: &str,
        device_id: &str,
        now: OffsetDateTime,
        rng: &mut impl RngCore,
    ) -> Result<Issued, IssueError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, registration_id);
        params.distinguished_name = name;
        let uri = format!(
            "https://{hub}/devices/{}",
            percent_encoding::utf8_percent_encode(device_id, NOT_IN_A_SEGMENT)
        );
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into().map_err(|_| IssueError("the device URI"))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        // 16 random bytes, positive and minimal in DER: the top bit clear, the next one set.
        let mut serial = [0u8; 16];
        rng.fill_bytes(&mut serial);
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_before = now - BACKDATE;
        let not_after = now + Duration::days(i64::from(self.validity_days));
        params.not_before = not_before;
        params.not_after = not_after;
        let leaf = params
            .signed_by(&csr.key, &self.issuer)
            .map_err(|_| IssueError("signing"))?;
        let leaf = leaf.der().to_vec();
        let fingerprint = Sha256::digest(&leaf).into();
        let mut chain = vec![leaf];
        chain.extend(self.chain.iter().cloned());
        Ok(Issued {
            chain,
            serial: serial.to_vec(),
            fingerprint,
            not_before,
            not_after,
        })
    }
}

impl CredentialPolicy {
    /// The policy's CRL (DER), signed by its issuing CA: `revoked` (serial, revocation time),
    /// valid for a day, numbered by the time it was made (monotonic per issuer).
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, OffsetDateTime)],
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, IssueError> {
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(0)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.key_identifier.clone(),
        };
        params
            .signed_by(&self.issuer)
            .map(|crl| crl.der().to_vec())
            .map_err(|_| IssueError("signing the CRL"))
    }
}

/// Each policy's CRL as last signed, kept for a second: a CRL is signed at most once a second
/// per instance whatever asks for it, and shows a revocation within a second on every
/// instance (the revocations themselves are in Postgres). One entry per policy at most.
#[derive(Debug, Default)]
pub struct CrlCache {
    signed: Mutex<HashMap<String, SignedCrl>>,
}

/// A CRL and when it was made.
type SignedCrl = (Instant, Arc<Vec<u8>>);

/// How long a signed CRL is served before it is made again.
pub const CRL_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

impl CrlCache {
    /// The CRL of `policy` signed less than [`CRL_CACHE`] ago.
    #[must_use]
    pub fn fresh(&self, policy: &str) -> Option<Arc<Vec<u8>>> {
        let signed = self.signed.lock().ok()?;
        let (at, der) = signed.get(policy)?;
        (at.elapsed() < CRL_CACHE).then(|| Arc::clone(der))
    }

    /// Keeps `der` as `policy`'s CRL, made at `at` (before its revocations were read).
    pub fn keep(&self, policy: &str, at: Instant, der: Arc<Vec<u8>>) {
        if let Ok(mut signed) = self.signed.lock() {
            signed.insert(policy.to_owned(), (at, der));
        }
    }
}

/// What a path segment may not hold unencoded (RFC 3986 pchar): device ids may hold `%` and
/// `?`, which would end or change the URI.
const NOT_IN_A_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#')
    .add(b'/');

/// Issuing failed (the service's fault, never the request's).
#[derive(Debug, thiserror::Error)]
#[error("issuing the certificate failed: {0}")]
pub struct IssueError(&'static str);

/// A certificate issued, and what is recorded of it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf first, then the issuing CA and each above it up to the root (DER).
    pub chain: Vec<Vec<u8>>,
    pub serial: Vec<u8>,
    /// SHA-256 of the leaf's DER.
    pub fingerprint: [u8; 32],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CredentialPolicies {
    /// Reads and checks the policy file: a JSON list of policies, names unique.
    pub fn load(path: &Path) -> Result<Self, PolicyFileError> {
        let text = std::fs::read(path).map_err(|source| PolicyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let entries: Vec<PolicyEntry> =
            serde_json::from_slice(&text).map_err(|e| PolicyFileError::Json(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut policies = BTreeMap::new();
        for entry in entries {
            let name = entry.name.clone();
            let invalid = |reason| PolicyFileError::Invalid {
                name: name.clone(),
                reason,
            };
            let policy = CredentialPolicy::load(entry, dir).map_err(invalid)?;
            if policies.insert(name.clone(), Arc::new(policy)).is_some() {
                return Err(invalid("the name is used twice".to_owned()));
            }
        }
        Ok(Self(policies))
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<CredentialPolicy>> {
        self.0.get(name)
    }
}

/// A CSR's key: an ECDSA point on a curve this service issues for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrKey {
    pub key_type: KeyType,
    /// The uncompressed point (`0x04 ‖ x ‖ y`).
    pub point: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key_type.algorithm()
    }
}

/// A CSR as read: its CN and its key.
#[derive(Debug, Clone)]
pub struct Csr {
    pub common_name: String,
    pub key: CsrKey,
}

/// Why a CSR is refused, by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrRefusal {
    #[error("the CSR is not a DER PKCS#10 request")]
    Malformed,
    #[error("the CSR's self-signature does not verify")]
    BadSignature,
    #[error("the CSR's subject has no common name")]
    NoCommonName,
    #[error("the CSR's common name is not the registration id")]
    CommonNameMismatch,
    #[error("the CSR's key is {0}; the credential policy accepts {1}")]
    KeyType(String, String),
    #[error("the enrollment names no credential policy")]
    NoCredentialPolicy,
    #[error("the enrollment's credential policy {0} does not exist on this service")]
    UnknownCredentialPolicy(String),
    /// The policy requires a key proven to live in the TPM, and no proof came with the CSR (or
    /// the key the device registered with was not a challenge's, which carries the nonce).
    #[error("the credential policy requires a key proven to live in the TPM; no proof was sent")]
    ResidencyUnproven,
    /// The certification does not hold (`dps_protocol::attest::verify_certify`'s reason).
    #[error("the proof that the key lives in the TPM fails: {0}")]
    Residency(String),
    /// The certified key is not the CSR's.
    #[error("the key certified by the TPM is not the CSR's key")]
    NotTheCsrKey,
    /// DPS: "Including this field in the RuntimeRegistration_DeviceRegistrationStatusLookup
    /// operation will result in a bad request."
    #[error("csr is not accepted on a registration status lookup")]
    OnStatusLookup,
    /// A custom allocation webhook decides after the SAS step; issuing then is not implemented.
    #[error("a CSR is not accepted for an enrollment with custom allocation")]
    CustomAllocation,
}

const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const SECP256R1: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const SECP384R1: &[u64] = &[1, 3, 132, 0, 34];

/// Reads a CSR for `registration_id` under `policy`: parsed, its self-signature verified, its CN
/// the registration id, its key one the policy accepts.
pub fn read_csr(
    der: &[u8],
    registration_id: &str,
    policy: &CredentialPolicy,
) -> Result<Csr, CsrRefusal> {
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|_| CsrRefusal::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrRefusal::Malformed);
    }
    csr.verify_signature()
        .map_err(|_| CsrRefusal::BadSignature)?;
    let info = &csr.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(CsrRefusal::NoCommonName)?;
    if !common_name.eq_ignore_ascii_case(registration_id) {
        return Err(CsrRefusal::CommonNameMismatch);
    }
    let spki = &info.subject_pki;
    let oid = |o: &x509_parser::der_parser::oid::Oid<'_>| o.iter().map(Iterator::collect::<Vec<_>>);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .and_then(|o| oid(&o));
    let key_type = match (oid(&spki.algorithm.algorithm).as_deref(), curve.as_deref()) {
        (Some(EC_PUBLIC_KEY), Some(SECP256R1)) => Some(KeyType::EcdsaP256),
        (Some(EC_PUBLIC_KEY), Some(SECP384R1)) => Some(KeyType::EcdsaP384),
        _ => None,
    };
    let accepted = || {
        policy
            .key_types
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_type = key_type
        .filter(|k| policy.key_types.contains(k))
        .ok_or_else(|| {
            let shown = match key_type {
                Some(k) => k.name().to_owned(),
                None => format!("{}", spki.algorithm.algorithm),
            };
            CsrRefusal::KeyType(shown, accepted())
        })?;
    Ok(Csr {
        common_name: common_name.to_owned(),
        key: CsrKey {
            key_type,
            point: spki.subject_public_key.data.to_vec(),
        },
    })
}
