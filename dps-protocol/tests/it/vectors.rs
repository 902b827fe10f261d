//! Every vector rebuilt byte for byte from its seeds.

use dps_protocol::auth_key::IssuedKey;
use dps_protocol::sas::{self, SoftwareKey, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::{Name, Public};
use dps_protocol::{AuthenticationKey, RegistrationId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

use crate::support::{hex_field, software_device, vector};

#[test]
fn software_device_vector() {
    let (v, device) = software_device();
    assert_eq!(
        device.ek_public().to_tpm2b(),
        hex_field(&v, "ek_tpm2b_public")
    );
    assert_eq!(
        device.srk_public().to_tpm2b(),
        hex_field(&v, "srk_tpm2b_public")
    );
    assert_eq!(
        Name::of(device.srk_public()).expect("name").as_bytes(),
        hex_field(&v, "srk_name")
    );

    let seed = v["blob_seed"].as_u64().expect("blob_seed");
    let issued = AuthenticationKey::issue(
        device.ek_public(),
        device.srk_public(),
        &mut ChaCha20Rng::seed_from_u64(seed),
    )
    .expect("issue");
    assert_eq!(issued.device_key.to_vec(), hex_field(&v, "hmac_key"));
    assert_eq!(issued.blob.to_bytes(), hex_field(&v, "authentication_key"));

    let blob = AuthenticationKey::from_bytes(&hex_field(&v, "authentication_key")).expect("split");
    assert_eq!(blob, issued.blob);
    let key = device
        .import_authentication_key(&blob)
        .expect("software import");
    assert_eq!(key.to_vec(), hex_field(&v, "hmac_key"));

    let id = RegistrationId::from_endorsement_key(&hex_field(&v, "ek_tpm2b_public"));
    assert_eq!(id.as_str(), v["registration_id"]);
    let s = &v["sas"];
    let token = sas::build_token(
        &sas::registration_resource(s["id_scope"].as_str().expect("scope"), id.as_str()),
        s["expiry"].as_u64().expect("expiry"),
        Some(REGISTRATION_KEY_NAME),
        &mut SoftwareKey(&key),
    )
    .expect("sign");
    assert_eq!(token, s["token"]);
}

/// The key and blob issued to a recorded device's EK and SRK from the recorded RNG seed: the
/// same bytes as the blob that TPM imported, and the key it holds.
fn issued_as_recorded(v: &Value) -> IssuedKey {
    let ek = Public::from_tpm2b(&hex_field(v, "ek_tpm2b_public")).expect("EK");
    let srk = Public::from_tpm2b(&hex_field(v, "srk_tpm2b_public")).expect("SRK");
    let seed = v["blob_seed"].as_u64().expect("blob_seed");
    let issued =
        AuthenticationKey::issue(&ek, &srk, &mut ChaCha20Rng::seed_from_u64(seed)).expect("issue");
    assert_eq!(issued.blob.to_bytes(), hex_field(v, "authentication_key"));
    assert_eq!(issued.device_key.to_vec(), hex_field(v, "hmac_key"));
    issued
}

/// The set a real TPM (swtpm) accepted and signed with: the software side reproduces the blob
/// it imported and the HMAC it computed.
#[test]
fn swtpm_device_vector() {
    let v = vector("swtpm_device.json");
    let issued = issued_as_recorded(&v);

    let s = &v["sas"];
    let to_sign = s["string_to_sign"].as_str().expect("string_to_sign");
    let id = v["registration_id"].as_str().expect("registration_id");
    let resource = sas::registration_resource(s["id_scope"].as_str().expect("scope"), id);
    let expiry = s["expiry"].as_u64().expect("expiry");
    assert_eq!(
        to_sign,
        sas::string_to_sign(&sas::encode_resource(&resource), expiry)
    );
    let hmac = dps_protocol::crypto::hmac_sha256(issued.device_key.as_ref(), &[to_sign.as_bytes()]);
    assert_eq!(
        hmac.to_vec(),
        hex_field(s, "hmac"),
        "software HMAC equals the TPM's"
    );
    let token = sas::build_token(
        &resource,
        expiry,
        Some(REGISTRATION_KEY_NAME),
        &mut SoftwareKey(issued.device_key.as_ref()),
    )
    .expect("sign");
    assert_eq!(token, s["token"], "software token equals the TPM's");
}

#[test]
fn registration_ids_match_the_hand_computed_vectors() {
    let v = vector("registration_id.json");
    let cases = v["vectors"].as_array().expect("vectors");
    assert!(!cases.is_empty());
    for case in cases {
        let id = RegistrationId::from_endorsement_key(&hex_field(case, "ek_tpm2b_public"));
        assert_eq!(id.as_str(), case["registration_id"]);
        assert_eq!(RegistrationId::parse(id.as_str()).expect("valid"), id);
    }
}

/// The recorded TPM's P-384 EK (swtpm_setup's H-3): the software side reproduces the blob the
/// TPM imported, byte for byte, and the software device model holding its key would compute the
/// HMAC the TPM did.
#[test]
fn swtpm_p384_device_vector() {
    let v = vector("swtpm_device_p384.json");
    let issued = issued_as_recorded(&v);
    assert_eq!(
        dps_protocol::crypto::hmac_sha256(issued.device_key.as_ref(), &[b"p384 vector"]).to_vec(),
        hex_field(&v, "hmac")
    );
}
