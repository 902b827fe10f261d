//! `provisioning-service hub-watch`: a back-end application on the hub, as an operator's tool.
//! It connects to the broker with an access policy's service token (`sr={hub}`,
//! `skn={policy}`; the broker asks this service's hooks, like for a device), subscribes to every
//! device's events and prints one line per message: `{deviceId}\t{payload}`.
//!
//! Uses: `allocation`, `config`, `cpu`, `enrollment`, `settings`, `store` (the layers table,
//! docs/architecture.md).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dps_protocol::sas;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::config::WatchArgs;
use crate::settings::AccessPolicy;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("the CA file holds no usable PEM certificate")]
    BadCa,
    #[error("no access policy {0} in the policy file")]
    NoPolicy(String),
    #[error("the hub refused or dropped the connection")]
    Connection(#[source] Box<rumqttc::ConnectionError>),
    #[error("the hub refused the subscription")]
    Refused,
    #[error("cannot write {0}")]
    Write(String, #[source] std::io::Error),
}

fn tls(ca_pem: &[u8]) -> Result<rustls::ClientConfig, WatchError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &*ca_pem) {
        roots
            .add(cert.map_err(|_| WatchError::BadCa)?)
            .map_err(|_| WatchError::BadCa)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| WatchError::BadCa)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Runs until `args.count` messages were printed (or forever).
pub async fn watch(args: &WatchArgs, policies: &[AccessPolicy]) -> Result<(), WatchError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| WatchError::Read(p.display().to_string(), e))
    };
    // A file left by an earlier run (a restarted container) must not say subscribed yet.
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    let policy = policies
        .iter()
        .find(|p| p.name == args.policy)
        .ok_or_else(|| WatchError::NoPolicy(args.policy.clone()))?;
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + args.token_ttl;
    let Ok(token) = sas::build_token(
        &args.hub,
        expiry,
        Some(&policy.name),
        &mut sas::SoftwareKey(&policy.key),
    );
    let mut options = MqttOptions::new(&args.client_id, &args.hub, args.hub_port);
    options.set_credentials(format!("{}/{}", args.hub, policy.name), token);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls(
        &read(&args.ca_file)?,
    )?))));
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .subscribe("devices/+/messages/events/#", QoS::AtLeastOnce)
        .await
        .map_err(|_| WatchError::Refused)?;
    let mut printed = 0u64;
    while args.count.is_none_or(|c| printed < c) {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Err(WatchError::Refused);
                }
                eprintln!("watching devices/+/messages/events/# on {}", args.hub);
                if let Some(path) = &args.ready_file {
                    std::fs::write(path, "subscribed\n")
                        .map_err(|e| WatchError::Write(path.display().to_string(), e))?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                let device = message.topic.split('/').nth(1).unwrap_or_default();
                println!("{device}\t{}", String::from_utf8_lossy(&message.payload));
                printed += 1;
            }
            Ok(_) => {}
            Err(e) => return Err(WatchError::Connection(Box::new(e))),
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}
