//! Talking to the hub a device was assigned to: MQTT over TLS to a broker that stands in for
//! IoT Hub, client id = device id, authenticated one of two ways ([`HubAuth`]):
//! - the IoT Hub way: username `{hub}/{deviceId}/?api-version=…`, password a SAS token for
//!   `{hub}/devices/{deviceId}` signed by the device key inside the TPM; the broker asks the
//!   provisioning service whether the token is good (docs/hub.md);
//! - mutual TLS with the device's certificate, its key in the TPM (`certificate::tls`), and no
//!   username or password: the broker takes the identity from the certificate.
//!
//! Tokens are short-lived ([`HubOptions::token_ttl`]); a session that would outlive its token
//! (or its certificate) reconnects first, so the broker never holds an expired session.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dps_protocol::sas;
use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};

use crate::certificate::tls::Identity;
use crate::provision::{Stage, State};
use crate::tpm::{Tpm, TpmError};

/// How the device proves to the hub who it is.
pub enum HubAuth<'a> {
    /// A SAS token signed by the device key in the TPM.
    Sas(&'a mut Tpm),
    /// The device's certificate, its key in the TPM (mutual TLS).
    Certificate(&'a Identity),
}

/// The api-version in the username: IoT Hub's MQTT version for devices.
pub const API_VERSION: &str = "2021-04-12";
/// MQTT over TLS, IoT Hub's port.
pub const DEFAULT_PORT: u16 = 8883;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    #[error("the device is not provisioned yet (run `device-client register` first)")]
    NotProvisioned,
    #[error("cannot sign the hub token with the device key")]
    Tpm(#[from] TpmError),
    #[error("the CA file holds no usable PEM certificate")]
    BadCa,
    #[error("the hub {hub} refused the device's token (is the registration current and its enrollment enabled?)")]
    TokenRefused { hub: String },
    #[error("the hub {hub} refused the device's certificate (revoked, expired, or from a CA it does not trust; `device-client register --certificate` renews it)")]
    CertificateRefused {
        hub: String,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("the hub refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the hub did not allow {what}")]
    NotAllowed { what: String },
    #[error("cannot reach the hub at {hub}:{port}")]
    Transport {
        hub: String,
        port: u16,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
}

/// How to reach the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Connect here instead of the assigned hub's host name (another broker serving the hub,
    /// such as one for certificate logins); the TLS server name checked is this one.
    pub host: Option<String>,
    pub port: u16,
    /// Trust this CA (PEM) for the hub's certificate; the web PKI roots otherwise.
    pub ca_pem: Option<Vec<u8>>,
    /// Lifetime of each token, seconds.
    pub token_ttl: u64,
    /// Give up on a step (connect, acknowledgement) after this long.
    pub timeout: Duration,
}

/// Where and as whom: read from the state file of an assigned device.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub hub: String,
    pub device_id: String,
}

impl Assignment {
    pub fn of(state: Option<&State>) -> Result<Self, HubError> {
        match state.map(|s| &s.stage) {
            Some(Stage::Assigned {
                assigned_hub,
                device_id,
                ..
            }) => Ok(Self {
                hub: assigned_hub.clone(),
                device_id: device_id.clone(),
            }),
            _ => Err(HubError::NotProvisioned),
        }
    }

    /// Where device-to-cloud messages go.
    #[must_use]
    pub fn events_topic(&self) -> String {
        format!("devices/{}/messages/events/", self.device_id)
    }

    /// Where cloud-to-device messages come from.
    #[must_use]
    pub fn devicebound_filter(&self) -> String {
        format!("devices/{}/messages/devicebound/#", self.device_id)
    }
}

/// Whether a failed connect was the broker turning the client away (a TLS alert, the
/// connection closed in the handshake or before the CONNACK, an MQTT refusal) rather than the
/// broker being unreachable.
fn refused_by_peer(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::Io(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::NotFound
        ),
        ConnectionError::Tls(_)
        | ConnectionError::ConnectionRefused(_)
        | ConnectionError::MqttState(_) => true,
        _ => false,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A rustls client configuration (ring) trusting `ca_pem`, or the web PKI roots, presenting
/// `client`'s certificate if given.
fn tls(
    ca_pem: Option<&[u8]>,
    client: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
) -> Result<rustls::ClientConfig, HubError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &*pem) {
                roots
                    .add(cert.map_err(|_| HubError::BadCa)?)
                    .map_err(|_| HubError::BadCa)?;
            }
            if roots.is_empty() {
                return Err(HubError::BadCa);
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| HubError::BadCa)?
        .with_root_certificates(roots);
    Ok(match client {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    })
}

/// An open MQTT session with the hub, and when its token expires.
pub struct Session {
    pub client: Client,
    pub connection: rumqttc::Connection,
    pub expires_at: Instant,
    assignment: Assignment,
    options: HubOptions,
}

impl Session {
    /// Connects as `auth` says (a fresh token signed in the TPM, or the certificate) and waits
    /// for the broker's CONNACK.
    pub fn connect(
        auth: &mut HubAuth<'_>,
        assignment: &Assignment,
        options: &HubOptions,
    ) -> Result<Self, HubError> {
        let Assignment { hub, device_id } = assignment;
        let host = options.host.as_deref().unwrap_or(hub);
        let mut mqtt = MqttOptions::new(device_id, host, options.port);
        let (client_certificate, lifetime) = match auth {
            HubAuth::Sas(tpm) => {
                let expiry = unix_now() + options.token_ttl;
                let resource = format!("{hub}/devices/{device_id}");
                let token = sas::build_token(&resource, expiry, None, *tpm)?;
                mqtt.set_credentials(
                    format!("{hub}/{device_id}/?api-version={API_VERSION}"),
                    token,
                );
                (None, options.token_ttl)
            }
            HubAuth::Certificate(identity) => {
                let left = u64::try_from(identity.not_after)
                    .unwrap_or(0)
                    .saturating_sub(unix_now());
                // Reconnect at least daily, so a long session notices a renewed certificate.
                (Some(identity.resolver()), left.min(86_400))
            }
        };
        mqtt.set_keep_alive(Duration::from_secs(30));
        mqtt.set_clean_session(true);
        let config = tls(options.ca_pem.as_deref(), client_certificate)?;
        let by_certificate = matches!(auth, HubAuth::Certificate(_));
        mqtt.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        let (client, mut connection) = Client::new(mqtt, 16);
        let deadline = Instant::now() + options.timeout;
        let transport = |source| HubError::Transport {
            hub: hub.clone(),
            port: options.port,
            source: Box::new(source),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
                ))) if !by_certificate => return Err(HubError::TokenRefused { hub: hub.clone() }),
                Ok(Err(ConnectionError::ConnectionRefused(code))) if !by_certificate => {
                    return Err(HubError::Refused(code))
                }
                Ok(Err(e)) if by_certificate && refused_by_peer(&e) => {
                    return Err(HubError::CertificateRefused {
                        hub: hub.clone(),
                        source: Box::new(e),
                    })
                }
                Ok(Err(e)) => return Err(transport(e)),
                Err(_) => return Err(HubError::Timeout(options.timeout)),
            }
        }
        tracing::info!(%hub, device_id, "connected to the hub");
        // Reconnect a little before the credential expires: a tenth of its life, 5 s to half.
        let margin = (lifetime / 10).clamp(5.min(lifetime / 2), lifetime / 2);
        Ok(Self {
            client,
            connection,
            expires_at: Instant::now() + Duration::from_secs(lifetime - margin),
            assignment: assignment.clone(),
            options: options.clone(),
        })
    }

    /// Drives the connection until `done` accepts an incoming packet.
    fn until(
        &mut self,
        mut done: impl FnMut(&Packet) -> Result<bool, HubError>,
    ) -> Result<(), HubError> {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(packet))) => {
                    if done(&packet)? {
                        return Ok(());
                    }
                }
                Ok(Ok(Event::Outgoing(_))) => {}
                Ok(Err(source)) => return Err(self.transport(source)),
                Err(_) => return Err(HubError::Timeout(self.options.timeout)),
            }
        }
    }

    /// Publishes one device-to-cloud message (QoS 1) and waits for the broker's PUBACK.
    pub fn send(&mut self, payload: Vec<u8>) -> Result<(), HubError> {
        let topic = self.assignment.events_topic();
        self.client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .map_err(|_| HubError::NotAllowed {
                what: topic.clone(),
            })?;
        self.until(|packet| Ok(matches!(packet, Packet::PubAck(_))))
    }

    /// Subscribes to the device's cloud-to-device messages and waits for the SUBACK.
    pub fn subscribe(&mut self) -> Result<(), HubError> {
        let filter = self.assignment.devicebound_filter();
        self.client
            .subscribe(filter.clone(), QoS::AtLeastOnce)
            .map_err(|_| HubError::NotAllowed {
                what: filter.clone(),
            })?;
        self.until(|packet| match packet {
            Packet::SubAck(ack) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    Err(HubError::NotAllowed {
                        what: filter.clone(),
                    })
                } else {
                    Ok(true)
                }
            }
            _ => Ok(false),
        })
    }

    /// The next cloud-to-device message (topic, payload), or `None` if `wait` passes first or
    /// the token is about to expire (reconnect then).
    pub fn receive(&mut self, wait: Duration) -> Result<Option<(String, Vec<u8>)>, HubError> {
        let deadline = (Instant::now() + wait).min(self.expires_at);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    return Ok(Some((p.topic, p.payload.to_vec())))
                }
                Ok(Ok(_)) => {}
                Ok(Err(source)) => return Err(self.transport(source)),
                Err(_) => return Ok(None),
            }
        }
    }

    fn transport(&self, source: ConnectionError) -> HubError {
        HubError::Transport {
            hub: self.assignment.hub.clone(),
            port: self.options.port,
            source: Box::new(source),
        }
    }

    /// Whether the token is about to expire (reconnect with a fresh one).
    #[must_use]
    pub fn token_expiring(&self) -> bool {
        Instant::now() >= self.expires_at
    }

    /// Disconnects cleanly (sends DISCONNECT and waits, briefly, for it to go out).
    pub fn close(mut self) {
        if self.client.disconnect().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(event)) = self
            .connection
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_is_not_assigned_is_told_to_register_first() {
        let err = Assignment::of(None).unwrap_err();
        assert!(matches!(err, HubError::NotProvisioned));
        assert!(err.to_string().contains("device-client register"));
        let state = State {
            registration_id: "dev-1".to_owned(),
            endpoint: "https://dps.example".to_owned(),
            id_scope: "0ne1".to_owned(),
            stage: Stage::KeyImported {
                quote: None,
                certify: None,
            },
            updated_unix: 0,
        };
        assert!(matches!(
            Assignment::of(Some(&state)),
            Err(HubError::NotProvisioned)
        ));
    }
}
