//! A certificate for a key that lives in the TPM (docs/protocol.md §11): swtpm makes the
//! certificate key, signs the CSR inside the TPM and certifies the key with the attestation key
//! over the challenge's nonce; the service (in process, real Postgres) issues only under that
//! proof (`requireTpmResidentKey`). Each refusal is the service's named reason.

use device_client::certificate::certificate_request;
use dps_protocol::wire::{AttestationChallenge, RegistrationStatus};
use provisioning_service::issuance::CsrRefusal;
use provisioning_service::registration::{Refusal, StepError};
use serde_json::json;
use sqlx::PgPool;
use test_support::{now, Device, IssuingPki, TestApp, TestTpm};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::provision::{device_client, register_args};

/// The service with credential policy `tpm` (TPM-resident keys only, P-384 or P-256).
async fn service(pool: PgPool) -> (TestApp, IssuingPki) {
    let pki = IssuingPki::new(&[(
        "tpm",
        json!({"requireTpmResidentKey": true, "keyTypes": ["ecdsa-p384", "ecdsa-p256"]}),
    )]);
    let policies = pki.policies();
    let app = TestApp::spawn_configured(pool, |s| s.credential_policies = policies).await;
    (app, pki)
}

/// TPM `t` as a device with its attestation key and a CSR for its certificate key, enrolled
/// under the `tpm` policy (no attestation policy: the challenge selects no PCR).
async fn device(app: &TestApp, t: &mut TestTpm) -> Device {
    let mut device = Device::of(&mut t.tpm);
    device.attestation_key = Some(t.tpm.attestation_key(None).unwrap());
    device.csr = Some(certificate_request(&mut t.tpm, &device.registration_id).unwrap());
    enroll_under_tpm_policy(app, &device).await;
    device
}

pub(super) async fn enroll_under_tpm_policy(app: &TestApp, device: &Device) {
    let mut e = test_support::enrollment(&device.registration_id, &device.ek);
    e.extra
        .insert("credentialPolicyName".to_owned(), json!("tpm"));
    app.enroll_with(e).await;
}

/// An swtpm whose device is enrolled under the `tpm` policy, and its TCTI, for the binary.
pub(super) async fn enrolled_swtpm(app: &TestApp) -> (test_support::Swtpm, String) {
    let swtpm = test_support::Swtpm::start();
    let tcti = swtpm.tcti();
    let device = Device::of(&mut device_client::tpm::Tpm::open(&tcti).unwrap());
    enroll_under_tpm_policy(app, &device).await;
    (swtpm, tcti)
}

/// `device-client register --certificate`, which must succeed.
pub(super) async fn register_with_certificate(app: &TestApp, tcti: &str, state: &std::path::Path) {
    let mut args = register_args(app, tcti, state);
    args.push("--certificate".to_owned());
    let out = device_client(args).await;
    assert!(out.status.success(), "{out:?}");
}

/// `openssl s_client` to `127.0.0.1:port` with the device's identity: the certificate chain
/// `chain` and the key in the TPM at 0x81000102 through the TPM 2.0 OpenSSL provider
/// (tpm2-openssl), trusting `ca_file`, with `flags`, writing `input` (or nothing) to the server.
/// The provider keeps hash sequences in the TPM while it signs, more than the three object
/// slots a TPM without a resource manager has: it goes through tpm2-abrmd, as the founding
/// documents recommend (this swtpm's own, unless the run goes through one).
pub(super) fn tpm2_openssl_s_client(
    swtpm: &test_support::Swtpm,
    tcti: &str,
    port: u16,
    chain: &std::path::Path,
    ca_file: &std::path::Path,
    flags: &[&str],
    input: Option<&[u8]>,
) -> std::process::Output {
    use std::io::Write as _;
    let (bus, broker) = if swtpm.brokered() {
        (None, None)
    } else {
        let bus = test_support::swtpm::SessionBus::start();
        let broker = test_support::swtpm::Broker::start(swtpm.port(), Some(&bus.address));
        (Some(bus), Some(broker))
    };
    let provider_tcti = broker
        .as_ref()
        .map_or(tcti.to_owned(), test_support::swtpm::Broker::tcti);
    let mut client = std::process::Command::new("openssl");
    if let Some(bus) = &bus {
        client.env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    }
    let mut client = client
        .args(["s_client", "-provider", "tpm2", "-provider", "default"])
        .args(flags)
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(["-key", "handle:0x81000102", "-cert"])
        .arg(chain)
        .arg("-cert_chain")
        .arg(chain)
        .arg("-CAfile")
        .arg(ca_file)
        .env("TPM2OPENSSL_TCTI", &provider_tcti)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    if let Some(bytes) = input {
        stdin.write_all(bytes).unwrap();
    }
    drop(stdin);
    let out = client.wait_with_output().unwrap();
    drop(broker);
    out
}

/// The challenge, imported; the attestation challenge returned for the caller to answer.
async fn challenged(app: &TestApp, t: &mut TestTpm, device: &Device) -> AttestationChallenge {
    let challenge = app.full_challenge(device).await;
    t.tpm
        .import_authentication_key(&challenge.authentication_key.0)
        .unwrap();
    let attestation = challenge
        .attestation
        .expect("an attestation challenge for the certification");
    assert!(attestation.pcr_selection.is_empty());
    attestation
}

fn refusal(result: Result<impl std::fmt::Debug, StepError>) -> CsrRefusal {
    match result {
        Err(StepError::Refused(Refusal::Csr(r))) => r,
        other => panic!("expected a CSR refusal, got {other:?}"),
    }
}

/// Accepted: the key in the TPM, certified over the nonce, gets a certificate for exactly that
/// key (the leaf's public key is the TPM key's point), CN = registration id.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_key_proven_to_live_in_the_tpm_gets_a_certificate(pool: PgPool) {
    let (app, _pki) = service(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = device(&app, &mut t).await;
    let attestation = challenged(&app, &mut t, &device).await;
    let (quote, certification) = t.tpm.answer_with_certification(&attestation).unwrap();
    assert!(quote.is_none());
    device.certify = Some(certification.clone());
    let token = device.sas(&mut t.tpm, now() + 60);
    let status = app.register_verdict(&device, &token).await.unwrap();
    assert_eq!(status.status, RegistrationStatus::Assigned);
    let chain = status
        .registration_state
        .unwrap()
        .issued_certificate_chain
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0].0).unwrap();
    let key = dps_protocol::tpm::Public::from_tpm2b(&certification.public.0).unwrap();
    let dps_protocol::tpm::PublicParameters::Ecc { x, y, .. } = key.parameters else {
        panic!("an ECC key")
    };
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        [&[0x04][..], &x, &y].concat()
    );
}

/// Refused by name: no proof; the proof of another key than the CSR's; a certification over an
/// earlier challenge's nonce; a certification by another TPM's attestation key.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn unproven_foreign_stale_and_mismatched_certifications_are_refused(pool: PgPool) {
    let (app, _pki) = service(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = device(&app, &mut t).await;

    challenged(&app, &mut t, &device).await;
    let token = device.sas(&mut t.tpm, now() + 60);
    assert_eq!(
        refusal(app.register_verdict(&device, &token).await),
        CsrRefusal::ResidencyUnproven
    );

    // The TPM key proven, but a CSR for a software key.
    let attestation = challenged(&app, &mut t, &device).await;
    device.certify = Some(t.tpm.answer_with_certification(&attestation).unwrap().1);
    let genuine_csr = device.csr.replace({
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, device.registration_id.as_str());
        params.serialize_request(&key).unwrap().der().to_vec()
    });
    let token = device.sas(&mut t.tpm, now() + 60);
    assert_eq!(
        refusal(app.register_verdict(&device, &token).await),
        CsrRefusal::NotTheCsrKey
    );
    device.csr = genuine_csr;

    // The certification of the previous challenge, sent with the next one's key.
    let token = {
        challenged(&app, &mut t, &device).await;
        device.sas(&mut t.tpm, now() + 60)
    };
    assert!(matches!(
        refusal(app.register_verdict(&device, &token).await),
        CsrRefusal::Residency(reason) if reason.contains("nonce")
    ));

    // Another TPM's certification of its own key by its own AK (over its own nonce).
    let mut other = TestTpm::fresh();
    let mut stranger = self::device(&app, &mut other).await;
    let theirs = challenged(&app, &mut other, &stranger).await;
    stranger.certify = Some(other.tpm.answer_with_certification(&theirs).unwrap().1);
    challenged(&app, &mut t, &device).await;
    device.certify.clone_from(&stranger.certify);
    let token = device.sas(&mut t.tpm, now() + 60);
    assert!(matches!(
        refusal(app.register_verdict(&device, &token).await),
        CsrRefusal::Residency(reason) if reason.contains("signature")
    ));
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM issued_certificates")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(issued, 0);
}

/// The binary: `device-client register --certificate` makes the key in the TPM, proves it, and
/// writes the issued chain beside its state; OpenSSL verifies it for client authentication under
/// the operator's root.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn register_with_certificate_writes_a_chain_openssl_verifies(pool: PgPool) {
    let (app, pki) = service(pool).await;
    let (swtpm, tcti) = enrolled_swtpm(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    register_with_certificate(&app, &tcti, &state).await;
    let chain = device_client::provision::chain_file(&state);
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &pki.root_pem).unwrap();
    // The leaf first, the issuing CA and the root after it (as untrusted intermediates).
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&chain)
        .arg(&chain)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Another program uses the identity through the TPM 2.0 OpenSSL provider (tpm2-openssl):
    // a TLS handshake with client authentication, the key never out of the TPM.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-naccept",
            "1",
            "-Verify",
            "3",
            "-verify_return_error",
        ])
        .arg("-accept")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(app.pki.cert_file())
        .arg("-key")
        .arg(app.pki.key_file())
        .arg("-CAfile")
        .arg(&root)
        // Open until killed: s_server stops at the end of its input.
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = tpm2_openssl_s_client(
        &swtpm,
        &tcti,
        port,
        &chain,
        &app.pki.ca_file(),
        &["-brief"],
        None,
    );
    let _ = server.kill();
    let server = server.wait_with_output().unwrap();
    let said = format!("{client:?}\n{server:?}");
    assert!(client.status.success(), "{said}");
    // The server required a client certificate and verified it to the root
    // (`-Verify 3 -verify_return_error`): a finished accept is an authenticated client.
    assert!(
        String::from_utf8_lossy(&server.stdout).contains("1 server accepts that finished"),
        "{said}"
    );
}

/// A leaf of the given lifetime (Unix seconds), written as a chain file.
fn chain_with_lifetime(path: &std::path::Path, not_before: i64, not_after: i64) {
    let mut params = rcgen::CertificateParams::default();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(path, params.self_signed(&key).unwrap().pem()).unwrap();
}

/// Renewal: `register --certificate` on a provisioned device does nothing while more than a
/// third of the certificate's lifetime is left, and registers again (a new certificate, the old
/// one revoked) once less is, or when the chain file is gone.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn register_renews_the_certificate_with_a_third_of_its_lifetime_left(pool: PgPool) {
    use device_client::certificate::renewal_reason;
    let day = 86_400;
    let now = i64::try_from(now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leaf.pem");
    assert!(renewal_reason(&file, now).is_some_and(|r| r.contains("no certificate")));
    chain_with_lifetime(&file, now - 19 * day, now + 11 * day);
    assert_eq!(renewal_reason(&file, now), None);
    chain_with_lifetime(&file, now - 21 * day, now + 9 * day);
    assert_eq!(
        renewal_reason(&file, now).as_deref(),
        Some("9.0 days of its 30 days left")
    );
    chain_with_lifetime(&file, now - 31 * day, now - day);
    assert_eq!(
        renewal_reason(&file, now).as_deref(),
        Some("none of its 30 days left")
    );

    let (app, _pki) = service(pool).await;
    let (_swtpm, tcti) = enrolled_swtpm(&app).await;
    let state = dir.path().join("state.json");
    let mut args = register_args(&app, &tcti, &state);
    args.push("--certificate".to_owned());
    let register = || async {
        let out = device_client(args.clone()).await;
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serials = || async {
        sqlx::query_as::<_, (Vec<u8>, bool)>(
            "SELECT serial, revoked_at IS NOT NULL FROM issued_certificates ORDER BY not_before, serial",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    assert!(register().await.starts_with("assigned"));
    assert!(register().await.starts_with("already provisioned"));
    assert_eq!(serials().await.len(), 1);

    let chain = device_client::provision::chain_file(&state);
    chain_with_lifetime(&chain, now - 21 * day, now + 9 * day);
    assert!(register().await.starts_with("assigned"));
    let issued = serials().await;
    assert_eq!(issued.len(), 2);
    assert_eq!(issued.iter().filter(|(_, revoked)| *revoked).count(), 1);
    let (_, not_after) = device_client::certificate::leaf_validity(&chain).unwrap();
    assert!(not_after > now + 6 * day);

    std::fs::remove_file(&chain).unwrap();
    assert!(register().await.starts_with("assigned"));
    assert_eq!(serials().await.len(), 3);
}
