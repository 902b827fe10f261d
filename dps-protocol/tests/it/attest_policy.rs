//! The enrollment's attestation policy (`attest::policy`) and the software device model's
//! marshalling (`Attest::to_bytes`, `Signature::to_bytes`, the AK template), held to the quote
//! swtpm made (`tests/vectors/swtpm_quote.json`).

use dps_protocol::attest::challenge;
use dps_protocol::attest::pcrs::{Bank, PcrDigest, PcrValues};
use dps_protocol::attest::policy::{judge, AttestationPolicy, Evidence, Failure, Issued};
use dps_protocol::attest::{Attest, Attested, Signature};
use dps_protocol::tpm::templates::ak_ecdsa_p256;
use dps_protocol::tpm::{Public, PublicParameters};
use serde_json::json;

struct Vector {
    ak_bytes: Vec<u8>,
    attest: Vec<u8>,
    signature: Vec<u8>,
    nonce: Vec<u8>,
    pcrs: PcrValues,
}

fn vector() -> Vector {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/swtpm_quote.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let hex = |k: &str| {
        data_encoding::HEXLOWER
            .decode(v[k].as_str().unwrap().as_bytes())
            .unwrap()
    };
    Vector {
        ak_bytes: hex("ak_public"),
        attest: hex("attest"),
        signature: hex("signature"),
        nonce: hex("nonce"),
        pcrs: serde_json::from_value(v["pcrs"].clone()).unwrap(),
    }
}

fn policy(value: serde_json::Value) -> AttestationPolicy {
    serde_json::from_value(value).unwrap()
}

/// The vector judged under `policy` with `pinned`.
fn judged(policy: &AttestationPolicy, pinned: Option<&PcrValues>) -> Result<PcrValues, Failure> {
    let v = vector();
    let hash = challenge::nonce_hash(&v.nonce);
    judge(
        policy,
        Some(Issued {
            attestation_key: &v.ak_bytes,
            nonce_hash: &hash,
        }),
        Some(Evidence {
            attest: &v.attest,
            signature: &v.signature,
            pcrs: &v.pcrs,
        }),
        &[],
        pinned,
    )
    .map(|proven| proven.pcrs)
}

#[test]
fn a_policy_is_checked_when_written() {
    let bad = [
        (
            json!({"mode": "require", "pcrs": {"sha256": {"24": "00"}}}),
            "0 to 23",
        ),
        (
            json!({"mode": "require", "pcrs": {"sha256": {"7": "00"}}}),
            "32 bytes",
        ),
        (
            json!({"mode": "require", "quote": {"sha256": []}}),
            "selects no PCR",
        ),
        (
            json!({"mode": "require", "quote": {"sha256": [0]}, "pcrs": {"sha256": {"7": "00".repeat(32)}}}),
            "not quoted",
        ),
    ];
    for (value, expected) in bad {
        let err = policy(value.clone()).check().unwrap_err().to_string();
        assert!(err.contains(expected), "{value}: {err}");
    }
    for unknown in [
        json!({"mode": "always"}),
        json!({"mode": "report", "pcr": {}}),
    ] {
        assert!(serde_json::from_value::<AttestationPolicy>(unknown).is_err());
    }
    // What is quoted: `quote`, else the PCRs with expected values, else SHA-256 0–7.
    assert_eq!(
        policy(json!({"mode": "report"})).selection()[&Bank::Sha256].len(),
        8
    );
    let named = policy(json!({"mode": "report", "pcrs": {"sha256": {"7": "00".repeat(32)}}}));
    named.check().unwrap();
    assert_eq!(named.selection()[&Bank::Sha256], [7].into());
}

#[test]
fn expected_and_pinned_values_are_required_of_the_quote() {
    let v = vector();
    let pcr7 = v.pcrs[&Bank::Sha256][&7].clone();
    let selection = json!({"sha256": [0, 7]});
    let expecting = |value: &PcrDigest| {
        policy(json!({"mode": "require", "quote": selection,
                      "pcrs": {"sha256": {"7": data_encoding::HEXLOWER.encode(&value.0)}}}))
    };
    assert_eq!(judged(&expecting(&pcr7), None).unwrap(), v.pcrs);
    let other = PcrDigest(vec![0x77; 32]);
    assert_eq!(
        judged(&expecting(&other), None),
        Err(Failure::PcrMismatch {
            bank: Bank::Sha256,
            index: 7
        })
    );
    let plain =
        policy(json!({"mode": "require", "quote": selection, "pinOnFirstRegistration": true}));
    let mut pinned = v.pcrs.clone();
    assert_eq!(judged(&plain, Some(&pinned)).unwrap(), v.pcrs);
    pinned.get_mut(&Bank::Sha256).unwrap().insert(0, other);
    assert_eq!(
        judged(&plain, Some(&pinned)),
        Err(Failure::PcrMismatch {
            bank: Bank::Sha256,
            index: 0
        })
    );
    // The default selection (0–7) is not what the vector quoted.
    assert_eq!(
        judged(&policy(json!({"mode": "require"})), None),
        Err(Failure::SelectionMismatch)
    );
}

#[test]
fn the_software_model_marshals_as_swtpm_does() {
    let v = vector();
    let parsed = Attest::parse(&v.attest).unwrap();
    assert!(matches!(parsed.attested, Attested::Quote { .. }));
    assert_eq!(parsed.to_bytes(), v.attest);
    let signature = Signature::parse(&v.signature).unwrap();
    assert_eq!(signature.to_bytes(), v.signature);
    // tpm2_createak's ECDSA P-256 AK is the template this crate writes, but for its point.
    let ak = Public::from_tpm2b(&v.ak_bytes).unwrap();
    let PublicParameters::Ecc { x, y, .. } = &ak.parameters else {
        panic!("an ECC AK")
    };
    assert_eq!(ak_ecdsa_p256(x.clone(), y.clone()), ak);
}
