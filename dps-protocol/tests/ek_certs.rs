//! Real TPM EK certificates from three vendors with their CA chains (`../shared/ek-certs`,
//! provenance in its README): each validates against its own chain and is refused against
//! another vendor's roots; the negative cases are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use dps_protocol::ek_cert::{pem_certificates, CertifiedKey, EkCertError, EkCertificate};
use x509_parser::prelude::{FromDer, X509Certificate};

fn ek_certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ek-certs")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The certificates of a PEM file, or none if it is absent.
fn pems(path: &Path) -> Vec<Vec<u8>> {
    if path.exists() {
        pem_certificates(&read(path)).unwrap()
    } else {
        Vec::new()
    }
}

/// The positive cases: (id, folder).
fn positive_cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<_> = std::fs::read_dir(ek_certs())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("ek.der").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    cases.sort();
    assert!(cases.len() >= 19, "{cases:?}");
    cases
}

fn vendor(id: &str) -> &str {
    id.split('-').next().unwrap()
}

#[test]
fn every_vendor_ek_certificate_chains_to_its_own_root() {
    for (id, dir) in positive_cases() {
        let ek = EkCertificate::parse(&read(&dir.join("ek.der"))).unwrap();
        let as_found = dir.join("ek.as-found.bin");
        if as_found.exists() {
            let raw = EkCertificate::parse(&read(&as_found)).unwrap();
            assert_eq!(raw, ek, "{id}: NV framing and fill are dropped");
        }
        let roots = pems(&dir.join("root.pem"));
        let path = ek
            .chain_to(&roots, &pems(&dir.join("intermediate.pem")))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(path.last(), roots.first(), "{id}: ends at the anchor");
    }
}

#[test]
fn no_vendor_ek_certificate_chains_to_another_vendors_roots() {
    let cases = positive_cases();
    for (id, dir) in &cases {
        let others: Vec<Vec<u8>> = cases
            .iter()
            .filter(|(other, _)| vendor(other) != vendor(id))
            .flat_map(|(_, d)| pems(&d.join("root.pem")))
            .collect();
        let ek = EkCertificate::parse(&read(&dir.join("ek.der"))).unwrap();
        assert_eq!(
            ek.chain_to(&others, &pems(&dir.join("intermediate.pem"))),
            Err(EkCertError::Untrusted),
            "{id}"
        );
    }
}

#[test]
fn the_tcg_profile_fields_and_the_certified_key_are_read() {
    let dir = ek_certs();
    let stm = EkCertificate::parse(&read(&dir.join("STM-1/ek.der"))).unwrap();
    assert_eq!(stm.manufacturer.as_deref(), Some("id:53544D20"));
    assert_eq!(stm.model.as_deref(), Some("ST33HTPHAHB4"));
    assert_eq!(stm.firmware_version.as_deref(), Some("id:00490004"));
    assert!(stm.ek_usage);
    let CertifiedKey::Rsa { modulus, exponent } = &stm.key else {
        panic!("{:?}", stm.key)
    };
    assert_eq!((modulus.len(), *exponent), (256, 65_537));
    // Nuvoton spells the attributes as PrintableString.
    let ntc = EkCertificate::parse(&read(&dir.join("NTC-1/ek.der"))).unwrap();
    assert!(ntc.manufacturer.is_some() && ntc.model.is_some(), "{ntc:?}");
    // ECC EKs, and a TPM 1.2-era EK: an id-RSAES-OAEP key, no EK usage.
    let ecc = EkCertificate::parse(&read(&dir.join("STM-2/ek.der"))).unwrap();
    assert!(matches!(&ecc.key, CertifiedKey::Ec { point } if point.len() == 65));
    let old = EkCertificate::parse(&read(&dir.join("IFX-5/ek.der"))).unwrap();
    assert!(matches!(&old.key, CertifiedKey::Rsa { modulus, .. } if modulus.len() == 256));
    assert!(!old.ek_usage);
}

/// Every self-signed certificate among the vendor CAs: the roots an owner would pin.
fn vendor_roots() -> Vec<Vec<u8>> {
    let mut roots = Vec::new();
    for vendor in std::fs::read_dir(ek_certs().join("vendor-cas")).unwrap() {
        let vendor = vendor.unwrap().path();
        if !vendor.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&vendor).unwrap() {
            for der in pems(&file.unwrap().path()) {
                let (_, cert) = X509Certificate::from_der(&der).unwrap();
                if cert.subject().as_raw() == cert.issuer().as_raw()
                    && cert.verify_signature(None).is_ok()
                {
                    roots.push(der.clone());
                }
            }
        }
    }
    assert!(roots.len() >= 30, "{}", roots.len());
    roots
}

/// Which roots a negative case is checked against.
enum Anchors {
    /// The root the case configures (a vendor's, but the wrong one for this chain).
    Configured,
    /// The vendors' roots; the case's own "root" is only something the device presents.
    Vendors,
}

#[test]
fn the_negative_cases_are_refused() {
    let vendors = vendor_roots();
    let negative = ek_certs().join("negative");
    let cases = [
        // A real STM chain, but the owner trusts only Infineon's root.
        ("NEG-1", Anchors::Configured, EkCertError::Untrusted),
        // A real Infineon EK presented with STM's intermediates under GlobalSign's root.
        ("NEG-2", Anchors::Configured, EkCertError::Untrusted),
        // A real intermediate's name and key, re-issued by a fake root the device supplies.
        ("NEG-3", Anchors::Vendors, EkCertError::Untrusted),
        // A complete, well-formed chain to a simulator's test root.
        ("NEG-4", Anchors::Vendors, EkCertError::Untrusted),
        // swtpm's per-host CA.
        ("NEG-5", Anchors::Vendors, EkCertError::Untrusted),
        // A vendor CA certificate presented as an EK certificate.
        ("NEG-6", Anchors::Configured, EkCertError::CaAsLeaf),
        // A real EK with one bit of its signature flipped.
        ("NEG-7", Anchors::Configured, EkCertError::Untrusted),
        ("NEG-8", Anchors::Vendors, EkCertError::Untrusted),
    ];
    for (id, anchors, error) in cases {
        let dir = negative.join(id);
        let own_root = pems(&dir.join("root.pem"));
        let (anchors, mut presented) = match anchors {
            Anchors::Configured => (own_root, Vec::new()),
            Anchors::Vendors => (vendors.clone(), own_root),
        };
        presented.extend(pems(&dir.join("intermediate.pem")));
        let verdict = EkCertificate::parse(&read(&dir.join("ek.der")))
            .and_then(|ek| ek.chain_to(&anchors, &presented));
        assert_eq!(verdict.map(|_| ()), Err(error), "{id}");
    }
}

/// Decided: an unknown critical extension does not refuse an EK certificate. The TCG profile
/// itself marks the SAN critical and vendors mark policy extensions critical (IFX-5); what
/// admits a TPM is the path to the owner's CA, the EK usage and the certified key, and a
/// critical extension no RFC 5280 verifier could act on changes none of those.
#[test]
fn an_unknown_critical_extension_does_not_refuse_an_ek_certificate() {
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    let mut unknown = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
    unknown.set_criticality(true);
    leaf.custom_extensions = vec![unknown];
    let leaf = leaf
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();

    let ek = EkCertificate::parse(leaf.der()).unwrap();
    assert!(ek.ek_usage);
    assert!(ek.chain_to(&[ca.der().to_vec()], &[]).is_ok());
}

/// One key, many self-signed CA certificates (each a distinct DER: another serial): every one
/// verifies every other, the shape of the path-building bomb (issue 25, item 1). Returns the
/// attacker's EK certificate (signed by that key, EK usage set) and the CA copies.
fn one_key_many_cas(copies: u64) -> (EkCertificate, Vec<Vec<u8>>) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SerialNumber,
    };
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = |serial: u64| {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.serial_number = Some(SerialNumber::from(serial));
        ca
    };
    let cas: Vec<_> = (1..=copies)
        .map(|serial| ca_params(serial).self_signed(&ca_key).unwrap())
        .collect();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    let leaf = leaf
        .signed_by(&leaf_key, &Issuer::new(ca_params(1), &ca_key))
        .unwrap();
    (
        EkCertificate::parse(leaf.der()).unwrap(),
        cas.iter().map(|c| c.der().to_vec()).collect(),
    )
}

/// The path-building bomb: N mutually-verifying CA certificates from the device cost at most
/// one signature check per (reached certificate, candidate) pair, not one per path (N⁵ before:
/// N = 13 took 17.9 s). Each certificate is reached once, duplicates count once.
#[test]
fn many_certificates_of_one_key_cost_one_check_per_pair() {
    use dps_protocol::ek_cert::{PathSearch, MAX_PRESENTED_CHAIN};
    let (ek, cas) = one_key_many_cas(MAX_PRESENTED_CHAIN as u64);
    let vendor_root = vendor_roots().remove(0);
    let mut presented = cas.clone();
    presented.extend(cas.iter().cloned()); // duplicates count once
    let mut search = PathSearch::default();
    assert_eq!(
        ek.chain_within(std::slice::from_ref(&vendor_root), &presented, &mut search),
        Err(EkCertError::Untrusted)
    );
    let n = u32::try_from(cas.len() + 1).unwrap();
    assert!(search.spent() <= n * n, "{} checks", search.spent());
    // Tried again within the same request (another group with the same anchor): no new check.
    let spent = search.spent();
    assert_eq!(
        ek.chain_within(&[vendor_root], &presented, &mut search),
        Err(EkCertError::Untrusted)
    );
    assert_eq!(search.spent(), spent);
    // And when one of them is trusted, the path is found, shortest first.
    assert_eq!(
        ek.chain_to(&[cas[3].clone()], &presented),
        Ok(vec![cas[3].clone()])
    );
}

/// A request's budget of signature checks ends its searches, and so does its caller leaving.
#[test]
fn a_path_search_stops_at_its_budget_and_when_abandoned() {
    use dps_protocol::ek_cert::PathSearch;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let (ek, cas) = one_key_many_cas(4);
    let mut search = PathSearch::new(3);
    assert_eq!(
        ek.chain_within(&[], &cas, &mut search),
        Err(EkCertError::SearchExhausted { checks: 3 })
    );
    let gone = Arc::new(AtomicBool::new(true));
    let mut search = PathSearch::default().abandoned_when(gone);
    assert_eq!(
        ek.chain_within(&[], &cas, &mut search),
        Err(EkCertError::SearchAbandoned)
    );
    assert_eq!(search.spent(), 0);
}
