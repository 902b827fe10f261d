//! Blobs the TPM must refuse, each with a typed error, never importing a wrong key.

use device_client::tpm::TpmError;
use dps_protocol::credential::make_credential;
use dps_protocol::tpm::Name;
use dps_protocol::AuthenticationKey;

use test_support::{rng, TestTpm};

#[test]
fn impostor_with_a_copied_ek_pub_fails_at_activate_credential() {
    let mut victim = TestTpm::fresh();
    let victim_ek = victim.ek();
    drop(victim);
    let mut impostor = TestTpm::fresh();
    let impostor_srk = impostor.srk();
    let mut rng = rng("impostor");
    // The impostor presents the victim's EK_pub with its own SRK.
    let issued = AuthenticationKey::issue(&victim_ek, &impostor_srk, &mut rng).expect("issue");
    let err = impostor
        .tpm
        .import_authentication_key(&issued.blob.to_bytes())
        .expect_err("an impostor cannot activate the credential");
    assert_eq!(err.command(), Some("ActivateCredential"), "{err:?}");
    assert!(
        err.response_code().is_some(),
        "the TPM itself refused: {err:?}"
    );
    assert!(!impostor.tpm.has_device_key().expect("query"));
}

#[test]
fn credential_bound_to_another_srk_name_fails_integrity() {
    let mut t = TestTpm::fresh();
    let mut other = TestTpm::fresh();
    let other_srk = other.srk();
    drop(other);
    let (ek, srk) = (t.ek(), t.srk());
    let mut rng = rng("other-srk");
    let mut issued = AuthenticationKey::issue(&ek, &srk, &mut rng).expect("issue");
    // Re-seal the same kind of inner key to our EK, but bound to the other TPM's SRK name.
    let credential = make_credential(
        &ek,
        &Name::of(&other_srk).expect("name"),
        &[7; 16],
        &mut rng,
    )
    .expect("make credential");
    issued.blob.credential_blob = credential.id_object;
    issued.blob.secret = credential.secret;
    let err = t
        .tpm
        .import_authentication_key(&issued.blob.to_bytes())
        .expect_err("bound to another name");
    assert_eq!(err.command(), Some("ActivateCredential"), "{err:?}");
    assert!(err.is_integrity_failure(), "{err:?}");
}

#[test]
fn a_flipped_byte_anywhere_never_imports_a_key() {
    let mut t = TestTpm::fresh();
    let (ek, srk) = (t.ek(), t.srk());
    let mut rng = rng("flip");
    // A good key first, so we can see that failed imports leave it alone.
    let good = AuthenticationKey::issue(&ek, &srk, &mut rng).expect("issue");
    t.tpm
        .import_authentication_key(&good.blob.to_bytes())
        .expect("import good key");
    let probe = b"probe";
    let good_hmac = t.tpm.hmac(probe).expect("hmac");

    let bytes = AuthenticationKey::issue(&ek, &srk, &mut rng)
        .expect("issue")
        .blob
        .to_bytes();
    let (mut decode, mut library, mut tpm_refused) = (0, 0, 0);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01 << (i % 8);
        match t.tpm.import_authentication_key(&bad) {
            Err(TpmError::Blob(_)) => decode += 1,
            Err(TpmError::Library { .. }) => library += 1,
            Err(e) if e.response_code().is_some() || e.command().is_some() => tpm_refused += 1,
            Err(e) => panic!("byte {i}: unexpected error {e:?}"),
            Ok(()) => panic!("byte {i}: a corrupted blob was imported"),
        }
    }
    eprintln!(
        "{} flips: {decode} refused by the decoder, {library} by tss-esapi, {tpm_refused} by the TPM",
        bytes.len()
    );
    assert_eq!(
        t.tpm.hmac(probe).expect("hmac"),
        good_hmac,
        "the good key is untouched"
    );
}
