//! The dearest EK certificate path search a stranger can cause (issue 25, item 1): eight
//! mutually-verifying ECDSA P-384 CA certificates of one key (the longest chain accepted; P-384
//! is the dearest signature verified here) against a group of 32 unrelated P-384 anchors,
//! so that the search spends its whole budget. What it takes is the longest one first register
//! request can keep a core.
//!
//!     cargo bench -p dps-protocol --bench ek_path
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use dps_protocol::ek_cert::{
    EkCertError, EkCertificate, PathSearch, MAX_PRESENTED_CHAIN, MAX_SIGNATURE_CHECKS,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SerialNumber, PKCS_ECDSA_P384_SHA384,
};

fn ca_params(serial: u64) -> CertificateParams {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.serial_number = Some(SerialNumber::from(serial));
    ca
}

fn ca(key: &KeyPair, serial: u64) -> rcgen::Certificate {
    ca_params(serial).self_signed(key).unwrap()
}

fn bench(c: &mut Criterion) {
    let p384 = || KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let key = p384();
    let copies: Vec<_> = (1..=MAX_PRESENTED_CHAIN as u64)
        .map(|s| ca(&key, s))
        .collect();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    let leaf = leaf
        .signed_by(&p384(), &Issuer::new(ca_params(1), &key))
        .unwrap();
    let ek = EkCertificate::parse(leaf.der()).unwrap();
    let presented: Vec<Vec<u8>> = copies.iter().map(|c| c.der().to_vec()).collect();
    let anchors: Vec<Vec<u8>> = (0..32).map(|s| ca(&p384(), s).der().to_vec()).collect();

    let mut search = PathSearch::default();
    assert_eq!(
        ek.chain_within(&anchors, &presented, &mut search),
        Err(EkCertError::SearchExhausted {
            checks: MAX_SIGNATURE_CHECKS
        })
    );
    c.bench_function("ek_path/worst_case_whole_budget_p384", |b| {
        b.iter(|| {
            let mut search = PathSearch::default();
            ek.chain_within(&anchors, &presented, &mut search)
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
