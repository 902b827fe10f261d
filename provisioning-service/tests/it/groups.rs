//! Zero-touch: TPM enrollment groups admit genuine TPMs by their EK certificate (here swtpm's,
//! issued by its local CA at manufacture), with nothing uploaded per device; and refuse every
//! device that does not meet the group.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use test_support::swtpm::local_ca;
use test_support::{enrollment, Device, TestApp, TestTpm, HUBS};

use provisioning_service::registration::StepError;

fn pem(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A group trusting swtpm's local CA root, with its issuing CA as an intermediate, and these
/// extra attestation and group fields.
#[allow(clippy::needless_pass_by_value)]
fn group(id: &str, attestation: Value, fields: Value) -> Value {
    let (root, issuer) = local_ca();
    let mut tpm = json!({
        "trustedCaCertificates": [pem(&root)],
        "intermediateCaCertificates": [pem(&issuer)],
    });
    tpm.as_object_mut()
        .unwrap()
        .extend(attestation.as_object().unwrap().clone());
    let mut body = json!({
        "enrollmentGroupId": id,
        "attestation": {"type": "tpmEkCertificate", "tpmEkCertificate": tpm},
    });
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    body
}

async fn put_group(app: &TestApp, body: Value) -> Value {
    let id = body["enrollmentGroupId"].as_str().unwrap().to_owned();
    let (status, body) = app
        .admin(Method::PUT, &format!("/enrollmentGroups/{id}"), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The refusal the challenge step gives `device`.
async fn challenge_refusal(app: &TestApp, device: &Device) -> String {
    match app.challenge_verdict(device).await {
        Err(StepError::Refused(r)) => format!("{r:?}"),
        other => panic!("admitted: {other:?}"),
    }
}

async fn members(app: &TestApp, group_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM enrollments WHERE group_id = $1")
        .bind(group_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_genuine_tpm_joins_its_group_with_nothing_uploaded(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let device = Device::with_certificate(&mut t.tpm);
    let written = put_group(
        &app,
        group(
            "line-7",
            json!({"tpmModels": ["swtpm"]}),
            json!({"allocationPolicy": "static", "iotHubs": [HUBS[0]]}),
        ),
    )
    .await;
    assert_eq!(written["attestation"]["type"], "tpmEkCertificate");
    assert!(written["etag"].is_string());

    let operation_id = app.provision(&mut t, &device).await;
    let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = &body["registrationState"];
    assert_eq!(state["status"], "assigned");
    assert_eq!(state["assignedHub"], HUBS[0], "the group's allocation");
    assert_eq!(state["deviceId"], device.registration_id.as_str());
    assert_eq!(members(&app, "line-7").await, 1);
    let (_, g) = app
        .admin(Method::GET, "/enrollmentGroups/line-7", None)
        .await;
    assert_eq!(g["deviceCount"], 1);

    // The device's own record, and the group's registration states.
    let (status, record) = app
        .admin(
            Method::GET,
            &format!("/enrollments/{}", device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{record}");
    let (status, states) = app
        .admin(
            Method::POST,
            "/registrations/line-7/query",
            Some(json!({"query": "*"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(states.as_array().unwrap().len(), 1);
    assert!(states[0].get("tpm").is_none());

    // Re-registration goes through the record (no second join).
    app.provision(&mut t, &device).await;
    assert_eq!(members(&app, "line-7").await, 1);

    // Disabling the device's record refuses it; the group stays as it was.
    let mut disabled: Value = record.clone();
    disabled["provisioningStatus"] = json!("disabled");
    let (status, _) = app
        .admin(
            Method::PUT,
            &format!("/enrollments/{}", device.registration_id),
            Some(disabled),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(challenge_refusal(&app, &device).await, "Disabled");
    let (_, g) = app
        .admin(Method::GET, "/enrollmentGroups/line-7", None)
        .await;
    assert_eq!(g["etag"], written["etag"]);
}

/// A member's allocation is its group's: a group changed while the device works on its
/// challenge decides the registration, though the instance remembered the group's allocation
/// with the challenge (`registration::recent`; the write checks the group's etag).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_group_changed_while_a_member_answers_its_challenge_decides(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let device = Device::with_certificate(&mut t.tpm);
    let to = |hub: &str| {
        group(
            "line-7",
            json!({"tpmModels": ["swtpm"]}),
            json!({"allocationPolicy": "static", "iotHubs": [hub]}),
        )
    };
    put_group(&app, to(HUBS[0])).await;
    app.provision(&mut t, &device).await;
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    put_group(&app, to(HUBS[1])).await;
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["registrationState"]["assignedHub"], HUBS[1]);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn devices_that_do_not_meet_the_group_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut a = TestTpm::fresh();
    let mut b = TestTpm::fresh();
    let device = Device::with_certificate(&mut a.tpm);
    let other = Device::with_certificate(&mut b.tpm);

    // No group yet.
    assert_eq!(challenge_refusal(&app, &device).await, "NoGroupAdmits");
    let before = app.snapshot().await;
    // A group trusting another vendor's root.
    let stm_root =
        std::fs::read(test_support::workspace_root().join("../shared/ek-certs/STM-1/root.pem"))
            .unwrap();
    let mut foreign = group("foreign", json!({}), json!({}));
    foreign["attestation"]["tpmEkCertificate"] = json!({"trustedCaCertificates": [pem(&stm_root)]});
    put_group(&app, foreign).await;
    assert_eq!(challenge_refusal(&app, &device).await, "NoGroupAdmits");
    // Constraints from the certificate, and the deny list.
    put_group(
        &app,
        group("models", json!({"tpmModels": ["ST33HTPHAHB4"]}), json!({})),
    )
    .await;
    put_group(
        &app,
        group(
            "denied",
            json!({"deniedRegistrationIds":
                [device.registration_id.to_uppercase(), other.registration_id.clone()]}),
            json!({}),
        ),
    )
    .await;
    assert_eq!(challenge_refusal(&app, &device).await, "NoGroupAdmits");
    // A registration id that is not the EK's: nobody squats another device's id.
    let mut squatter = device.clone();
    squatter.registration_id = "someone-else".to_owned();
    assert_eq!(
        challenge_refusal(&app, &squatter).await,
        "GroupIdNotDerived"
    );
    // Another TPM's certificate with this EK.
    let mut borrowed = device.clone();
    borrowed.ek_certificate = other.ek_certificate.clone();
    assert_eq!(
        challenge_refusal(&app, &borrowed).await,
        "EkCertificateMismatch"
    );
    // Not a certificate at all, and a truncated one.
    let mut garbage = device.clone();
    garbage.ek_certificate = Some(b"not a certificate".to_vec());
    assert!(challenge_refusal(&app, &garbage)
        .await
        .starts_with("EkCertificate("));
    let whole = device.ek_certificate.clone().unwrap();
    garbage.ek_certificate = Some(whole[..whole.len() - 10].to_vec());
    assert!(challenge_refusal(&app, &garbage)
        .await
        .starts_with("EkCertificate("));
    // Refusals change nothing.
    assert_eq!(app.snapshot().await, before);
    // A group with a cap of one: the first device joins, the second is refused.
    put_group(&app, group("one-only", json!({"maxDevices": 1}), json!({}))).await;
    app.provision(&mut a, &device).await;
    assert_eq!(members(&app, "one-only").await, 1);
    assert_eq!(challenge_refusal(&app, &other).await, "NoGroupAdmits");
    // A disabled group admits nobody, and its members are refused again.
    let mut closed = group("one-only", json!({"maxDevices": 1}), json!({}));
    closed["provisioningStatus"] = json!("disabled");
    put_group(&app, closed).await;
    assert_eq!(challenge_refusal(&app, &device).await, "Disabled");
    // ... and the hub check sees the member disabled.
    let (hub, device_id): (String, String) = sqlx::query_as(
        "SELECT assigned_hub, device_id FROM registrations WHERE registration_id = $1",
    )
    .bind(&device.registration_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let identity = provisioning_service::store::registrations::hub_identity(
        &mut app.pool.acquire().await.unwrap(),
        &hub,
        &device_id,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        identity.provisioning_status,
        Some(provisioning_service::enrollment::ProvisioningStatus::Disabled)
    );
    // Deleting it deletes its members' records; their registration states stay.
    let (status, _) = app
        .admin(Method::DELETE, "/enrollmentGroups/one-only", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(members(&app, "one-only").await, 0);
    let (status, _) = app
        .admin(
            Method::GET,
            &format!("/registrations/{}", device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_individual_enrollment_wins_over_a_group(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let device = Device::with_certificate(&mut t.tpm);
    put_group(
        &app,
        group(
            "g",
            json!({}),
            json!({"allocationPolicy": "static", "iotHubs": [HUBS[0]]}),
        ),
    )
    .await;
    let mut e = enrollment(&device.registration_id, &device.ek);
    e.iot_hub_host_name = Some(HUBS[1].to_owned());
    app.enroll_with(e).await;
    let operation_id = app.provision(&mut t, &device).await;
    let (_, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(body["registrationState"]["assignedHub"], HUBS[1]);
    assert_eq!(members(&app, "g").await, 0);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_impostor_with_a_copied_ek_certificate_gets_a_challenge_but_never_joins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut genuine = TestTpm::fresh();
    let mut impostor = TestTpm::fresh();
    let device = Device::with_certificate(&mut genuine.tpm);
    put_group(&app, group("g", json!({}), json!({}))).await;
    // Everything in the request is public: EK, certificate, SRK. The blob is sealed to the
    // genuine EK, so no other TPM can open it, and without its key no SAS verifies.
    let blob = app.challenge(&device).await;
    assert!(impostor.tpm.import_authentication_key(&blob).is_err());
    // Its best: a SAS token signed with a key of its own.
    let guess = [0x42u8; 32];
    let (status, _) = app
        .register_with(&device, &mut dps_protocol::sas::SoftwareKey(&guess))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(members(&app, "g").await, 0);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn groups_in_dps_shapes_on_the_service_api(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let _manufactured = TestTpm::fresh();
    let written = put_group(
        &app,
        group(
            "g-1",
            json!({}),
            json!({"reprovisionPolicy":
        {"updateHubAssignment": true, "migrateDeviceData": false}}),
        ),
    )
    .await;
    for field in [
        "enrollmentGroupId",
        "attestation",
        "provisioningStatus",
        "etag",
        "createdDateTimeUtc",
        "lastUpdatedDateTimeUtc",
        "reprovisionPolicy",
    ] {
        assert!(!written[field].is_null(), "{field}: {written}");
    }
    // Writing it again changes nothing; a stale etag is refused.
    let again = put_group(
        &app,
        group(
            "g-1",
            json!({}),
            json!({"reprovisionPolicy":
        {"updateHubAssignment": true, "migrateDeviceData": false}}),
        ),
    )
    .await;
    assert_eq!(again["etag"], written["etag"]);
    let mut stale = group("g-1", json!({}), json!({}));
    stale["etag"] = json!(uuid_like());
    let (status, _) = app
        .admin(Method::PUT, "/enrollmentGroups/g-1", Some(stale))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, mechanism) = app
        .admin(
            Method::POST,
            "/enrollmentGroups/g-1/attestationmechanism",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mechanism["type"], "tpmEkCertificate");
    // Route words in any case, as DPS matches them (the Node service SDK writes this one in
    // lowercase).
    let (status, same) = app
        .admin(
            Method::POST,
            "/enrollmentgroups/G-1/AttestationMechanism",
            None,
        )
        .await;
    assert_eq!((status, &same), (StatusCode::OK, &mechanism));
    let (status, page) = app
        .admin(
            Method::POST,
            "/enrollmentGroups/query",
            Some(json!({"query": "*"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().unwrap().len(), 1);

    // What this service does not take, with a message that says what it does.
    for (attestation, message) in [
        (json!({"type": "x509"}), "tpmEkCertificate"),
        (
            json!({"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}),
            "tpmEkCertificate",
        ),
        (
            json!({"type": "tpmEkCertificate", "tpmEkCertificate": {"trustedCaCertificates": []}}),
            "at least one CA certificate",
        ),
        (
            json!({"type": "tpmEkCertificate", "tpmEkCertificate": {"trustedCaCertificates": ["junk"]}}),
            "no PEM certificate",
        ),
    ] {
        let body = json!({"enrollmentGroupId": "g-2", "attestation": attestation});
        let (status, body) = app
            .admin(Method::PUT, "/enrollmentGroups/g-2", Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
    // A leaf certificate is not a CA to trust.
    let leaf =
        std::fs::read(test_support::workspace_root().join("../shared/ek-certs/STM-1/ek.pem"))
            .unwrap();
    let mut not_ca = group("g-2", json!({}), json!({}));
    not_ca["attestation"]["tpmEkCertificate"]["trustedCaCertificates"] = json!([pem(&leaf)]);
    let (status, body) = app
        .admin(Method::PUT, "/enrollmentGroups/g-2", Some(not_ca))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not a CA"),
        "{body}"
    );
    // None of the refused writes left a group behind.
    let (status, _) = app.admin(Method::GET, "/enrollmentGroups/g-2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = app
        .admin(Method::DELETE, "/enrollmentGroups/g-1", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.admin(Method::GET, "/enrollmentGroups/g-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn uuid_like() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

/// The EK of a `TPM2B_PUBLIC` as rcgen signs a certificate for it: an RSA EK as PKCS#1 in an
/// rsaEncryption SubjectPublicKeyInfo, an ECC one as its uncompressed point on its curve.
struct EkPublicKey(Vec<u8>, &'static rcgen::SignatureAlgorithm);

impl EkPublicKey {
    fn of(ek_tpm2b: &[u8]) -> Self {
        use dps_protocol::tpm::PublicParameters;
        use rsa::pkcs1::EncodeRsaPublicKey;
        match dps_protocol::tpm::Public::from_tpm2b(ek_tpm2b)
            .unwrap()
            .parameters
        {
            PublicParameters::Rsa { modulus, .. } => {
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(&modulus),
                    rsa::BigUint::from(65_537u32),
                )
                .unwrap();
                Self(
                    key.to_pkcs1_der().unwrap().into_vec(),
                    &rcgen::PKCS_RSA_SHA256,
                )
            }
            PublicParameters::Ecc { curve_id, x, y, .. } => Self(
                [&[0x04][..], &x, &y].concat(),
                if curve_id == 0x0004 {
                    &rcgen::PKCS_ECDSA_P384_SHA384
                } else {
                    &rcgen::PKCS_ECDSA_P256_SHA256
                },
            ),
            PublicParameters::KeyedHash { .. } => panic!("not an EK"),
        }
    }
}

impl rcgen::PublicKeyData for EkPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.1
    }
}

/// What a stranger can make with no TPM vendor's help: an EK certificate (EK usage set if
/// `ek_usage`) for `ek_tpm2b`, signed by its own CA key, and `copies` self-signed CA
/// certificates of that one key, each a distinct DER (another serial), so that every one
/// verifies every other.
fn crafted_chain(ek_tpm2b: &[u8], copies: u64, ek_usage: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SerialNumber,
    };
    let ek_key = EkPublicKey::of(ek_tpm2b);
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = |serial: u64| {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.serial_number = Some(SerialNumber::from(serial));
        ca
    };
    let cas: Vec<_> = (1..=copies)
        .map(|serial| ca_params(serial).self_signed(&ca_key).unwrap())
        .collect();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    if ek_usage {
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    }
    let leaf = leaf
        .signed_by(&ek_key, &Issuer::new(ca_params(1), &ca_key))
        .unwrap();
    (
        leaf.der().to_vec(),
        cas.iter().map(|c| c.der().to_vec()).collect(),
    )
}

/// Issue 25, item 1: a stranger's own EK certificate sent with N copies of a CA for its own key
/// made the path search try every order of them (N⁵ signature checks; 30 copies fit in 12 KB
/// and took about half an hour). Now a chain longer than any TPM's is refused before any work,
/// and the longest allowed one, all copies verifying each other, is searched once per pair
/// within the request's budget: refused as admitted by no group, promptly, changing nothing.
/// (The timeout only turns the old behaviour's hang into a failure; nothing here is timed.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_crafted_ek_certificate_chain_costs_a_bounded_search(pool: PgPool) {
    use dps_protocol::ek_cert::MAX_PRESENTED_CHAIN;
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    put_group(&app, group("vendor", json!({}), json!({}))).await;
    let mut device = Device::of(&mut t.tpm);
    device.registration_id =
        dps_protocol::RegistrationId::from_endorsement_key(&device.ek).to_string();
    let (leaf, cas) = crafted_chain(&device.ek, MAX_PRESENTED_CHAIN as u64, true);
    device.ek_certificate = Some(leaf);
    let before = app.snapshot().await;
    let verdict = |device: Device| {
        let app = &app;
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(60),
                challenge_refusal(app, &device),
            )
            .await
            .expect("the search ended")
        }
    };

    device.ek_certificate_chain = vec![cas[0].clone(); 30];
    assert_eq!(verdict(device.clone()).await, "EkCertificateChainTooLong");
    device.ek_certificate_chain = cas;
    assert_eq!(verdict(device.clone()).await, "NoGroupAdmits");
    assert_eq!(app.snapshot().await, before);
}

/// Issue 30: Google's newer "EK/AK CA" issues Compute Engine vTPMs EK certificates without the
/// TCG EK usage (2.23.133.8.1). A group admits them only when its owner says so
/// (`allowCertificatesWithoutEkUsage`); any other group refuses such a certificate by that
/// reason, changing nothing. Admitted, the device still proves its EK and provisions.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_group_admits_certificates_without_the_ek_usage_only_when_told(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    let mut device = Device::of(&mut t.tpm);
    let (leaf, cas) = crafted_chain(&device.ek, 1, false);
    device.ek_certificate = Some(leaf);
    let ca = dps_protocol::ek_cert::pem_block("CERTIFICATE", &cas[0]);
    let vendor = |allow: bool| {
        let mut tpm = json!({"trustedCaCertificates": [ca]});
        if allow {
            tpm["allowCertificatesWithoutEkUsage"] = json!(true);
        }
        json!({
            "enrollmentGroupId": "gce-vtpms",
            "attestation": {"type": "tpmEkCertificate", "tpmEkCertificate": tpm},
        })
    };
    let written = put_group(&app, vendor(false)).await;
    assert!(written["attestation"]["tpmEkCertificate"]
        .get("allowCertificatesWithoutEkUsage")
        .is_none());
    let before = app.snapshot().await;
    assert_eq!(challenge_refusal(&app, &device).await, "NotAnEkCertificate");
    assert_eq!(app.snapshot().await, before);

    let mut allowing = vendor(true);
    allowing["etag"] = written["etag"].clone();
    let written = put_group(&app, allowing).await;
    assert_eq!(
        written["attestation"]["tpmEkCertificate"]["allowCertificatesWithoutEkUsage"],
        true
    );
    let operation_id = app.provision(&mut t, &device).await;
    let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["registrationState"]["status"], "assigned", "{body}");
    assert_eq!(members(&app, "gce-vtpms").await, 1);
}

/// Issue 30: a TPM certified for an EK of another type than RSA-2048 — the low-range P-256
/// (L-2), the high-range RSA-2048 and P-256 (H-1, H-2), P-384 (H-3) and RSA-3072 (H-6) — joins
/// a group by its certificate (here from a vendor CA made for the test, as swtpm 0.7.1
/// certifies only its RSA and P-384 EKs) and provisions.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn tpms_with_every_ek_type_join_a_group_by_their_certificate(pool: PgPool) {
    use device_client::tpm::EkType;
    let app = TestApp::spawn(pool).await;
    for (i, ek_type) in [
        EkType::EccP256,
        EkType::Rsa2048High,
        EkType::EccP256High,
        EkType::EccP384,
        EkType::Rsa3072,
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = TestTpm::fresh().using_ek(ek_type);
        let mut device = Device::of(&mut t.tpm);
        let (leaf, cas) = crafted_chain(&device.ek, 1, true);
        device.ek_certificate = Some(leaf);
        let group_id = format!("vendor-{i}");
        put_group(
            &app,
            json!({
                "enrollmentGroupId": group_id,
                "attestation": {"type": "tpmEkCertificate", "tpmEkCertificate": {
                    "trustedCaCertificates": [dps_protocol::ek_cert::pem_block("CERTIFICATE", &cas[0])],
                }},
            }),
        )
        .await;
        let operation_id = app.provision(&mut t, &device).await;
        let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
        assert_eq!(status, StatusCode::OK, "{ek_type:?}: {body}");
        assert_eq!(
            body["registrationState"]["status"], "assigned",
            "{ek_type:?}: {body}"
        );
        assert_eq!(members(&app, &group_id).await, 1, "{ek_type:?}");
    }
}

/// Issue 30: the real ECC EK certificates in `../shared/ek-certs` (STMicroelectronics STM-2,
/// Infineon IFX-3: P-256, the only ECC ones there) reach admission. A group trusting the vendor's
/// root admits the EK its certificate names (the TCG L-2 template around the certificate's
/// point) and sends it a challenge whose secret is a P-256 point, which only that vendor's TPM
/// could use; no TPM here holds it, so the device never joins.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn vendor_ecc_ek_certificates_are_admitted_and_challenged(pool: PgPool) {
    use dps_protocol::auth_key::AuthenticationKey;
    use dps_protocol::ek_cert::{CertifiedKey, EkCertificate};
    use dps_protocol::tpm::templates::ek_ecc_p256;
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::fresh();
    for vendor in ["STM-2", "IFX-3"] {
        let dir = test_support::workspace_root()
            .join("../shared/ek-certs")
            .join(vendor);
        let read = |file: &str| std::fs::read(dir.join(file)).unwrap();
        let leaf = read("ek.der");
        let CertifiedKey::Ec { point } = EkCertificate::parse(&leaf).unwrap().key else {
            panic!("{vendor}: not an ECC EK certificate")
        };
        let ek = ek_ecc_p256(point[1..33].to_vec(), point[33..].to_vec()).to_tpm2b();
        let mut device = Device::of(&mut t.tpm);
        device.registration_id = dps_protocol::RegistrationId::from_endorsement_key(&ek)
            .as_str()
            .to_owned();
        device.ek = ek;
        device.ek_certificate = Some(leaf);
        let group_id = format!("{vendor}-line");
        put_group(
            &app,
            json!({
                "enrollmentGroupId": group_id,
                "attestation": {"type": "tpmEkCertificate", "tpmEkCertificate": {
                    "trustedCaCertificates": [pem(&read("root.pem"))],
                    "intermediateCaCertificates": [pem(&read("intermediate.pem"))],
                }},
            }),
        )
        .await;
        let blob = AuthenticationKey::from_bytes(&app.challenge(&device).await).unwrap();
        assert_eq!(
            blob.secret.body().len(),
            2 + 32 + 2 + 32,
            "{vendor}: an ephemeral P-256 point (TPMS_ECC_POINT)"
        );
        assert!(t.tpm.import_authentication_key(&blob.to_bytes()).is_err());
        assert_eq!(members(&app, &group_id).await, 0, "{vendor}");
    }
}
