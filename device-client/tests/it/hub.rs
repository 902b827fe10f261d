//! The hub, end to end: a device provisioned by the `device-client` binary on swtpm sends and
//! receives through a real broker (an ephemeral RabbitMQ node) that asks the service's hooks;
//! a back-end application reads its messages; impostors and revoked devices are refused by the
//! broker itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use device_client::tpm::Tpm;
use dps_protocol::sas::{self, SoftwareKey};
use dps_protocol::RegistrationId;
use provisioning_service::allocation::LinkedHubs;
use rumqttc::{Packet, QoS, SubscribeReasonCode};
use sqlx::PgPool;
use test_support::mqtt::Mqtt;
use test_support::{
    now, Broker, Device, Pki, Swtpm, TestApp, TestTpm, ID_SCOPE, POLICY, POLICY_KEY,
};

/// The hub's host name: the broker listens on loopback, and the test PKI names localhost.
const HUB: &str = "localhost";
const WAIT: Duration = Duration::from_secs(20);

fn binary(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_device-client"));
    command.args(args).env_remove("RUST_LOG");
    command
}

async fn run(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || binary(&args).output().unwrap())
        .await
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hub_args(
    tcti: &str,
    command: &str,
    state: &Path,
    app: &TestApp,
    broker: &Broker,
) -> Vec<String> {
    [
        "--tcti",
        tcti,
        command,
        "--state-file",
        &state.display().to_string(),
        "--hub-port",
        &broker.port.to_string(),
        "--ca-file",
        &app.pki.ca_file().display().to_string(),
        "--token-ttl",
        "60",
        "--timeout",
        "15",
        // Refusals are what these tests look at; registering again is mtls.rs's.
        "--reregister-attempts",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A back-end application: an access policy's service token for the hub.
fn backend(app: &TestApp, broker: &Broker) -> Mqtt {
    let token =
        sas::build_token(HUB, now() + 300, Some(POLICY), &mut SoftwareKey(POLICY_KEY)).unwrap();
    Mqtt::connect(
        &app.pki,
        broker.port,
        "backend-1",
        &format!("{HUB}/{POLICY}"),
        &token,
    )
}

async fn suback(mqtt: &mut Mqtt) -> Vec<SubscribeReasonCode> {
    mqtt.next(WAIT, |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .unwrap()
    .expect("SUBACK")
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_provisioned_device_talks_to_its_hub_and_impostors_cannot(pool: PgPool) {
    let mut settings = test_support::settings();
    settings.linked_hubs = LinkedHubs::new(vec![HUB.to_owned()]).unwrap();
    let app = TestApp::spawn_with(pool, settings, Arc::new(Pki::new())).await;
    let (pki_dir, hook_base) = (
        Arc::clone(&app.pki),
        format!("{}/hubs/{HUB}", app.hook_base),
    );
    let broker = tokio::task::spawn_blocking(move || Broker::start(&pki_dir, &hook_base))
        .await
        .unwrap();

    // First boot.
    let swtpm = Swtpm::start();
    let tcti = swtpm.tcti();
    let ek = Tpm::open(&tcti).unwrap().endorsement_key().unwrap();
    let id = RegistrationId::from_endorsement_key(&ek)
        .as_str()
        .to_owned();
    app.enroll(&id, &ek).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let register = [
        "--tcti",
        &tcti,
        "register",
        "--endpoint",
        &app.base,
        "--id-scope",
        ID_SCOPE,
        "--ca-file",
        &app.pki.ca_file().display().to_string(),
        "--state-file",
        &state.display().to_string(),
        "--timeout",
        "30",
    ]
    .map(str::to_owned)
    .to_vec();
    let out = run(register).await;
    assert!(out.status.success(), "{}", text(&out));

    // A back-end application subscribes to every device's events.
    let mut service = backend(&app, &broker);
    assert!(service.connected(WAIT).await, "the back end connects");
    service
        .client
        .subscribe("devices/+/messages/events/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        suback(&mut service).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // The device sends; the back end receives, through the broker.
    let mut send = hub_args(&tcti, "send", &state, &app, &broker);
    send.extend(["--message".to_owned(), "hello from the TPM".to_owned()]);
    let out = run(send.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    let events = format!("devices/{id}/messages/events/");
    assert_eq!(
        service.received(&events, WAIT).await.as_deref(),
        Some(b"hello from the TPM".as_slice())
    );

    // Cloud to device: the device listens; the back end publishes until it is heard.
    let listen = {
        let mut args = hub_args(&tcti, "listen", &state, &app, &broker);
        args.extend(["--count", "1", "--duration", "20"].map(str::to_owned));
        binary(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let devicebound = format!("devices/{id}/messages/devicebound/");
    let listener = tokio::task::spawn_blocking(move || listen.wait_with_output().unwrap());
    while !listener.is_finished() {
        service
            .client
            .publish(
                &devicebound,
                QoS::AtLeastOnce,
                false,
                b"turn the light on".to_vec(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = listener.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{devicebound}\tturn the light on")
    );

    // Impostors, refused by the broker: a token signed by another key; a device reaching for
    // another device's topic or for everything.
    let user = format!("{HUB}/{id}/?api-version=2021-04-12");
    let forged = sas::build_token(
        &format!("{HUB}/devices/{id}"),
        now() + 60,
        None,
        &mut SoftwareKey(&[7; 32]),
    )
    .unwrap();
    let mut impostor = Mqtt::connect(&app.pki, broker.port, &id, &user, &forged);
    assert!(!impostor.connected(WAIT).await, "a forged token is refused");
    let genuine = {
        let mut tpm = Tpm::open(&tcti).unwrap();
        sas::build_token(&format!("{HUB}/devices/{id}"), now() + 60, None, &mut tpm).unwrap()
    };
    let mut greedy = Mqtt::connect(&app.pki, broker.port, &id, &user, &genuine);
    assert!(greedy.connected(WAIT).await);
    greedy
        .client
        .subscribe("#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // RabbitMQ 3.10 closes the connection on a refused subscription; others answer a failed
    // SUBACK. Either way nothing is subscribed.
    let answer = greedy
        .next(WAIT, |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await;
    assert!(
        answer.is_err()
            || matches!(&answer, Ok(Some(codes)) if codes == &[SubscribeReasonCode::Failure]),
        "{answer:?}"
    );
    let mut rogue = Mqtt::connect(&app.pki, broker.port, &id, &user, &genuine);
    assert!(rogue.connected(WAIT).await);
    let elsewhere = "devices/someone-else/messages/events/";
    rogue
        .client
        .publish(elsewhere, QoS::AtLeastOnce, false, b"spoofed".to_vec())
        .await
        .unwrap();
    assert_eq!(
        service.received(elsewhere, Duration::from_secs(3)).await,
        None
    );

    // Revocation: a disabled enrollment is refused at the next connect, with a clear error.
    let mut disabled = test_support::enrollment(&id, &ek);
    disabled.provisioning_status = provisioning_service::enrollment::ProvisioningStatus::Disabled;
    app.enroll_with(disabled).await;
    tokio::time::sleep(Duration::from_millis(
        app.app.settings().hub_key_cache_ms + 100,
    ))
    .await;
    let out = run(send).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refused the device's token"),
        "{}",
        text(&out)
    );

    // The broker consulted the service: its log names the device's connects.
    drop(broker);
}

/// Issue 25, item 4, with two real brokers: devices of two hubs share a device id (ids are unique
/// per hub only, and topics carry no hub). Each broker's hooks name its hub; the hub-B device,
/// holding a good token for hub B, is refused by hub A's broker under either hub's name, so it
/// can take over neither the hub-A device's session nor its messages. Each device still
/// connects to its own hub's broker.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_device_of_one_hub_is_refused_by_another_hubs_broker(pool: PgPool) {
    const OTHER_HUB: &str = "hub-b.example.net";
    // With dots (issue 25, item 8): RabbitMQ writes a topic's `/` as `.` and keeps the id's.
    const SHARED_ID: &str = "line.7.unit-1";
    let mut settings = test_support::settings();
    settings.linked_hubs = LinkedHubs::new(vec![HUB.to_owned(), OTHER_HUB.to_owned()]).unwrap();
    let app = TestApp::spawn_with(pool, settings, Arc::new(Pki::new())).await;
    let start = |hub: &'static str| {
        let (pki, hook_base) = (
            Arc::clone(&app.pki),
            format!("{}/hubs/{hub}", app.hook_base),
        );
        tokio::task::spawn_blocking(move || Broker::start(&pki, &hook_base))
    };
    let (broker_a, broker_b) = tokio::join!(start(HUB), start(OTHER_HUB));
    let (broker_a, broker_b) = (broker_a.unwrap(), broker_b.unwrap());

    // The victim on hub A and the other device on hub B, both as `SHARED_ID`.
    let mut devices = Vec::new();
    for (mut t, hub) in [(TestTpm::recorded(), HUB), (TestTpm::fresh(), OTHER_HUB)] {
        let device = Device::of(&mut t.tpm);
        let mut e = test_support::enrollment(&device.registration_id, &device.ek);
        e.iot_hub_host_name = Some(hub.to_owned());
        e.device_id = Some(SHARED_ID.to_owned());
        app.enroll_with(e).await;
        app.provision(&mut t, &device).await;
        devices.push(t);
    }
    let token = |t: &mut TestTpm, hub: &str| {
        sas::build_token(
            &format!("{hub}/devices/{SHARED_ID}"),
            now() + 60,
            None,
            &mut t.tpm,
        )
        .unwrap()
    };
    let user = |hub: &str| format!("{hub}/{SHARED_ID}/?api-version=2021-04-12");
    let b_token = token(&mut devices[1], OTHER_HUB);
    let a_token = token(&mut devices[0], HUB);

    for username in [user(OTHER_HUB), user(HUB)] {
        let mut intruder = Mqtt::connect(&app.pki, broker_a.port, SHARED_ID, &username, &b_token);
        assert!(
            !intruder.connected(WAIT).await,
            "hub A's broker admitted hub B's device as {username}"
        );
    }
    let mut own = Mqtt::connect(
        &app.pki,
        broker_b.port,
        SHARED_ID,
        &user(OTHER_HUB),
        &b_token,
    );
    assert!(
        own.connected(WAIT).await,
        "hub B's device on hub B's broker"
    );
    let mut victim = Mqtt::connect(&app.pki, broker_a.port, SHARED_ID, &user(HUB), &a_token);
    assert!(
        victim.connected(WAIT).await,
        "hub A's device on hub A's broker"
    );

    // Issue 25, item 8: RabbitMQ 3.10 passed the dotted id's subscription as
    // `devices.line.7.unit-1.messages.devicebound.#`; read back as `devices/line/7/…` it was
    // refused and the connection closed. Now the device subscribes, and its back end reaches it.
    let devicebound = format!("devices/{SHARED_ID}/messages/devicebound/");
    victim
        .client
        .subscribe(format!("{devicebound}#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        suback(&mut victim).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut service = backend(&app, &broker_a);
    assert!(service.connected(WAIT).await, "the back end connects");
    let mut heard = None;
    for _ in 0..20 {
        service
            .client
            .publish(&devicebound, QoS::AtLeastOnce, false, b"hello".to_vec())
            .await
            .unwrap();
        // RabbitMQ delivers it under its routing key read back (`to_mqtt`: every `.` a
        // level), `devices/line/7/unit-1/messages/devicebound/`: the payload is what counts.
        heard = victim
            .next(Duration::from_millis(500), |p| match p {
                Packet::Publish(m) => Some((m.topic.clone(), m.payload.to_vec())),
                _ => None,
            })
            .await
            .ok()
            .flatten();
        if heard.is_some() {
            break;
        }
    }
    let (topic, payload) = heard.expect("the device heard its back end");
    assert_eq!(payload, b"hello", "{topic}");
}
