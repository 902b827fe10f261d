//! Mutual TLS to the hub with the device's certificate, its key in the TPM (docs/hub.md,
//! "Certificate logins"): a device provisioned with a CSR on swtpm sends through a real
//! Mosquitto that takes the identity from the certificate (`use_identity_as_username`), checks
//! it against the service's CRL (kept by `crl-sync`) and confines each device to its own topics.
//! Refused by the broker: another CA's certificate, an expired one, a revoked one, the device's
//! certificate without its TPM, and a device reaching for another's topics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use provisioning_service::allocation::LinkedHubs;
use provisioning_service::config::CrlSyncArgs;
use rumqttc::{Packet, QoS};
use serde_json::json;
use sqlx::PgPool;
use test_support::mqtt::Mqtt;
use test_support::{IssuingPki, Mosquitto, Pki, Swtpm, TestApp};
use time::{Duration as Days, OffsetDateTime};

use super::certificates::{enrolled_swtpm, register_with_certificate, tpm2_openssl_s_client};
use super::provision::device_client;

/// The hub's host name: the broker listens on loopback, and the test PKI names localhost.
const HUB: &str = "localhost";
/// The back-end application's certificate name (the broker's ACL lets it read every device).
const BACKEND: &str = "hub-backend";
const WAIT: Duration = Duration::from_secs(15);

/// A device provisioned with a certificate, and a Mosquitto broker trusting its root.
struct Hub {
    app: TestApp,
    pki: IssuingPki,
    swtpm: Swtpm,
    tcti: String,
    _dir: tempfile::TempDir,
    state: PathBuf,
    crl: PathBuf,
    broker: Mosquitto,
    device_id: String,
}

impl Hub {
    async fn start(pool: PgPool) -> Self {
        let pki = IssuingPki::new(&[(
            "tpm",
            json!({"requireTpmResidentKey": true, "keyTypes": ["ecdsa-p384", "ecdsa-p256"]}),
        )]);
        let policies = pki.policies();
        let mut settings = test_support::settings();
        settings.linked_hubs = LinkedHubs::new(vec![HUB.to_owned()]).unwrap();
        settings.credential_policies = policies;
        let app = TestApp::spawn_with(pool, settings, Arc::new(Pki::new())).await;
        let (swtpm, tcti) = enrolled_swtpm(&app).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        register_with_certificate(&app, &tcti, &state).await;
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        let device_id = saved["device_id"].as_str().unwrap().to_owned();
        let crl = dir.path().join("crl.pem");
        sync_crl(&app, &pki, &crl, None).await;
        Self {
            broker: Mosquitto::start(&app.pki, &pki.root_file(), &crl, BACKEND),
            app,
            pki,
            swtpm,
            tcti,
            _dir: dir,
            state,
            crl,
            device_id,
        }
    }

    /// Disables the device's enrollment (which revokes its certificate).
    async fn disable(&self) {
        let mut tpm = device_client::tpm::Tpm::open(&self.tcti).unwrap();
        let ek = test_support::Device::of(&mut tpm).ek;
        let mut e = test_support::enrollment(&self.device_id, &ek);
        e.extra
            .insert("credentialPolicyName".to_owned(), json!("tpm"));
        e.provisioning_status = provisioning_service::enrollment::ProvisioningStatus::Disabled;
        self.app.enroll_with(e).await;
    }

    /// Once the service's CRL cache has aged, `crl-sync` writes the CRL and signals the broker;
    /// then a moment for the broker to re-read it.
    async fn revocations_reach_the_broker(&self) {
        tokio::time::sleep(provisioning_service::issuance::CRL_CACHE).await;
        sync_crl(
            &self.app,
            &self.pki,
            &self.crl,
            Some(self.broker.pid_file()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// `device-client send` (certificate by default), its output.
    async fn send(&self, message: &str) -> std::process::Output {
        self.send_with(message, &[]).await
    }

    /// `device-client send` with `more` flags.
    async fn send_with(&self, message: &str, more: &[&str]) -> std::process::Output {
        let mut args = self.hub_args("send");
        args.extend(["--message", message].map(str::to_owned));
        args.extend(more.iter().map(|s| (*s).to_owned()));
        device_client(args).await
    }

    /// The binary's arguments for `command` (`send` or `listen`) with this hub.
    fn hub_args(&self, command: &str) -> Vec<String> {
        [
            "--tcti",
            &self.tcti,
            command,
            "--state-file",
            &self.state.display().to_string(),
            "--hub-port",
            &self.broker.port.to_string(),
            "--ca-file",
            &self.app.pki.ca_file().display().to_string(),
            "--timeout",
            "10",
            "--dps-ca-file",
            &self.app.pki.ca_file().display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// An MQTT client presenting a software-held certificate `(chain, key)`.
    fn client(&self, id: &str, (chain, key): &(String, String)) -> Mqtt {
        let config = self.app.pki.client_config_presenting(chain, key);
        Mqtt::connect_with(config, self.broker.port, id, None)
    }

    /// A certificate of the device's issuing CA for `name`, valid around now.
    fn certificate(&self, name: &str) -> (String, String) {
        let now = OffsetDateTime::now_utc();
        self.pki
            .client(name, now - Days::hours(1), now + Days::days(1))
    }
}

/// `crl-sync --once`: the service's CRL of policy `tpm` into `crl`, signalling `pid_file`.
async fn sync_crl(
    app: &TestApp,
    pki: &IssuingPki,
    crl: &std::path::Path,
    pid_file: Option<PathBuf>,
) {
    provisioning_service::crl_sync::run(&CrlSyncArgs {
        url: format!("{}/credentialPolicies/tpm/crl", app.base),
        ca_file: Some(app.pki.ca_file()),
        issuer_file: pki.issuing_file(),
        out: crl.to_path_buf(),
        reload_pidfile: pid_file,
        interval_ms: 1000,
        once: true,
    })
    .await
    .unwrap();
}

async fn subscribed(mqtt: &mut Mqtt, filter: &str) {
    mqtt.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .unwrap();
    mqtt.next(WAIT, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await
        .unwrap()
        .expect("SUBACK");
}

/// Where `device`'s device-to-cloud messages go.
fn events(device: &str) -> String {
    format!("devices/{device}/messages/events/")
}

/// First boot with a CSR, then `device-client send` over mutual TLS (no token, the key in the
/// TPM): the back end, itself a certificate login, receives the message on the device's topic,
/// and the broker logged the device by its certificate's name.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_device_sends_over_mutual_tls_and_the_back_end_receives(pool: PgPool) {
    let hub = Hub::start(pool).await;
    let mut backend = hub.client("backend-1", &hub.certificate(BACKEND));
    assert!(backend.connected(WAIT).await, "{}", hub.broker.log());
    subscribed(&mut backend, "devices/+/messages/events/#").await;

    let out = hub.send("hello over mTLS").await;
    assert!(out.status.success(), "{out:?}\n{}", hub.broker.log());
    assert_eq!(
        backend.received(&events(&hub.device_id), WAIT).await,
        Some(b"hello over mTLS".to_vec())
    );
    assert!(
        hub.broker.log().contains(&format!("u'{}'", hub.device_id)),
        "{}",
        hub.broker.log()
    );

    // Cloud to device: `listen` over mutual TLS prints what the back end sends it.
    let mut args = hub.hub_args("listen");
    args.extend(["--count", "1", "--duration", "20"].map(str::to_owned));
    let listening = tokio::spawn(device_client(args));
    let topic = format!("devices/{}/messages/devicebound/hello", hub.device_id);
    let mut heard = None;
    for _ in 0..40 {
        backend
            .client
            .publish(&topic, QoS::AtLeastOnce, false, "to the device")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        if listening.is_finished() {
            heard = Some(listening.await.unwrap());
            break;
        }
    }
    let out = heard.expect("listen got a message within 10 s");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{topic}\tto the device\n")
    );
}

/// The broker refuses: a certificate of another CA with the device's name; an expired
/// certificate of the right CA; the device's own certificate presented with a key that is not
/// the TPM's; and, after the enrollment is disabled and `crl-sync` has written the CRL and
/// signalled the broker, the device itself (`send` says the certificate was refused). A device
/// publishing on another device's topic, or subscribed to `#`, reaches no one.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn foreign_expired_keyless_revoked_and_overreaching_clients_are_refused(pool: PgPool) {
    let hub = Hub::start(pool).await;
    let id = hub.device_id.clone();
    let now = OffsetDateTime::now_utc();

    let foreign = IssuingPki::new(&[("tpm", json!({}))]);
    let forged = foreign.client(&id, now - Days::hours(1), now + Days::days(1));
    assert!(!hub.client("forged", &forged).connected(WAIT).await);
    let expired = hub
        .pki
        .client(&id, now - Days::days(10), now - Days::days(1));
    assert!(!hub.client("expired", &expired).connected(WAIT).await);
    let chain = std::fs::read_to_string(device_client::provision::chain_file(&hub.state)).unwrap();
    let software_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .unwrap()
        .serialize_pem();
    assert!(
        !hub.client("keyless", &(chain, software_key))
            .connected(WAIT)
            .await
    );

    // Two devices of the same CA, each confined to its own topics.
    let mut backend = hub.client("backend-1", &hub.certificate(BACKEND));
    assert!(backend.connected(WAIT).await);
    subscribed(&mut backend, "devices/+/messages/events/#").await;
    let mut nosy = hub.client("device-a", &hub.certificate("device-a"));
    assert!(nosy.connected(WAIT).await);
    subscribed(&mut nosy, "#").await;
    nosy.client
        .publish(events("device-b"), QoS::AtLeastOnce, false, "forged")
        .await
        .unwrap();
    let mut other = hub.client("device-b", &hub.certificate("device-b"));
    assert!(other.connected(WAIT).await);
    other
        .client
        .publish(events("device-b"), QoS::AtLeastOnce, false, "own")
        .await
        .unwrap();
    assert_eq!(
        backend.received(&events("device-b"), WAIT).await,
        Some(b"own".to_vec()),
        "only device-b's own message reaches the back end"
    );
    assert_eq!(
        nosy.received(&events("device-b"), Duration::from_secs(1))
            .await,
        None
    );

    // Revocation: the enrollment disabled, the CRL synced, the broker signalled.
    assert!(hub.send("before").await.status.success());
    hub.disable().await;
    hub.revocations_reach_the_broker().await;
    let out = hub
        .send_with("after", &["--reregister-attempts", "0"])
        .await;
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused the device's certificate"), "{said}");
}

/// The hub no longer knows the device (issue 29, item 5): its registration deleted, which
/// revokes its certificate (the broker refuses it once `crl-sync` has run). `send` does what
/// DPS advises: registers again (a new certificate), connects and sends. When registering again
/// cannot help (the enrollment disabled), it tries `--reregister-attempts` times, waiting
/// 1 s and then 2 s between tries (the back-off doubles), and fails saying so.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_device_registers_again_when_the_hub_no_longer_knows_it(pool: PgPool) {
    let hub = Hub::start(pool).await;
    let mut backend = hub.client("backend-1", &hub.certificate(BACKEND));
    assert!(backend.connected(WAIT).await);
    subscribed(&mut backend, "devices/+/messages/events/#").await;
    let (status, _) = hub
        .app
        .admin(
            reqwest::Method::DELETE,
            &format!("/registrations/{}", hub.device_id),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    hub.revocations_reach_the_broker().await;

    let out = hub.send("after re-registering").await;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.matches("registering again").count(), 1, "{said}");
    assert_eq!(
        backend.received(&events(&hub.device_id), WAIT).await,
        Some(b"after re-registering".to_vec())
    );
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM issued_certificates WHERE revoked_at IS NULL")
            .fetch_one(&hub.app.pool)
            .await
            .unwrap();
    assert_eq!(live, 1);

    // The enrollment disabled: registering again is refused each time; bounded, backing off.
    hub.disable().await;
    hub.revocations_reach_the_broker().await;
    let out = hub
        .send_with(
            "never",
            &["--reregister-attempts", "3", "--reregister-backoff", "1"],
        )
        .await;
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.matches("registering again failed").count(),
        3,
        "{said}"
    );
    assert!(
        said.contains("wait=1s") && said.contains("wait=2s"),
        "{said}"
    );
    assert!(!said.contains("wait=4s"), "{said}");
    assert!(
        said.contains("still refused after registering again 3 times"),
        "{said}"
    );
}

/// A TLS stack that is not ours: `openssl s_client` with the TPM 2.0 provider (tpm2-openssl),
/// the device's certificate and its key in the TPM, completes the handshake with Mosquitto, and
/// the broker accepts its MQTT CONNECT (CONNACK, return code 0).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn openssl_with_the_tpm2_provider_logs_in_to_mosquitto_as_the_device(pool: PgPool) {
    let hub = Hub::start(pool).await;
    let chain = device_client::provision::chain_file(&hub.state);
    // MQTT 3.1.1 CONNECT: clean session, keep-alive 1 s (the broker closes the idle connection
    // 1.5 s later, which ends s_client), client id "ossl".
    let connect = [
        0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 4, b'o', b's', b's', b'l',
    ];
    let out = tpm2_openssl_s_client(
        &hub.swtpm,
        &hub.tcti,
        hub.broker.port,
        &chain,
        &hub.app.pki.ca_file(),
        &["-quiet"],
        Some(&connect),
    );
    assert!(
        out.stdout.windows(4).any(|w| w == [0x20, 0x02, 0x00, 0x00]),
        "{out:?}\n{}",
        hub.broker.log()
    );
    assert!(
        hub.broker
            .log()
            .contains(&format!("as ossl (p2, c1, k1, u'{}')", hub.device_id)),
        "{}",
        hub.broker.log()
    );
}
