//! The factory CLI's inputs: an EK as a factory station exports it (TPM2B_PUBLIC, base64, PEM)
//! and the lines of a bulk file (CSV or JSONL). Writes go through [`crate::enrollment::put`],
//! like the enrollment API's.
//!
//! Uses: `allocation`, `config`, `cpu`, `enrollment`, `settings`, `store` (the layers table,
//! docs/architecture.md).

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dps_protocol::ek_cert::CertifiedKey;
use dps_protocol::tpm::templates::{ek_ecc_p256, ek_ecc_p384, ek_rsa2048, ek_rsa3072};
use dps_protocol::tpm::Public;
use dps_protocol::RegistrationId;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::config::{BulkArgs, EnrollArgs};
use crate::enrollment::{
    self, Attestation, EnrollmentError, IndividualEnrollment, ProvisioningStatus,
};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error(
        "the endorsement key is not a TPM2B_PUBLIC, base64 of one, or a PEM public key of an \
         RSA-2048 or RSA-3072 (exponent 65537), ECC P-256 or ECC P-384 EK"
    )]
    BadEndorsementKey,
    #[error("line {line}: {message}")]
    BadLine { line: usize, message: String },
    #[error("EK certificate: {0}")]
    EkCertificate(String),
    #[error(transparent)]
    Rejected(EnrollmentError),
    #[error("database error")]
    Db(#[source] sqlx::Error),
}

/// Reads an EK from TPM2B_PUBLIC bytes, a bare TPMT_PUBLIC, or a PEM public key (as
/// `tpm2_readpublic -f pem` writes one), taken as its type's TCG EK template
/// ([`tcg_ek_template`]).
pub fn endorsement_key_from_bytes(bytes: &[u8]) -> Result<Vec<u8>, FactoryError> {
    if bytes.starts_with(b"-----BEGIN") {
        return pem_public_key(bytes)
            .and_then(tcg_ek_template)
            .map(|ek| ek.to_tpm2b())
            .ok_or(FactoryError::BadEndorsementKey);
    }
    if Public::from_tpm2b(bytes).is_ok() {
        return Ok(bytes.to_vec());
    }
    Public::from_tpmt(bytes)
        .map(|p| p.to_tpm2b())
        .map_err(|_| FactoryError::BadEndorsementKey)
}

/// The key of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1).
fn pem_public_key(bytes: &[u8]) -> Option<CertifiedKey> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).ok()?;
    match pem.label.as_str() {
        "PUBLIC KEY" => CertifiedKey::from_spki_der(&pem.contents).ok(),
        "RSA PUBLIC KEY" => CertifiedKey::from_pkcs1_der(&pem.contents).ok(),
        _ => None,
    }
}

/// The TCG EK template a bare public key stands for: an RSA-2048 key with exponent 65537 as
/// L-1, an RSA-3072 one as H-6, an ECC P-256 point as L-2, a P-384 one as H-3. (A key alone
/// cannot say whether its TPM made it from the low- or high-range template; vendors certify
/// the low-range ones, and a high-range EK is enrolled as its TPM2B_PUBLIC.) Whether the point
/// is on its curve is the enrollment's check.
#[must_use]
pub fn tcg_ek_template(key: CertifiedKey) -> Option<Public> {
    match key {
        CertifiedKey::Rsa { modulus, exponent } if modulus.len() == 256 && exponent == 65_537 => {
            Some(ek_rsa2048(modulus))
        }
        CertifiedKey::Rsa { modulus, exponent } if modulus.len() == 384 && exponent == 65_537 => {
            Some(ek_rsa3072(modulus))
        }
        CertifiedKey::Ec { point } if point.first() == Some(&0x04) && point.len() == 65 => {
            Some(ek_ecc_p256(point[1..33].to_vec(), point[33..].to_vec()))
        }
        CertifiedKey::Ec { point } if point.first() == Some(&0x04) && point.len() == 97 => {
            Some(ek_ecc_p384(point[1..49].to_vec(), point[49..].to_vec()))
        }
        _ => None,
    }
}

/// The CAs a factory trusts for EK certificates (`--ek-ca-file`): every certificate in the
/// file is an anchor.
#[derive(Debug, Clone, Default)]
pub struct EkTrust {
    pub anchors: Vec<Vec<u8>>,
}

impl EkTrust {
    pub fn read(path: &Path) -> Result<Self, FactoryError> {
        let anchors = dps_protocol::ek_cert::pem_certificates(&read(path)?)
            .map_err(|e| FactoryError::EkCertificate(format!("{}: {e}", path.display())))?;
        if anchors.is_empty() {
            return Err(FactoryError::EkCertificate(format!(
                "{} holds no certificate",
                path.display()
            )));
        }
        Ok(Self { anchors })
    }
}

/// The EK an EK certificate carries (DER, or PEM with CA certificates after it), as the
/// TPM2B_PUBLIC of its TCG EK template, once the certificate is checked as the service checks a
/// group device's: it chains to `trust`, has the TCG EK certificate usage, and certifies an
/// RSA-2048 key with exponent 65537 (template L-1), an RSA-3072 one (H-6), an ECC P-256 key (L-2)
/// or an ECC P-384 key (H-3), its point on its curve.
pub fn endorsement_key_from_certificate(
    bytes: &[u8],
    trust: &EkTrust,
) -> Result<Vec<u8>, FactoryError> {
    use dps_protocol::ek_cert::EkCertificate;
    let bad = |reason: String| FactoryError::EkCertificate(reason);
    let (leaf, chain) = if bytes.starts_with(b"-----BEGIN") {
        let mut certs = dps_protocol::ek_cert::pem_certificates(bytes)
            .map_err(|e| bad(e.to_string()))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| bad("no certificate".to_owned()))?;
        (leaf, certs.collect())
    } else {
        (bytes.to_vec(), Vec::new())
    };
    let certificate = EkCertificate::parse(&leaf).map_err(|e| bad(e.to_string()))?;
    if !certificate.ek_usage {
        return Err(bad("no TCG EK certificate usage (2.23.133.8.1)".to_owned()));
    }
    certificate
        .chain_to(&trust.anchors, &chain)
        .map_err(|e| bad(e.to_string()))?;
    let ek = tcg_ek_template(certificate.key).ok_or_else(|| {
        bad("not an RSA-2048 or RSA-3072 (exponent 65537), ECC P-256 or ECC P-384 EK".to_owned())
    })?;
    ek.check_seed_key("EK").map_err(|e| bad(e.to_string()))?;
    Ok(ek.to_tpm2b())
}

/// Reads an EK given as base64 of TPM2B_PUBLIC, or of an EK certificate's DER (checked against
/// `trust`, which a certificate needs).
pub fn endorsement_key_from_base64(
    text: &str,
    trust: Option<&EkTrust>,
) -> Result<Vec<u8>, FactoryError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| FactoryError::BadEndorsementKey)?;
    // A DER certificate is a SEQUENCE (0x30); a TPM2B_PUBLIC starts with its size.
    if bytes.first() == Some(&0x30) {
        let trust = trust.ok_or_else(|| {
            FactoryError::EkCertificate("an EK certificate needs --ek-ca-file".to_owned())
        })?;
        return endorsement_key_from_certificate(&bytes, trust);
    }
    Public::from_tpm2b(&bytes).map_err(|_| FactoryError::BadEndorsementKey)?;
    Ok(bytes)
}

fn read(path: &Path) -> Result<Vec<u8>, FactoryError> {
    std::fs::read(path).map_err(|e| FactoryError::Read(path.display().to_string(), e))
}

/// What writing one enrollment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// Validates and writes one enrollment (create or update; unchanged is a no-op).
pub async fn write(
    pool: &PgPool,
    enrollment: &IndividualEnrollment,
) -> Result<Outcome, FactoryError> {
    // The factory tool does not know the service's linked hubs: a pinned hub is taken as given.
    let (_, changed) = enrollment::put(pool, enrollment, None, None, OffsetDateTime::now_utc())
        .await
        .map_err(|e| match e {
            EnrollmentError::Store(StoreError::Db(db)) => FactoryError::Db(db),
            other => FactoryError::Rejected(other),
        })?;
    Ok(if changed {
        Outcome::Written
    } else {
        Outcome::Unchanged
    })
}

/// `enroll`: one device.
pub async fn enroll_one(
    pool: &PgPool,
    args: &EnrollArgs,
) -> Result<(String, Outcome), FactoryError> {
    let trust = args.ek_ca_file.as_deref().map(EkTrust::read).transpose()?;
    let ek = match (&args.ek_base64, &args.ek_file, &args.ek_cert) {
        (Some(b64), _, _) => endorsement_key_from_base64(b64, trust.as_ref())?,
        (None, Some(path), _) => endorsement_key_from_bytes(&read(path)?)?,
        (None, None, Some(path)) => {
            let trust = trust.ok_or_else(|| {
                FactoryError::EkCertificate("--ek-cert needs --ek-ca-file".to_owned())
            })?;
            endorsement_key_from_certificate(&read(path)?, &trust)?
        }
        (None, None, None) => return Err(FactoryError::BadEndorsementKey),
    };
    let registration_id = match &args.registration_id {
        Some(id) => id.clone(),
        None => RegistrationId::from_endorsement_key(&ek)
            .as_str()
            .to_owned(),
    };
    let enrollment = IndividualEnrollment {
        registration_id: registration_id.clone(),
        device_id: args.device_id.clone(),
        attestation: Attestation::tpm(ek),
        iot_hub_host_name: args.iot_hub_host_name.clone(),
        provisioning_status: if args.disabled {
            ProvisioningStatus::Disabled
        } else {
            ProvisioningStatus::Enabled
        },
        etag: None,
        created_date_time_utc: None,
        last_updated_date_time_utc: None,
        enrollment_group_id: None,
        extra: serde_json::Map::new(),
    };
    Ok((registration_id, write(pool, &enrollment).await?))
}

/// Parses one line of a bulk file; `None` for blank lines and a CSV header. An endorsement key
/// may be an EK certificate's DER (base64) when `trust` is given.
pub fn parse_line(
    line: &str,
    jsonl: bool,
    number: usize,
    trust: Option<&EkTrust>,
) -> Result<Option<IndividualEnrollment>, FactoryError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let bad = |message: String| FactoryError::BadLine {
        line: number,
        message,
    };
    if jsonl {
        let mut enrollment: IndividualEnrollment =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if let Some(tpm) = enrollment.attestation.tpm.as_mut() {
            if tpm.endorsement_key.0.first() == Some(&0x30) {
                let encoded = STANDARD.encode(&tpm.endorsement_key.0);
                tpm.endorsement_key.0 =
                    endorsement_key_from_base64(&encoded, trust).map_err(|e| bad(e.to_string()))?;
            }
        }
        return Ok(Some(enrollment));
    }
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if number == 1
        && fields
            .first()
            .is_some_and(|f| f.eq_ignore_ascii_case("registrationId"))
    {
        return Ok(None);
    }
    let field = |i: usize| {
        fields
            .get(i)
            .copied()
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
    };
    let ek = field(1).ok_or_else(|| bad("missing endorsementKey".to_owned()))?;
    let ek = endorsement_key_from_base64(&ek, trust).map_err(|e| bad(e.to_string()))?;
    let status = match field(4).as_deref() {
        None | Some("enabled") => ProvisioningStatus::Enabled,
        Some("disabled") => ProvisioningStatus::Disabled,
        Some(other) => return Err(bad(format!("provisioningStatus {other:?}"))),
    };
    Ok(Some(IndividualEnrollment {
        registration_id: field(0).ok_or_else(|| bad("missing registrationId".to_owned()))?,
        device_id: field(2),
        attestation: Attestation::tpm(ek),
        iot_hub_host_name: field(3),
        provisioning_status: status,
        etag: None,
        created_date_time_utc: None,
        last_updated_date_time_utc: None,
        enrollment_group_id: None,
        extra: serde_json::Map::new(),
    }))
}

/// Counts of a bulk run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BulkSummary {
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
}

/// `bulk-enroll`: every line, [`enrollment::BATCH`] lines per statement
/// ([`enrollment::put_many`]). A bad line is handed to `on_refused` (the CLI prints it) and
/// counted, not fatal; a database error stops the run. Re-running a file changes nothing.
pub async fn enroll_file(
    pool: &PgPool,
    args: &BulkArgs,
    mut on_refused: impl FnMut(&FactoryError),
) -> Result<BulkSummary, FactoryError> {
    let text = String::from_utf8(read(&args.file)?).map_err(|_| FactoryError::BadLine {
        line: 0,
        message: "file is not UTF-8".to_owned(),
    })?;
    let jsonl = matches!(
        args.file.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "json")
    );
    let trust = args.ek_ca_file.as_deref().map(EkTrust::read).transpose()?;
    let lines: Vec<&str> = text.lines().collect();
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(lines.len() as u64)
    };
    let mut summary = BulkSummary::default();
    let mut refuse = |summary: &mut BulkSummary, e: &FactoryError| {
        summary.failed += 1;
        bar.suspend(|| on_refused(e));
    };
    for (chunk_index, chunk) in lines.chunks(enrollment::BATCH).enumerate() {
        let first_line = chunk_index * enrollment::BATCH + 1;
        let mut numbers = Vec::with_capacity(chunk.len());
        let mut items = Vec::with_capacity(chunk.len());
        for (offset, line) in chunk.iter().enumerate() {
            match parse_line(line, jsonl, first_line + offset, trust.as_ref()) {
                Ok(None) => {}
                Ok(Some(item)) => {
                    numbers.push(first_line + offset);
                    items.push(item);
                }
                Err(e) => refuse(&mut summary, &e),
            }
        }
        // The factory tool does not know the service's linked hubs: a pinned hub is taken as
        // given.
        let outcomes = enrollment::put_many(pool, &items, false, None, OffsetDateTime::now_utc())
            .await
            .map_err(|e| match e {
                EnrollmentError::Store(StoreError::Db(db)) => FactoryError::Db(db),
                other => FactoryError::Rejected(other),
            })?;
        for (line, outcome) in numbers.into_iter().zip(outcomes) {
            match outcome {
                Ok(enrollment::Written::Changed) => summary.written += 1,
                Ok(enrollment::Written::Unchanged) => summary.unchanged += 1,
                Err(reason) => refuse(
                    &mut summary,
                    &FactoryError::BadLine {
                        line,
                        message: reason.to_string(),
                    },
                ),
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(summary)
}
