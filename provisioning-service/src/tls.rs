//! The rustls server configuration, from PEM files.
//!
//! Uses: nothing of the crate (the layers table, docs/architecture.md).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::hash::HashAlgorithm;
use rustls::SupportedCipherSuite;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("{0} holds no private key")]
    NoKey(String),
    #[error("the certificate and key do not make a TLS configuration")]
    Config(#[source] rustls::Error),
}

/// A TLS 1.2/1.3 server configuration (ring provider) advertising HTTP/1.1.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read(cert_file.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.display().to_string()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Read(key_file.display().to_string(), e))?
        .ok_or_else(|| TlsError::NoKey(key_file.display().to_string()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    // The SHA-256 suites first, and the server's order wins: a handshake hashes its transcript
    // and derives its keys with the suite's hash, and SHA-256 has CPU instructions where
    // SHA-384 has none (ring's SHA-512 blocks were 3 % of the service's CPU per fresh
    // registration). AES-128-GCM is TLS 1.3's mandatory suite (RFC 8446 §9.1).
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_hash(*suite) != HashAlgorithm::SHA256);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

fn suite_hash(suite: SupportedCipherSuite) -> HashAlgorithm {
    match suite {
        SupportedCipherSuite::Tls12(s) => s.common.hash_provider.algorithm(),
        SupportedCipherSuite::Tls13(s) => s.common.hash_provider.algorithm(),
    }
}
