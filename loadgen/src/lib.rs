//! A load generator for the provisioning service: a fleet of software TPM devices
//! (`dps_protocol::software_tpm`, keys cached in a file) enrolled through the bulk API, each
//! registering over HTTPS as a real device does, with the CPU the service and Postgres spent
//! per registration read from `/proc`. Not part of the service; `scripts/bench.sh` runs the
//! standard set.

pub mod attest;
pub mod cpu;
pub mod device;
pub mod fleet;
pub mod run;

use std::sync::Arc;

/// A TLS client configuration trusting the CA certificates in `ca_pem`, with TLS session
/// resumption off: every connection is a full handshake, as for a device that just booted.
pub fn tls_config(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &*ca_pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}
