//! The brokers' auth hooks, called with the payloads each broker sends (RabbitMQ, EMQX,
//! VerneMQ, mosquitto-go-auth), for a device provisioned on a real TPM. The broker itself is
//! exercised end to end in device-client's tests (RabbitMQ).

use std::time::Duration;

use dps_protocol::sas::{self, SoftwareKey};
use dps_protocol::SasError;
use provisioning_service::hub::{self, Credentials, HubRefusal};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::types::time::OffsetDateTime;
use sqlx::PgPool;
use test_support::{now, Device, TestApp, TestTpm, HUBS, HUB_AUTH_SECRET, POLICY, POLICY_KEY};

/// A provisioned device and where it was assigned.
struct Provisioned {
    t: TestTpm,
    device: Device,
    hub: String,
    device_id: String,
}

async fn provisioned(app: &TestApp) -> Provisioned {
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    app.provision(&mut t, &device).await;
    let (_, state) = app.device_state(&device, &mut t.tpm).await;
    Provisioned {
        hub: state["assignedHub"].as_str().unwrap().to_owned(),
        device_id: state["deviceId"].as_str().unwrap().to_owned(),
        t,
        device,
    }
}

impl Provisioned {
    fn username(&self) -> String {
        format!("{}/{}/?api-version=2021-04-12", self.hub, self.device_id)
    }

    /// A hub token signed in the TPM, for `device_id` on `hub`, expiring at `expiry`.
    fn token_for(&mut self, hub: &str, device_id: &str, expiry: u64) -> String {
        let resource = format!("{hub}/devices/{device_id}");
        sas::build_token(&resource, expiry, None, &mut self.t.tpm).unwrap()
    }

    fn token(&mut self) -> String {
        let (hub, id) = (self.hub.clone(), self.device_id.clone());
        self.token_for(&hub, &id, now() + 300)
    }
}

/// Asks the hook as the broker of the hub the body's username names (the first linked hub's
/// for a username that names none).
async fn hook(
    app: &TestApp,
    path: &str,
    body: Value,
    form: bool,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let hub = body["username"]
        .as_str()
        .and_then(|u| u.split_once('/'))
        .map(|(hub, _)| hub)
        .filter(|hub| HUBS.iter().any(|h| h.eq_ignore_ascii_case(hub)))
        .unwrap_or(HUBS[0])
        .to_owned();
    hook_of(app, &hub, path, body, form, headers).await
}

/// Asks the hook as the broker of `hub` (`/{secret}/hubs/{hub}/…`, each hub's broker its own
/// URL).
async fn hook_of(
    app: &TestApp,
    hub: &str,
    path: &str,
    body: Value,
    form: bool,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = app
        .client
        .request(Method::POST, format!("{}/hubs/{hub}{path}", app.hook_base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request = if form {
        request.form(&body)
    } else {
        request.json(&body)
    };
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Each broker's connect question, answered as that broker reads it: true for "allow".
async fn connects(app: &TestApp, username: &str, password: &str, client_id: &str) -> [bool; 4] {
    let (_, rabbit) = hook(
        app,
        "/rabbitmq/user",
        json!({"username": username, "password": password}),
        true,
        &[],
    )
    .await;
    let (_, emqx) = hook(
        app,
        "/emqx/authn",
        json!({"clientid": client_id, "username": username, "password": password, "peerhost": "192.0.2.1"}),
        false,
        &[],
    )
    .await;
    let (_, verne) = hook(
        app,
        "/vernemq",
        json!({"peer_addr": "192.0.2.1", "peer_port": 50000, "username": username, "password": password,
               "mountpoint": "", "client_id": client_id, "clean_session": true}),
        false,
        &[("vernemq-hook", "auth_on_register")],
    )
    .await;
    let (go_auth, _) = hook(
        app,
        "/go-auth/user",
        json!({"username": username, "password": password, "clientid": client_id}),
        false,
        &[],
    )
    .await;
    let emqx: Value = serde_json::from_str(&emqx).unwrap();
    let verne: Value = serde_json::from_str(&verne).unwrap();
    [
        rabbit == "allow",
        emqx["result"] == "allow",
        verne["result"] == "ok",
        go_auth == StatusCode::OK,
    ]
}

const ALL: [bool; 4] = [true; 4];
const NONE: [bool; 4] = [false; 4];

/// The domain's reason for refusing `password` (the hooks only say deny).
async fn refusal(app: &TestApp, username: &str, password: &str, client_id: &str) -> HubRefusal {
    let hub = username
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let credentials = Credentials {
        hub: &hub,
        client_id: Some(client_id),
        username,
        password,
        peer: None,
    };
    match hub::authenticate(app.app.gatekeeper(), credentials, OffsetDateTime::now_utc()).await {
        Err(hub::HubError::Refused(r)) => r,
        other => panic!("not refused: {other:?}"),
    }
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_provisioned_device_connects_and_impostors_do_not(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut p = provisioned(&app).await;
    let (user, id) = (p.username(), p.device_id.clone());
    let token = p.token();
    assert_eq!(connects(&app, &user, &token, &id).await, ALL);

    // EMQX learns when the token expires, to end the session then.
    let (_, body) = hook(
        &app,
        "/emqx/authn",
        json!({"clientid": id, "username": user, "password": token}),
        false,
        &[],
    )
    .await;
    let se = sas::SasToken::parse(&token).unwrap().expiry;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["expire_at"],
        se
    );

    // Signed by another key.
    let forged = sas::build_token(
        &format!("{}/devices/{id}", p.hub),
        now() + 300,
        None,
        &mut SoftwareKey(&[7; 32]),
    )
    .unwrap();
    assert_eq!(connects(&app, &user, &forged, &id).await, NONE);
    assert!(matches!(
        refusal(&app, &user, &forged, &id).await,
        HubRefusal::TokenRejected(SasError::InvalidSignature)
    ));
    // For another device id, and for another hub.
    let hub = p.hub.clone();
    let other_device = p.token_for(&hub, "someone-else", now() + 300);
    assert_eq!(connects(&app, &user, &other_device, &id).await, NONE);
    let other_user = format!("{hub}/someone-else/?api-version=2021-04-12");
    assert_eq!(
        connects(&app, &other_user, &other_device, "someone-else").await,
        NONE
    );
    let other_hub = p.token_for("other-hub.example.net", &id, now() + 300);
    let other_hub_user = format!("other-hub.example.net/{id}/?api-version=2021-04-12");
    assert_eq!(connects(&app, &other_hub_user, &other_hub, &id).await, NONE);
    // Expired, too long-lived, a client id that is not the device id, an skn.
    let expired = p.token_for(&hub, &id, now() - 3600);
    assert_eq!(connects(&app, &user, &expired, &id).await, NONE);
    assert!(matches!(
        refusal(&app, &user, &expired, &id).await,
        HubRefusal::TokenRejected(SasError::Expired)
    ));
    let forever = p.token_for(&hub, &id, now() + 30 * 86_400);
    assert_eq!(connects(&app, &user, &forever, &id).await, NONE);
    assert!(matches!(
        refusal(&app, &user, &token, "not-me").await,
        HubRefusal::ClientIdMismatch
    ));
    let with_skn = sas::build_token(
        &format!("{hub}/devices/{id}"),
        now() + 300,
        Some("registration"),
        &mut p.t.tpm,
    )
    .unwrap();
    assert_eq!(connects(&app, &user, &with_skn, &id).await, NONE);
    // A hook call without the brokers' secret: a bare 404, nothing evaluated.
    let wrong_secret = app
        .hook_base
        .replace(HUB_AUTH_SECRET, "not-the-secret-at-all");
    let response = app
        .client
        .post(format!("{wrong_secret}/rabbitmq/user"))
        .form(&json!({"username": user, "password": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.text().await.unwrap(), "");
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn revocation_and_re_provisioning_refuse_the_next_connect(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let other_instance = app.second_instance().await;
    let mut p = provisioned(&app).await;
    let (user, id) = (p.username(), p.device_id.clone());
    let old_token = p.token();
    assert_eq!(connects(&other_instance, &user, &old_token, &id).await, ALL);

    // Re-provisioning replaces the key: the old key's tokens are refused.
    let device = p.device.clone();
    app.provision(&mut p.t, &device).await;
    let cache = Duration::from_millis(app.app.settings().hub_key_cache_ms + 100);
    tokio::time::sleep(cache).await;
    assert_eq!(
        connects(&other_instance, &user, &old_token, &id).await,
        NONE
    );
    let new_token = p.token();
    assert_eq!(connects(&other_instance, &user, &new_token, &id).await, ALL);

    // Disabling the enrollment refuses the next connect on every instance, within the cache.
    let mut disabled = test_support::enrollment(&p.device.registration_id, &p.device.ek);
    disabled.provisioning_status = provisioning_service::enrollment::ProvisioningStatus::Disabled;
    app.enroll_with(disabled).await;
    tokio::time::sleep(cache).await;
    for instance in [&app, &other_instance] {
        assert_eq!(connects(instance, &user, &new_token, &id).await, NONE);
        // A live session's next publish is refused too (by brokers that ask per publish).
        let (_, verdict) = hook(
            instance,
            "/emqx/authz",
            json!({"username": user, "clientid": id, "topic": format!("devices/{id}/messages/events/"), "action": "publish"}),
            false,
            &[],
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&verdict).unwrap()["result"],
            "deny"
        );
    }
    assert!(matches!(
        refusal(&app, &user, &new_token, &id).await,
        HubRefusal::NotEnabled
    ));

    // Deleting the registration, likewise.
    app.enroll(&p.device.registration_id, &p.device.ek).await;
    tokio::time::sleep(cache).await;
    assert_eq!(connects(&app, &user, &new_token, &id).await, ALL);
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/registrations/{}", p.device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tokio::time::sleep(cache).await;
    assert_eq!(
        connects(&other_instance, &user, &new_token, &id).await,
        NONE
    );
    assert!(matches!(
        refusal(&app, &user, &new_token, &id).await,
        HubRefusal::NotAssigned { .. }
    ));
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn topics_a_device_and_a_backend_may_use(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let p = provisioned(&app).await;
    let (user, id) = (p.username(), p.device_id.clone());
    let backend = format!("{}/{POLICY}", p.hub);

    // (username, publish?, topic, allowed)
    let cases = [
        (&user, true, format!("devices/{id}/messages/events/"), true),
        (
            &user,
            true,
            "devices/someone-else/messages/events/".to_owned(),
            false,
        ),
        (
            &user,
            false,
            format!("devices/{id}/messages/devicebound/#"),
            true,
        ),
        (&user, false, "#".to_owned(), false),
        (
            &user,
            false,
            "devices/+/messages/events/#".to_owned(),
            false,
        ),
        (
            &backend,
            false,
            "devices/+/messages/events/#".to_owned(),
            true,
        ),
        (
            &backend,
            true,
            format!("devices/{id}/messages/devicebound/"),
            true,
        ),
        (&backend, false, "#".to_owned(), false),
    ];
    for (username, publish, topic, allowed) in cases {
        let routing_key: String = topic
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                '+' => '*',
                c => c,
            })
            .collect();
        let (_, rabbit) = hook(
            &app,
            "/rabbitmq/topic",
            json!({"username": username, "vhost": "/", "resource": "topic", "name": "amq.topic",
                   "permission": if publish { "write" } else { "read" }, "routing_key": routing_key}),
            true,
            &[],
        )
        .await;
        let (_, emqx) = hook(
            &app,
            "/emqx/authz",
            json!({"username": username, "clientid": id, "topic": topic,
                   "action": if publish { "publish" } else { "subscribe" }}),
            false,
            &[],
        )
        .await;
        let verne_body = if publish {
            json!({"username": username, "client_id": id, "mountpoint": "", "qos": 1, "topic": topic, "payload": "", "retain": false})
        } else {
            json!({"username": username, "client_id": id, "mountpoint": "", "topics": [{"topic": topic, "qos": 1}]})
        };
        let hook_name = if publish {
            "auth_on_publish"
        } else {
            "auth_on_subscribe"
        };
        let (_, verne) = hook(
            &app,
            "/vernemq",
            verne_body,
            false,
            &[("vernemq-hook", hook_name)],
        )
        .await;
        let (go_auth, _) = hook(
            &app,
            "/go-auth/acl",
            json!({"username": username, "clientid": id, "topic": topic, "acc": if publish { 2 } else { 4 }}),
            false,
            &[],
        )
        .await;
        let emqx: Value = serde_json::from_str(&emqx).unwrap();
        let verne: Value = serde_json::from_str(&verne).unwrap();
        let answers = [
            rabbit == "allow",
            emqx["result"] == "allow",
            verne["result"] == "ok",
            go_auth == StatusCode::OK,
        ];
        assert_eq!(answers, [allowed; 4], "{username} {publish} {topic}");
    }

    // A back-end application authenticates with an access policy's service token.
    let service_token = sas::build_token(
        &p.hub,
        now() + 300,
        Some(POLICY),
        &mut SoftwareKey(POLICY_KEY),
    )
    .unwrap();
    assert_eq!(
        connects(&app, &backend, &service_token, "backend-1").await,
        ALL
    );
    let wrong_key = sas::build_token(
        &p.hub,
        now() + 300,
        Some(POLICY),
        &mut SoftwareKey(&[1; 32]),
    )
    .unwrap();
    assert_eq!(
        connects(&app, &backend, &wrong_key, "backend-1").await,
        NONE
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn failed_connects_are_throttled_and_logs_keep_no_secret(pool: PgPool) {
    let app = TestApp::spawn_configured(pool, |s| {
        s.hub_failure_limit = provisioning_service::settings::Limit {
            count: 3,
            window_secs: 60,
        };
    })
    .await;
    let mut p = provisioned(&app).await;
    let (user, id) = (p.username(), p.device_id.clone());
    let good = p.token();
    let bad = good.replace("&se=", "0&se=").replace("sig=", "sig=A");
    for _ in 0..3 {
        let (_, body) = hook(
            &app,
            "/emqx/authn",
            json!({"clientid": id, "username": user, "password": bad, "peerhost": "198.51.100.7"}),
            false,
            &[],
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["result"],
            "deny"
        );
    }
    // From that address even a good token is now refused unchecked; from another it is not.
    let ask = |peer: &'static str| {
        hook(
            &app,
            "/emqx/authn",
            json!({"clientid": id, "username": user, "password": good, "peerhost": peer}),
            false,
            &[],
        )
    };
    let (_, body) = ask("198.51.100.7").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"],
        "deny"
    );
    let (_, body) = ask("198.51.100.8").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["result"], "allow");
    // A broker that reports no address: failures in the device's name never lock the device
    // out (anyone could produce them); its good token is still admitted.
    let rabbit = |password: String| {
        hook(
            &app,
            "/rabbitmq/user",
            json!({"username": user, "password": password}),
            true,
            &[],
        )
    };
    for _ in 0..5 {
        assert_eq!(rabbit(bad.clone()).await.1, "deny");
    }
    assert_eq!(rabbit(good.clone()).await.1, "allow");
    // The answer carries no secret: nothing of the token comes back.
    let signature = good
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!body.to_string().contains(signature));
}

/// Rows of the failure throttle for hub connects.
async fn hub_failure_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM throttle WHERE bucket LIKE 'hub-fail:%'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Issue 25, item 3: a failed connect cached its answer under the username's hub and device id,
/// bounded by count only (8,000 usernames of 60 KB held 535 MiB), and each new username added a
/// throttle row. Now a username longer than any IoT Hub one, or naming no device id IoT Hub
/// allows, is refused before any lookup; unknown but well-formed ids share one throttle row;
/// the cache is bounded in bytes (`hub::keys::tests::the_cache_is_bounded_in_bytes`).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_flood_of_invented_usernames_grows_neither_cache_nor_throttle(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut p = provisioned(&app).await;
    let good = p.token();
    let rabbit = |username: String| {
        hook(
            &app,
            "/rabbitmq/user",
            json!({"username": username, "password": good}),
            true,
            &[],
        )
    };
    let cached = app.app.device_keys().bytes();
    for i in 0..50 {
        let long = format!(
            "{}/{}{i}/?api-version=2021-04-12",
            p.hub,
            "d".repeat(60_000)
        );
        assert_eq!(rabbit(long).await.1, "deny");
        let long_suffix = format!("{}/{}/?{}{i}", p.hub, p.device_id, "q".repeat(60_000));
        assert_eq!(rabbit(long_suffix).await.1, "deny");
    }
    assert_eq!(app.app.device_keys().bytes(), cached, "nothing cached");
    for i in 0..50 {
        let unknown = format!("{}/nobody-{i}/?api-version=2021-04-12", p.hub);
        assert_eq!(rabbit(unknown).await.1, "deny");
    }
    assert_eq!(hub_failure_rows(&app).await, 1, "one shared row");
    assert!(app.app.device_keys().bytes() < cached + 50 * 512);
    // A wrong token for the real device still counts under its own identity, and its good
    // token is still admitted.
    let bad = sas::build_token(
        &format!("{}/devices/{}", p.hub, p.device_id),
        now() + 300,
        None,
        &mut SoftwareKey(&[7; 32]),
    )
    .unwrap();
    assert_eq!(
        hook(
            &app,
            "/rabbitmq/user",
            json!({"username": p.username(), "password": bad}),
            true,
            &[]
        )
        .await
        .1,
        "deny"
    );
    assert_eq!(hub_failure_rows(&app).await, 2);
    assert_eq!(rabbit(p.username()).await.1, "allow");
}

/// Issue 25, item 4: every broker called the hook with the same secret and nothing said which
/// hub asked, so a device of one hub was admitted on another hub's broker (device ids are unique
/// only per hub). Now each broker's hook URL names its hub, and a username must name it; the
/// short URL without a hub serves only a service with one linked hub. (With two real RabbitMQ
/// brokers: device-client `hub::a_device_of_one_hub_is_refused_by_another_hubs_broker`.)
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn each_broker_admits_only_its_own_hubs_devices(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut p = provisioned(&app).await;
    let (user, id) = (p.username(), p.device_id.clone());
    let token = p.token();
    let other = HUBS
        .iter()
        .find(|h| !h.eq_ignore_ascii_case(&p.hub))
        .unwrap();
    let ask = |hub: &str, username: &str| {
        let hub = hub.to_owned();
        let body = json!({"username": username, "password": token.clone()});
        let app = &app;
        async move { hook_of(app, &hub, "/rabbitmq/user", body, true, &[]).await }
    };
    assert_eq!(ask(&p.hub, &user).await.1, "allow");
    // The device's own credentials on the other hub's broker.
    assert_eq!(ask(other, &user).await.1, "deny");
    // Claiming the other hub in the username does not help: the token is for its own hub.
    let as_other = format!("{other}/{id}/?api-version=2021-04-12");
    assert_eq!(ask(other, &as_other).await.1, "deny");
    let credentials = Credentials {
        hub: other,
        client_id: Some(&id),
        username: &user,
        password: &token,
        peer: None,
    };
    assert!(matches!(
        hub::authenticate(app.app.gatekeeper(), credentials, OffsetDateTime::now_utc()).await,
        Err(hub::HubError::Refused(HubRefusal::OtherHub { .. }))
    ));
    // Topic checks are bound too: a live session cannot be carried to another broker.
    let topic = |hub: &str| {
        let hub = hub.to_owned();
        let body = json!({"username": user.clone(), "permission": "write",
            "routing_key": format!("devices.{id}.messages.events."),
            "resource": "topic", "name": "amq.topic", "vhost": "/"});
        let app = &app;
        async move { hook_of(app, &hub, "/rabbitmq/topic", body, true, &[]).await }
    };
    assert_eq!(topic(&p.hub).await.1, "allow");
    assert_eq!(topic(other).await.1, "deny");
    // A hub that is not linked, and the short URL with two hubs linked: no such route.
    assert_eq!(
        ask("not-linked.example.net", &user).await.0,
        StatusCode::NOT_FOUND
    );
    let response = app
        .client
        .post(format!("{}/rabbitmq/user", app.hook_base))
        .form(&json!({"username": user, "password": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// Issue 25, item 5: after the owner put a new EK on the registration id (a replaced device),
/// the old TPM's hub token still connected until the new one registered. The hub check now
/// counts the enrollment only while it names the EK the key was issued to.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_replaced_ek_revokes_the_old_tpm_on_the_hub(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut p = provisioned(&app).await;
    let (user, id) = (p.username(), p.device_id.clone());
    let token = p.token();
    assert_eq!(connects(&app, &user, &token, &id).await, ALL);
    let cache = Duration::from_millis(app.app.settings().hub_key_cache_ms + 100);

    let mut fresh = TestTpm::fresh();
    let replacement = Device::of(&mut fresh.tpm);
    app.enroll(&p.device.registration_id, &replacement.ek).await;
    tokio::time::sleep(cache).await;
    assert_eq!(connects(&app, &user, &token, &id).await, NONE);
    assert!(matches!(
        refusal(&app, &user, &token, &id).await,
        HubRefusal::NotEnabled
    ));
    // Deleted and re-created with the new EK: still refused.
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/enrollments/{}", p.device.registration_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.enroll(&p.device.registration_id, &replacement.ek).await;
    tokio::time::sleep(cache).await;
    assert_eq!(connects(&app, &user, &token, &id).await, NONE);
    // The old EK enrolled again: the old TPM is the enrollment's device again.
    app.enroll(&p.device.registration_id, &p.device.ek).await;
    tokio::time::sleep(cache).await;
    assert_eq!(connects(&app, &user, &token, &id).await, ALL);
}

/// The hook URL without a hub (`/{secret}/…`, as configured before hubs were named) still
/// serves a service with a single linked hub, bound to that hub.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_short_hook_url_serves_a_single_linked_hub(pool: PgPool) {
    let app = TestApp::spawn_configured(pool, |s| {
        s.linked_hubs =
            provisioning_service::settings::LinkedHubs::new(vec![HUBS[0].to_owned()]).unwrap();
    })
    .await;
    let mut p = provisioned(&app).await;
    assert_eq!(p.hub, HUBS[0]);
    let token = p.token();
    let short = |username: String| {
        app.client
            .post(format!("{}/rabbitmq/user", app.hook_base))
            .form(&json!({"username": username, "password": token}))
            .send()
    };
    let answer = short(p.username()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "allow");
    let elsewhere = format!("{}/{}/?api-version=2021-04-12", HUBS[1], p.device_id);
    assert_eq!(
        short(elsewhere).await.unwrap().text().await.unwrap(),
        "deny"
    );
}

/// RabbitMQ stays on tokens (docs/hub.md, "Certificate logins"): its HTTP backend asks `user`
/// with the certificate's name and *no* password for a certificate login
/// (`rabbit_auth_backend_http` drops `{password, none}`), which the hook cannot tell from a
/// client that names a device and sends no password. So a password-less question is refused for
/// a live device's name — with no password field, with an empty one, and by its bare device id
/// as a certificate's CN would give it — while the device's token is still admitted.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn rabbitmq_certificate_style_logins_without_a_token_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut device = provisioned(&app).await;
    let ask = |body: Value| hook(&app, "/rabbitmq/user", body, true, &[]);
    for username in [device.username(), device.device_id.clone()] {
        let (_, answer) = ask(json!({"username": username})).await;
        assert_ne!(answer, "allow", "no password field, as {username}");
        let (_, answer) = ask(json!({"username": username, "password": ""})).await;
        assert_eq!(answer, "deny", "an empty password, as {username}");
    }
    let token = device.token();
    let (_, answer) = ask(json!({"username": device.username(), "password": token})).await;
    assert_eq!(answer, "allow");
}
