//! Bad input: each gets the DPS status and errorCode, and changes nothing in Postgres.

use dps_protocol::sas::{self, SoftwareKey};
use dps_protocol::SasError;
use provisioning_service::registration::Refusal;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;

use test_support::{enrollment, now, Device, TestApp, TestTpm, API, ID_SCOPE};

/// Sends `request` and asserts the DPS error and that nothing changed.
async fn refused(
    app: &TestApp,
    status: StatusCode,
    error_code: u32,
    request: impl std::future::Future<Output = (StatusCode, Value)>,
) {
    let before = app.snapshot().await;
    let (got, body) = request.await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["errorCode"], error_code, "{body}");
    for field in ["trackingId", "message", "timestampUtc"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    // The tracking id is the request id the service logs under (a UUID).
    assert!(
        uuid::Uuid::parse_str(body["trackingId"].as_str().unwrap()).is_ok(),
        "{body}"
    );
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused request changed the database"
    );
}

/// Asserts the challenge step refuses `device` for this reason (and, like every refusal,
/// changes nothing).
async fn challenge_refused_for(app: &TestApp, device: &Device, reason: fn(&Refusal) -> bool) {
    let before = app.snapshot().await;
    let verdict = app.challenge_verdict(device).await;
    let refusal = verdict.as_ref().err().and_then(|e| e.refusal());
    assert!(refusal.is_some_and(reason), "{verdict:?}");
    assert_eq!(app.snapshot().await, before);
}

/// Asserts the SAS step refuses `device` with `authorization` for this reason.
async fn register_refused_for(
    app: &TestApp,
    device: &Device,
    authorization: &str,
    reason: fn(&Refusal) -> bool,
) {
    let before = app.snapshot().await;
    let verdict = app.register_verdict(device, authorization).await;
    let refusal = verdict.as_ref().err().and_then(|e| e.refusal());
    assert!(refusal.is_some_and(reason), "{verdict:?}");
    assert_eq!(app.snapshot().await, before);
}

/// An enrolled, provisioned device on the recorded TPM.
async fn provisioned(app: &TestApp) -> (TestTpm, Device) {
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    (t, device)
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn challenge_refusals(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);

    // Not enrolled.
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&device.registration_id, &device.body(), None),
    )
    .await;
    challenge_refused_for(&app, &device, |r| matches!(r, Refusal::NotEnrolled)).await;

    // Enrolled under another registration id than the device claims.
    app.enroll("someone-else", &device.ek).await;
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&device.registration_id, &device.body(), None),
    )
    .await;
    challenge_refused_for(&app, &device, |r| {
        matches!(r, Refusal::EnrolledUnderAnotherId)
    })
    .await;
    let (s, _) = app
        .admin(Method::DELETE, "/enrollments/someone-else", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Enrolled with another EK (a different TPM).
    let mut other = TestTpm::fresh();
    let other_device = Device::of(&mut other.tpm);
    app.enroll(&device.registration_id, &other_device.ek).await;
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&device.registration_id, &device.body(), None),
    )
    .await;
    challenge_refused_for(&app, &device, |r| matches!(r, Refusal::EkMismatch)).await;

    // Disabled.
    let mut disabled = enrollment(&device.registration_id, &device.ek);
    disabled.provisioning_status = provisioning_service::enrollment::ProvisioningStatus::Disabled;
    app.enroll_with(disabled).await;
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&device.registration_id, &device.body(), None),
    )
    .await;
    challenge_refused_for(&app, &device, |r| matches!(r, Refusal::Disabled)).await;
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn malformed_requests(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let id = device.registration_id.clone();
    let put_raw = |path_id: String, body: Vec<u8>, query: &'static str| {
        let url = format!(
            "{}/{ID_SCOPE}/registrations/{path_id}/register?{query}",
            app.base
        );
        let client = app.client.clone();
        async move {
            let r = client
                .put(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = device.body();
        f(&mut b);
        serde_json::to_vec(&b).unwrap()
    };

    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(id.clone(), b"{not json".to_vec(), API),
    )
    .await;
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(
            id.clone(),
            with(&|b| b["tpm"]["endorsementKey"] = json!("%%%")),
            API,
        ),
    )
    .await;
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(
            id.clone(),
            with(&|b| b["tpm"]["endorsementKey"] = json!("AAEC")),
            API,
        ),
    )
    .await;
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(id.clone(), with(&|b| b["tpm"] = Value::Null), API),
    )
    .await;
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(
            id.clone(),
            with(&|b| b["registrationId"] = json!("other")),
            API,
        ),
    )
    .await;
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(id.clone(), device.body().to_string().into_bytes(), ""),
    )
    .await;
    for version in [
        "api-version=1999-01-01",
        "api-version=latest",
        "api-version=2021-11-01-previewx",
    ] {
        refused(
            &app,
            StatusCode::BAD_REQUEST,
            400_004,
            put_raw(id.clone(), device.body().to_string().into_bytes(), version),
        )
        .await;
    }
    // A storage root key that is not a restricted decryption key: the EK's template with sign set.
    let mut srk = dps_protocol::tpm::Public::from_tpm2b(&device.srk).unwrap();
    srk.object_attributes |= dps_protocol::tpm::constants::TPMA_OBJECT_SIGN;
    let srk_b64 =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, srk.to_tpm2b());
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        put_raw(
            id.clone(),
            with(&|b| b["tpm"]["storageRootKey"] = json!(srk_b64)),
            API,
        ),
    )
    .await;
    // Over the body limit (96 KiB).
    let big = with(&|b| b["payload"] = json!("x".repeat(100 * 1024)));
    refused(
        &app,
        StatusCode::PAYLOAD_TOO_LARGE,
        413_001,
        put_raw(id.clone(), big, API),
    )
    .await;
    // Hostile registration ids in the path.
    for hostile in [
        "..%2F..%2Fetc%2Fpasswd",
        &"a".repeat(129),
        "Device-1",
        "x'%3B%20DROP%20TABLE%20enrollments%3B--",
        "a%00",
    ] {
        refused(
            &app,
            StatusCode::BAD_REQUEST,
            400_004,
            put_raw(
                hostile.to_owned(),
                device.body().to_string().into_bytes(),
                API,
            ),
        )
        .await;
    }
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn sas_refusals(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut t, device) = provisioned(&app).await;
    let body = device.body();
    let id = device.registration_id.clone();
    let resource = sas::registration_resource(ID_SCOPE, &id);

    // Signed with a wrong key.
    let wrong = device.sas(&mut SoftwareKey(&[9; 32]), now() + 60);
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&id, &body, Some(&wrong)),
    )
    .await;
    register_refused_for(&app, &device, &wrong, |r| {
        matches!(r, Refusal::SasRejected(SasError::InvalidSignature))
    })
    .await;
    // Expired (beyond the skew window), and too far in the future.
    let expired = device.sas(&mut t.tpm, now() - 3600);
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&id, &body, Some(&expired)),
    )
    .await;
    register_refused_for(&app, &device, &expired, |r| {
        matches!(r, Refusal::SasRejected(SasError::Expired))
    })
    .await;
    let far = device.sas(&mut t.tpm, now() + 30 * 24 * 3600);
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&id, &body, Some(&far)),
    )
    .await;
    register_refused_for(&app, &device, &far, |r| {
        matches!(r, Refusal::SasRejected(SasError::ExpiryTooFar))
    })
    .await;
    // For another registration id.
    let other = sas::build_token(
        &sas::registration_resource(ID_SCOPE, "other-device"),
        now() + 60,
        Some("registration"),
        &mut t.tpm,
    )
    .unwrap();
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&id, &body, Some(&other)),
    )
    .await;
    register_refused_for(&app, &device, &other, |r| {
        matches!(r, Refusal::SasRejected(SasError::ResourceMismatch))
    })
    .await;
    // Malformed.
    for bad in [
        "SharedAccessSignature",
        "Bearer abc",
        "SharedAccessSignature sr=x&sig=%%&se=1",
    ] {
        refused(
            &app,
            StatusCode::UNAUTHORIZED,
            401_002,
            app.put_register(&id, &body, Some(bad)),
        )
        .await;
        register_refused_for(&app, &device, bad, |r| {
            matches!(r, Refusal::MalformedSas(_))
        })
        .await;
    }
    // Another key name.
    let skn = sas::build_token(
        &resource,
        now() + 60,
        Some("provisioningserviceowner"),
        &mut t.tpm,
    )
    .unwrap();
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&id, &body, Some(&skn)),
    )
    .await;
    register_refused_for(&app, &device, &skn, |r| {
        matches!(r, Refusal::SasRejected(SasError::KeyNameMismatch))
    })
    .await;
    // And the right one still works afterwards.
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn another_tpm_with_the_enrolled_ek_pub_cannot_register(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut victim = TestTpm::recorded();
    let victim_device = Device::of(&mut victim.tpm);
    drop(victim);
    app.enroll(&victim_device.registration_id, &victim_device.ek)
        .await;

    // The impostor copied the victim's EK_pub and presents its own SRK.
    let mut impostor = TestTpm::fresh();
    let mut claimed = Device::of(&mut impostor.tpm);
    claimed.registration_id = victim_device.registration_id.clone();
    claimed.ek = victim_device.ek.clone();
    let blob = app.challenge(&claimed).await;
    let err = impostor
        .tpm
        .import_authentication_key(&blob)
        .expect_err("cannot activate");
    assert_eq!(err.command(), Some("ActivateCredential"));
    // Without the key it can only guess a SAS.
    let guess = claimed.sas(&mut SoftwareKey(&[0; 32]), now() + 60);
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&claimed.registration_id, &claimed.body(), Some(&guess)),
    )
    .await;
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn throttled_challenges(pool: PgPool) {
    let app = TestApp::spawn_configured(pool, |s| {
        s.registration_limit = provisioning_service::settings::Limit {
            count: 2,
            window_secs: 60,
        };
    })
    .await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    app.challenge(&device).await;
    app.challenge(&device).await;
    // The refused request's key may be issued before the count is read (`registration::
    // challenge`); the statement that counts it must not record it.
    let before = app.snapshot().await;
    let response = app.register_request(&device).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.snapshot().await,
        before,
        "a throttled challenge was recorded"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], 429_001);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn expired_challenge_cannot_be_used(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut t, device) = provisioned(&app).await;
    sqlx::query("UPDATE challenges SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let token = device.sas(&mut t.tpm, now() + 60);
    refused(
        &app,
        StatusCode::UNAUTHORIZED,
        401_002,
        app.put_register(&device.registration_id, &device.body(), Some(&token)),
    )
    .await;
    // The only key it could have used is the expired challenge's: no live key at all.
    register_refused_for(&app, &device, &token, |r| matches!(r, Refusal::NoLiveKey)).await;
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_non_ascii_authorization_is_a_refusal_not_a_new_challenge(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut t, device) = provisioned(&app).await;
    let before = app.snapshot().await;
    let response = app
        .register_request(&device)
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"SharedAccessSignature sr=\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], 401_002, "{body}");
    assert!(body.get("authenticationKey").is_none(), "{body}");
    assert_eq!(
        app.snapshot().await,
        before,
        "the live challenge was replaced"
    );
    // The key the device holds still registers.
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// A stranger who knows the victim's registration id and EK_pub floods challenges in its name,
/// from another address, while the victim provisions: the victim is neither throttled nor
/// loses the challenge it is answering. (Before: the flood spent the device's own budget and
/// each new challenge replaced the device's live one.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_challenge_flood_in_a_devices_name_does_not_keep_it_from_provisioning(pool: PgPool) {
    let app = TestApp::spawn_configured(pool, |s| {
        s.client_address_header = Some("x-forwarded-for".to_owned());
    })
    .await;
    let mut victim = TestTpm::recorded();
    let device = Device::of(&mut victim.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    // The attacker presents the victim's EK with an SRK of its own.
    let mut attacker_tpm = TestTpm::fresh();
    let mut forged = Device::of(&mut attacker_tpm.tpm);
    forged.registration_id = device.registration_id.clone();
    forged.ek = device.ek.clone();

    let ask = |who: &Device, from: &'static str| {
        app.register_request(who)
            .header("x-forwarded-for", format!("203.0.113.50, {from}"))
            .send()
    };
    let challenge = ask(&device, "192.0.2.10").await.unwrap();
    assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
    let blob = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        challenge.json::<Value>().await.unwrap()["authenticationKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    // The flood: far past the per-address budget, from the attacker's address.
    let mut throttled = 0;
    for _ in 0..40 {
        let r = ask(&forged, "198.51.100.66").await.unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => throttled += 1,
            other => panic!("{other}"),
        }
    }
    assert!(throttled > 0, "the attacker's address was never throttled");

    // The victim answers its challenge and registers.
    victim.tpm.import_authentication_key(&blob).unwrap();
    let (status, body) = app.register_with(&device, &mut victim.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // And a new challenge from the victim's address is not throttled either.
    assert_eq!(
        ask(&device, "192.0.2.10").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Without `--client-address-header`, a client cannot pick its own throttle bucket by sending
/// `X-Forwarded-For`: the TCP peer is the client.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_forwarded_for_header_is_ignored_unless_configured(pool: PgPool) {
    let app = TestApp::spawn_configured(pool, |s| {
        s.registration_limit = provisioning_service::settings::Limit {
            count: 2,
            window_secs: 60,
        };
    })
    .await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let r = app
            .register_request(&device)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// The poll's budget is counted before its token is checked (one statement), so it belongs to
/// the (registration, asking address) pair: a stranger elsewhere polling in the device's name
/// with forged tokens is refused and does not spend the device's polls; the device's own polls
/// past the limit are throttled.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_strangers_polls_do_not_spend_the_devices_poll_budget(pool: PgPool) {
    let app = TestApp::spawn_configured(pool, |s| {
        s.client_address_header = Some("x-forwarded-for".to_owned());
        s.poll_limit = provisioning_service::settings::Limit {
            count: 2,
            window_secs: 60,
        };
    })
    .await;
    let (mut t, device) = provisioned(&app).await;
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let url = format!(
        "{}/{ID_SCOPE}/registrations/{}?{API}",
        app.base, device.registration_id
    );
    let poll = |token: String, from: &'static str| {
        app.client
            .post(&url)
            .header("authorization", token)
            .header("x-forwarded-for", from)
            .send()
    };
    for _ in 0..5 {
        let forged = device.sas(&mut SoftwareKey(b"not the device's key"), now() + 60);
        let r = poll(forged, "198.51.100.66").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let token = device.sas(&mut t.tpm, now() + 60);
        statuses.push(poll(token, "192.0.2.10").await.unwrap().status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// While every core the RSA work may use is taken (a burst of challenges, or a flood), a
/// challenge is judged before its key is issued: a refused one is answered without waiting for
/// a core, so refusals cost no RSA work when it is scarce, and an admitted one waits for a core
/// and is then recorded. (With a core free, the key is issued first and recorded by the step's
/// one statement: `round_trips::a_complete_registration_is_three_statements`.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn with_every_core_busy_a_refused_challenge_waits_for_none(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let held: Vec<_> = std::iter::from_fn(|| app.app.cpu().core_now()).collect();
    assert!(!held.is_empty());

    let refused = tokio::time::timeout(Duration::from_secs(10), app.challenge_verdict(&device))
        .await
        .expect("a refusal waited for a core");
    let refusal = refused.as_ref().err().and_then(|e| e.refusal());
    assert!(matches!(refusal, Some(Refusal::NotEnrolled)), "{refused:?}");

    app.enroll(&device.registration_id, &device.ek).await;
    let admitted = app.challenge_verdict(&device);
    tokio::pin!(admitted);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut admitted)
            .await
            .is_err(),
        "an admitted challenge issued its key with no core free"
    );
    drop(held);
    let blob = admitted.await.expect("admitted once a core is free");
    t.tpm.import_authentication_key(&blob).unwrap();
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// Unusable ECC EKs (issue 30) — a point off its curve, an unknown curve, a key that is not a
/// restricted decryption key — and an ECC SRK off its curve: refused with the reason named, at
/// enrollment through the API and at registration, and nothing changes; the EK as a TPM makes
/// it is enrolled.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn unusable_ecc_keys_are_refused_at_enrollment_and_registration(pool: PgPool) {
    use aws_lc_rs::agreement::{PrivateKey, ECDH_P256};
    use base64::Engine as _;
    use dps_protocol::tpm::templates::{ek_ecc_p256, srk_ecc_p256};
    use dps_protocol::tpm::{Public, PublicParameters};
    let app = TestApp::spawn(pool).await;
    let point = PrivateKey::generate(&ECDH_P256)
        .unwrap()
        .compute_public_key()
        .unwrap()
        .as_ref()
        .to_vec();
    let (x, y) = (point[1..33].to_vec(), point[33..].to_vec());
    let mut off_curve = y.clone();
    off_curve[31] ^= 1;
    let with_curve = |mut public: Public, curve: u16| {
        if let PublicParameters::Ecc { curve_id, .. } = &mut public.parameters {
            *curve_id = curve;
        }
        public
    };
    let mut unrestricted = ek_ecc_p256(x.clone(), y.clone());
    unrestricted.object_attributes &= !dps_protocol::tpm::constants::TPMA_OBJECT_RESTRICTED;
    let cases = [
        (
            ek_ecc_p256(x.clone(), off_curve.clone()),
            "ECC point is not on its curve",
        ),
        (
            with_curve(ek_ecc_p256(x.clone(), y.clone()), 0x0005),
            "ECC curve is not NIST P-256 or P-384",
        ),
        (unrestricted, "not a restricted decryption key"),
    ];
    let body = |id: &str, ek: &[u8]| {
        json!({"registrationId": id, "attestation": {"type": "tpm",
               "tpm": {"endorsementKey": base64::engine::general_purpose::STANDARD.encode(ek)}}})
    };
    let mut t = TestTpm::recorded();
    let genuine = Device::of(&mut t.tpm);
    let before = app.snapshot().await;
    for (ek, reason) in cases {
        let ek = ek.to_tpm2b();
        let id = dps_protocol::RegistrationId::from_endorsement_key(&ek);
        let path = format!("/enrollments/{id}?{API}");
        let (status, answer) = app
            .admin(Method::PUT, &path, Some(body(id.as_str(), &ek)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(reason)),
            "{reason}: {answer}"
        );
        let mut device = genuine.clone();
        device.ek = ek;
        device.registration_id = id.as_str().to_owned();
        refused(
            &app,
            StatusCode::BAD_REQUEST,
            400_004,
            app.put_register(&device.registration_id, &device.body(), None),
        )
        .await;
    }
    // An ECC SRK off its curve, with an enrolled EK: refused before any work.
    app.enroll(&genuine.registration_id, &genuine.ek).await;
    let before_srk = app.snapshot().await;
    let mut device = genuine.clone();
    device.srk = srk_ecc_p256(x.clone(), off_curve).to_tpm2b();
    refused(
        &app,
        StatusCode::BAD_REQUEST,
        400_004,
        app.put_register(&device.registration_id, &device.body(), None),
    )
    .await;
    assert_eq!(app.snapshot().await, before_srk);
    app.admin(
        Method::DELETE,
        &format!("/enrollments/{}?{API}", genuine.registration_id),
        None,
    )
    .await;
    assert_eq!(app.snapshot().await, before);

    let ek = ek_ecc_p256(x, y).to_tpm2b();
    let id = dps_protocol::RegistrationId::from_endorsement_key(&ek);
    let path = format!("/enrollments/{id}?{API}");
    let (status, answer) = app
        .admin(Method::PUT, &path, Some(body(id.as_str(), &ek)))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
