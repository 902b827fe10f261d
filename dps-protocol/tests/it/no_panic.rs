//! No parser panics on truncated or mutated input (a stable-toolchain stand-in for fuzzing):
//! every prefix of every vector, and every single-byte mutation, through every parser.

use dps_protocol::sas::SasToken;
use dps_protocol::tpm::{
    KeyedHashSensitive, Public, Tpm2bEncryptedSecret, Tpm2bIdObject, Tpm2bPrivate,
};
use dps_protocol::{AuthenticationKey, RegistrationId};

use crate::support::{hex_field, software_device, vector};

fn all_parsers(input: &[u8]) {
    let _ = Public::from_tpm2b(input);
    let _ = Public::from_tpmt(input);
    let _ = AuthenticationKey::from_bytes(input);
    let _ = KeyedHashSensitive::from_tpmt(input);
    let _ = Tpm2bIdObject::from_tpm2b(input);
    let _ = Tpm2bEncryptedSecret::from_tpm2b(input);
    let _ = Tpm2bPrivate::from_tpm2b(input);
    let text = String::from_utf8_lossy(input);
    let _ = SasToken::parse(&text);
    let _ = RegistrationId::parse(&text);
    let _ = serde_json::from_slice::<dps_protocol::wire::DeviceRegistration>(input);
}

fn inputs() -> Vec<Vec<u8>> {
    let (v, _) = software_device();
    let swtpm = vector("swtpm_device.json");
    vec![
        hex_field(&v, "authentication_key"),
        hex_field(&v, "ek_tpm2b_public"),
        hex_field(&v, "srk_tpm2b_public"),
        hex_field(&swtpm, "authentication_key"),
        v["sas"]["token"]
            .as_str()
            .expect("token")
            .as_bytes()
            .to_vec(),
        br#"{"registrationId":"abc","tpm":{"endorsementKey":"AAEC","storageRootKey":"AAEC"}}"#
            .to_vec(),
    ]
}

#[test]
fn truncations_never_panic() {
    for input in inputs() {
        for len in 0..=input.len() {
            all_parsers(&input[..len]);
        }
    }
}

#[test]
fn mutations_never_panic() {
    for input in inputs() {
        for i in 0..input.len() {
            for value in [0x00, 0xff, input[i] ^ 0x80, input[i].wrapping_add(1)] {
                let mut mutated = input.clone();
                mutated[i] = value;
                all_parsers(&mutated);
            }
        }
    }
}

#[test]
fn mutated_blobs_never_panic_the_software_device() {
    let (v, device) = software_device();
    let bytes = hex_field(&v, "authentication_key");
    // Every size prefix and a spread of payload bytes, set to extremes.
    for i in (0..bytes.len()).step_by(3) {
        for value in [0x00, 0xff] {
            let mut mutated = bytes.clone();
            mutated[i] = value;
            if let Ok(blob) = AuthenticationKey::from_bytes(&mutated) {
                let _ = device.import_authentication_key(&blob);
            }
        }
    }
}
