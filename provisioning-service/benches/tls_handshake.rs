//! A full TLS 1.3 handshake against the service's rustls configuration (`tls::server_config`,
//! ECDSA P-256 certificate, as the demo PKI makes), both ends in memory on one thread: with the
//! suite the service chooses (AES-128-GCM-SHA256) and with the client's first choice
//! (AES-256-GCM-SHA384, rustls's default order), which the service took before it chose.
//!
//! `cargo bench -p provisioning-service --bench tls_handshake`

#![allow(clippy::expect_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// Moves everything `from` has to send into `to`, which processes it.
fn deliver<A, B>(from: &mut rustls::ConnectionCommon<A>, to: &mut rustls::ConnectionCommon<B>) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write to a Vec");
    }
    let mut unread = wire.as_slice();
    while !unread.is_empty() {
        to.read_tls(&mut unread).expect("read from a slice");
        to.process_new_packets().expect("a valid handshake");
    }
}

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> rustls::CipherSuite {
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut c = ClientConnection::new(client.clone(), name).expect("a client");
    let mut s = ServerConnection::new(server.clone()).expect("a server");
    while c.is_handshaking() || s.is_handshaking() {
        deliver(&mut c, &mut s);
        deliver(&mut s, &mut c);
    }
    s.negotiated_cipher_suite().expect("negotiated").suite()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a cert");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write");
    let service = provisioning_service::tls::server_config(&cert_file, &key_file).expect("TLS");
    let mut clients_order = (*service).clone();
    clients_order.ignore_client_order = false;
    let clients_order = Arc::new(clients_order);

    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("a root");
    let client = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut group = c.benchmark_group("tls13_full_handshake");
    for (label, server) in [
        ("service_order", &service),
        ("client_order", &clients_order),
    ] {
        let suite = handshake(&client, server);
        group.bench_function(format!("{label}_{suite:?}"), |b| {
            b.iter(|| handshake(&client, server));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
