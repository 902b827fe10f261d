//! Every decode error, and each size boundary: the spec maximum is accepted, one more refused.

use dps_protocol::marshal::tpm2b;
use dps_protocol::tpm::constants::{
    EK_POLICY_SECRET_ENDORSEMENT, MAX_PUBLIC_SIZE, TPM_ALG_AES, TPM_ALG_CFB, TPM_ALG_NULL,
    TPM_ALG_SHA256,
};
use dps_protocol::tpm::templates::{srk_rsa2048, EK_ATTRIBUTES};
use dps_protocol::tpm::{
    KeyedHashSensitive, Public, PublicParameters, Scheme, SymDefObject, Tpm2bData,
    Tpm2bEncryptedSecret, Tpm2bIdObject, Tpm2bPrivate,
};
use dps_protocol::{AuthenticationKey, CryptoError, DecodeError};

use crate::support::{hex_field, vector};

fn too_large(structure: &'static str, max: usize, got: usize) -> DecodeError {
    DecodeError::SizeTooLarge {
        structure,
        max,
        got,
    }
}

macro_rules! buffer_boundaries {
    ($name:ident, $ty:ty, $max:expr) => {
        #[test]
        #[allow(clippy::useless_vec)]
        fn $name() {
            assert_eq!(<$ty>::MAX, $max);
            let at_max = tpm2b(&vec![0xa5; $max]);
            assert_eq!(
                <$ty>::from_tpm2b(&at_max)
                    .expect("max accepted")
                    .body()
                    .len(),
                $max
            );
            let over = tpm2b(&vec![0xa5; $max + 1]);
            assert_eq!(
                <$ty>::from_tpm2b(&over),
                Err(too_large(<$ty>::STRUCTURE, $max, $max + 1))
            );
            assert_eq!(
                <$ty>::new(vec![0; $max + 1]),
                Err(too_large(<$ty>::STRUCTURE, $max, $max + 1))
            );
            let mut trailing = at_max.clone();
            trailing.push(0);
            assert_eq!(
                <$ty>::from_tpm2b(&trailing),
                Err(DecodeError::TrailingData {
                    structure: <$ty>::STRUCTURE,
                    len: 1
                })
            );
            assert_eq!(
                <$ty>::from_tpm2b(&at_max[..at_max.len() - 1]),
                Err(DecodeError::Truncated {
                    structure: <$ty>::STRUCTURE,
                    needed: $max,
                    available: $max - 1
                })
            );
        }
    };
}

buffer_boundaries!(id_object_boundaries, Tpm2bIdObject, 132);
buffer_boundaries!(encrypted_secret_boundaries, Tpm2bEncryptedSecret, 512);
buffer_boundaries!(private_boundaries, Tpm2bPrivate, 1550);
buffer_boundaries!(data_boundaries, Tpm2bData, 66);

#[test]
fn public_size_boundaries() {
    assert_eq!(MAX_PUBLIC_SIZE, 606);
    // An RSA modulus of MAX_RSA_KEY_BYTES (512) is accepted, 513 is not.
    let at_max = srk_rsa2048(vec![0xc3; 512]).to_tpm2b();
    assert_eq!(
        Public::from_tpm2b(&at_max)
            .expect("RSA-4096 modulus")
            .to_tpm2b(),
        at_max
    );
    let over = srk_rsa2048(vec![0xc3; 513]).to_tpm2b();
    assert_eq!(
        Public::from_tpm2b(&over),
        Err(too_large("TPMT_PUBLIC", 512, 513))
    );

    // authPolicy: a TPM2B_DIGEST, at most 64 bytes.
    let mut public = srk_rsa2048(vec![1; 256]);
    public.auth_policy = vec![2; 64];
    assert!(Public::from_tpm2b(&public.to_tpm2b()).is_ok());
    public.auth_policy = vec![2; 65];
    assert_eq!(
        Public::from_tpm2b(&public.to_tpm2b()),
        Err(too_large("TPMT_PUBLIC", 64, 65))
    );

    // The TPM2B_PUBLIC size itself: 606 passes the size check (then fails on content), 607 not.
    let mut buf = 606u16.to_be_bytes().to_vec();
    buf.extend_from_slice(&[0; 606]);
    assert!(!matches!(
        Public::from_tpm2b(&buf),
        Err(DecodeError::SizeTooLarge { .. })
    ));
    let mut buf = 607u16.to_be_bytes().to_vec();
    buf.extend_from_slice(&[0; 607]);
    assert_eq!(
        Public::from_tpm2b(&buf),
        Err(too_large("TPM2B_PUBLIC", 606, 607))
    );
}

#[test]
fn public_errors_name_the_structure() {
    assert_eq!(
        Public::from_tpm2b(&[0x01]),
        Err(DecodeError::Truncated {
            structure: "TPM2B_PUBLIC",
            needed: 2,
            available: 1
        })
    );
    assert_eq!(
        Public::from_tpm2b(&[0, 0]),
        Err(DecodeError::InvalidValue {
            structure: "TPM2B_PUBLIC",
            field: "size",
            reason: "empty public area"
        })
    );
    let good = srk_rsa2048(vec![9; 256]).to_tpm2b();
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        Public::from_tpm2b(&trailing),
        Err(DecodeError::TrailingData {
            structure: "TPM2B_PUBLIC",
            len: 1
        })
    );
    // A TPM2B whose size covers one byte more than the TPMT_PUBLIC inside it.
    let mut inner = good[2..].to_vec();
    inner.push(0);
    assert_eq!(
        Public::from_tpm2b(&tpm2b(&inner)),
        Err(DecodeError::TrailingData {
            structure: "TPMT_PUBLIC",
            len: 1
        })
    );
    // SYMCIPHER objects are not part of this protocol.
    let mut symcipher = good[2..].to_vec();
    symcipher[..2].copy_from_slice(&0x0025u16.to_be_bytes());
    assert_eq!(
        Public::from_tpmt(&symcipher),
        Err(DecodeError::UnsupportedAlgorithm {
            structure: "TPMT_PUBLIC",
            field: "type",
            value: 0x0025
        })
    );
    // XOR is no TPMT_SYM_DEF_OBJECT algorithm.
    let mut xor = good[2..].to_vec();
    let sym_at = 2 + 2 + 4 + 2; // type, nameAlg, attributes, empty authPolicy
    xor[sym_at..sym_at + 2].copy_from_slice(&0x000Au16.to_be_bytes());
    assert_eq!(
        Public::from_tpmt(&xor),
        Err(DecodeError::UnsupportedAlgorithm {
            structure: "TPMT_PUBLIC",
            field: "symmetric",
            value: 0x000A
        })
    );
    // An unknown RSA scheme.
    let mut scheme = good[2..].to_vec();
    scheme[sym_at + 6..sym_at + 8].copy_from_slice(&0x7777u16.to_be_bytes());
    assert_eq!(
        Public::from_tpmt(&scheme),
        Err(DecodeError::UnsupportedAlgorithm {
            structure: "TPMT_PUBLIC",
            field: "scheme",
            value: 0x7777
        })
    );
}

#[test]
fn ecc_public_areas_parse_and_round_trip_and_a_point_off_the_curve_receives_nothing() {
    // The TCG default ECC P-256 EK (EK Credential Profile, template L-2).
    let ecc = Public {
        name_alg: TPM_ALG_SHA256,
        object_attributes: EK_ATTRIBUTES,
        auth_policy: EK_POLICY_SECRET_ENDORSEMENT.to_vec(),
        parameters: PublicParameters::Ecc {
            symmetric: Some(SymDefObject {
                algorithm: TPM_ALG_AES,
                key_bits: 128,
                mode: TPM_ALG_CFB,
            }),
            scheme: Scheme::null(),
            curve_id: 0x0003,
            kdf: Scheme {
                scheme: TPM_ALG_NULL,
                details: vec![],
            },
            x: vec![0x11; 32],
            y: vec![0x22; 32],
        },
    };
    let bytes = ecc.to_tpm2b();
    assert_eq!(Public::from_tpm2b(&bytes).expect("ECC"), ecc);
    assert!(matches!(
        ecc.seed_key("EK"),
        Err(CryptoError::UnsuitableKey {
            role: "EK",
            reason: "ECC point is not on its curve"
        })
    ));
    // ECDAA carries two detail words; points are bounded by MAX_ECC_KEY_BYTES (66).
    let mut ecdaa = ecc.clone();
    if let PublicParameters::Ecc { scheme, x, .. } = &mut ecdaa.parameters {
        *scheme = Scheme {
            scheme: 0x001A,
            details: vec![TPM_ALG_SHA256, 1],
        };
        *x = vec![0x33; 66];
    }
    assert_eq!(Public::from_tpm2b(&ecdaa.to_tpm2b()).expect("ECDAA"), ecdaa);
    if let PublicParameters::Ecc { x, .. } = &mut ecdaa.parameters {
        *x = vec![0x33; 67];
    }
    assert_eq!(
        Public::from_tpm2b(&ecdaa.to_tpm2b()),
        Err(too_large("TPMT_PUBLIC", 66, 67))
    );
}

#[test]
fn sensitive_boundaries_and_type() {
    let sensitive = |key_len: usize| KeyedHashSensitive {
        auth_value: vec![].into(),
        seed_value: vec![1; 32].into(),
        key: vec![2; key_len].into(),
    };
    let at_max = sensitive(128).to_tpmt();
    assert_eq!(
        KeyedHashSensitive::from_tpmt(&at_max).expect("128-byte key"),
        sensitive(128)
    );
    assert_eq!(
        KeyedHashSensitive::from_tpmt(&sensitive(129).to_tpmt()),
        Err(too_large("TPMT_SENSITIVE", 128, 129))
    );
    let mut rsa = at_max.to_vec();
    rsa[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    assert_eq!(
        KeyedHashSensitive::from_tpmt(&rsa),
        Err(DecodeError::UnsupportedAlgorithm {
            structure: "TPMT_SENSITIVE",
            field: "sensitiveType",
            value: 1
        })
    );
}

#[test]
fn blob_layout_rules() {
    let v = vector("software_device.json");
    let bytes = hex_field(&v, "authentication_key");
    let blob = AuthenticationKey::from_bytes(&bytes).expect("six fields");
    // The sixth field is an empty TPM2B_DATA.
    assert_eq!(&bytes[bytes.len() - 2..], &[0, 0]);
    // Five fields (as aziot-tpmd reads them) are accepted too.
    assert_eq!(
        AuthenticationKey::from_bytes(&bytes[..bytes.len() - 2]).expect("five"),
        blob
    );
    // A non-empty encUriData is carried, anything after it is refused.
    let mut with_uri = bytes[..bytes.len() - 2].to_vec();
    with_uri.extend_from_slice(&tpm2b(b"uri"));
    assert_eq!(
        AuthenticationKey::from_bytes(&with_uri)
            .expect("uri")
            .enc_uri_data
            .body(),
        b"uri"
    );
    with_uri.push(0);
    assert_eq!(
        AuthenticationKey::from_bytes(&with_uri),
        Err(DecodeError::TrailingData {
            structure: "authenticationKey",
            len: 1
        })
    );
    // The public area must be a KEYEDHASH object.
    let mut rsa_public = blob.clone();
    rsa_public.public = srk_rsa2048(vec![1; 256]);
    assert_eq!(
        AuthenticationKey::from_bytes(&rsa_public.to_bytes()),
        Err(DecodeError::InvalidValue {
            structure: "authenticationKey",
            field: "public",
            reason: "not a KEYEDHASH object"
        })
    );
}
