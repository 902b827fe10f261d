//! The foundation: a blob built in software is accepted by a real TPM, and the key inside signs
//! exactly what the service computes.

use dps_protocol::sas::{self, SasToken, VerifyPolicy, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::templates::{ek_rsa2048, srk_rsa2048};
use dps_protocol::tpm::{Public, PublicParameters};
use dps_protocol::AuthenticationKey;

use test_support::{rng, TestTpm};

fn modulus(public: &Public) -> Vec<u8> {
    match &public.parameters {
        PublicParameters::Rsa { modulus, .. } => modulus.clone(),
        other => panic!("expected an RSA key, got {other:?}"),
    }
}

#[test]
fn public_areas_remarshal_byte_for_byte() {
    let mut t = TestTpm::fresh();
    for (what, bytes) in [
        ("EK", t.tpm.endorsement_key().expect("EK")),
        ("SRK", t.tpm.storage_root_key().expect("SRK")),
    ] {
        let parsed = Public::from_tpm2b(&bytes).expect(what);
        assert_eq!(parsed.to_tpm2b(), bytes, "{what} re-marshals byte for byte");
    }
    // The EK swtpm_setup persisted, and the SRK we created, follow the templates of
    // docs/protocol.md §5.
    let (ek, srk) = (t.ek(), t.srk());
    assert_eq!(ek, ek_rsa2048(modulus(&ek)));
    assert_eq!(srk, srk_rsa2048(modulus(&srk)));
    assert_eq!(modulus(&ek).len(), 256);
}

#[test]
fn keys_are_persisted_across_contexts() {
    let mut t = TestTpm::fresh();
    let (ek, srk) = (
        t.tpm.endorsement_key().expect("EK"),
        t.tpm.storage_root_key().expect("SRK"),
    );
    let mut t = t.reopen();
    assert_eq!(t.tpm.endorsement_key().expect("EK"), ek);
    assert_eq!(t.tpm.storage_root_key().expect("SRK"), srk);
}

#[test]
fn software_blob_imports_and_tpm_hmac_matches_service() {
    let mut t = TestTpm::fresh();
    let mut rng = rng("import");
    let (ek, srk) = (t.ek(), t.srk());
    let resource = sas::registration_resource("0ne00000001", "device-1");
    let now = 1_800_000_000;
    // Several keys, each replacing the last one at the persistent handle.
    for round in 0..4 {
        let issued = AuthenticationKey::issue(&ek, &srk, &mut rng).expect("issue");
        t.tpm
            .import_authentication_key(&issued.blob.to_bytes())
            .unwrap_or_else(|e| panic!("round {round}: import: {e:?}"));

        let to_sign = sas::string_to_sign(&sas::encode_resource(&resource), now + 60);
        let tpm_hmac = t.tpm.hmac(to_sign.as_bytes()).expect("TPM HMAC");
        let service_hmac =
            dps_protocol::crypto::hmac_sha256(issued.device_key.as_ref(), &[to_sign.as_bytes()]);
        assert_eq!(tpm_hmac, service_hmac, "round {round}");

        // The full SAS token, signed inside the TPM, verifies with the service's key.
        let token = sas::build_token(&resource, now + 60, Some(REGISTRATION_KEY_NAME), &mut t.tpm)
            .expect("sign in TPM");
        let policy = VerifyPolicy {
            resource: &resource,
            key_name: Some(REGISTRATION_KEY_NAME),
            now,
            max_skew: 30,
            max_lifetime: 3600,
        };
        SasToken::parse(&token)
            .expect("parse")
            .verify(issued.device_key.as_ref(), &policy)
            .expect("SAS signed by the TPM verifies");
    }
    // The key survives a new context (it is persistent, not transient).
    let mut t = t.reopen();
    assert!(t.tpm.has_device_key().expect("query"));
}

#[test]
fn hmac_limits_are_typed_errors() {
    let mut t = TestTpm::fresh();
    let err = t.tpm.hmac(b"x").expect_err("no key imported yet");
    assert!(
        matches!(err, device_client::tpm::TpmError::NoDeviceKey { .. }),
        "{err:?}"
    );

    let mut rng = rng("limits");
    let (ek, srk) = (t.ek(), t.srk());
    let issued = AuthenticationKey::issue(&ek, &srk, &mut rng).expect("issue");
    t.tpm
        .import_authentication_key(&issued.blob.to_bytes())
        .expect("import");
    let max = vec![0x5a; device_client::tpm::MAX_HMAC_INPUT];
    assert_eq!(
        t.tpm.hmac(&max).expect("1024 bytes"),
        dps_protocol::crypto::hmac_sha256(issued.device_key.as_ref(), &[&max])
    );
    let err = t
        .tpm
        .hmac(&[0; device_client::tpm::MAX_HMAC_INPUT + 1])
        .expect_err("too long");
    assert!(
        matches!(err, device_client::tpm::TpmError::DataTooLong { .. }),
        "{err:?}"
    );
}
