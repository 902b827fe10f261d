use std::path::Path;

use dps_protocol::software_tpm::SoftwareTpm;
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;
use serde_json::Value;

pub fn vector(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("read vector")).expect("vector is JSON")
}

pub fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("{key} missing"))).expect(key)
}

/// The software device of `software_device.json`.
pub fn software_device() -> (Value, SoftwareTpm) {
    let (ek, srk) = software_device_keys();
    (vector("software_device.json"), SoftwareTpm::new(ek, srk))
}

/// The EK and SRK private keys of `software_device.json`.
pub fn software_device_keys() -> (RsaPrivateKey, RsaPrivateKey) {
    let v = vector("software_device.json");
    let key = |field| RsaPrivateKey::from_pkcs8_der(&hex_field(&v, field)).expect(field);
    (key("ek_private_pkcs8"), key("srk_private_pkcs8"))
}

/// A second, unrelated software device (an impostor, another TPM).
pub fn other_device() -> SoftwareTpm {
    let (ek, srk) = other_device_keys();
    SoftwareTpm::new(ek, srk)
}

/// The EK and SRK private keys of [`other_device`].
pub fn other_device_keys() -> (RsaPrivateKey, RsaPrivateKey) {
    use rand::SeedableRng;
    static DEVICE: std::sync::OnceLock<(RsaPrivateKey, RsaPrivateKey)> = std::sync::OnceLock::new();
    let (ek, srk) = DEVICE.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        (
            RsaPrivateKey::new(&mut rng, 2048).expect("EK"),
            RsaPrivateKey::new(&mut rng, 2048).expect("SRK"),
        )
    });
    (ek.clone(), srk.clone())
}
