//! A throwaway TLS PKI: a CA and an ECDSA P-256 leaf for `localhost`/`127.0.0.1`, as PEM files.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: Vec<u8>,
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Pki {
    #[must_use]
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: with rcgen's one default name for both, OpenSSL-based clients (Node)
        // take the leaf, whose subject would equal its issuer, for a self-signed certificate.
        ca_params.distinguished_name = named("dps-tpm test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf_params.distinguished_name = named("localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_pem: ca.pem().into_bytes(),
        }
    }

    /// A rustls client configuration (ring) trusting this CA, offering `alpn`.
    #[must_use]
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A raw TLS connection to `127.0.0.1:port` (for tests that speak bytes, not HTTP).
    pub async fn connect(
        &self,
        port: u16,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let connector =
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(self.client_config(alpn)));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }

    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    #[must_use]
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    #[must_use]
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
