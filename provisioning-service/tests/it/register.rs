//! Full registrations: a real TPM (swtpm) on the device side, the service over HTTPS, Postgres.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use test_support::{enrollment, Device, TestApp, TestTpm, HUBS};

const HASHED_HUB_OF_RECORDED_TPM: usize = 1;

async fn provision(app: &TestApp, t: &mut TestTpm, device: &Device) -> String {
    app.provision(t, device).await
}

async fn registration_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM registrations")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn full_registration_through_https_with_a_tpm(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;

    let operation_id = provision(&app, &mut t, &device).await;
    let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "assigned");
    let state = &body["registrationState"];
    // The recorded TPM's registration id hashes to the second hub: computed outside the code
    // under test with `printf ID | sha256sum | cut -c1-16`, then `int(h, 16) % 2` in Python.
    assert_eq!(
        device.registration_id,
        "f6noahbfmsznaw5pt2te7dned675l7sjgmf3wknggmrhxe3mif4a"
    );
    assert_eq!(state["assignedHub"], HUBS[HASHED_HUB_OF_RECORDED_TPM]);
    assert_eq!(state["deviceId"], device.registration_id.as_str());
    assert_eq!(state["registrationId"], device.registration_id.as_str());
    assert_eq!(state["substatus"], "initialAssignment");
    for field in ["createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"] {
        assert!(state[field].is_string(), "{field} in {state}");
    }
    // The key's blob comes back on assignment (the Azure clients import it for the hub), and
    // the TPM accepts it again.
    let again = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        state["tpm"]["authenticationKey"]
            .as_str()
            .expect("registrationState.tpm"),
    )
    .unwrap();
    t.tpm.import_authentication_key(&again).expect("re-import");
    let (status, _) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "same key after the re-import");

    let (status, body) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["assignedHub"], HUBS[HASHED_HUB_OF_RECORDED_TPM]);
    // The challenge was consumed; the key is now the registration's.
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM challenges")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(challenges, 0);
}

/// Decided at once, the register call answers 202 (all aziot-identityd accepts there) with the
/// decision in its body, the same state a poll then reads: a device that reads the body (the
/// Azure Node SDK, this project's client) needs two requests, not three.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_register_answer_carries_the_decision(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (mut t, device, token) = app.challenged_device().await;
    let response = app
        .register_request(&device)
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().get("retry-after").is_none());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "assigned", "{answer}");
    let state = &answer["registrationState"];
    assert_eq!(state["assignedHub"], HUBS[HASHED_HUB_OF_RECORDED_TPM]);
    assert!(state["tpm"]["authenticationKey"].is_string(), "{state}");

    let operation_id = answer["operationId"].as_str().unwrap();
    let (status, polled) = app.poll(&device, operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{polled}");
    assert_eq!(
        polled, answer,
        "the poll reads what the register call answered"
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn pinned_hub_and_device_id_are_honoured(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let mut e = enrollment(&device.registration_id, &device.ek);
    e.iot_hub_host_name = Some(HUBS[1].to_owned());
    e.device_id = Some("line-7-unit-0042".to_owned());
    app.enroll_with(e).await;
    let operation_id = provision(&app, &mut t, &device).await;
    let (_, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(body["registrationState"]["assignedHub"], HUBS[1]);
    assert_eq!(body["registrationState"]["deviceId"], "line-7-unit-0042");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_registration_started_on_one_instance_finishes_on_another(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    let b = a.second_instance().await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    a.enroll(&device.registration_id, &device.ek).await;

    let blob = a.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    let (status, body) = b.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let operation_id = body["operationId"].as_str().unwrap();
    let (status, body) = a.poll(&device, operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "assigned");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn concurrent_registrations_of_one_device_end_in_one_state(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Both requests carry valid SAS tokens for the same key and race in the database.
    let (mut t, device, token) = app.challenged_device().await;
    let body = device.body();
    let (first, second) = tokio::join!(
        app.put_register(&device.registration_id, &body, Some(&token)),
        app.put_register(&device.registration_id, &body, Some(&token)),
    );
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.1);
    assert_eq!(second.0, StatusCode::ACCEPTED, "{}", second.1);
    assert_eq!(registration_count(&app.pool).await, 1);
    let (status, state) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["status"], "assigned");
    // The state names the operation of whichever request committed last.
    let current = sqlx::query_scalar::<_, uuid::Uuid>("SELECT operation_id FROM registrations")
        .fetch_one(&app.pool)
        .await
        .unwrap()
        .to_string();
    assert!([&first.1, &second.1]
        .iter()
        .any(|b| b["operationId"] == current.as_str()));

    // Concurrent challenges from one address: the newest two stay live, no more.
    let (c1, c2, c3) = tokio::join!(
        app.put_register(&device.registration_id, &body, None),
        app.put_register(&device.registration_id, &body, None),
        app.put_register(&device.registration_id, &body, None),
    );
    assert_eq!(
        (c1.0, c2.0, c3.0),
        (
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED
        )
    );
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM challenges")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        challenges,
        provisioning_service::store::registrations::CHALLENGES_PER_ADDRESS
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn re_registration_issues_a_fresh_key_and_retires_the_old_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    provision(&app, &mut t, &device).await;
    // A token signed with the first key, kept by an eavesdropper.
    let old_token = device.sas(&mut t.tpm, test_support::now() + 120);

    // Reboot and re-provision: a new challenge is a new key.
    let second_blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&second_blob).unwrap();
    let (status, body) = app.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let (status, body): (StatusCode, Value) = app
        .put_register(&device.registration_id, &device.body(), Some(&old_token))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errorCode"], 401_002);
    let (status, _) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK);
}

/// A SAS as aziot-identityd 1.4–1.6 signs it (`identity/aziot-cloud-client-async/src/connector.rs`
/// lines 133–153 in 1.6.0): the audience lowercased, then percent-encoded with a set that keeps
/// `/` (`http_common::PATH_SEGMENT_ENCODE_SET` plus `=`), the signature and expiry form-encoded
/// after it, `skn=registration`.
fn aziot_sas(t: &mut TestTpm, registration_id: &str, expiry: u64) -> String {
    let sr = format!("{}/registrations/{registration_id}", test_support::ID_SCOPE).to_lowercase();
    let sig = dps_protocol::sas::Signer::sign(
        &mut t.tpm,
        dps_protocol::sas::string_to_sign(&sr, expiry).as_bytes(),
    )
    .unwrap();
    let sig = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn=registration")
}

/// aziot-identityd 1.4–1.6's whole exchange, each step answered with a status its source
/// accepts (read in source, not run here; docs/protocol.md §2, the compatibility table; lines
/// of `identity/aziot-cloud-client-async/src/dps/mod.rs` in 1.6.0):
/// - api-version `2021-06-01` on every call (line 10: `const API_VERSION: &str =
///   "api-version=2021-06-01";`);
/// - the challenge: `{registrationId, tpm}`, answered `401` (line 140:
///   `hyper::StatusCode::UNAUTHORIZED`) with `authenticationKey`;
/// - the SAS leg: a body of `{registrationId}` only (`schema::request::DeviceRegistration`),
///   answered `202` and nothing else (line 209: `parse::<OperationStatus, ServiceError>(&[
///   hyper::StatusCode::ACCEPTED])`), with `operationId`;
/// - the poll: `200` or `202` (line 245: `&[hyper::StatusCode::OK,
///   hyper::StatusCode::ACCEPTED]`), a body `status` + `registrationState` that its
///   `schema::response::DeviceRegistration` reads (`assigned` needs `assignedHub`, `deviceId`).
///
/// An extra body field (here a certificate request, which newer clients may add) is ignored.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_sas_leg_needs_no_tpm_in_the_body(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let url = format!(
        "{}/{}/registrations/{}/register?api-version=2021-06-01",
        app.base,
        test_support::ID_SCOPE,
        device.registration_id
    );
    let response = app
        .client
        .put(&url)
        .json(&device.body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    let blob = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        body["authenticationKey"].as_str().unwrap(),
    )
    .unwrap();
    t.tpm.import_authentication_key(&blob).unwrap();

    let token = aziot_sas(&mut t, &device.registration_id, test_support::now() + 30);
    let bare =
        serde_json::json!({"registrationId": device.registration_id, "clientCertCsr": "MIIB"});
    let response = app
        .client
        .put(&url)
        .header("authorization", &token)
        .json(&bare)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let operation_id = body["operationId"].as_str().expect("operationId");

    let poll_url = format!(
        "{}/{}/registrations/{}/operations/{operation_id}?api-version=2021-06-01",
        app.base,
        test_support::ID_SCOPE,
        device.registration_id
    );
    let response = app
        .client
        .get(&poll_url)
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert!(
        [StatusCode::OK, StatusCode::ACCEPTED].contains(&response.status()),
        "{}",
        response.status()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "assigned", "{body}");
    let state = &body["registrationState"];
    assert!(state["assignedHub"].is_string(), "{body}");
    assert!(state["deviceId"].is_string(), "{body}");

    // Without a TPM and without a SAS there is nothing to challenge.
    let response = app.client.put(&url).json(&bare).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// Service key rotation across instances: an instance with the new key first and the old one
/// below still serves a device whose key was sealed under the old one; its next registration
/// re-seals the key under the new one, after which an instance without the old key serves it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_rotated_service_key_keeps_devices_working(pool: PgPool) {
    use provisioning_service::sealing::Sealer;
    let old = test_support::service::SERVICE_KEY;
    let new: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(29) ^ 0x3c);
    let before = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    before.enroll(&device.registration_id, &device.ek).await;
    provision(&before, &mut t, &device).await;
    let key_id = || async {
        sqlx::query_scalar::<_, String>("SELECT key_id FROM registrations")
            .fetch_one(&before.pool)
            .await
            .unwrap()
    };
    let old_id = key_id().await;

    let rotated = before
        .instance_sealed_with(Sealer::with_previous(&new, &[old]))
        .await;
    let (status, body) = rotated.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "the old key still opens: {body}");
    let (status, body) = rotated.register_with(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let new_id = key_id().await;
    assert_ne!(new_id, old_id, "re-sealed under the current key");
    assert_eq!(new_id, Sealer::new(&new).key_id());

    let only_new = before.instance_sealed_with(Sealer::new(&new)).await;
    let (status, body) = only_new.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A replayed token of the old key racing the device's re-registration must not bring the old
/// key back. The test stands in for the re-registration: it holds the registration row (as the
/// register step does with `FOR UPDATE`), writes the new key into it, and commits only once the
/// replay is waiting behind it. With the row lock the replay then sees the new key and is
/// refused; without it, it verified against the old row and overwrote the new key.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_replayed_old_token_racing_re_registration_cannot_restore_the_old_key(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    provision(&app, &mut t, &device).await;
    let old_token = device.sas(&mut t.tpm, test_support::now() + 120);
    // Reboot and re-provision: the new key is in the TPM and in a live challenge.
    let blob = app.challenge(&device).await;
    t.tpm.import_authentication_key(&blob).unwrap();
    let id = device.registration_id.clone();

    let mut reregister = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM registrations WHERE registration_id = $1 FOR UPDATE")
        .bind(&id)
        .execute(&mut *reregister)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE registrations r SET sealed_key = c.sealed_key, key_id = c.key_id,
                authentication_key = c.authentication_key, etag = gen_random_uuid()
         FROM challenges c WHERE r.registration_id = $1 AND c.registration_id = $1",
    )
    .bind(&id)
    .execute(&mut *reregister)
    .await
    .unwrap();
    let body = device.body();
    let replay = app.put_register(&id, &body, Some(&old_token));
    let finish = async {
        for _ in 0..300 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%FROM registrations%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        reregister.commit().await.unwrap();
    };
    let ((status, answer), ()) = tokio::join!(replay, finish);
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old key's token was accepted: {answer}"
    );
    // The device's new key is the registration's key.
    let (status, state) = app.device_state(&device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{state}");
}

/// DPS registration ids are case-insensitive, and aziot-identityd sends its configured id as
/// written: enrolled as `Aziot-Dev-1`, the device registers as `Aziot-Dev-1` (path, body and
/// SAS resource, as aziot-identityd builds them), polls, and the service API finds it under any
/// case. The stored and returned form is the lowercase one.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_mixed_case_registration_id_is_one_registration_in_lowercase(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let mut device = Device::of(&mut t.tpm);
    device.registration_id = "Aziot-Dev-1".to_owned();
    let enrolled = app.enroll(&device.registration_id, &device.ek).await;
    assert_eq!(enrolled["registrationId"], "aziot-dev-1");

    let operation_id = provision(&app, &mut t, &device).await;
    let (status, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "assigned");
    assert_eq!(body["registrationState"]["registrationId"], "aziot-dev-1");
    assert_eq!(body["registrationState"]["deviceId"], "aziot-dev-1");

    for path in ["/enrollments/AZIOT-DEV-1", "/registrations/aziot-DEV-1"] {
        let (status, body) = app
            .admin(
                reqwest::Method::GET,
                &format!("{path}?api-version=2021-10-01"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["registrationId"], "aziot-dev-1", "{path}");
    }
    // Another case of the same id is the same enrollment, not a second one.
    let (status, body) = app
        .admin(
            reqwest::Method::PUT,
            "/enrollments/aziot-dev-1?api-version=2021-10-01",
            Some(serde_json::to_value(enrollment("AZIOT-dev-1", &device.ek)).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(registration_count(&app.pool).await, 1);

    // As aziot-identityd asks: the id as configured in the path and the body, no TPM in the
    // SAS leg's body, and a token whose `sr` it lowercased (`aziot_sas`).
    let token = aziot_sas(&mut t, "Aziot-Dev-1", test_support::now() + 30);
    let (status, body) = app
        .put_register(
            "Aziot-Dev-1",
            &serde_json::json!({"registrationId": "Aziot-Dev-1"}),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(registration_count(&app.pool).await, 1);
}
