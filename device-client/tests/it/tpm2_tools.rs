//! Cross-checks with an independent implementation of credential protection: tpm2-tools'
//! `tpm2_makecredential -T none` (software, no TPM; OpenSSL's RSA-OAEP, or ECDH and KDFe for an
//! ECC EK). Its credential and ours, for the same EK, SRK name and secret, must both activate
//! on swtpm to that secret, for the RSA-2048 EK, the low-range P-256 EK and swtpm_setup's
//! high-range P-384 EK (SHA-384, AES-256); and its ECC credentials must activate in
//! `dps-protocol`'s software device model too (the load generator's).
//!
//! The activated secret is observed through the whole import: it is the inner wrapping key of
//! a duplicate built by `dps-protocol`, so the key only imports, and its HMAC only matches, if
//! `ActivateCredential` returned exactly that secret.

use std::process::Command;

use dps_protocol::duplication::duplicate;
use dps_protocol::marshal::Reader;
use dps_protocol::tpm::templates::hmac_sha256_key;
use dps_protocol::tpm::{
    KeyedHashSensitive, Name, Public, Tpm2bData, Tpm2bEncryptedSecret, Tpm2bIdObject,
};
use dps_protocol::AuthenticationKey;
use rand::RngCore;
use zeroize::Zeroizing;

use device_client::tpm::EkType;
use test_support::{rng, TestTpm};

/// tpm2-tools' credential file: magic `0xBADCC0DE`, version 1, `TPM2B_ID_OBJECT`,
/// `TPM2B_ENCRYPTED_SECRET`.
fn tpm2_tools_credential(
    ek: &Public,
    srk_name: &Name,
    secret: &[u8],
) -> (Tpm2bIdObject, Tpm2bEncryptedSecret) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |f: &str| dir.path().join(f);
    std::fs::write(path("ek.pub"), ek.to_tpm2b()).expect("write ek.pub");
    std::fs::write(path("secret"), secret).expect("write secret");
    let out = Command::new("tpm2_makecredential")
        .args(["-T", "none", "-u"])
        .arg(path("ek.pub"))
        .arg("-n")
        .arg(hex::encode(srk_name.as_bytes()))
        .arg("-s")
        .arg(path("secret"))
        .arg("-o")
        .arg(path("cred.out"))
        .output()
        .expect("run tpm2_makecredential (is tpm2-tools installed? scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "tpm2_makecredential: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read(path("cred.out")).expect("read cred.out");
    let mut r = Reader::new(&file);
    assert_eq!(r.u32("header").expect("magic"), 0xBADC_C0DE);
    assert_eq!(r.u32("header").expect("version"), 1);
    let id_object = Tpm2bIdObject::read(&mut r).expect("TPM2B_ID_OBJECT");
    let encrypted_secret = Tpm2bEncryptedSecret::read(&mut r).expect("TPM2B_ENCRYPTED_SECRET");
    r.finish("cred.out").expect("nothing after the secret");
    (id_object, encrypted_secret)
}

#[test]
fn tpm2_makecredential_and_ours_activate_to_the_same_secret() {
    for ek_type in [EkType::Rsa2048, EkType::EccP256, EkType::EccP384] {
        both_activate(TestTpm::fresh().using_ek(ek_type), &format!("{ek_type:?}"));
    }
}

/// tpm2-tools' ECC credential activates in the software device model: its ECDH, KDFe and
/// derivations with the EK's nameAlg and AES size are ours.
#[test]
fn tpm2_makecredential_to_a_software_ecc_ek_activates_in_the_software_device() {
    use dps_protocol::ecc::{EccCurve, EccPrivateKey};
    use dps_protocol::software_tpm::{PrivateSeedKey, SoftwareTpm};
    let mut rng = rng("tpm2-tools software");
    for curve in [EccCurve::P256, EccCurve::P384] {
        let device = SoftwareTpm::with_keys(
            PrivateSeedKey::Ecc(EccPrivateKey::generate(curve, &mut rng).expect("EK")),
            PrivateSeedKey::Ecc(EccPrivateKey::generate(EccCurve::P256, &mut rng).expect("SRK")),
        );
        let name = Name::of(device.srk_public()).expect("SRK name");
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let (id_object, encrypted) = tpm2_tools_credential(device.ek_public(), &name, &secret);
        let activated = device
            .activate_credential(&id_object, &encrypted)
            .unwrap_or_else(|e| panic!("{curve:?}: {e:?}"));
        assert_eq!(activated.as_slice(), secret, "{curve:?}");
    }
}

/// Ours and tpm2-tools' credentials for `t`'s EK, each carrying the inner key of one duplicate,
/// both import on `t`.
fn both_activate(mut t: TestTpm, case: &str) {
    let (ek, srk) = (t.ek(), t.srk());
    let srk_name = Name::of(&srk).expect("SRK name");
    let mut rng = rng("tpm2-tools");

    let mut inner_key = [0u8; 16];
    rng.fill_bytes(&mut inner_key);
    let mut hmac_key = vec![0u8; 32];
    rng.fill_bytes(&mut hmac_key);
    let mut seed_value = vec![0u8; 32];
    rng.fill_bytes(&mut seed_value);
    let public = hmac_sha256_key(dps_protocol::crypto::sha256(&[&seed_value, &hmac_key]).to_vec());
    let sensitive = KeyedHashSensitive {
        auth_value: Zeroizing::new(Vec::new()),
        seed_value: Zeroizing::new(seed_value),
        key: Zeroizing::new(hmac_key.clone()),
    };

    let ours = dps_protocol::credential::make_credential(&ek, &srk_name, &inner_key, &mut rng)
        .expect("our MakeCredential");
    let theirs = tpm2_tools_credential(&ek, &srk_name, &inner_key);
    for (who, (id_object, secret)) in [
        ("dps-protocol", (ours.id_object, ours.secret)),
        ("tpm2-tools", theirs),
    ] {
        let dup = duplicate(&srk, &public, &sensitive.to_tpmt(), &inner_key, &mut rng)
            .expect("duplicate");
        let blob = AuthenticationKey {
            credential_blob: id_object,
            secret,
            duplicate: dup.duplicate,
            in_sym_seed: dup.in_sym_seed,
            public: public.clone(),
            enc_uri_data: Tpm2bData::default(),
        };
        t.tpm
            .import_authentication_key(&blob.to_bytes())
            .unwrap_or_else(|e| {
                panic!("{case}, {who}: credential did not activate to the secret: {e:?}")
            });
        assert_eq!(
            t.tpm.hmac(b"cross-check").expect("hmac"),
            dps_protocol::crypto::hmac_sha256(&hmac_key, &[b"cross-check"]),
            "{case}, {who}"
        );
    }
}
