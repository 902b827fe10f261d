//! Allocation per enrollment (static, hashed within `iotHubs`, custom through a real HTTPS
//! webhook), the device's and the webhook's payloads, re-provisioning under each policy, and
//! webhook failures that leave the registration `failed` and change nothing else.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use test_support::webhook::WEBHOOK_KEY;
use test_support::{enrollment, settings, Device, Pki, Reply, TestApp, TestTpm, Webhook, HUBS};

/// An instance that trusts the test PKI for webhooks, answers polls without throttling the
/// test's loop, and gives webhooks `timeout_ms`.
async fn instance(pool: PgPool, timeout_ms: u64) -> TestApp {
    let pki = Arc::new(Pki::new());
    let mut s = settings();
    s.webhook_ca_pem = Some(pki.ca_pem.clone());
    s.webhook_timeout_ms = timeout_ms;
    s.poll_limit.count = 1000;
    TestApp::spawn_with(pool, s, pki).await
}

/// Fails unless every field of `value` is a property of `definition` in Microsoft's published
/// DPS specification `file` (2026-04-01, `../shared/dps-rest-spec`).
fn assert_dps_fields(file: &str, definition: &str, value: &Value) {
    let path = test_support::workspace_root()
        .join("../shared/dps-rest-spec/stable/2026-04-01")
        .join(file);
    let spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let properties = &spec["definitions"][definition]["properties"];
    assert!(properties.is_object(), "{definition} in {}", path.display());
    for field in value.as_object().unwrap().keys() {
        assert!(
            properties.get(field).is_some(),
            "{field} is not a field of {definition}: {value}"
        );
    }
}

/// The fields of a custom allocation by `webhook`.
fn custom(webhook: &Webhook) -> Value {
    json!({"allocationPolicy": "custom",
           "customAllocationDefinition": {"webhookUrl": webhook.url, "apiVersion": "2021-10-01"}})
}

/// Enrolls `device` with these extra DPS fields.
async fn enroll(app: &TestApp, device: &Device, fields: Value) -> Value {
    let mut e = enrollment(&device.registration_id, &device.ek);
    e.extra = fields.as_object().unwrap().clone();
    app.enroll_with(e).await
}

/// Registers (challenge, import, SAS) and polls until the operation is decided; returns the
/// final registration state.
async fn register(app: &TestApp, t: &mut TestTpm, device: &Device) -> Value {
    let operation_id = app.provision(t, device).await;
    decided(app, t, device, &operation_id).await
}

async fn decided(app: &TestApp, t: &mut TestTpm, device: &Device, operation_id: &str) -> Value {
    for _ in 0..60 {
        let (status, body) = app.poll(device, operation_id, &mut t.tpm).await;
        if body["status"] != "assigning" {
            assert_eq!(status, StatusCode::OK, "{body}");
            return body["registrationState"].clone();
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        // aziot-identityd reads an `assigning` poll as `registrationState: {registrationId}`
        // (`dps/schema.rs`, `DeviceRegistration::Assigning`, 1.6.0): without it the poll fails.
        assert!(
            body["registrationState"]["registrationId"].is_string(),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still assigning after 6 s");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn static_and_hashed_allocation_stay_within_the_enrollments_iot_hubs(pool: PgPool) {
    let app = instance(pool, 1000).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    // The recorded TPM's id hashes to HUBS[1] over both hubs (register.rs): HUBS[0] shows the
    // policy, not the hash.
    enroll(
        &app,
        &device,
        json!({"allocationPolicy": "static", "iotHubs": [HUBS[0]]}),
    )
    .await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["assignedHub"], HUBS[0]);
    assert_eq!(state["substatus"], "initialAssignment");

    enroll(
        &app,
        &device,
        json!({"allocationPolicy": "hashed", "iotHubs": [HUBS[0]]}),
    )
    .await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["assignedHub"], HUBS[0], "hashed over iotHubs only");
    assert_eq!(state["substatus"], "reprovisionedToInitialAssignment");

    enroll(&app, &device, json!({"allocationPolicy": "hashed"})).await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(
        state["assignedHub"], HUBS[1],
        "hashed over every linked hub"
    );
    assert_eq!(state["substatus"], "deviceDataMigrated");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn custom_allocation_asks_the_webhook_with_the_device_payload_and_returns_its_payload(
    pool: PgPool,
) {
    let app = instance(pool, 2000).await;
    let answer = json!({
        "iotHubHostName": HUBS[0].to_uppercase(),
        "initialTwin": {"tags": {"line": 7}, "properties": {"desired": {"interval": 30}}},
        "payload": {"welcome": "line 7", "config": [1, 2]},
    });
    let webhook = Webhook::start(&app.pki, Reply::Json(answer.clone())).await;
    let mut t = TestTpm::recorded();
    let mut device = Device::of(&mut t.tpm);
    device.payload = Some(json!({"model": "sensor-2", "firmware": "1.4.0"}));
    enroll(&app, &device, custom(&webhook)).await;

    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["status"], "assigned", "{state}");
    assert_eq!(
        state["assignedHub"], HUBS[0],
        "the service's spelling of the hub"
    );
    assert_eq!(state["substatus"], "initialAssignment");
    assert_eq!(state["payload"], answer["payload"]);

    let requests = webhook.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request["individualEnrollment"]["registrationId"],
        device.registration_id.as_str()
    );
    assert_eq!(
        request["individualEnrollment"]["allocationPolicy"],
        "custom"
    );
    let context = &request["deviceRuntimeContext"];
    assert_eq!(context["registrationId"], device.registration_id.as_str());
    assert_eq!(
        context["tpm"]["endorsementKey"],
        STANDARD.encode(&device.ek)
    );
    assert_eq!(
        context["tpm"]["storageRootKey"],
        STANDARD.encode(&device.srk)
    );
    assert_eq!(context["payload"], device.payload.clone().unwrap());
    assert!(context.get("currentIotHubHostName").is_none(), "{context}");
    assert_eq!(request["linkedHubs"], json!(HUBS));

    // The service API shows the payload, never the device's key blob.
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/registrations/{}", device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["payload"], answer["payload"]);
    assert!(body.get("tpm").is_none(), "{body}");
    assert_dps_fields("service.json", "DeviceRegistrationState", &body);
    assert_dps_fields("device.json", "DeviceRegistrationResult", &state);
    assert_dps_fields(
        "service.json",
        "IndividualEnrollment",
        &request["individualEnrollment"],
    );
    let twin: Value =
        sqlx::query_scalar("SELECT initial_twin FROM registrations WHERE registration_id = $1")
            .bind(&device.registration_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(twin, answer["initialTwin"]);

    // Re-provisioning: the webhook learns where the device is and moves it.
    webhook.reply_with(Reply::Json(json!({"iotHubHostName": HUBS[1]})));
    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["assignedHub"], HUBS[1]);
    assert_eq!(state["substatus"], "deviceDataMigrated");
    assert!(state.get("payload").is_none(), "{state}");
    let context = &webhook.requests()[1]["deviceRuntimeContext"];
    assert_eq!(context["currentIotHubHostName"], HUBS[0]);
    assert_eq!(context["currentDeviceId"], device.registration_id.as_str());
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_failing_webhook_leaves_the_registration_failed_and_changes_nothing_else(pool: PgPool) {
    let app = instance(pool, 500).await;
    let webhook = Webhook::start(&app.pki, Reply::Status(500)).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let enrolled = enroll(
        &app,
        &device,
        json!({"allocationPolicy": "custom", "iotHubs": [HUBS[0]],
               "customAllocationDefinition": {"webhookUrl": webhook.url, "apiVersion": "2019-03-31"}}),
    )
    .await;
    let cases = [
        (Reply::Status(500), 502_302, "HTTP 500"),
        (
            Reply::Raw("{\"iotHubHostName\": "),
            502_303,
            "not an allocation response",
        ),
        (Reply::Raw("{\"payload\": {}}"), 502_303, "iotHubHostName"),
        (
            Reply::Json(json!({"iotHubHostName": HUBS[1]})),
            400_303,
            "not one of the hubs it was offered",
        ),
        (
            Reply::Json(json!({"iotHubHostName": HUBS[0], "payload": "a\u{0}b"})),
            502_303,
            "NUL",
        ),
        (
            Reply::Late(Duration::from_secs(3), json!({"iotHubHostName": HUBS[0]})),
            504_301,
            "did not answer within 500 ms",
        ),
    ];
    for (reply, code, message) in cases {
        webhook.reply_with(reply);
        let state = register(&app, &mut t, &device).await;
        assert_eq!(state["status"], "failed", "{state}");
        assert_eq!(state["errorCode"], code, "{state}");
        let text = state["errorMessage"].as_str().unwrap();
        assert!(text.contains(message), "{text}");
        assert!(!state.to_string().contains(WEBHOOK_KEY), "{state}");
        assert!(state.get("assignedHub").is_none() && state.get("payload").is_none());
        assert_dps_fields("device.json", "DeviceRegistrationResult", &state);
        // Nothing else: no hub identity, the enrollment as it was.
        let assigned: i64 =
            sqlx::query_scalar("SELECT count(*) FROM registrations WHERE assigned_hub IS NOT NULL")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(assigned, 0);
        let (_, now) = app
            .admin(
                Method::GET,
                &format!("/enrollments/{}", device.registration_id),
                None,
            )
            .await;
        assert_eq!(now["etag"], enrolled["etag"]);
    }
    // Only the offered hub was offered.
    assert!(webhook
        .requests()
        .iter()
        .all(|r| r["linkedHubs"] == json!([HUBS[0]])));
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn assigning_shows_on_another_instance_until_the_webhook_decides(pool: PgPool) {
    let a = instance(pool, 5000).await;
    let b = a.second_instance().await;
    let webhook = Webhook::start(
        &a.pki,
        Reply::Late(
            Duration::from_millis(1500),
            json!({"iotHubHostName": HUBS[1]}),
        ),
    )
    .await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    enroll(&a, &device, custom(&webhook)).await;
    let operation_id = a.provision(&mut t, &device).await;
    let response = b
        .client
        .get(format!(
            "{}/{}/registrations/{}/operations/{operation_id}?{}",
            b.base,
            test_support::ID_SCOPE,
            device.registration_id,
            test_support::API
        ))
        .header(
            "authorization",
            device.sas(&mut t.tpm, test_support::now() + 60),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "assigning", "{body}");
    let state = decided(&b, &mut t, &device, &operation_id).await;
    assert_eq!(state["status"], "assigned");
    assert_eq!(state["assignedHub"], HUBS[1]);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_overdue_decision_fails_on_the_next_poll(pool: PgPool) {
    let app = instance(pool, 1000).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let operation_id = app.provision(&mut t, &device).await;
    // As if the instance asking the webhook had stopped before writing its decision.
    sqlx::query(
        "UPDATE registrations SET status = 'assigning', substatus = NULL, assigned_hub = NULL,
             device_id = NULL, decide_by = now() - interval '1 second'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let state = decided(&app, &mut t, &device, &operation_id).await;
    assert_eq!(state["status"], "failed");
    assert_eq!(state["errorCode"], 504_302);
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn re_provisioning_follows_the_enrollments_policy(pool: PgPool) {
    let app = instance(pool, 1000).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let twin = json!({"tags": {"site": "berlin"}});
    let policy = |hub: &str, update: bool, migrate: bool| {
        json!({"allocationPolicy": "static", "iotHubs": [hub], "initialTwin": twin,
               "reprovisionPolicy": {"updateHubAssignment": update, "migrateDeviceData": migrate}})
    };
    let twin_of = || async {
        sqlx::query_scalar::<_, Option<Value>>(
            "SELECT initial_twin FROM registrations WHERE registration_id = $1",
        )
        .bind(&device.registration_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };

    enroll(&app, &device, policy(HUBS[0], true, true)).await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(
        (&state["assignedHub"], &state["substatus"]),
        (&json!(HUBS[0]), &json!("initialAssignment"))
    );
    assert_eq!(twin_of().await, Some(twin.clone()));
    // The device's data changes on its hub (what a twin store would do).
    sqlx::query("UPDATE registrations SET initial_twin = '{\"tags\": {\"site\": \"moved\"}}'")
        .execute(&app.pool)
        .await
        .unwrap();

    // Never re-provision: the device stays where it is, whatever the enrollment says now.
    enroll(&app, &device, policy(HUBS[1], false, true)).await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["assignedHub"], HUBS[0]);
    assert_eq!(state["substatus"], "reprovisionedToInitialAssignment");

    // Re-provision and migrate: to the new hub, with its data.
    enroll(&app, &device, policy(HUBS[1], true, true)).await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["assignedHub"], HUBS[1]);
    assert_eq!(state["substatus"], "deviceDataMigrated");
    assert_eq!(twin_of().await, Some(json!({"tags": {"site": "moved"}})));

    // Re-provision and reset: to the new hub, with the enrollment's initial twin.
    enroll(&app, &device, policy(HUBS[0], true, false)).await;
    let state = register(&app, &mut t, &device).await;
    assert_eq!(state["assignedHub"], HUBS[0]);
    assert_eq!(state["substatus"], "deviceDataReset");
    assert_eq!(twin_of().await, Some(twin.clone()));
}

/// Challenges `device` and imports the key; the SAS step is the caller's.
async fn challenged(app: &TestApp, t: &mut TestTpm, device: &Device) {
    let blob = app.challenge(device).await;
    t.tpm
        .import_authentication_key(&blob)
        .expect("the TPM imports the service's blob");
}

/// The SAS step's answer, which must be 202 with the decision: the registration state.
async fn answered(app: &TestApp, t: &mut TestTpm, device: &Device) -> Value {
    let (status, body) = app.register_with(device, &mut t.tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["registrationState"].clone()
}

/// An instance remembers the challenges it issued with the enrollment read beside them
/// (`registration::recent`), so that the SAS step need not read it again; an enrollment changed
/// while the device works on its challenge decides the registration all the same (the write
/// checks the enrollment's etag).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_enrollment_changed_while_the_device_answers_its_challenge_decides(pool: PgPool) {
    let app = instance(pool, 1000).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let to = |hub: &str| json!({"allocationPolicy": "static", "iotHubs": [hub]});
    enroll(&app, &device, to(HUBS[0])).await;
    challenged(&app, &mut t, &device).await;
    enroll(&app, &device, to(HUBS[1])).await;
    assert_eq!(
        answered(&app, &mut t, &device).await["assignedHub"],
        HUBS[1]
    );
    let text = app.app.metrics().render(&app.pool);
    let read_again = r#"dps_remembered_challenges_total{outcome="read_again"}"#;
    assert_eq!(
        crate::metrics::sample(&text, read_again),
        Some(1.0),
        "{text}"
    );
}

/// The same for the device's registration, written meanwhile (here directly, as another
/// instance would): a device that is never re-provisioned stays where the registration says it
/// is now, not where it was when the challenge was issued (the write checks the registration's
/// etag).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_registration_changed_while_the_device_answers_its_challenge_decides(pool: PgPool) {
    let app = instance(pool, 1000).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let fields = json!({"allocationPolicy": "static", "iotHubs": [HUBS[0]],
                        "reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": true}});
    enroll(&app, &device, fields).await;
    assert_eq!(
        register(&app, &mut t, &device).await["assignedHub"],
        HUBS[0]
    );
    challenged(&app, &mut t, &device).await;
    sqlx::query("UPDATE registrations SET assigned_hub = $1, etag = gen_random_uuid()")
        .bind(HUBS[1])
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        answered(&app, &mut t, &device).await["assignedHub"],
        HUBS[1]
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn allocation_fields_are_checked_when_an_enrollment_is_written(pool: PgPool) {
    let app = instance(pool, 1000).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    let cases = [
        (
            json!({"allocationPolicy": "geoLatency"}),
            "geoLatency is not supported",
        ),
        (
            json!({"allocationPolicy": "custom"}),
            "needs customAllocationDefinition",
        ),
        (
            json!({"allocationPolicy": "custom", "customAllocationDefinition":
                {"webhookUrl": "http://localhost:1/x", "apiVersion": "2021-10-01"}}),
            "must be https",
        ),
        (
            json!({"allocationPolicy": "custom", "customAllocationDefinition":
                {"webhookUrl": "https://localhost:1/x", "apiVersion": "2017-11-15"}}),
            "apiVersion",
        ),
        (
            json!({"iotHubs": ["elsewhere.example.net"]}),
            "not a linked hub",
        ),
        (
            json!({"allocationPolicy": "static", "iotHubs": HUBS}),
            "exactly one hub",
        ),
        (
            json!({"reprovisionPolicy": {"updateHubAssignment": false}}),
            "reprovisionPolicy",
        ),
    ];
    for (fields, message) in cases {
        let mut e = enrollment(&device.registration_id, &device.ek);
        e.extra = fields.as_object().unwrap().clone();
        let (status, body) = app
            .admin(
                Method::PUT,
                &format!("/enrollments/{}", device.registration_id),
                Some(serde_json::to_value(&e).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{fields}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{fields}: {body}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM enrollments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// Issue 25, item 7: the SAS step had no rate and each call started a webhook call (300
/// re-registrations in 1.5 s made 289 concurrent calls to the owner's webhook). Now a device
/// registering again while its webhook decides gets that decision's operation and starts
/// nothing; once decided, each new decision counts against a per-device rate; and one instance
/// makes at most `webhook::MAX_CONCURRENT_CALLS` calls at once.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn one_device_cannot_make_the_service_flood_its_webhook(pool: PgPool) {
    let app = instance(pool, 3000).await;
    let answer = json!({"iotHubHostName": HUBS[0]});
    let webhook = Webhook::start(
        &app.pki,
        Reply::Late(Duration::from_millis(500), answer.clone()),
    )
    .await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    enroll(&app, &device, custom(&webhook)).await;
    let operation_id = app.provision(&mut t, &device).await;

    // Forty more at once with the device's key, while the webhook decides: one operation.
    let token = device.sas(&mut t.tpm, test_support::now() + 300);
    let body = device.body();
    let again = (0..40).map(|_| app.put_register(&device.registration_id, &body, Some(&token)));
    for (status, answer) in futures_util::future::join_all(again).await {
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "assigning", "{answer}");
        assert_eq!(answer["operationId"], operation_id.as_str(), "{answer}");
    }
    let state = decided(&app, &mut t, &device, &operation_id).await;
    assert_eq!(state["status"], "assigned", "{state}");
    assert_eq!(webhook.requests().len(), 1, "one call for 41 registrations");

    // Decided: each registration is a new decision, at most `webhook_rate` a minute.
    webhook.reply_with(Reply::Json(answer));
    let rate = app.app.settings().webhook_limit.count;
    let mut refused = 0;
    for _ in 0..rate + 3 {
        let (status, answer) = app
            .put_register(&device.registration_id, &body, Some(&token))
            .await;
        match status {
            StatusCode::ACCEPTED => {
                let op = answer["operationId"].as_str().unwrap().to_owned();
                decided(&app, &mut t, &device, &op).await;
            }
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}: {answer}"),
        }
    }
    // The first registration counted too: `rate` decisions in all, the other four refused.
    assert_eq!(refused, 4);
    assert_eq!(webhook.requests().len(), rate as usize);
}
