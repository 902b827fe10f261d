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
use test_support::{now, Device, TestApp, TestTpm, HUB_AUTH_SECRET, POLICY, POLICY_KEY};

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

async fn hook(
    app: &TestApp,
    path: &str,
    body: Value,
    form: bool,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = app
        .client
        .request(Method::POST, format!("{}{path}", app.hook_base));
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
    let credentials = Credentials {
        client_id: Some(client_id),
        username,
        password,
        peer: None,
    };
    match hub::authenticate(&app.app, credentials, OffsetDateTime::now_utc()).await {
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
