//! Certificate issuance (DPS 2026-04-01 `csr` → `issuedCertificateChain`, docs/protocol.md §11):
//! a device on swtpm registers with a CSR and gets a chain OpenSSL verifies to the operator's
//! root, in this service's profile whatever the CSR asked; each refused CSR is named and writes
//! nothing. The CSRs are made in software here (rcgen); the TPM-resident key is the device
//! client's part.

use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provisioning_service::issuance::CsrRefusal;
use provisioning_service::registration::{Refusal, StepError};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use test_support::{enrollment, now, Device, IssuingPki, TestApp, TestTpm, API, ID_SCOPE};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A CSR for `common_name` signed by `key`, with `more` applied to its parameters.
fn csr(common_name: &str, key: &KeyPair, more: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    more(&mut params);
    params.serialize_request(key).unwrap().der().to_vec()
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap()
}

/// The service with credential policy `devices` (P-384 only, the default) and `lenient` (P-256
/// too), a TPM and its device enrolled under `policy`, the device's key imported.
async fn setup(pool: PgPool, policy: Option<&str>) -> (TestApp, IssuingPki, TestTpm, Device) {
    let pki = IssuingPki::new(&[
        ("devices", json!({})),
        (
            "lenient",
            json!({"keyTypes": ["ecdsa-p384", "ecdsa-p256"], "validityDays": 7}),
        ),
    ]);
    let policies = pki.policies();
    let app = TestApp::spawn_configured(pool, |s| s.credential_policies = policies).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let mut e = enrollment(&device.registration_id, &device.ek);
    if let Some(name) = policy {
        e.extra
            .insert("credentialPolicyName".to_owned(), json!(name));
    }
    app.enroll_with(e).await;
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    (app, pki, t, device)
}

fn chain_of(body: &Value) -> Vec<Vec<u8>> {
    body["registrationState"]["issuedCertificateChain"]
        .as_array()
        .unwrap_or_else(|| panic!("no issuedCertificateChain: {body}"))
        .iter()
        .map(|c| STANDARD.decode(c.as_str().unwrap()).unwrap())
        .collect()
}

fn pem(der: &[u8]) -> String {
    dps_protocol::ek_cert::pem_block("CERTIFICATE", der)
}

/// A device with a CSR is assigned with a chain (leaf, issuing CA, root) that `openssl verify`
/// accepts for TLS client authentication under the operator's root; the leaf holds the CSR's
/// key, CN = registration id, CA:false, clientAuth only, the device's URI and the policy's
/// lifetime. The poll returns the chain too; a status lookup does not (as in DPS); the
/// certificate is recorded.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_csr_gets_a_chain_openssl_verifies(pool: PgPool) {
    let (app, pki, mut t, mut device) = setup(pool, Some("devices")).await;
    let key = p384();
    device.csr = Some(csr(&device.registration_id.to_uppercase(), &key, |_| {}));
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "assigned", "{body}");
    let chain = chain_of(&body);
    assert_eq!(chain.len(), 3);
    let unwrapped = |text: &str| text.split_whitespace().collect::<String>();
    assert_eq!(unwrapped(&pem(&chain[2])), unwrapped(&pki.root_pem));

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let root = write("root.pem", &pki.root_pem);
    let issuing = write("issuing.pem", &pem(&chain[1]));
    let leaf_file = write("leaf.pem", &pem(&chain[0]));
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&issuing)
        .arg(&leaf_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let cn = leaf.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), device.registration_id);
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let constraints = leaf.basic_constraints().unwrap().unwrap().value;
    assert!(!constraints.ca);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    let hub = body["registrationState"]["assignedHub"].as_str().unwrap();
    assert_eq!(
        san.general_names,
        [GeneralName::URI(&format!(
            "https://{hub}/devices/{}",
            device.registration_id
        ))]
    );
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(lifetime, 30 * 86_400 + 300);

    let operation = body["operationId"].as_str().unwrap();
    let (_, polled) = app.poll(&device, operation, &mut t.tpm).await;
    assert_eq!(chain_of(&polled), chain);
    let (_, state) = app.device_state(&device, &mut t.tpm).await;
    assert!(state.get("issuedCertificateChain").is_none(), "{state}");
    let recorded: (String, Option<time::OffsetDateTime>) = sqlx::query_as(
        "SELECT credential_policy, revoked_at FROM issued_certificates WHERE registration_id = $1",
    )
    .bind(&device.registration_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(recorded, ("devices".to_owned(), None));
}

/// Whatever the CSR asks for beyond its key — CA:true, other names, server authentication — the
/// certificate has none of it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_csr_asking_for_a_ca_and_other_names_gets_neither(pool: PgPool) {
    let (app, _pki, mut t, mut device) = setup(pool, Some("devices")).await;
    device.csr = Some(csr(&device.registration_id, &p384(), |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.subject_alt_names = vec![SanType::DnsName("dps.example.com".try_into().unwrap())];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    }));
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let chain = chain_of(&body);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert!(
        matches!(san.general_names[..], [GeneralName::URI(_)]),
        "{san:?}"
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
}

/// An RSA-2048 CSR for `common_name`, made by OpenSSL (ring cannot make RSA keys).
fn openssl_rsa_csr(common_name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-outform", "DER", "-subj",
        ])
        .arg(format!("/CN={common_name}"))
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// Refused by name, nothing issued, nothing written: a CN that is not the registration id, a
/// broken self-signature, a P-256 key under a P-384-only policy, an RSA key, an enrollment that
/// names no policy; and `csr` on a status lookup (DPS: "will result in a bad request").
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn refused_csrs_are_named_and_change_nothing(pool: PgPool) {
    let (app, _pki, mut t, mut device) = setup(pool, Some("devices")).await;
    let token = device.sas(&mut t.tpm, now() + 60);
    let id = device.registration_id.clone();
    let mut broken = csr(&id, &p384(), |_| {});
    let last = broken.len() - 1;
    broken[last] ^= 1;
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cases = vec![
        (
            csr("another-device", &p384(), |_| {}),
            CsrRefusal::CommonNameMismatch,
        ),
        (broken, CsrRefusal::BadSignature),
        (
            csr(&id, &p256, |_| {}),
            CsrRefusal::KeyType("ecdsa-p256".to_owned(), "ecdsa-p384".to_owned()),
        ),
        (b"not a CSR".to_vec(), CsrRefusal::Malformed),
        (
            openssl_rsa_csr(&id),
            CsrRefusal::KeyType("1.2.840.113549.1.1.1".to_owned(), "ecdsa-p384".to_owned()),
        ),
    ];
    let before = app.snapshot().await;
    for (request, expected) in cases {
        device.csr = Some(request);
        let refused = app.register_verdict(&device, &token).await;
        assert!(
            matches!(&refused, Err(StepError::Refused(Refusal::Csr(r))) if *r == expected),
            "{expected:?}: {refused:?}"
        );
        let (status, body) = app.register_with(&device, &mut t.tpm).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused CSR wrote something"
    );
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM issued_certificates")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(issued, 0);

    // A status lookup with a csr in its body.
    device.csr = None;
    let (status, _) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let response = app
        .client
        .post(format!("{}/{ID_SCOPE}/registrations/{id}?{API}", app.base))
        .header("authorization", device.sas(&mut t.tpm, now() + 60))
        .json(&json!({"registrationId": id, "csr": STANDARD.encode(csr(&id, &p384(), |_| {}))}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// An enrollment that names no credential policy: its device's CSR is refused by name.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_csr_without_a_credential_policy_is_refused(pool: PgPool) {
    let (app, _pki, mut t, mut device) = setup(pool, None).await;
    device.csr = Some(csr(&device.registration_id, &p384(), |_| {}));
    let token = device.sas(&mut t.tpm, now() + 60);
    assert!(matches!(
        app.register_verdict(&device, &token).await,
        Err(StepError::Refused(Refusal::Csr(
            CsrRefusal::NoCredentialPolicy
        )))
    ));
}

/// Registering again with a new CSR issues a new certificate and revokes the old one; a
/// P-256 key is accepted where the policy allows it, with the policy's lifetime.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_new_csr_revokes_the_previous_certificate(pool: PgPool) {
    let (app, _pki, mut t, mut device) = setup(pool, Some("lenient")).await;
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    for _ in 0..2 {
        device.csr = Some(csr(&device.registration_id, &p256, |_| {}));
        let (status, body) = app.register_with(&device, &mut t.tpm).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let chain = chain_of(&body);
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        let v = leaf.validity();
        assert_eq!(
            v.not_after.timestamp() - v.not_before.timestamp(),
            7 * 86_400 + 300
        );
    }
    let (live, revoked): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE revoked_at IS NULL), count(*) FILTER (WHERE revoked_at IS NOT NULL)
         FROM issued_certificates",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((live, revoked), (1, 1));
}

/// The serials (lowercase hex) the CRL file `path` (DER or PEM) lists, after OpenSSL checked
/// its signature against the issuing CA (`issuing_pem`).
fn openssl_crl_serials(path: &std::path::Path, form: &str, issuing_pem: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("issuing.pem"), issuing_pem).unwrap();
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-inform", form, "-in"])
        .arg(path)
        .arg("-CAfile")
        .arg(dir.path().join("issuing.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("verify OK"),
        "{out:?}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(str::to_lowercase)
        .collect()
}

/// The serials the CRL served by `app` lists for `policy`.
async fn crl_serials(app: &TestApp, policy: &str, issuing_pem: &str) -> Vec<String> {
    let response = app
        .client
        .get(format!("{}/credentialPolicies/{policy}/crl", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/pkix-crl");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crl.der");
    std::fs::write(&file, response.bytes().await.unwrap()).unwrap();
    openssl_crl_serials(&file, "DER", issuing_pem)
}

/// Disables `device`'s enrollment (under policy `devices`), then waits until a CRL signed before
/// that has aged out of every instance's cache.
async fn disable_and_wait_for_the_crl(app: &TestApp, device: &Device) {
    let mut e = enrollment(&device.registration_id, &device.ek);
    e.extra
        .insert("credentialPolicyName".to_owned(), json!("devices"));
    e.provisioning_status = provisioning_service::enrollment::ProvisioningStatus::Disabled;
    app.enroll_with(e).await;
    tokio::time::sleep(provisioning_service::issuance::CRL_CACHE).await;
}

/// The serial of a leaf as OpenSSL prints it in a CRL.
fn serial_hex(leaf: &X509Certificate<'_>) -> String {
    leaf.raw_serial_as_string().replace(':', "")
}

/// Disabling the enrollment revokes the device's certificate: its serial is in the CRL that
/// either of two instances serves once a CRL made before the revocation has aged out (at most
/// `CRL_CACHE`, a second); an unknown policy's CRL is a 404.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn disabling_the_enrollment_puts_the_serial_in_the_crl_on_every_instance(pool: PgPool) {
    let (app, pki, mut t, mut device) = setup(pool, Some("devices")).await;
    let second = app.second_instance().await;
    device.csr = Some(csr(&device.registration_id, &p384(), |_| {}));
    let (_, body) = app.register_with(&device, &mut t.tpm).await;
    let chain = chain_of(&body);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let serial = serial_hex(&leaf);
    for instance in [&app, &second] {
        assert!(crl_serials(instance, "devices", &pki.issuing_pem)
            .await
            .is_empty());
    }

    disable_and_wait_for_the_crl(&app, &device).await;
    for instance in [&app, &second] {
        assert_eq!(
            crl_serials(instance, "devices", &pki.issuing_pem).await,
            std::slice::from_ref(&serial)
        );
    }
    let response = app
        .client
        .get(format!("{}/credentialPolicies/nonesuch/crl", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// `crl-sync` keeps a broker's CRL file: the first fetch writes it (PEM, verified by OpenSSL
/// against the issuing CA), a revocation reaches it at the next fetch and the broker's process
/// gets SIGHUP; a CRL from the service that another CA would have to have signed is never
/// written, and the file keeps the last good list.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn crl_sync_writes_the_revocation_to_the_brokers_file_and_signals_it(pool: PgPool) {
    use provisioning_service::config::CrlSyncArgs;
    use provisioning_service::crl_sync::{run, CrlSyncError};

    let (app, pki, mut t, mut device) = setup(pool, Some("devices")).await;
    device.csr = Some(csr(&device.registration_id, &p384(), |_| {}));
    let (_, body) = app.register_with(&device, &mut t.tpm).await;
    let chain = chain_of(&body);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let serial = serial_hex(&leaf);

    let dir = tempfile::tempdir().unwrap();
    let issuer_file = dir.path().join("issuing.pem");
    std::fs::write(&issuer_file, &pki.issuing_pem).unwrap();
    let out = dir.path().join("crl.pem");
    // The broker: a process that SIGHUP ends, so that the signal shows.
    let mut broker = Command::new("sleep").arg("60").spawn().unwrap();
    let pidfile = dir.path().join("broker.pid");
    std::fs::write(&pidfile, broker.id().to_string()).unwrap();
    let args = |issuer_file| CrlSyncArgs {
        url: format!("{}/credentialPolicies/devices/crl", app.base),
        ca_file: Some(app.pki.ca_file()),
        issuer_file,
        out: out.clone(),
        reload_pidfile: Some(pidfile.clone()),
        interval_ms: 1000,
        once: true,
    };

    run(&args(issuer_file.clone())).await.unwrap();
    assert!(openssl_crl_serials(&out, "PEM", &pki.issuing_pem).is_empty());
    let first = std::fs::read(&out).unwrap();

    disable_and_wait_for_the_crl(&app, &device).await;

    // Checked against the root instead of the issuing CA: refused, the file unchanged.
    let root_file = dir.path().join("root.pem");
    std::fs::write(&root_file, &pki.root_pem).unwrap();
    assert!(matches!(
        run(&args(root_file)).await,
        Err(CrlSyncError::WrongSigner)
    ));
    assert_eq!(std::fs::read(&out).unwrap(), first);

    // The broker was signalled for the first write; a second one is started for the change.
    let status = broker.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(1)
    );
    let mut broker = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&pidfile, broker.id().to_string()).unwrap();
    run(&args(issuer_file)).await.unwrap();
    assert_eq!(openssl_crl_serials(&out, "PEM", &pki.issuing_pem), [serial]);
    let status = broker.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(1)
    );
    assert!(!dir.path().join("crl.pem.new").exists());
}

/// Microsoft's 2026-04-01 example (`examples/RuntimeRegistration_RegisterDeviceAndIssueCertificate_*`).
fn spec_example(name: &str) -> Value {
    let path = test_support::workspace_root()
        .join("../shared/dps-rest-spec/stable/2026-04-01/examples")
        .join(format!("RuntimeRegistration_{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Fails unless every field of `value` is a property of `definition` in the 2026-04-01 device
/// API (`device.json`).
fn assert_device_api_fields(definition: &str, value: &Value) {
    let path = test_support::workspace_root()
        .join("../shared/dps-rest-spec/stable/2026-04-01/device.json");
    let spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let properties = &spec["definitions"][definition]["properties"];
    for field in value.as_object().unwrap().keys() {
        assert!(
            properties.get(field).is_some(),
            "{field} is not a field of {definition}: {value}"
        );
    }
}

/// The 2026-04-01 example bodies. As published (random strings where DPS carries base64 bytes,
/// an empty body) they are refused with a 400 in the spec's error shape; the MaximumSet body
/// with this device's values in the same fields (registrationId, tpm.endorsementKey,
/// tpm.storageRootKey, csr, payload) goes through the challenge and the SAS step, and every
/// answer has only fields of the spec's `RegistrationOperationStatus` and
/// `DeviceRegistrationResult`, with the example's `issuedCertificateChain` (base64 DER).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_2026_04_01_example_bodies_answer_in_the_specs_shape(pool: PgPool) {
    let (app, _pki, mut t, device) = setup(pool, Some("devices")).await;
    let maximum = spec_example("RegisterDeviceAndIssueCertificate_MaximumSet_Gen");
    let minimum = spec_example("RegisterDeviceAndIssueCertificate_MinimumSet_Gen");
    for example in [&maximum, &minimum] {
        let id = example["parameters"]["registrationId"].as_str().unwrap();
        let (status, body) = app
            .put_register(id, &example["parameters"]["deviceRegistration"], None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_device_api_fields("ProvisioningServiceErrorDetails", &body);
        assert!(
            body["errorCode"].as_u64().is_some_and(|c| c / 1000 == 400),
            "{body}"
        );
    }

    let mut request = maximum["parameters"]["deviceRegistration"].clone();
    let ours = device.body();
    request["registrationId"] = ours["registrationId"].clone();
    request["tpm"]["endorsementKey"] = ours["tpm"]["endorsementKey"].clone();
    request["tpm"]["storageRootKey"] = ours["tpm"]["storageRootKey"].clone();
    request["csr"] = json!(STANDARD.encode(csr(&device.registration_id, &p384(), |_| {})));
    let (status, challenge) = app
        .put_register(&device.registration_id, &request, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let blob = STANDARD
        .decode(challenge["authenticationKey"].as_str().unwrap())
        .unwrap();
    t.tpm.import_authentication_key(&blob).unwrap();
    let token = device.sas(&mut t.tpm, now() + 60);
    let (status, body) = app
        .put_register(&device.registration_id, &request, Some(&token))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let published = &maximum["responses"]["202"]["body"];
    for (definition, answer, example) in [
        ("RegistrationOperationStatus", &body, published),
        (
            "DeviceRegistrationResult",
            &body["registrationState"],
            &published["registrationState"],
        ),
    ] {
        assert_device_api_fields(definition, answer);
        for field in answer.as_object().unwrap().keys() {
            assert!(
                example.get(field).is_some(),
                "{field} is not in the example: {answer}"
            );
        }
    }
    assert_eq!(chain_of(&body).len(), 3);
}

/// An issuing CA made by OpenSSL (`scripts/lib/pki.sh`, as the demo makes it; its subject key
/// identifier a SHA-1 hash, not rcgen's): OpenSSL checks the issued leaf against the CRL the
/// service signs (`openssl verify -crl_check`, as Mosquitto's `crlfile` does) — accepted while
/// live, "certificate revoked" once the enrollment is disabled. OpenSSL finds a CRL's CA by its
/// authority key identifier, so the CRL must name the CA's key as the CA certificate does.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn openssl_checks_leaves_against_the_crl_of_an_openssl_made_ca(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let script = test_support::workspace_root().join("scripts/lib/pki.sh");
    let made = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && pki_issuing \"$1\" P-384 '[\"ecdsa-p384\"]' false",
            script.display()
        ))
        .arg("pki.sh")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let policies =
        provisioning_service::issuance::CredentialPolicies::load(&dir.path().join("policies.json"))
            .unwrap();
    let app = TestApp::spawn_configured(pool, |s| s.credential_policies = policies).await;
    let mut t = TestTpm::recorded();
    let mut device = Device::of(&mut t.tpm);
    let mut e = enrollment(&device.registration_id, &device.ek);
    e.extra
        .insert("credentialPolicyName".to_owned(), json!("devices"));
    app.enroll_with(e).await;
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    device.csr = Some(csr(&device.registration_id, &p384(), |_| {}));
    let (_, body) = app.register_with(&device, &mut t.tpm).await;
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, pem(&chain_of(&body)[0])).unwrap();

    let verify = || async {
        let response = app
            .client
            .get(format!("{}/credentialPolicies/devices/crl", app.base))
            .send()
            .await
            .unwrap();
        let crl = dir.path().join("crl.der");
        std::fs::write(&crl, response.bytes().await.unwrap()).unwrap();
        let pem_crl = dir.path().join("crl.pem");
        let converted = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-in"])
            .arg(&crl)
            .arg("-out")
            .arg(&pem_crl)
            .output()
            .unwrap();
        assert!(converted.status.success(), "{converted:?}");
        Command::new("openssl")
            .args(["verify", "-crl_check", "-purpose", "sslclient", "-CAfile"])
            .arg(dir.path().join("root.pem"))
            .arg("-untrusted")
            .arg(dir.path().join("issuing.pem"))
            .arg("-CRLfile")
            .arg(&pem_crl)
            .arg(&leaf)
            .output()
            .unwrap()
    };
    let live = verify().await;
    assert!(live.status.success(), "{live:?}");

    disable_and_wait_for_the_crl(&app, &device).await;
    let revoked = verify().await;
    assert!(!revoked.status.success());
    assert!(
        String::from_utf8_lossy(&revoked.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&revoked.stderr).contains("certificate revoked"),
        "{revoked:?}"
    );
}
