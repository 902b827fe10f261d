//! Both sides in memory: the service builds, the software device unwraps, and each attack of
//! `dps_protocol::threats` fails with a typed error.

use dps_protocol::credential::make_credential;
use dps_protocol::tpm::Name;
use dps_protocol::{AuthenticationKey, CryptoError};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::support::{other_device, software_device};

#[test]
fn fresh_keys_round_trip() {
    let (_, device) = software_device();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for _ in 0..8 {
        let issued = AuthenticationKey::issue(device.ek_public(), device.srk_public(), &mut rng)
            .expect("issue");
        let bytes = issued.blob.to_bytes();
        let blob = AuthenticationKey::from_bytes(&bytes).expect("split");
        let key = device.import_authentication_key(&blob).expect("import");
        assert_eq!(key.as_slice(), issued.device_key.as_slice());
    }
}

#[test]
fn impostor_with_copied_ek_pub_cannot_activate() {
    let (_, victim) = software_device();
    let impostor = other_device();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let issued = AuthenticationKey::issue(victim.ek_public(), impostor.srk_public(), &mut rng)
        .expect("issue");
    let err = impostor
        .import_authentication_key(&issued.blob)
        .expect_err("impostor");
    assert!(matches!(err, CryptoError::Oaep { .. }), "{err:?}");
}

#[test]
fn credential_bound_to_another_name_fails_integrity() {
    let (_, device) = software_device();
    let other = other_device();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let credential = make_credential(
        device.ek_public(),
        &Name::of(other.srk_public()).expect("name"),
        &[1; 16],
        &mut rng,
    )
    .expect("make credential");
    let err = device
        .activate_credential(&credential.id_object, &credential.secret)
        .expect_err("wrong name");
    assert_eq!(
        err,
        CryptoError::IntegrityCheck {
            structure: "TPM2B_ID_OBJECT"
        }
    );
}

#[test]
fn duplicate_for_another_srk_fails() {
    let (_, device) = software_device();
    let other = other_device();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    // Right EK, but the key is duplicated to another TPM's SRK.
    let mut issued =
        AuthenticationKey::issue(device.ek_public(), other.srk_public(), &mut rng).expect("issue");
    let good =
        AuthenticationKey::issue(device.ek_public(), device.srk_public(), &mut rng).expect("issue");
    issued.blob.credential_blob = good.blob.credential_blob;
    issued.blob.secret = good.blob.secret;
    assert!(device.import_authentication_key(&issued.blob).is_err());
}

#[test]
fn every_flipped_bit_of_a_blob_is_refused() {
    let (_, device) = software_device();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let issued =
        AuthenticationKey::issue(device.ek_public(), device.srk_public(), &mut rng).expect("issue");
    let bytes = issued.blob.to_bytes();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1 << (i % 8);
        if let Ok(blob) = AuthenticationKey::from_bytes(&bad) {
            assert!(
                device.import_authentication_key(&blob).is_err(),
                "flip at byte {i} imported a key"
            );
        }
    }
}

#[test]
fn unsuitable_keys_are_refused_before_any_work() {
    let (_, device) = software_device();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut signing_srk = device.srk_public().clone();
    signing_srk.object_attributes |= dps_protocol::tpm::constants::TPMA_OBJECT_SIGN;
    let err =
        AuthenticationKey::issue(device.ek_public(), &signing_srk, &mut rng).expect_err("sign");
    assert!(
        matches!(err, CryptoError::UnsuitableKey { role: "SRK", .. }),
        "{err:?}"
    );

    let mut unrestricted_ek = device.ek_public().clone();
    unrestricted_ek.object_attributes &= !dps_protocol::tpm::constants::TPMA_OBJECT_RESTRICTED;
    let err =
        AuthenticationKey::issue(&unrestricted_ek, device.srk_public(), &mut rng).expect_err("ek");
    assert!(
        matches!(err, CryptoError::UnsuitableKey { role: "EK", .. }),
        "{err:?}"
    );

    let mut sha1_srk = device.srk_public().clone();
    sha1_srk.name_alg = dps_protocol::tpm::constants::TPM_ALG_SHA1;
    assert!(AuthenticationKey::issue(device.ek_public(), &sha1_srk, &mut rng).is_err());
}

type Weaken<'a> = &'a dyn Fn(&mut u16, &mut u32, &mut Vec<u8>);

/// Weak RSA EKs are refused before any work: shorter than 2048 bits, an exponent other than
/// 65537 (3, 2^32 - 1), a keyBits that contradicts the modulus.
#[test]
fn weak_rsa_keys_are_refused() {
    use dps_protocol::tpm::PublicParameters;
    let (_, device) = software_device();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let weaken = |f: &dyn Fn(&mut u16, &mut u32, &mut Vec<u8>)| {
        let mut ek = device.ek_public().clone();
        let PublicParameters::Rsa {
            key_bits,
            exponent,
            modulus,
            ..
        } = &mut ek.parameters
        else {
            panic!("an RSA EK")
        };
        f(key_bits, exponent, modulus);
        ek
    };
    let cases: [(&str, Weaken<'_>); 5] = [
        ("RSA-1024", &|bits, _, m| {
            *bits = 1024;
            m.truncate(128);
        }),
        ("e = 3", &|_, e, _| *e = 3),
        ("e = 2^32 - 1", &|_, e, _| *e = u32::MAX),
        ("keyBits 4096 over a 2048-bit modulus", &|bits, _, _| {
            *bits = 4096;
        }),
        ("a leading zero byte", &|_, _, m| m[0] = 0),
    ];
    for (what, f) in cases {
        let ek = weaken(f);
        let err = AuthenticationKey::issue(&ek, device.srk_public(), &mut rng).expect_err(what);
        assert!(
            matches!(err, CryptoError::UnsuitableKey { role: "EK", .. }),
            "{what}: {err:?}"
        );
    }
    // Written-out 65537 is the default exponent and stays accepted.
    let explicit = weaken(&|_, e, _| *e = 65_537);
    assert!(AuthenticationKey::issue(&explicit, device.srk_public(), &mut rng).is_ok());
}
