//! Regenerates `tests/vectors/software_device.json`: a software device (RSA keys drawn from a
//! seeded RNG), the blob the service builds for it from another seed, and the SAS token its key
//! signs. Run: `cargo run -p dps-protocol --example generate_vectors > dps-protocol/tests/vectors/software_device.json`.
//!
//! The swtpm-proven set (`swtpm_device.json`) comes from a real TPM instead; see
//! `device-client/tests/it/vectors.rs`.

#![allow(clippy::expect_used)]

use dps_protocol::sas::{self, SoftwareKey, REGISTRATION_KEY_NAME};
use dps_protocol::software_tpm::SoftwareTpm;
use dps_protocol::tpm::Name;
use dps_protocol::{AuthenticationKey, RegistrationId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs8::EncodePrivateKey;
use rsa::RsaPrivateKey;

const KEY_SEED: u64 = 0x4450_535f_4b45_5953; // "DPS_KEYS"
const BLOB_SEED: u64 = 0x4450_535f_424c_4f42; // "DPS_BLOB"
const ID_SCOPE: &str = "0ne0000DPS1";
const EXPIRY: u64 = 1_800_000_000;

fn main() {
    let mut key_rng = ChaCha20Rng::seed_from_u64(KEY_SEED);
    let ek_key = RsaPrivateKey::new(&mut key_rng, 2048).expect("EK key");
    let srk_key = RsaPrivateKey::new(&mut key_rng, 2048).expect("SRK key");
    let der = |k: &RsaPrivateKey| hex::encode(k.to_pkcs8_der().expect("PKCS#8").as_bytes());
    let (ek_der, srk_der) = (der(&ek_key), der(&srk_key));
    let device = SoftwareTpm::new(ek_key, srk_key);
    let (ek, srk) = (device.ek_public(), device.srk_public());

    let issued = AuthenticationKey::issue(ek, srk, &mut ChaCha20Rng::seed_from_u64(BLOB_SEED))
        .expect("issue");
    let imported = device
        .import_authentication_key(&issued.blob)
        .expect("software import");
    assert_eq!(imported.as_slice(), issued.device_key.as_slice());

    let registration_id = RegistrationId::from_endorsement_key(&ek.to_tpm2b());
    let resource = sas::registration_resource(ID_SCOPE, registration_id.as_str());
    let token = sas::build_token(
        &resource,
        EXPIRY,
        Some(REGISTRATION_KEY_NAME),
        &mut SoftwareKey(issued.device_key.as_ref()),
    )
    .expect("sign");

    let vector = serde_json::json!({
        "source": "dps-protocol/examples/generate_vectors.rs (RSA keys from ChaCha20Rng::seed_from_u64(key_seed), EK first; blob from AuthenticationKey::issue with ChaCha20Rng::seed_from_u64(blob_seed))",
        "key_seed": KEY_SEED,
        "blob_seed": BLOB_SEED,
        "ek_private_pkcs8": ek_der,
        "srk_private_pkcs8": srk_der,
        "ek_tpm2b_public": hex::encode(ek.to_tpm2b()),
        "srk_tpm2b_public": hex::encode(srk.to_tpm2b()),
        "srk_name": hex::encode(Name::of(srk).expect("name").as_bytes()),
        "hmac_key": hex::encode(issued.device_key.as_ref()),
        "authentication_key": hex::encode(issued.blob.to_bytes()),
        "registration_id": registration_id.as_str(),
        "sas": { "id_scope": ID_SCOPE, "expiry": EXPIRY, "token": token },
    });
    println!("{}", serde_json::to_string_pretty(&vector).expect("json"));
}
