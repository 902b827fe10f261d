//! Remote attestation end to end (docs/protocol.md §10): a real TPM (swtpm) makes the
//! attestation key, activates the service's credential and quotes; the real service (in
//! process, real Postgres) judges the quote against the enrollment's `attestationPolicy`. Each
//! refusal is read as the service's named verdict, and leaves nothing written.

use std::process::Command;

use device_client::provision::{self, Stage};
use device_client::tpm::Tpm;
use dps_protocol::attest::pcrs::{Bank, PcrSelect};
use dps_protocol::attest::policy::Failure;
use dps_protocol::wire::{AttestationChallenge, Quote, RegistrationStatus};
use provisioning_service::registration::{Refusal, StepError};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use test_support::{now, Device, TestApp, TestTpm};

use super::provision::{device_client, register_args};

/// Enrolls `device` with `policy` as its `attestationPolicy`.
async fn enroll(app: &TestApp, device: &Device, policy: Value) {
    let mut e = test_support::enrollment(&device.registration_id, &device.ek);
    e.extra.insert("attestationPolicy".to_owned(), policy);
    app.enroll_with(e).await;
}

/// What TPM `t` presents as an attesting device: its keys and its attestation key.
fn attesting(t: &mut TestTpm) -> Device {
    let mut device = Device::of(&mut t.tpm);
    device.attestation_key = Some(t.tpm.attestation_key(None).unwrap());
    device
}

/// The challenge, imported; the quote `answer` makes of its attestation half set on `device`;
/// a SAS token signed with the imported key.
async fn answered(
    app: &TestApp,
    t: &mut TestTpm,
    device: &mut Device,
    answer: impl FnOnce(&mut Tpm, &AttestationChallenge) -> Option<Quote>,
) -> String {
    let challenge = app.full_challenge(device).await;
    t.tpm
        .import_authentication_key(&challenge.authentication_key.0)
        .unwrap();
    device.quote = challenge
        .attestation
        .as_ref()
        .and_then(|a| answer(&mut t.tpm, a));
    device.sas(&mut t.tpm, now() + 60)
}

#[allow(clippy::unnecessary_wraps)] // the shape of every answer here
fn honest(tpm: &mut Tpm, challenge: &AttestationChallenge) -> Option<Quote> {
    Some(tpm.answer_attestation(challenge).unwrap())
}

/// The registration state as the service API shows it.
async fn registration(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .admin(Method::GET, &format!("/registrations/{id}"), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body
}

/// The refusal's attestation failure.
fn failure(result: Result<impl std::fmt::Debug, StepError>) -> Failure {
    match result {
        Err(StepError::Refused(Refusal::Attestation(f))) => f,
        other => panic!("expected an attestation refusal, got {other:?}"),
    }
}

async fn registrations(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM registrations")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Accepted: the client's own AK (ECDSA P-256 on swtpm) and quote of SHA-256 PCRs 0–7 pass a
/// `require` policy that pins on first use; the service API shows the verdict, the AK's name
/// and the pinned values, and the metric counts it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_attested_registration_is_assigned_and_its_values_pinned(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = attesting(&mut t);
    enroll(
        &app,
        &device,
        json!({"mode": "require", "pinOnFirstRegistration": true}),
    )
    .await;
    let token = answered(&app, &mut t, &mut device, honest).await;
    let status = app.register_verdict(&device, &token).await.unwrap();
    assert_eq!(status.status, RegistrationStatus::Assigned);

    let state = registration(&app, &device.registration_id).await;
    let record = &state["attestation"];
    assert_eq!(record["verdict"], "pinned", "{state}");
    assert_eq!(record["pcrs"]["sha256"].as_object().unwrap().len(), 8);
    assert_eq!(record["pinnedPcrs"], record["pcrs"]);
    assert!(record["attestationKeyName"]
        .as_str()
        .unwrap()
        .starts_with("000b"));
    // The device API's registration state carries none of it.
    assert!(status.registration_state.unwrap().attestation.is_none());
    let metrics = app.metrics_text();
    assert!(
        metrics.contains(r#"dps_attestation_verdicts_total{verdict="pinned"} 1"#),
        "{metrics}"
    );
}

/// Refused: PCR 7 extended after the values were pinned (`tpm2_pcrextend`, an implementation
/// not ours, on the same swtpm); the refusal names the PCR and writes nothing. Re-pinning
/// through the service API lets the device in again.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_pcr_extended_after_pinning_is_refused_naming_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = attesting(&mut t);
    enroll(
        &app,
        &device,
        json!({"mode": "require", "pinOnFirstRegistration": true}),
    )
    .await;
    let token = answered(&app, &mut t, &mut device, honest).await;
    app.register_verdict(&device, &token).await.unwrap();

    // swtpm serves one client at a time: the context goes while tpm2-tools extends PCR 7.
    let tcti = t.swtpm.tcti();
    let TestTpm { tpm, swtpm } = t;
    drop(tpm);
    let out = Command::new("tpm2_pcrextend")
        .args([
            "--tcti",
            &tcti,
            "7:sha256=0000000000000000000000000000000000000000000000000000000000000007",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut t = TestTpm::on(swtpm);

    let before = app.snapshot().await;
    let token = answered(&app, &mut t, &mut device, honest).await;
    let after_challenge = app.snapshot().await;
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::PcrMismatch {
            bank: Bank::Sha256,
            index: 7
        }
    );
    assert_eq!(
        app.snapshot().await,
        after_challenge,
        "the refusal wrote nothing"
    );
    assert_ne!(before, after_challenge);

    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/registrations/{}/attestationPins", device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    let token = answered(&app, &mut t, &mut device, honest).await;
    app.register_verdict(&device, &token).await.unwrap();
    let state = registration(&app, &device.registration_id).await;
    assert_eq!(state["attestation"]["verdict"], "pinned", "{state}");
}

/// Refused: a quote of other PCRs than asked (SelectionMismatch), one carrying an earlier
/// challenge's nonce (QuoteStale), one with a nonce no challenge carried (AkNotBound); and a
/// DPS client that shows no attestation key (QuoteMissing).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn mis_selected_stale_unbound_and_missing_quotes_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mut t = TestTpm::fresh();
    let mut device = attesting(&mut t);
    enroll(&app, &device, json!({"mode": "require"})).await;

    let token = answered(&app, &mut t, &mut device, |tpm, challenge| {
        let mut other = challenge.clone();
        other.pcr_selection = PcrSelect::from([(Bank::Sha256, [0, 1].into())]);
        Some(tpm.answer_attestation(&other).unwrap())
    })
    .await;
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::SelectionMismatch
    );

    // The answer to one challenge, sent with the key of the next.
    let mut earlier = None;
    answered(&app, &mut t, &mut device, |tpm, challenge| {
        earlier = Some(tpm.answer_attestation(challenge).unwrap());
        None
    })
    .await;
    let token = answered(&app, &mut t, &mut device, |_, _| earlier).await;
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::QuoteStale
    );

    let token = answered(&app, &mut t, &mut device, |tpm, challenge| {
        Some(tpm.quote(&[7; 32], &challenge.pcr_selection).unwrap())
    })
    .await;
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::AkNotBound
    );

    let mut dps_client = Device::of(&mut t.tpm);
    let token = answered(&app, &mut t, &mut dps_client, honest).await;
    assert_eq!(
        failure(app.register_verdict(&dps_client, &token).await),
        Failure::QuoteMissing
    );
    assert_eq!(
        registrations(&pool).await,
        0,
        "no refusal wrote a registration"
    );
    let metrics = app.metrics_text();
    assert!(
        metrics.contains(r#"dps_attestation_verdicts_total{verdict="refused"} 4"#),
        "{metrics}"
    );
}

/// The impostor: TPM A shows the AK of TPM B. Only B holds that key, and only A the EK, so
/// neither can activate the credential: A's TPM refuses, and B's quote with a guessed nonce is
/// refused as not bound.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_attestation_key_of_another_tpm_is_not_bound(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut a = TestTpm::fresh();
    let mut b = TestTpm::fresh();
    let mut device = Device::of(&mut a.tpm);
    device.attestation_key = Some(b.tpm.attestation_key(None).unwrap());
    a.tpm.attestation_key(None).unwrap();
    enroll(&app, &device, json!({"mode": "require"})).await;
    let mut selection = None;
    let token = answered(&app, &mut a, &mut device, |tpm, challenge| {
        assert!(
            tpm.answer_attestation(challenge).is_err(),
            "A activated B's credential"
        );
        selection = Some(challenge.pcr_selection.clone());
        None
    })
    .await;
    device.quote = Some(b.tpm.quote(&[1; 32], &selection.unwrap()).unwrap());
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::AkNotBound
    );
}

/// `report` records a failed verdict and assigns; `none` ignores the attestation key and
/// records nothing.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn report_records_and_none_ignores(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = attesting(&mut t);
    enroll(&app, &device, json!({"mode": "report"})).await;
    let token = answered(&app, &mut t, &mut device, |_, _| None).await;
    let status = app.register_verdict(&device, &token).await.unwrap();
    assert_eq!(status.status, RegistrationStatus::Assigned);
    let state = registration(&app, &device.registration_id).await;
    assert_eq!(state["attestation"]["verdict"], "failed", "{state}");
    assert!(state["attestation"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("QuoteMissing"));

    enroll(&app, &device, json!({"mode": "none"})).await;
    let challenge = app.full_challenge(&device).await;
    assert!(challenge.attestation.is_none());
}

/// The binary: `device-client register` attests without a flag when the policy asks, and
/// `--no-attest` is refused under `require`.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_client_attests_by_default_and_opts_out_with_no_attest(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let swtpm = test_support::Swtpm::start();
    let tcti = swtpm.tcti();
    let device = Device::of(&mut Tpm::open(&tcti).unwrap());
    enroll(&app, &device, json!({"mode": "require"})).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let args = |extra: &str| {
        let mut args = register_args(&app, &tcti, &state);
        args.push(extra.to_owned());
        args
    };
    let out = device_client(args("--no-attest")).await;
    assert!(!out.status.success(), "{out:?}");
    let out = device_client(args("--force")).await;
    assert!(out.status.success(), "{out:?}");
    assert!(matches!(
        provision::load_state(&state).unwrap().stage,
        Stage::Assigned { .. }
    ));
    let record = registration(&app, &device.registration_id).await;
    assert_eq!(record["attestation"]["verdict"], "verified", "{record}");
}

/// Runs a tpm2-tools command against `tcti`, returning its stdout.
fn tpm2(tcti: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(["--tcti", tcti])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SHA-256 values `tpm2_pcrread` prints (`  7 : 0x3D45…`).
fn pcrread(tcti: &str, indices: &[u8]) -> dps_protocol::attest::pcrs::PcrValues {
    let list: Vec<String> = indices.iter().map(u8::to_string).collect();
    let text = tpm2(
        tcti,
        "tpm2_pcrread",
        &[&format!("sha256:{}", list.join(","))],
    );
    let values = text
        .lines()
        .filter_map(|line| {
            let (index, value) = line.trim().split_once(" : 0x")?;
            Some((
                index.trim().parse().ok()?,
                dps_protocol::attest::pcrs::PcrDigest(hex::decode(value.trim()).ok()?),
            ))
        })
        .collect();
    [(Bank::Sha256, values)].into()
}

/// Accepted: an AK made, activated and quoted by **tpm2-tools** (`tpm2_createak`,
/// `tpm2_activatecredential` under `PolicySecret(endorsement)`, `tpm2_quote`), an
/// implementation not ours; the service's credential and its judgement agree with it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_ak_and_quote_made_with_tpm2_tools_are_accepted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let t = TestTpm::fresh();
    let tcti = t.swtpm.tcti();
    let TestTpm { mut tpm, swtpm } = t;
    let mut device = Device::of(&mut tpm);
    drop(tpm);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();
    tpm2(
        &tcti,
        "tpm2_createak",
        &[
            "-C",
            "0x81010001",
            "-c",
            &file("ak.ctx"),
            "-G",
            "ecc",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-u",
            &file("ak.pub"),
        ],
    );
    tpm2(
        &tcti,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", &file("ak.ctx"), "0x81010002"],
    );
    // swtpm has no resource manager: what tpm2_createak left loaded would fill its slots.
    tpm2(&tcti, "tpm2_flushcontext", &["-t"]);
    device.attestation_key = Some(std::fs::read(file("ak.pub")).unwrap());
    enroll(
        &app,
        &device,
        json!({"mode": "require", "quote": {"sha256": [0, 7]}}),
    )
    .await;

    let challenge = app.full_challenge(&device).await;
    let attestation = challenge.attestation.expect("an attestation challenge");
    // tpm2-tools' credential file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    let mut credential = vec![0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1];
    credential.extend_from_slice(&attestation.credential_blob.0);
    credential.extend_from_slice(&attestation.encrypted_secret.0);
    std::fs::write(file("cred.blob"), credential).unwrap();
    tpm2(
        &tcti,
        "tpm2_startauthsession",
        &["--policy-session", "-S", &file("session.ctx")],
    );
    tpm2(
        &tcti,
        "tpm2_policysecret",
        &["-S", &file("session.ctx"), "-c", "e"],
    );
    tpm2(
        &tcti,
        "tpm2_activatecredential",
        &[
            "-c",
            "0x81010002",
            "-C",
            "0x81010001",
            "-i",
            &file("cred.blob"),
            "-o",
            &file("nonce"),
            "-P",
            &format!("session:{}", file("session.ctx")),
        ],
    );
    tpm2(&tcti, "tpm2_flushcontext", &[&file("session.ctx")]);
    let nonce = std::fs::read(file("nonce")).unwrap();
    tpm2(
        &tcti,
        "tpm2_quote",
        &[
            "-c",
            "0x81010002",
            "-l",
            "sha256:0,7",
            "-q",
            &hex::encode(&nonce),
            "-m",
            &file("quote.msg"),
            "-s",
            &file("quote.sig"),
            "-g",
            "sha256",
        ],
    );
    device.quote = Some(Quote {
        attest: dps_protocol::wire::Base64Bytes(std::fs::read(file("quote.msg")).unwrap()),
        signature: dps_protocol::wire::Base64Bytes(std::fs::read(file("quote.sig")).unwrap()),
        pcrs: pcrread(&tcti, &[0, 7]),
    });

    // The DPS leg with our client's TPM code, as a device that attests with tpm2-tools would.
    let mut t = TestTpm::on(swtpm);
    t.tpm
        .import_authentication_key(&challenge.authentication_key.0)
        .unwrap();
    let token = device.sas(&mut t.tpm, now() + 60);
    let status = app.register_verdict(&device, &token).await.unwrap();
    assert_eq!(status.status, RegistrationStatus::Assigned);
    let state = registration(&app, &device.registration_id).await;
    assert_eq!(state["attestation"]["verdict"], "verified", "{state}");
}

/// The forgery the restricted attribute exists to stop: a key in the enrolled TPM, bound to the
/// EK by activation like an AK but **unrestricted**, signs a hand-made `TPMS_ATTEST` (the right
/// nonce, a digest of the "golden" PCR 7 the policy expects) with `tpm2_sign`. The signature
/// verifies and the digest matches the claimed values; only the AK's attributes refuse it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_hand_made_attestation_signed_by_an_unrestricted_key_is_refused(pool: PgPool) {
    use dps_protocol::attest::pcrs::PcrDigest;
    let app = TestApp::spawn(pool).await;
    let t = TestTpm::fresh();
    let tcti = t.swtpm.tcti();
    let TestTpm { mut tpm, swtpm } = t;
    let mut device = Device::of(&mut tpm);
    drop(tpm);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();
    tpm2(
        &tcti,
        "tpm2_create",
        &[
            "-C",
            "0x81000001",
            "-G",
            "ecc256:ecdsa-sha256",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
            "-u",
            &file("key.pub"),
            "-r",
            &file("key.priv"),
        ],
    );
    tpm2(
        &tcti,
        "tpm2_load",
        &[
            "-C",
            "0x81000001",
            "-u",
            &file("key.pub"),
            "-r",
            &file("key.priv"),
            "-c",
            &file("key.ctx"),
        ],
    );
    tpm2(
        &tcti,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", &file("key.ctx"), "0x81010002"],
    );
    tpm2(&tcti, "tpm2_flushcontext", &["-t"]);
    let golden = PcrDigest(vec![0x60; 32]);
    device.attestation_key = Some(std::fs::read(file("key.pub")).unwrap());
    enroll(
        &app,
        &device,
        json!({
            "mode": "require", "quote": {"sha256": [0, 7]},
            "pcrs": {"sha256": {"7": hex::encode(&golden.0)}},
        }),
    )
    .await;

    // The key activates the credential (it is in the TPM, its name is bound) and quotes.
    let mut t = TestTpm::on(swtpm);
    let mut genuine = None;
    let token = answered(&app, &mut t, &mut device, |tpm, challenge| {
        genuine = Some(tpm.answer_attestation(challenge).unwrap());
        None
    })
    .await;
    let genuine = genuine.unwrap();
    // The same attestation, claiming the golden PCR 7: the digest is the last 32 bytes.
    let mut claimed = genuine.pcrs.clone();
    claimed.get_mut(&Bank::Sha256).unwrap().insert(7, golden);
    let concatenated: Vec<u8> = claimed[&Bank::Sha256]
        .values()
        .flat_map(|v| v.0.clone())
        .collect();
    let mut forged = genuine.attest.0.clone();
    let at = forged.len() - 32;
    forged[at..].copy_from_slice(&dps_protocol::crypto::sha256(&[&concatenated]));
    let TestTpm { tpm, swtpm } = t;
    drop(tpm);
    std::fs::write(file("forged"), &forged).unwrap();
    tpm2(
        &tcti,
        "tpm2_sign",
        &[
            "-c",
            "0x81010002",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-o",
            &file("forged.sig"),
            &file("forged"),
        ],
    );
    let signature = std::fs::read(file("forged.sig")).unwrap();
    let key =
        dps_protocol::tpm::Public::from_tpm2b(device.attestation_key.as_ref().unwrap()).unwrap();
    dps_protocol::attest::verify_signature(
        &key,
        &forged,
        &dps_protocol::attest::Signature::parse(&signature).unwrap(),
    )
    .expect("the forgery is validly signed");
    device.quote = Some(Quote {
        attest: dps_protocol::wire::Base64Bytes(forged),
        signature: dps_protocol::wire::Base64Bytes(signature),
        pcrs: claimed,
    });
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::AkAttributes("not restricted")
    );
    drop(swtpm);
}

/// AK attributes wrong: the client's real AK shown with fixedTPM cleared, or decrypt set (a key
/// that could leave its TPM, or decrypt what it should only sign), is refused by name before
/// anything it signed is read.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_attestation_key_with_wrong_attributes_is_refused(pool: PgPool) {
    use dps_protocol::tpm::constants::{TPMA_OBJECT_DECRYPT, TPMA_OBJECT_FIXED_TPM};
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = attesting(&mut t);
    enroll(&app, &device, json!({"mode": "require"})).await;
    let real =
        dps_protocol::tpm::Public::from_tpm2b(device.attestation_key.as_ref().unwrap()).unwrap();
    for (flip, reason) in [
        (TPMA_OBJECT_FIXED_TPM, "not fixedTPM"),
        (TPMA_OBJECT_DECRYPT, "a decryption key"),
    ] {
        let mut shown = real.clone();
        shown.object_attributes ^= flip;
        device.attestation_key = Some(shown.to_tpm2b());
        let token = answered(&app, &mut t, &mut device, |tpm, challenge| {
            Some(tpm.quote(&[3; 32], &challenge.pcr_selection).unwrap())
        })
        .await;
        assert_eq!(
            failure(app.register_verdict(&device, &token).await),
            Failure::AkAttributes(reason)
        );
    }
}

/// A bank the TPM has not allocated (swtpm allocates SHA-256 only): the client says so and
/// registers without a quote (refused under `require` as QuoteMissing); a TPM made to quote it
/// anyway returns the bank empty, refused as SelectionMismatch.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_bank_the_tpm_has_not_allocated_is_never_accepted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = attesting(&mut t);
    enroll(
        &app,
        &device,
        json!({"mode": "require", "quote": {"sha384": [0, 1, 2, 3, 4, 5, 6, 7]}}),
    )
    .await;
    let mut refused = None;
    let token = answered(&app, &mut t, &mut device, |tpm, challenge| {
        refused = Some(tpm.answer_attestation(challenge).unwrap_err().to_string());
        None
    })
    .await;
    let refused = refused.unwrap();
    assert!(
        refused.contains("PCR bank sha384, which this TPM has not allocated (allocated: sha256)"),
        "{refused}"
    );
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::QuoteMissing
    );

    let token = answered(&app, &mut t, &mut device, |tpm, challenge| {
        // The nonce, from a quote of an allocated bank; then the asked bank, quoted as is.
        let mut allocated = challenge.clone();
        allocated.pcr_selection = PcrSelect::from([(Bank::Sha256, [0].into())]);
        let quote = tpm.answer_attestation(&allocated).unwrap();
        let nonce = dps_protocol::attest::Attest::parse(&quote.attest.0)
            .unwrap()
            .extra_data;
        let empty = tpm.quote(&nonce, &challenge.pcr_selection).unwrap();
        assert!(empty.pcrs.is_empty());
        Some(empty)
    })
    .await;
    assert_eq!(
        failure(app.register_verdict(&device, &token).await),
        Failure::SelectionMismatch
    );
}

/// `--attestation-key`: a P-384 AK (SHA-384 name, SHA-384 quote digest over the SHA-256 bank)
/// and an RSASSA-2048 AK are each activated, quoted and verified end to end.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn p384_and_rsa_attestation_keys_are_verified(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (algorithm, name_alg) in [("ecdsa-p384", "000c"), ("rsa2048", "000b")] {
        let swtpm = test_support::Swtpm::start();
        let tcti = swtpm.tcti();
        let device = Device::of(&mut Tpm::open(&tcti).unwrap());
        enroll(&app, &device, json!({"mode": "require"})).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let mut args = register_args(&app, &tcti, &state);
        args.extend(["--attestation-key".to_owned(), algorithm.to_owned()]);
        let out = device_client(args).await;
        assert!(out.status.success(), "{algorithm}: {out:?}");
        let record = registration(&app, &device.registration_id).await;
        assert_eq!(record["attestation"]["verdict"], "verified", "{record}");
        let name = record["attestation"]["attestationKeyName"]
            .as_str()
            .unwrap();
        assert!(name.starts_with(name_alg), "{algorithm}: {name}");
    }
}
