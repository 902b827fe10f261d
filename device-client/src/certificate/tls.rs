//! The device's certificate as a TLS client identity (mutual TLS to the hub): the chain
//! `register --certificate` wrote, and a rustls signing key whose private half stays in the TPM.
//! Each handshake signature is one `TPM2_Sign` by the certificate key, in a TPM context opened
//! for it and closed after it: rustls signs from whatever thread drives the connection, and a
//! TPM context cannot move between threads (tss-esapi's `Context` is not `Send`).
//!
//! Only the scheme TLS 1.3 binds to the key's curve is offered (ECDSA P-384 with SHA-384, P-256
//! with SHA-256).

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::{point_of, sign_ecdsa};
use crate::tpm::{Handles, Tpm, TpmError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("no certificate in {path}: run `device-client register --certificate`")]
    Missing { path: String },
    #[error("the certificate in {path} expired on {on}: run `device-client register --certificate` to renew")]
    Expired { path: String, on: String },
    #[error("the certificate in {path} is not valid before {from}")]
    NotYetValid { path: String, from: String },
    #[error("the TPM's certificate key is not the key of the certificate in {path}")]
    NotTheTpmKey { path: String },
    #[error("cannot read the certificate key in the TPM")]
    Tpm(#[from] TpmError),
}

/// Where the certificate key is: the TPM and the handles to open it with.
#[derive(Debug, Clone)]
pub struct TpmLocation {
    pub tcti: String,
    pub handles: Handles,
}

/// A certificate whose key is in the TPM, ready for rustls.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<TpmSigningKey>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
}

impl Identity {
    /// Reads the chain in `chain_file` (PEM, leaf first) and checks, now (Unix seconds), that
    /// the leaf is valid and holds the key persisted in the TPM at `tpm`.
    pub fn load(chain_file: &Path, tpm: &TpmLocation, now: i64) -> Result<Self, IdentityError> {
        let path = chain_file.display().to_string();
        let missing = || IdentityError::Missing { path: path.clone() };
        let text = std::fs::read(chain_file).map_err(|_| missing())?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &*text)
            .collect::<Result<_, _>>()
            .map_err(|_| missing())?;
        let leaf = chain.first().ok_or_else(missing)?;
        let (_, leaf) = x509_parser::parse_x509_certificate(leaf).map_err(|_| missing())?;
        let validity = leaf.validity();
        if validity.not_after.timestamp() < now {
            return Err(IdentityError::Expired {
                path,
                on: validity.not_after.to_string(),
            });
        }
        if validity.not_before.timestamp() > now {
            return Err(IdentityError::NotYetValid {
                path,
                from: validity.not_before.to_string(),
            });
        }
        let (point, p384) =
            point_of(&Tpm::open_with_handles(&tpm.tcti, tpm.handles)?.certificate_key_public()?)?;
        if leaf.public_key().subject_public_key.data.as_ref() != point.as_slice() {
            return Err(IdentityError::NotTheTpmKey { path });
        }
        Ok(Self {
            not_after: validity.not_after.timestamp(),
            chain,
            key: Arc::new(TpmSigningKey {
                tpm: tpm.clone(),
                p384,
            }),
        })
    }

    /// The rustls client-certificate resolver presenting this identity.
    #[must_use]
    pub fn resolver(&self) -> Arc<dyn ResolvesClientCert> {
        let key: Arc<dyn SigningKey> = self.key.clone();
        Arc::new(SingleCertAndKey::from(CertifiedKey::new(
            self.chain.clone(),
            key,
        )))
    }
}

/// The certificate key in the TPM, as rustls signs with it.
#[derive(Debug)]
struct TpmSigningKey {
    tpm: TpmLocation,
    p384: bool,
}

impl TpmSigningKey {
    fn scheme(&self) -> SignatureScheme {
        if self.p384 {
            SignatureScheme::ECDSA_NISTP384_SHA384
        } else {
            SignatureScheme::ECDSA_NISTP256_SHA256
        }
    }
}

impl SigningKey for TpmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&self.scheme()).then(|| {
            Box::new(TpmSigner {
                tpm: self.tpm.clone(),
                p384: self.p384,
                scheme: self.scheme(),
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TpmSigner {
    tpm: TpmLocation,
    p384: bool,
    scheme: SignatureScheme,
}

impl Signer for TpmSigner {
    /// rustls hands over the message unhashed; [`sign_ecdsa`] hashes it with the scheme's hash.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let signed = Tpm::open_with_handles(&self.tpm.tcti, self.tpm.handles)
            .and_then(|mut tpm| sign_ecdsa(&mut tpm, self.p384, message));
        signed.map_err(|e| {
            tracing::warn!(error = %e, "the TPM did not sign the TLS handshake");
            rustls::Error::General(format!("the TPM did not sign: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
