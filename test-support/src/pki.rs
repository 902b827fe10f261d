//! A throwaway TLS PKI: a CA and an ECDSA P-256 leaf for `localhost`/`127.0.0.1`, as PEM files.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

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
        let leaf = leaf_params
            .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
            .unwrap();
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

    /// As [`Pki::client_config`], presenting a client certificate whose key is in software:
    /// `chain_pem` (leaf first) and `key_pem`. The key need not be the certificate's (an
    /// impostor's handshake).
    #[must_use]
    pub fn client_config_presenting(&self, chain_pem: &str, key_pem: &str) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let chain = rustls_pemfile::certs(&mut chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let key = provider.key_provider.load_private_key(key).unwrap();
        let resolver =
            rustls::sign::SingleCertAndKey::from(rustls::sign::CertifiedKey::new(chain, key));
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(std::sync::Arc::new(resolver))
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

/// An operator's issuing PKI for certificate issuance: an ECDSA P-384 root and an issuing CA
/// under it (PEM files), and a credential policy file naming them (`issuance`).
pub struct IssuingPki {
    pub dir: tempfile::TempDir,
    pub root_pem: String,
    pub issuing_pem: String,
}

impl IssuingPki {
    /// Credential policy `name`, with these extra JSON fields (e.g. `keyTypes`).
    #[must_use]
    pub fn new(policies: &[(&str, serde_json::Value)]) -> Self {
        use rcgen::PKCS_ECDSA_P384_SHA384;
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name = named(cn);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            params
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let root_params = ca("dps-tpm test device root");
        let root = root_params.self_signed(&root_key).unwrap();
        let issuing_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let issuing = ca("dps-tpm test device issuing CA")
            .signed_by(&issuing_key, &Issuer::from_params(&root_params, &root_key))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("issuing.pem"), issuing.pem()).unwrap();
        std::fs::write(dir.path().join("issuing.key"), issuing_key.serialize_pem()).unwrap();
        let entries: Vec<serde_json::Value> = policies
            .iter()
            .map(|(name, extra)| {
                let mut entry = serde_json::json!({
                    "name": name,
                    "issuingCertificate": "issuing.pem",
                    "issuingKey": "issuing.key",
                    "chainCertificates": ["root.pem"],
                });
                if let Some(fields) = extra.as_object() {
                    for (k, v) in fields {
                        entry[k] = v.clone();
                    }
                }
                entry
            })
            .collect();
        std::fs::write(
            dir.path().join("policies.json"),
            serde_json::to_vec(&entries).unwrap(),
        )
        .unwrap();
        Self {
            dir,
            root_pem: root.pem(),
            issuing_pem: issuing.pem(),
        }
    }

    #[must_use]
    pub fn policy_file(&self) -> PathBuf {
        self.dir.path().join("policies.json")
    }

    #[must_use]
    pub fn root_file(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    #[must_use]
    pub fn issuing_file(&self) -> PathBuf {
        self.dir.path().join("issuing.pem")
    }

    /// A client certificate for `common_name` from the issuing CA, valid from `not_before` to
    /// `not_after`, its key in software: (chain PEM: leaf and issuing CA; key PEM). What a
    /// back-end application holds, or an expired device certificate.
    #[must_use]
    pub fn client(
        &self,
        common_name: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> (String, String) {
        let issuing_key = KeyPair::from_pem(
            &std::fs::read_to_string(self.dir.path().join("issuing.key")).unwrap(),
        )
        .unwrap();
        let issuer = Issuer::from_ca_cert_pem(&self.issuing_pem, issuing_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = named(common_name);
        params.not_before = not_before;
        params.not_after = not_after;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params.signed_by(&key, &issuer).unwrap();
        (
            format!("{}{}", leaf.pem(), self.issuing_pem),
            key.serialize_pem(),
        )
    }

    /// The policies, as the service loads them.
    #[must_use]
    pub fn policies(&self) -> provisioning_service::issuance::CredentialPolicies {
        provisioning_service::issuance::CredentialPolicies::load(&self.policy_file()).unwrap()
    }
}
