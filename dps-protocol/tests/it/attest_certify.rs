//! `TPM2_Certify` verification (`attest::verify_certify`): the proof that a key lives in the TPM
//! beside the bound AK. A certification of a TPM-resident signing key by a restricted AK over
//! the verifier's nonce is accepted; the stale, foreign, mis-named, duplicable and
//! restricted/decrypting cases are refused by name. The TPM side is played in software (ring).

use dps_protocol::attest::{
    verify_certify, Attest, AttestError, Attested, ClockInfo, TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY, TPM_ST_ATTEST_QUOTE,
};
use dps_protocol::tpm::constants::{
    TPMA_OBJECT_DECRYPT, TPMA_OBJECT_FIXED_PARENT, TPMA_OBJECT_FIXED_TPM, TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, TPMA_OBJECT_SIGN, TPMA_OBJECT_USER_WITH_AUTH,
};
use dps_protocol::tpm::Name;

use super::attest::{Ak, AK_ATTRIBUTES};

/// What a TPM-resident signing key for TLS carries.
const KEY_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | TPMA_OBJECT_USER_WITH_AUTH
    | TPMA_OBJECT_SIGN;

const NONCE: &[u8] = b"the certification's fresh nonce!";

/// `TPMS_ATTEST` of kind `kind` certifying the object named `name`, over `nonce`.
fn certify_info(kind: u16, nonce: &[u8], name: &Name) -> Vec<u8> {
    Attest {
        magic: TPM_GENERATED_VALUE,
        kind,
        qualified_signer: vec![0, 0x0b, 1],
        extra_data: nonce.to_vec(),
        clock_info: ClockInfo {
            clock: 7,
            reset_count: 0,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 1,
        attested: if kind == TPM_ST_ATTEST_CERTIFY {
            Attested::Certify {
                name: name.as_bytes().to_vec(),
                qualified_name: name.as_bytes().to_vec(),
            }
        } else {
            Attested::Quote {
                pcr_select: Vec::new(),
                pcr_digest: vec![0; 32],
            }
        },
    }
    .to_bytes()
}

fn check(
    ak: &Ak,
    attest: &[u8],
    nonce: &[u8],
    key: &dps_protocol::tpm::Public,
) -> Result<Attest, AttestError> {
    verify_certify(&ak.public, attest, &ak.sign(attest), |e| e == nonce, key)
}

#[test]
fn a_resident_key_certified_by_the_ak_over_the_nonce_is_accepted() {
    for p384 in [false, true] {
        let ak = Ak::new(p384, AK_ATTRIBUTES);
        let key = Ak::new(true, KEY_ATTRIBUTES).public;
        let attest = certify_info(TPM_ST_ATTEST_CERTIFY, NONCE, &Name::of(&key).unwrap());
        let parsed = check(&ak, &attest, NONCE, &key).unwrap();
        assert_eq!(parsed.extra_data, NONCE);
    }
}

#[test]
fn stale_mis_named_foreign_and_unfit_certifications_are_refused_by_name() {
    let ak = Ak::new(false, AK_ATTRIBUTES);
    let key = Ak::new(true, KEY_ATTRIBUTES).public;
    let name = Name::of(&key).unwrap();
    let attest = certify_info(TPM_ST_ATTEST_CERTIFY, NONCE, &name);
    assert_eq!(
        check(&ak, &attest, b"an earlier nonce", &key).unwrap_err(),
        AttestError::NonceMismatch
    );
    // Another key than the one certified (the CSR's key is not the TPM's).
    let other = Ak::new(true, KEY_ATTRIBUTES).public;
    assert_eq!(
        check(&ak, &attest, NONCE, &other).unwrap_err(),
        AttestError::NameMismatch
    );
    // A quote is not a certification.
    let quote = certify_info(TPM_ST_ATTEST_QUOTE, NONCE, &name);
    assert!(matches!(
        check(&ak, &quote, NONCE, &key).unwrap_err(),
        AttestError::WrongType { .. }
    ));
    // Signed by another AK than the one bound.
    let foreign = Ak::new(false, AK_ATTRIBUTES);
    assert_eq!(
        verify_certify(
            &ak.public,
            &attest,
            &foreign.sign(&attest),
            |e| e == NONCE,
            &key
        )
        .unwrap_err(),
        AttestError::BadSignature
    );
    // Certified keys that could leave the TPM, or are not plain signing keys.
    for (flip, reason) in [
        (TPMA_OBJECT_FIXED_TPM, "not fixedTPM"),
        (TPMA_OBJECT_FIXED_PARENT, "not fixedParent"),
        (TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, "not sensitiveDataOrigin"),
        (TPMA_OBJECT_RESTRICTED, "restricted"),
        (TPMA_OBJECT_DECRYPT, "a decryption key"),
    ] {
        let mut unfit = key.clone();
        unfit.object_attributes ^= flip;
        let attest = certify_info(TPM_ST_ATTEST_CERTIFY, NONCE, &Name::of(&unfit).unwrap());
        assert_eq!(
            check(&ak, &attest, NONCE, &unfit).unwrap_err(),
            AttestError::CertifiedKeyAttributes(reason)
        );
    }
    // A certifier that is not a restricted AK (it could sign a hand-made certification).
    let unrestricted = Ak::new(false, AK_ATTRIBUTES & !TPMA_OBJECT_RESTRICTED);
    assert_eq!(
        check(&unrestricted, &attest, NONCE, &key).unwrap_err(),
        AttestError::AkAttributes("not restricted")
    );
}
