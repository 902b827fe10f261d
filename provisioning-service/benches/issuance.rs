//! What one issued certificate costs the service in CPU: reading the CSR (parse, verify its
//! ECDSA P-384 self-signature, CN, key) and issuing the leaf (the profile, an ECDSA P-384
//! signature by the issuing CA).
//!
//! `cargo bench -p provisioning-service --bench issuance`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use provisioning_service::issuance::read_csr;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

fn bench(c: &mut Criterion) {
    let pki = test_support::IssuingPki::new(&[("devices", serde_json::json!({}))]);
    let policies = pki.policies();
    let policy = policies.get("devices").expect("the policy");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "device-1");
    params.distinguished_name = name;
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    let mut rng = rand::thread_rng();
    let now = time::OffsetDateTime::now_utc();

    let mut group = c.benchmark_group("issuance");
    group.bench_function("read_csr", |b| {
        b.iter(|| read_csr(&csr, "device-1", policy).expect("accepted"));
    });
    let read = read_csr(&csr, "device-1", policy).unwrap();
    group.bench_function("issue_p384", |b| {
        b.iter(|| {
            policy
                .issue(
                    &read,
                    "device-1",
                    "hub-1.example",
                    "device-1",
                    now,
                    &mut rng,
                )
                .expect("issued")
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
