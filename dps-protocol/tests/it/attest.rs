//! Quote verification (`attest`): a quote signed by a restricted attestation key is accepted,
//! and each of the forged, stale, foreign and mis-selected cases is refused with its own named
//! error. The TPM side is played in software here (ring signs what a TPM would); the swtpm and
//! tpm2-tools cases belong to the device client's tests.

use dps_protocol::attest::{
    check_attestation_key, verify_quote, AttestError, PcrSelection, PcrValue, Signature,
    TPM_ECC_NIST_P256, TPM_ECC_NIST_P384, TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
};
use dps_protocol::error::DecodeError;
use dps_protocol::marshal::{put_tpm2b, put_u16, put_u32};
use dps_protocol::tpm::constants::{
    TPMA_OBJECT_DECRYPT, TPMA_OBJECT_FIXED_PARENT, TPMA_OBJECT_FIXED_TPM, TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, TPMA_OBJECT_SIGN, TPMA_OBJECT_USER_WITH_AUTH, TPM_ALG_ECDSA,
    TPM_ALG_SHA256, TPM_ALG_SHA384,
};
use dps_protocol::tpm::{Public, PublicParameters, Scheme};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair};

/// TCG's attestation key attributes.
pub(crate) const AK_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_USER_WITH_AUTH
    | TPMA_OBJECT_RESTRICTED
    | TPMA_OBJECT_SIGN;

/// An ECDSA key in software standing in for a TPM's AK: its public area and its signer.
pub(crate) struct Ak {
    pub(crate) public: Public,
    pair: EcdsaKeyPair,
    hash: u16,
}

impl Ak {
    pub(crate) fn new(p384: bool, attributes: u32) -> Self {
        let rng = SystemRandom::new();
        let (alg, curve, hash, size) = if p384 {
            (
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                TPM_ECC_NIST_P384,
                TPM_ALG_SHA384,
                48,
            )
        } else {
            (
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                TPM_ECC_NIST_P256,
                TPM_ALG_SHA256,
                32,
            )
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let public = Public {
            name_alg: hash,
            object_attributes: attributes,
            auth_policy: Vec::new(),
            parameters: PublicParameters::Ecc {
                symmetric: None,
                scheme: Scheme {
                    scheme: TPM_ALG_ECDSA,
                    details: vec![hash],
                },
                curve_id: curve,
                kdf: Scheme::null(),
                x: point[1..=size].to_vec(),
                y: point[size + 1..].to_vec(),
            },
        };
        Self { public, pair, hash }
    }

    /// The `TPMT_SIGNATURE` a TPM would return over `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        let raw = self.pair.sign(&SystemRandom::new(), message).unwrap();
        let (r, s) = raw.as_ref().split_at(raw.as_ref().len() / 2);
        Signature::Ecdsa {
            hash: self.hash,
            r: r.to_vec(),
            s: s.to_vec(),
        }
    }
}

/// `TPMS_ATTEST` bytes as a TPM writes them.
fn attest_bytes(
    magic: u32,
    kind: u16,
    nonce: &[u8],
    selection: &[(u16, &[u8])],
    digest: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, magic);
    put_u16(&mut out, kind);
    put_tpm2b(&mut out, &[0x00, 0x0b, 1, 2, 3]); // qualifiedSigner
    put_tpm2b(&mut out, nonce);
    out.extend_from_slice(&42u64.to_be_bytes()); // clock
    put_u32(&mut out, 1); // resetCount
    put_u32(&mut out, 0); // restartCount
    out.push(1); // safe
    out.extend_from_slice(&0x2024_0101u64.to_be_bytes()); // firmwareVersion
    if kind == TPM_ST_ATTEST_QUOTE {
        put_u32(&mut out, u32::try_from(selection.len()).unwrap());
        for (bank, bitmap) in selection {
            put_u16(&mut out, *bank);
            out.push(u8::try_from(bitmap.len()).unwrap());
            out.extend_from_slice(bitmap);
        }
        put_tpm2b(&mut out, digest);
    } else {
        put_tpm2b(&mut out, &[0x00, 0x0b, 9]);
        put_tpm2b(&mut out, &[0x00, 0x0b, 8]);
    }
    out
}

const NONCE: &[u8] = b"a fresh nonce of the verifier!!!";

fn pcr7() -> PcrValue {
    PcrValue {
        bank: TPM_ALG_SHA256,
        index: 7,
        value: vec![0x77; 32],
    }
}

fn sha(ak: &Ak, data: &[u8]) -> Vec<u8> {
    let alg = if ak.hash == TPM_ALG_SHA384 {
        &ring::digest::SHA384
    } else {
        &ring::digest::SHA256
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

fn asked() -> Vec<PcrSelection> {
    vec![PcrSelection {
        bank: TPM_ALG_SHA256,
        pcrs: vec![7],
    }]
}

/// A genuine quote over sha256:7 by `ak`: the attest bytes and their signature.
fn quote(ak: &Ak) -> (Vec<u8>, Signature) {
    let attest = attest_bytes(
        TPM_GENERATED_VALUE,
        TPM_ST_ATTEST_QUOTE,
        NONCE,
        &[(TPM_ALG_SHA256, &[0x80, 0, 0])],
        &sha(ak, &pcr7().value),
    );
    let signature = ak.sign(&attest);
    (attest, signature)
}

#[test]
fn a_quote_by_a_restricted_key_over_the_asked_pcrs_is_accepted() {
    for p384 in [false, true] {
        let ak = Ak::new(p384, AK_ATTRIBUTES);
        let (attest, signature) = quote(&ak);
        let parsed = verify_quote(&ak.public, &attest, &signature, NONCE, &asked(), &[pcr7()])
            .expect("accepted");
        assert_eq!(parsed.extra_data, NONCE);
        assert_eq!(parsed.clock_info.reset_count, 1);
        assert!(parsed.clock_info.safe);
    }
}

#[test]
fn a_key_that_could_sign_a_hand_made_attestation_is_refused() {
    let unrestricted = Ak::new(false, AK_ATTRIBUTES & !TPMA_OBJECT_RESTRICTED);
    let (attest, signature) = quote(&unrestricted);
    assert_eq!(
        verify_quote(
            &unrestricted.public,
            &attest,
            &signature,
            NONCE,
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::AkAttributes("not restricted"))
    );
    for (attributes, what) in [
        (AK_ATTRIBUTES & !TPMA_OBJECT_FIXED_TPM, "not fixedTPM"),
        (AK_ATTRIBUTES & !TPMA_OBJECT_FIXED_PARENT, "not fixedParent"),
        (
            AK_ATTRIBUTES & !TPMA_OBJECT_SENSITIVE_DATA_ORIGIN,
            "not sensitiveDataOrigin",
        ),
        (AK_ATTRIBUTES & !TPMA_OBJECT_SIGN, "not a signing key"),
        (AK_ATTRIBUTES | TPMA_OBJECT_DECRYPT, "a decryption key"),
    ] {
        let ak = Ak::new(false, attributes);
        assert_eq!(
            check_attestation_key(&ak.public),
            Err(AttestError::AkAttributes(what))
        );
    }
}

#[test]
fn stale_foreign_and_extended_quotes_are_refused_by_name() {
    let ak = Ak::new(false, AK_ATTRIBUTES);
    let (attest, signature) = quote(&ak);
    // An earlier challenge's nonce.
    assert_eq!(
        verify_quote(
            &ak.public,
            &attest,
            &signature,
            b"another nonce",
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::NonceMismatch)
    );
    // Signed by another TPM's key.
    let other = Ak::new(false, AK_ATTRIBUTES);
    assert_eq!(
        verify_quote(
            &other.public,
            &attest,
            &signature,
            NONCE,
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::BadSignature)
    );
    // The PCR was extended after it was pinned: the reported value no longer hashes to it.
    let extended = PcrValue {
        value: vec![0x78; 32],
        ..pcr7()
    };
    assert_eq!(
        verify_quote(
            &ak.public,
            &attest,
            &signature,
            NONCE,
            &asked(),
            &[extended]
        ),
        Err(AttestError::DigestMismatch)
    );
    assert_eq!(
        verify_quote(&ak.public, &attest, &signature, NONCE, &asked(), &[]),
        Err(AttestError::MissingPcr {
            bank: TPM_ALG_SHA256,
            index: 7
        })
    );
}

#[test]
fn mis_selected_and_malformed_attestations_are_refused_by_name() {
    let ak = Ak::new(false, AK_ATTRIBUTES);
    let (attest, signature) = quote(&ak);
    // Asked for sha384:0,1,2 on a TPM without that bank: it quotes an empty selection.
    let sha384 = vec![PcrSelection {
        bank: TPM_ALG_SHA384,
        pcrs: vec![0, 1, 2],
    }];
    let empty = attest_bytes(
        TPM_GENERATED_VALUE,
        TPM_ST_ATTEST_QUOTE,
        NONCE,
        &[],
        &sha(&ak, b""),
    );
    assert_eq!(
        verify_quote(&ak.public, &empty, &ak.sign(&empty), NONCE, &sha384, &[]),
        Err(AttestError::SelectionMismatch)
    );
    // Not TPM-generated, and not a quote.
    let forged = attest_bytes(
        0x1234_5678,
        TPM_ST_ATTEST_QUOTE,
        NONCE,
        &[(TPM_ALG_SHA256, &[0x80, 0, 0])],
        &sha(&ak, &pcr7().value),
    );
    assert_eq!(
        verify_quote(
            &ak.public,
            &forged,
            &ak.sign(&forged),
            NONCE,
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::NotTpmGenerated(0x1234_5678))
    );
    let certify = attest_bytes(TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, NONCE, &[], &[]);
    assert_eq!(
        verify_quote(
            &ak.public,
            &certify,
            &ak.sign(&certify),
            NONCE,
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::WrongType {
            expected: TPM_ST_ATTEST_QUOTE,
            got: TPM_ST_ATTEST_CERTIFY
        })
    );
    // Trailing bytes after the structure the TPM signed.
    let mut longer = attest.clone();
    longer.push(0);
    assert!(matches!(
        verify_quote(
            &ak.public,
            &longer,
            &ak.sign(&longer),
            NONCE,
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::Decode(DecodeError::TrailingData { .. }))
    ));
    // A signature in another hash than the key's scheme.
    let Signature::Ecdsa { r, s, .. } = signature else {
        unreachable!()
    };
    let sha384_signed = Signature::Ecdsa {
        hash: TPM_ALG_SHA384,
        r,
        s,
    };
    assert_eq!(
        verify_quote(
            &ak.public,
            &attest,
            &sha384_signed,
            NONCE,
            &asked(),
            &[pcr7()]
        ),
        Err(AttestError::SchemeMismatch)
    );
}

#[test]
fn signatures_parse_from_their_tpm_marshalling() {
    let mut bytes = Vec::new();
    put_u16(&mut bytes, TPM_ALG_ECDSA);
    put_u16(&mut bytes, TPM_ALG_SHA256);
    put_tpm2b(&mut bytes, &[1; 32]);
    put_tpm2b(&mut bytes, &[2; 32]);
    assert_eq!(
        Signature::parse(&bytes),
        Ok(Signature::Ecdsa {
            hash: TPM_ALG_SHA256,
            r: vec![1; 32],
            s: vec![2; 32]
        })
    );
    bytes.push(0);
    assert!(matches!(
        Signature::parse(&bytes),
        Err(DecodeError::TrailingData { .. })
    ));
}

/// RSASSA-2048/SHA-256, the fallback attestation key: the key as `ring` reads it is DER that
/// `attest` writes itself, so a signature by the `rsa` crate must verify through it.
#[test]
fn an_rsassa_attestation_key_verifies_and_refuses() {
    use dps_protocol::tpm::constants::TPM_ALG_RSASSA;
    use rsa::traits::PublicKeyParts;
    let mut rng = rand::thread_rng();
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let ak = Public {
        name_alg: TPM_ALG_SHA256,
        object_attributes: AK_ATTRIBUTES,
        auth_policy: Vec::new(),
        parameters: PublicParameters::Rsa {
            symmetric: None,
            scheme: Scheme {
                scheme: TPM_ALG_RSASSA,
                details: vec![TPM_ALG_SHA256],
            },
            key_bits: 2048,
            exponent: 0,
            modulus: private.n().to_bytes_be(),
        },
    };
    let attest = attest_bytes(
        TPM_GENERATED_VALUE,
        TPM_ST_ATTEST_QUOTE,
        NONCE,
        &[(TPM_ALG_SHA256, &[0x80, 0, 0])],
        ring::digest::digest(&ring::digest::SHA256, &pcr7().value).as_ref(),
    );
    // EMSA-PKCS1-v1_5's DigestInfo prefix for SHA-256 (RFC 8017 §9.2, note 1), then the digest.
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    digest_info.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &attest).as_ref());
    let sig = private
        .sign(rsa::Pkcs1v15Sign::new_unprefixed(), &digest_info)
        .unwrap();
    let signature = Signature::Rsassa {
        hash: TPM_ALG_SHA256,
        sig,
    };
    assert!(verify_quote(&ak, &attest, &signature, NONCE, &asked(), &[pcr7()]).is_ok());
    let mut tampered = attest.clone();
    tampered[20] ^= 1;
    assert_eq!(
        verify_quote(&ak, &tampered, &signature, NONCE, &asked(), &[pcr7()]),
        Err(AttestError::BadSignature)
    );
}

/// A quote a real TPM made (swtpm, driven by tpm2-tools; `tests/vectors/swtpm_quote.json`) is
/// accepted, and refused once its nonce or a PCR value differs.
#[test]
fn a_quote_recorded_from_swtpm_with_tpm2_tools_verifies() {
    let vector: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/swtpm_quote.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let hex = |field: &serde_json::Value| {
        data_encoding::HEXLOWER
            .decode(field.as_str().unwrap().as_bytes())
            .unwrap()
    };
    let ak = Public::from_tpm2b(&hex(&vector["ak_public"])).unwrap();
    let attest = hex(&vector["attest"]);
    let signature = Signature::parse(&hex(&vector["signature"])).unwrap();
    let nonce = hex(&vector["nonce"]);
    let selection = vec![PcrSelection {
        bank: TPM_ALG_SHA256,
        pcrs: vec![0, 7],
    }];
    let values: Vec<PcrValue> = [0u8, 7]
        .iter()
        .map(|&index| PcrValue {
            bank: TPM_ALG_SHA256,
            index,
            value: hex(&vector["pcrs"]["sha256"][index.to_string()]),
        })
        .collect();
    let parsed = verify_quote(&ak, &attest, &signature, &nonce, &selection, &values).unwrap();
    assert_eq!(parsed.extra_data, nonce);
    assert_eq!(
        verify_quote(
            &ak,
            &attest,
            &signature,
            b"an older nonce",
            &selection,
            &values
        ),
        Err(AttestError::NonceMismatch)
    );
    let mut extended = values.clone();
    extended[1].value[0] ^= 1;
    assert_eq!(
        verify_quote(&ak, &attest, &signature, &nonce, &selection, &extended),
        Err(AttestError::DigestMismatch)
    );
}
