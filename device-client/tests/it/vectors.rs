//! The swtpm-proven vector set, `dps-protocol/tests/vectors/swtpm_device.json`: a recorded TPM
//! (its swtpm state is committed under `test-support/fixtures/swtpm-state/`), the blob the service
//! builds for it from a fixed seed, and what the TPM's key signs. `dps-protocol`'s unit tests
//! rebuild the same bytes in software; this test shows that the TPM accepts them.
//!
//! Re-record (the blob's format or the issued key's template changed), same TPM:
//! `cargo test -p device-client --test it -- --ignored rerecord_swtpm_vector`; a new TPM
//! altogether (changes the recorded registration id): `... regenerate_swtpm_vector`.

use std::path::{Path, PathBuf};

use dps_protocol::sas::{self, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::Public;
use dps_protocol::{AuthenticationKey, RegistrationId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

use test_support::Swtpm;
use test_support::TestTpm;

const BLOB_SEED: u64 = 0x5357_5450_4d42_4c42; // "SWTPMBLB"
const ID_SCOPE: &str = "0ne0000DPS1";
const EXPIRY: u64 = 1_800_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_state() -> PathBuf {
    root().join("test-support/fixtures/swtpm-state")
}

fn vector_path() -> PathBuf {
    root().join("dps-protocol/tests/vectors/swtpm_device.json")
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("{key} missing"))).expect(key)
}

#[test]
fn recorded_tpm_accepts_the_vector_blob() {
    let vector: Value =
        serde_json::from_slice(&std::fs::read(vector_path()).expect("read vector")).expect("json");
    let mut t = TestTpm::on(Swtpm::start_from_state(&fixture_state()));
    assert_eq!(
        t.tpm.endorsement_key().expect("EK"),
        hex_field(&vector, "ek_tpm2b_public")
    );
    assert_eq!(
        t.tpm.storage_root_key().expect("SRK"),
        hex_field(&vector, "srk_tpm2b_public")
    );

    t.tpm
        .import_authentication_key(&hex_field(&vector, "authentication_key"))
        .expect("the recorded TPM imports the vector blob");
    let sas = &vector["sas"];
    let to_sign = sas["string_to_sign"].as_str().expect("string_to_sign");
    assert_eq!(
        t.tpm.hmac(to_sign.as_bytes()).expect("hmac").to_vec(),
        hex_field(sas, "hmac")
    );

    let resource = sas::registration_resource(
        sas["id_scope"].as_str().expect("id_scope"),
        vector["registration_id"].as_str().expect("registration_id"),
    );
    let expiry = sas["expiry"].as_u64().expect("expiry");
    let token = sas::build_token(&resource, expiry, Some(REGISTRATION_KEY_NAME), &mut t.tpm)
        .expect("sign in TPM");
    assert_eq!(token, sas["token"].as_str().expect("token"));
}

#[test]
#[ignore = "regenerates the committed swtpm state and vector"]
fn regenerate_swtpm_vector() {
    let mut t = TestTpm::fresh();
    let ek_bytes = t.tpm.endorsement_key().expect("EK");
    let srk_bytes = t.tpm.storage_root_key().expect("SRK");
    let TestTpm { tpm, swtpm } = t;
    drop(tpm);
    // swtpm writes its NV state to disk as it changes; the SRK is persisted by now.
    std::fs::create_dir_all(fixture_state()).expect("fixture dir");
    std::fs::copy(
        swtpm.state_dir().join("tpm2-00.permall"),
        fixture_state().join("tpm2-00.permall"),
    )
    .expect("copy state");
    drop(swtpm);

    record(&ek_bytes, &srk_bytes);
}

/// Re-records the vector on the committed swtpm state (same EK, SRK and registration id): for
/// a change of the blob's format or of the issued key's template.
#[test]
#[ignore = "re-records the committed vector"]
fn rerecord_swtpm_vector_on_the_committed_state() {
    let mut t = TestTpm::on(Swtpm::start_from_state(&fixture_state()));
    let ek_bytes = t.tpm.endorsement_key().expect("EK");
    let srk_bytes = t.tpm.storage_root_key().expect("SRK");
    drop(t);
    record(&ek_bytes, &srk_bytes);
}

/// Issues the blob for the recorded TPM from the fixed seed, proves it on a copy of the
/// committed state, and writes the vector.
fn record(ek_bytes: &[u8], srk_bytes: &[u8]) {
    let (ek, srk) = (
        Public::from_tpm2b(ek_bytes).expect("EK"),
        Public::from_tpm2b(srk_bytes).expect("SRK"),
    );
    let issued = AuthenticationKey::issue(&ek, &srk, &mut ChaCha20Rng::seed_from_u64(BLOB_SEED))
        .expect("issue");
    let registration_id = RegistrationId::from_endorsement_key(ek_bytes);
    let resource = sas::registration_resource(ID_SCOPE, registration_id.as_str());
    let to_sign = sas::string_to_sign(&sas::encode_resource(&resource), EXPIRY);

    // Prove it on the copied state before writing anything.
    let mut t = TestTpm::on(Swtpm::start_from_state(&fixture_state()));
    assert_eq!(t.tpm.endorsement_key().expect("EK"), ek_bytes);
    t.tpm
        .import_authentication_key(&issued.blob.to_bytes())
        .expect("import");
    let hmac = t.tpm.hmac(to_sign.as_bytes()).expect("hmac");
    assert_eq!(
        hmac,
        dps_protocol::crypto::hmac_sha256(issued.device_key.as_ref(), &[to_sign.as_bytes()])
    );
    let token =
        sas::build_token(&resource, EXPIRY, Some(REGISTRATION_KEY_NAME), &mut t.tpm).expect("sign");

    let vector = serde_json::json!({
        "source": "swtpm 0.7.1 manufactured by swtpm_setup --createek (state: test-support/fixtures/swtpm-state), SRK created by device-client::tpm; blob from AuthenticationKey::issue with ChaCha20Rng::seed_from_u64(blob_seed); hmac and token computed by that TPM. Generators: device-client/tests/it/vectors.rs rerecord_swtpm_vector_on_the_committed_state (same TPM), regenerate_swtpm_vector (a new one)",
        "blob_seed": BLOB_SEED,
        "ek_tpm2b_public": hex::encode(ek_bytes),
        "srk_tpm2b_public": hex::encode(srk_bytes),
        "hmac_key": hex::encode(issued.device_key.as_ref()),
        "authentication_key": hex::encode(issued.blob.to_bytes()),
        "registration_id": registration_id.as_str(),
        "sas": {
            "id_scope": ID_SCOPE,
            "expiry": EXPIRY,
            "string_to_sign": to_sign,
            "hmac": hex::encode(hmac),
            "token": token,
        },
    });
    std::fs::write(
        vector_path(),
        serde_json::to_string_pretty(&vector).expect("json") + "\n",
    )
    .expect("write vector");
}

/// The recorded TPM's high-range P-384 EK (H-3, made by swtpm_setup at 0x81010016), as
/// `dps-protocol/tests/vectors/swtpm_device_p384.json` records it: the blob the service builds
/// for that EK from a fixed seed (ECDH on P-384, KDFe and KDFa with SHA-384, AES-256) imports
/// on the recorded TPM, which then computes the recorded HMAC. `dps-protocol` rebuilds the blob
/// byte for byte. Re-record: `... -- --ignored record_swtpm_p384_vector`.
#[test]
fn recorded_tpm_accepts_the_p384_vector_blob() {
    let vector: Value =
        serde_json::from_slice(&std::fs::read(p384_vector_path()).expect("read vector"))
            .expect("json");
    let mut t = p384_tpm();
    assert_eq!(
        t.tpm.endorsement_key().expect("EK"),
        hex_field(&vector, "ek_tpm2b_public")
    );
    t.tpm
        .import_authentication_key(&hex_field(&vector, "authentication_key"))
        .expect("the recorded TPM imports the P-384 vector blob");
    assert_eq!(
        t.tpm.hmac(b"p384 vector").expect("hmac").to_vec(),
        hex_field(&vector, "hmac")
    );
}

#[test]
#[ignore = "re-records the committed P-384 vector"]
fn record_swtpm_p384_vector() {
    let mut t = p384_tpm();
    let (ek_bytes, srk_bytes) = (
        t.tpm.endorsement_key().expect("EK"),
        t.tpm.storage_root_key().expect("SRK"),
    );
    let issued = AuthenticationKey::issue(
        &Public::from_tpm2b(&ek_bytes).expect("EK"),
        &Public::from_tpm2b(&srk_bytes).expect("SRK"),
        &mut ChaCha20Rng::seed_from_u64(BLOB_SEED),
    )
    .expect("issue");
    t.tpm
        .import_authentication_key(&issued.blob.to_bytes())
        .expect("import");
    let hmac = t.tpm.hmac(b"p384 vector").expect("hmac");
    let vector = serde_json::json!({
        "source": "the P-384 EK (template H-3, 0x81010016) swtpm_setup made on the recorded TPM (test-support/fixtures/swtpm-state) and its RSA SRK; blob from AuthenticationKey::issue with ChaCha20Rng::seed_from_u64(blob_seed); hmac over \"p384 vector\" computed by that TPM with the imported key. Generator: device-client/tests/it/vectors.rs record_swtpm_p384_vector",
        "blob_seed": BLOB_SEED,
        "ek_tpm2b_public": hex::encode(&ek_bytes),
        "srk_tpm2b_public": hex::encode(&srk_bytes),
        "hmac_key": hex::encode(issued.device_key.as_ref()),
        "authentication_key": hex::encode(issued.blob.to_bytes()),
        "hmac": hex::encode(hmac),
    });
    std::fs::write(
        p384_vector_path(),
        serde_json::to_string_pretty(&vector).expect("json") + "\n",
    )
    .expect("write vector");
}

fn p384_vector_path() -> PathBuf {
    root().join("dps-protocol/tests/vectors/swtpm_device_p384.json")
}

/// The recorded TPM, using its P-384 EK.
fn p384_tpm() -> TestTpm {
    TestTpm::recorded().using_ek(device_client::tpm::EkType::EccP384)
}
