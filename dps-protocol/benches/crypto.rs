//! What one registration costs the service in CPU: building an `authenticationKey` blob, next to
//! its unavoidable floor, two RSA-2048 OAEP encryptions (one to the EK, one to the SRK); and
//! what remote attestation adds: the nonce's `MakeCredential` to the EK bound to the AK, and the
//! judgement of a real swtpm quote (signature, digest, policy); and `MakeCredential` to each EK
//! type (RSA-2048, ECC P-256, ECC P-384, RSA-3072) and the whole challenge blob for each.
//!
//! `cargo bench -p dps-protocol --bench crypto`

#![allow(clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use dps_protocol::attest::challenge;
use dps_protocol::attest::pcrs::PcrValues;
use dps_protocol::attest::policy::{judge, AttestationPolicy, Evidence, Issued};
use dps_protocol::crypto::{oaep_encrypt, LABEL_DUPLICATE, LABEL_IDENTITY};
use dps_protocol::sas::{self, SasToken, SoftwareKey, VerifyPolicy};
use dps_protocol::tpm::{Public, SeedKey};
use dps_protocol::AuthenticationKey;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn device_keys() -> (Vec<u8>, Vec<u8>) {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/vectors/software_device.json")).expect("json");
    let field = |k: &str| hex::decode(v[k].as_str().expect(k)).expect(k);
    (field("ek_tpm2b_public"), field("srk_tpm2b_public"))
}

fn bench(c: &mut Criterion) {
    let (ek_bytes, srk_bytes) = device_keys();
    let ek = Public::from_tpm2b(&ek_bytes).expect("EK");
    let srk = Public::from_tpm2b(&srk_bytes).expect("SRK");
    let rsa = |key: &Public, role| match key.seed_key(role).expect(role).0 {
        SeedKey::Rsa(key) => key,
        SeedKey::Ecc(_) => panic!("{role} is RSA"),
    };
    let (ek_key, srk_key) = (rsa(&ek, "EK"), rsa(&srk, "SRK"));
    let mut rng = ChaCha20Rng::seed_from_u64(42);

    let mut group = c.benchmark_group("registration");
    group.bench_function("authentication_key_blob", |b| {
        b.iter(|| {
            // As the service does per request: parse the wire keys, issue, marshal.
            let ek = Public::from_tpm2b(&ek_bytes).expect("EK");
            let srk = Public::from_tpm2b(&srk_bytes).expect("SRK");
            AuthenticationKey::issue(&ek, &srk, &mut rng)
                .expect("issue")
                .blob
                .to_bytes()
        });
    });
    group.bench_function("two_rsa2048_oaep_encryptions", |b| {
        b.iter(|| {
            let a = oaep_encrypt(&ek_key, LABEL_IDENTITY, &[7; 32], &mut rng).expect("EK");
            let b = oaep_encrypt(&srk_key, LABEL_DUPLICATE, &[7; 32], &mut rng).expect("SRK");
            (a, b)
        });
    });
    let resource = sas::registration_resource("0ne00000001", "device-1");
    let token = sas::build_token(
        &resource,
        1_800_000_060,
        Some("registration"),
        &mut SoftwareKey(&[1; 32]),
    )
    .expect("token");
    group.bench_function("sas_parse_and_verify", |b| {
        b.iter(|| {
            let policy = VerifyPolicy {
                resource: &resource,
                key_name: Some("registration"),
                now: 1_800_000_000,
                max_skew: 30,
                max_lifetime: 3600,
            };
            SasToken::parse(&token)
                .expect("parse")
                .verify(&[1; 32], &policy)
                .expect("verify");
        });
    });
    group.finish();
    attestation(c, &ek, &mut rng);
}

/// The service's added work for an attested registration, on the swtpm quote vector (ECDSA
/// P-256 AK, SHA-256 PCRs 0 and 7).
fn attestation(c: &mut Criterion, ek: &Public, rng: &mut ChaCha20Rng) {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/vectors/swtpm_quote.json")).expect("json");
    let field = |k: &str| hex::decode(v[k].as_str().expect(k)).expect(k);
    let (ak_bytes, attest, signature, nonce) = (
        field("ak_public"),
        field("attest"),
        field("signature"),
        field("nonce"),
    );
    let ak = Public::from_tpm2b(&ak_bytes).expect("AK");
    let pcrs: PcrValues = serde_json::from_value(v["pcrs"].clone()).expect("pcrs");
    let policy: AttestationPolicy =
        serde_json::from_value(serde_json::json!({"mode": "require", "quote": v["selection"]}))
            .expect("policy");
    let nonce_hash = challenge::nonce_hash(&nonce);
    let mut group = c.benchmark_group("attestation");
    group.bench_function("nonce_make_credential", |b| {
        b.iter(|| challenge::bind(ek, &ak, &nonce, rng).expect("bind"));
    });
    group.bench_function("judge_quote", |b| {
        b.iter(|| {
            let issued = Issued {
                attestation_key: &ak_bytes,
                nonce_hash: &nonce_hash,
            };
            let evidence = Evidence {
                attest: &attest,
                signature: &signature,
                pcrs: &pcrs,
            };
            judge(&policy, Some(issued), Some(evidence), &[], None).expect("verified")
        });
    });
    group.finish();
}

/// `MakeCredential` to each EK type, and the whole challenge blob (`MakeCredential` to that EK
/// plus `Duplicate` to the RSA-2048 SRK): what an EK's type costs the service per challenge.
fn make_credential_per_ek(c: &mut Criterion) {
    use dps_protocol::ecc::{EccCurve, EccPrivateKey};
    use dps_protocol::software_tpm::{PrivateSeedKey, SoftwareTpm};
    use dps_protocol::tpm::templates::ek_rsa3072;
    use rsa::traits::PublicKeyParts;

    let (ek_bytes, srk_bytes) = device_keys();
    let srk = Public::from_tpm2b(&srk_bytes).expect("SRK");
    let name = dps_protocol::tpm::Name::of(&srk).expect("name");
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut ecc_ek = |curve| {
        let srk =
            PrivateSeedKey::Ecc(EccPrivateKey::generate(EccCurve::P256, &mut rng).expect("SRK"));
        let ek = PrivateSeedKey::Ecc(EccPrivateKey::generate(curve, &mut rng).expect("EK"));
        SoftwareTpm::with_keys(ek, srk).ek_public().clone()
    };
    let rsa3072 =
        rsa::RsaPrivateKey::new(&mut ChaCha20Rng::seed_from_u64(3072), 3072).expect("key");
    let eks = [
        ("rsa2048", Public::from_tpm2b(&ek_bytes).expect("EK")),
        ("ecc_p256", ecc_ek(EccCurve::P256)),
        ("ecc_p384", ecc_ek(EccCurve::P384)),
        ("rsa3072", ek_rsa3072(rsa3072.n().to_bytes_be())),
    ];
    let mut group = c.benchmark_group("make_credential");
    for (label, ek) in &eks {
        group.bench_function(*label, |b| {
            b.iter(|| {
                dps_protocol::credential::make_credential(ek, &name, &[7; 32], &mut rng)
                    .expect("credential")
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("challenge_blob");
    for (label, ek) in &eks {
        group.bench_function(*label, |b| {
            b.iter(|| AuthenticationKey::issue(ek, &srk, &mut rng).expect("blob"));
        });
    }
    group.finish();
}

criterion_group!(benches, bench, make_credential_per_ek);
criterion_main!(benches);
