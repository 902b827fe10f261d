//! The enrollment API: CRUD with etags, bulk, query with continuation, registration states, and
//! its authentication.

use dps_protocol::sas::{self, SoftwareKey};
use dps_protocol::tpm::templates::ek_rsa2048;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use test_support::{enrollment, now, TestApp, POLICY};

/// A syntactically valid EK (TCG default template) with a modulus derived from `n`.
pub fn fake_ek(n: u8) -> Vec<u8> {
    let mut modulus = vec![n; 256];
    modulus[0] |= 0x80;
    modulus[255] |= 1;
    modulus[1] = n.wrapping_mul(7);
    ek_rsa2048(modulus).to_tpm2b()
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn create_get_update_delete_with_etags(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let created = app.enroll("device-1", &fake_ek(1)).await;
    assert_eq!(created["registrationId"], "device-1");
    assert_eq!(created["provisioningStatus"], "enabled");
    assert_eq!(created["attestation"]["type"], "tpm");
    let etag = created["etag"].as_str().unwrap().to_owned();

    let (status, got) = app.admin(Method::GET, "/enrollments/device-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    // Writing the same enrollment again changes nothing, not even the etag.
    let again = app.enroll("device-1", &fake_ek(1)).await;
    assert_eq!(again["etag"], etag.as_str());

    // An update with a stale etag is refused; with the current one it applies.
    let mut update = enrollment("device-1", &fake_ek(1));
    update.device_id = Some("renamed".to_owned());
    update
        .extra
        .insert("initialTwin".to_owned(), json!({"tags": {"line": 7}}));
    update.etag = Some(uuid::Uuid::new_v4().to_string());
    let (status, body) = app
        .admin(
            Method::PUT,
            "/enrollments/device-1",
            Some(serde_json::to_value(&update).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    update.etag = Some(etag.clone());
    let (status, body) = app
        .admin(
            Method::PUT,
            "/enrollments/device-1",
            Some(serde_json::to_value(&update).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deviceId"], "renamed");
    assert_eq!(body["initialTwin"]["tags"]["line"], 7);
    assert_ne!(body["etag"], etag.as_str());

    // One EK, one enrollment.
    let mut twin = enrollment("device-2", &fake_ek(1));
    twin.device_id = None;
    let (status, _) = app
        .admin(
            Method::PUT,
            "/enrollments/device-2",
            Some(serde_json::to_value(&twin).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, _) = app
        .admin(Method::DELETE, "/enrollments/device-1", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.admin(Method::GET, "/enrollments/device-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errorCode"], 404_201);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn invalid_enrollments_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // (path id, body, what the message must name): each case breaks exactly one rule.
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "trailing.",
            serde_json::to_value(enrollment("trailing.", &fake_ek(1))).unwrap(),
            "registrationId",
        ),
        (
            "device-1",
            json!({"registrationId": "device-1", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAEC"}}}),
            "endorsementKey",
        ),
        (
            "device-1",
            json!({"registrationId": "device-1", "attestation": {"type": "x509"}}),
            "only tpm attestation",
        ),
        (
            "device-1",
            serde_json::to_value(enrollment("device-2", &fake_ek(1))).unwrap(),
            "does not match the path",
        ),
        (
            "device-1",
            {
                let mut e = serde_json::to_value(enrollment("device-1", &fake_ek(1))).unwrap();
                e["iotHubHostName"] = json!("not-linked.example.net");
                e
            },
            "not a linked hub",
        ),
        (
            "device-1",
            {
                let mut e = serde_json::to_value(enrollment("device-1", &fake_ek(1))).unwrap();
                e["deviceId"] = json!("has space");
                e
            },
            "deviceId",
        ),
        (
            "device-1",
            {
                // An RSA-1024 EK: the TCG template with a short modulus.
                let mut ek = dps_protocol::tpm::Public::from_tpm2b(&fake_ek(1)).unwrap();
                if let dps_protocol::tpm::PublicParameters::Rsa {
                    key_bits, modulus, ..
                } = &mut ek.parameters
                {
                    *key_bits = 1024;
                    modulus.truncate(128);
                }
                serde_json::to_value(enrollment("device-1", &ek.to_tpm2b())).unwrap()
            },
            "2048",
        ),
    ];
    for (path, body, reason) in cases {
        let (status, response) = app
            .admin(
                Method::PUT,
                &format!("/enrollments/{path}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {response}");
        assert_eq!(response["errorCode"], 400_004);
        let message = response["message"].as_str().unwrap();
        assert!(
            message.contains(reason),
            "{message:?} should name {reason:?}"
        );
    }
    assert_eq!(app.snapshot().await, "");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_admin_api_needs_a_service_sas(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = format!("{}/enrollments/device-1", app.base);
    let attempts = [
        None,
        Some("SharedAccessSignature garbage".to_owned()),
        Some(
            sas::build_token(
                "dps.test",
                now() + 60,
                Some(POLICY),
                &mut SoftwareKey(b"wrong key"),
            )
            .unwrap(),
        ),
        Some(
            sas::build_token(
                "dps.test",
                now() + 60,
                Some("unknown-policy"),
                &mut SoftwareKey(b"x"),
            )
            .unwrap(),
        ),
        Some(
            sas::build_token(
                "other.host",
                now() + 60,
                Some(POLICY),
                &mut SoftwareKey(test_support::POLICY_KEY),
            )
            .unwrap(),
        ),
        Some(
            sas::build_token(
                "dps.test",
                now() - 3600,
                Some(POLICY),
                &mut SoftwareKey(test_support::POLICY_KEY),
            )
            .unwrap(),
        ),
        // A device's SAS never opens the admin API.
        Some(
            sas::build_token(
                "dps.test",
                now() + 60,
                Some("registration"),
                &mut SoftwareKey(test_support::POLICY_KEY),
            )
            .unwrap(),
        ),
    ];
    for auth in attempts {
        let mut request = app
            .client
            .put(&url)
            .json(&enrollment("device-1", &fake_ek(1)));
        if let Some(a) = &auth {
            request = request.header("authorization", a);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errorCode"], 401_002);
    }
    assert_eq!(app.snapshot().await, "");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn bulk_and_query_with_continuation(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let enrollments: Vec<Value> = (0..25)
        .map(|i| serde_json::to_value(enrollment(&format!("device-{i:02}"), &fake_ek(i))).unwrap())
        .collect();
    let (status, body) = app
        .admin(
            Method::POST,
            "/enrollments",
            Some(json!({"mode": "create", "enrollments": enrollments})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["isSuccessful"], true);

    // Creating again fails per item; nothing else changes.
    let (_, body) = app
        .admin(
            Method::POST,
            "/enrollments",
            Some(json!({"mode": "create", "enrollments": [enrollments[0], enrollments[1]]})),
        )
        .await;
    assert_eq!(body["isSuccessful"], false);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    assert_eq!(body["errors"][0]["registrationId"], "device-00");

    // Page through with x-ms-max-item-count and x-ms-continuation.
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut request = app
            .client
            .post(format!("{}/enrollments/query", app.base))
            .header("authorization", app.service_sas())
            .header("x-ms-max-item-count", "10")
            .json(&json!({"query": "*"}));
        if let Some(c) = &continuation {
            request = request.header("x-ms-continuation", c);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        continuation = response
            .headers()
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.len() <= 10);
        seen.extend(
            page.into_iter()
                .map(|e| e["registrationId"].as_str().unwrap().to_owned()),
        );
        if continuation.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("device-{i:02}")).collect();
    assert_eq!(seen, expected);

    let (_, body) = app
        .admin(
            Method::POST,
            "/enrollments",
            Some(json!({"mode": "delete", "enrollments": enrollments})),
        )
        .await;
    assert_eq!(body["isSuccessful"], true, "{body}");
    assert_eq!(app.snapshot().await, "");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn registration_states_can_be_read_and_deleted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, body) = app.admin(Method::GET, "/registrations/nobody", None).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (StatusCode::NOT_FOUND, json!(404_201))
    );
    let mut t = test_support::TestTpm::recorded();
    let device = test_support::Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    app.register_with(&device, &mut t.tpm).await;

    let path = format!("/registrations/{}", device.registration_id);
    let (status, body) = app.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "assigned");
    // The service API's registration state is DPS's: no key blob (that is the device API's).
    assert!(body.get("tpm").is_none(), "{body}");
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The device's key is gone with it.
    let (status, _) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_tracking_id_of_an_error_is_the_request_id(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .get(format!("{}/enrollments/nobody", app.base))
        .header("authorization", app.service_sas())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trackingId"], request_id.as_str());
}

/// `\u0000` cannot be stored in Postgres's JSON or text: it is a 400, never a 500, and in a
/// bulk operation a per-item error that leaves the other items written (a re-run finishes).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_nul_character_is_a_bad_request_and_bulk_reports_it_per_item(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut with_nul = serde_json::to_value(enrollment("device-1", &fake_ek(1))).unwrap();
    with_nul["initialTwin"] = json!({"tags": {"line": "a\u{0}b"}});
    let (status, body) = app
        .admin(Method::PUT, "/enrollments/device-1", Some(with_nul.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorCode"], 400_004);
    assert_eq!(app.snapshot().await, "");

    let mut bad = with_nul;
    bad["registrationId"] = json!("device-2");
    bad["attestation"]["tpm"]["endorsementKey"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        fake_ek(2)
    ));
    let bulk = json!({"mode": "create", "enrollments": [
        serde_json::to_value(enrollment("device-1", &fake_ek(1))).unwrap(),
        bad,
        serde_json::to_value(enrollment("device-3", &fake_ek(3))).unwrap(),
    ]});
    let (status, body) = app.admin(Method::POST, "/enrollments", Some(bulk)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["isSuccessful"], false);
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["errors"][0]["registrationId"], "device-2");
    assert_eq!(body["errors"][0]["errorCode"], 400_004);
    for id in ["device-1", "device-3"] {
        let (status, _) = app
            .admin(Method::GET, &format!("/enrollments/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{id}");
    }
}

/// What the Azure service SDKs call beyond CRUD, in DPS's shapes (service.json, 2021-10-01):
/// bulk on `/enrollments/` (the Node SDK's path), the attestation mechanism, enrollment groups
/// answered with a DPS error that says why, the registration state without the device's key
/// blob, and a DPS error body for a path nobody serves.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_rest_of_the_service_api_in_dps_shapes(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let v = "?api-version=2021-10-01";
    let bulk = json!({"mode": "create", "enrollments": [enrollment("bulk-1", &fake_ek(11))]});
    let (status, body) = app
        .admin(Method::POST, &format!("/enrollments/{v}"), Some(bulk))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["isSuccessful"], true);

    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/enrollments/bulk-1/attestationmechanism{v}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["type"], "tpm");
    assert_eq!(
        body["tpm"]["endorsementKey"],
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, fake_ek(11))
    );

    let dps_error = |body: &Value| {
        for field in ["errorCode", "trackingId", "message", "timestampUtc"] {
            assert!(!body[field].is_null(), "{field} in {body}");
        }
    };
    let group = json!({"enrollmentGroupId": "g1", "attestation": {"type": "x509"}});
    for (method, path, body, expected) in [
        (
            Method::PUT,
            "/enrollmentGroups/g1",
            Some(group.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/enrollmentGroups/g1",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/enrollmentGroups/g1",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/enrollmentGroups/g1/attestationmechanism",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/registrations/g1/query",
            Some(json!({"query": "*"})),
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, "/no/such/route", None, StatusCode::NOT_FOUND),
    ] {
        let (status, body) = app.admin(method.clone(), &format!("{path}{v}"), body).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        dps_error(&body);
        if expected == StatusCode::BAD_REQUEST {
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("enrollment groups"),
                "{body}"
            );
        }
    }
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/enrollmentGroups/query{v}"),
            Some(json!({"query": "*"})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}
