//! ECC endorsement keys as `MakeCredential` targets (issue 30): accepted on NIST P-256 and P-384
//! with the TCG templates' nameAlg and AES size; every other ECC key refused by name before any
//! secret is derived. swtpm activates what is accepted (device-client `ecc_ek`).

use dps_protocol::credential::make_credential;
use dps_protocol::tpm::constants::{
    TPMA_OBJECT_SIGN, TPM_ALG_AES, TPM_ALG_CFB, TPM_ALG_NULL, TPM_ALG_SHA256, TPM_ALG_SHA384,
};
use dps_protocol::tpm::templates::{srk_rsa2048, EK_ATTRIBUTES};
use dps_protocol::tpm::{Name, Public, PublicParameters, Scheme, SymDefObject};
use dps_protocol::CryptoError;
use rand_chacha::rand_core::SeedableRng;

/// An ECC EK of `curve_id` with a real point (or `point` if given), nameAlg `name_alg` and AES
/// of `aes_bits`.
fn ecc_ek(
    curve_id: u16,
    name_alg: u16,
    aes_bits: u16,
    point: Option<(Vec<u8>, Vec<u8>)>,
) -> Public {
    let (x, y) = point.unwrap_or_else(|| {
        use aws_lc_rs::agreement::{PrivateKey, ECDH_P256, ECDH_P384};
        let curve = if curve_id == 0x0004 {
            &ECDH_P384
        } else {
            &ECDH_P256
        };
        let key = PrivateKey::generate(curve).unwrap();
        let public = key.compute_public_key().unwrap();
        let encoded = public.as_ref();
        let size = (encoded.len() - 1) / 2;
        (encoded[1..=size].to_vec(), encoded[1 + size..].to_vec())
    });
    Public {
        name_alg,
        object_attributes: EK_ATTRIBUTES,
        auth_policy: Vec::new(),
        parameters: PublicParameters::Ecc {
            symmetric: Some(SymDefObject {
                algorithm: TPM_ALG_AES,
                key_bits: aes_bits,
                mode: TPM_ALG_CFB,
            }),
            scheme: Scheme::null(),
            curve_id,
            kdf: Scheme {
                scheme: TPM_ALG_NULL,
                details: vec![],
            },
            x,
            y,
        },
    }
}

fn refusal(ek: &Public) -> &'static str {
    match ek.check_seed_key("EK") {
        Err(CryptoError::UnsuitableKey { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// P-256 with SHA-256 (L-2, H-2) and P-384 with SHA-384 (H-3): a credential is made; its secret
/// is the ephemeral point (two TPM2B coordinates of the curve's size) and its integrity HMAC
/// has the nameAlg's size.
#[test]
fn p256_and_p384_eks_receive_credentials_sized_by_their_name_alg() {
    let srk = srk_rsa2048(vec![0xC5; 256]);
    let name = Name::of(&srk).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    for (curve, hash, bits, coordinate, digest) in [
        (0x0003, TPM_ALG_SHA256, 128, 32, 32),
        (0x0004, TPM_ALG_SHA384, 256, 48, 48),
    ] {
        let ek = ecc_ek(curve, hash, bits, None);
        ek.check_seed_key("EK").unwrap();
        let credential = make_credential(&ek, &name, &[9; 32], &mut rng).unwrap();
        let secret = credential.secret.body();
        assert_eq!(secret.len(), 2 * (2 + coordinate));
        let id_object = credential.id_object.body();
        assert_eq!(
            usize::from(u16::from_be_bytes([id_object[0], id_object[1]])),
            digest
        );
    }
}

/// Refused, named, before any secret: a point off the curve, a coordinate longer than the
/// curve's, an unknown curve, a nameAlg that is neither SHA-256 nor SHA-384, a signing or
/// unrestricted key, no AES-CFB, a scheme on a storage key.
#[test]
fn unusable_ecc_eks_are_refused_by_name() {
    let good = ecc_ek(0x0003, TPM_ALG_SHA256, 128, None);
    let PublicParameters::Ecc { x, y, .. } = &good.parameters else {
        unreachable!()
    };
    let mut off = y.clone();
    off[31] ^= 1;
    // (curve, x, y) → the refusal of a P-256 EK with SHA-256 and AES-128 at that point.
    let points = [
        (0x0003, x.clone(), off, "ECC point is not on its curve"),
        (
            0x0003,
            vec![0; 32],
            vec![0; 32],
            "ECC point is not on its curve",
        ),
        (
            0x0003,
            vec![1; 33],
            y.clone(),
            "ECC coordinate longer than the curve's",
        ),
        (
            0x0005,
            x.clone(),
            y.clone(),
            "ECC curve is not NIST P-256 or P-384",
        ),
    ];
    for (curve, x, y, reason) in points {
        let ek = ecc_ek(curve, TPM_ALG_SHA256, 128, Some((x, y)));
        assert_eq!(refusal(&ek), reason);
    }
    assert_eq!(
        refusal(&ecc_ek(0x0003, 0x0004, 128, None)),
        "nameAlg is not SHA-256 or SHA-384"
    );
    let mut signing = good.clone();
    signing.object_attributes |= TPMA_OBJECT_SIGN;
    assert_eq!(refusal(&signing), "not a restricted decryption key");
    let mut no_aes = good.clone();
    if let PublicParameters::Ecc { symmetric, .. } = &mut no_aes.parameters {
        *symmetric = None;
    }
    assert_eq!(refusal(&no_aes), "symmetric algorithm is not AES-CFB");
    let mut with_scheme = good;
    if let PublicParameters::Ecc { scheme, .. } = &mut with_scheme.parameters {
        scheme.scheme = 0x0019; // ECDH
    }
    assert_eq!(
        refusal(&with_scheme),
        "an ECC decryption key with a scheme or KDF"
    );
}

/// The software device model with every EK type and either SRK type completes the handshake:
/// the credential activates under the ECC EK (ECDH with the EK's private scalar, KDFe, the EK's
/// nameAlg and AES size), the duplicate imports under an ECC SRK (the seed shared with label
/// `DUPLICATE`), and the key that comes out is the one issued. A device holding another key of
/// the same curve gets nothing. swtpm makes the same checks in device-client's `ek_types`.
#[test]
fn software_devices_with_ecc_eks_and_ecc_srks_import_the_issued_key() {
    use dps_protocol::ecc::{EccCurve, EccPrivateKey};
    use dps_protocol::software_tpm::{PrivateSeedKey, SoftwareTpm};
    use dps_protocol::AuthenticationKey;

    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(30);
    let rsa = |bits, seed| {
        rsa::RsaPrivateKey::new(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed), bits).unwrap()
    };
    let ecc = |curve, rng: &mut rand_chacha::ChaCha20Rng| {
        PrivateSeedKey::Ecc(EccPrivateKey::generate(curve, rng).unwrap())
    };
    for ek_curve in [Some(EccCurve::P256), Some(EccCurve::P384), None] {
        for ecc_srk in [false, true] {
            let case = format!("EK {ek_curve:?}, ECC SRK {ecc_srk}");
            let ek = ek_curve.map_or_else(
                || PrivateSeedKey::Rsa(Box::new(rsa(2048, 1))),
                |c| ecc(c, &mut rng),
            );
            let srk = if ecc_srk {
                ecc(EccCurve::P256, &mut rng)
            } else {
                PrivateSeedKey::Rsa(Box::new(rsa(2048, 2)))
            };
            let device = SoftwareTpm::with_keys(ek, srk);
            let issued =
                AuthenticationKey::issue(device.ek_public(), device.srk_public(), &mut rng)
                    .unwrap();
            let key = device
                .import_authentication_key(&issued.blob)
                .unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(key.as_slice(), issued.device_key.as_slice(), "{case}");

            // Another TPM's EK of the same type: the credential does not activate.
            let Some(curve) = ek_curve else { continue };
            let impostor = SoftwareTpm::with_keys(
                ecc(curve, &mut rng),
                PrivateSeedKey::Rsa(Box::new(rsa(2048, 2))),
            );
            assert!(
                impostor
                    .activate_credential_for(
                        &Name::of(device.srk_public()).unwrap(),
                        &issued.blob.credential_blob,
                        &issued.blob.secret,
                    )
                    .is_err(),
                "{case}: an impostor activated"
            );
        }
    }
}
