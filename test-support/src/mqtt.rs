//! An MQTT client for the tests' own connections to the broker (a back-end subscriber, an
//! impostor): rumqttc over TLS trusting the test PKI, its events forwarded to a channel.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::pki::Pki;

/// A connection's client and what its event loop saw: packets, then at most one error.
pub struct Mqtt {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<Packet, ConnectionError>>,
}

impl Mqtt {
    /// Connects to `127.0.0.1:port` as `client_id` with `username`/`password`.
    pub fn connect(pki: &Pki, port: u16, client_id: &str, username: &str, password: &str) -> Self {
        Self::connect_with(
            pki.client_config(&[]),
            port,
            client_id,
            Some((username, password)),
        )
    }

    /// Connects to `127.0.0.1:port` as `client_id` over TLS as `config` says (a client
    /// certificate, for instance), with `credentials` if any.
    pub fn connect_with(
        config: rustls::ClientConfig,
        port: u16,
        client_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> Self {
        let mut options = MqttOptions::new(client_id, "localhost", port);
        if let Some((username, password)) = credentials {
            options.set_credentials(username, password);
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        let (client, mut event_loop) = AsyncClient::new(options, 16);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Self { client, events }
    }

    /// The next packet `pick` accepts within `wait`, skipping others; `Err` on a connection
    /// error, `Ok(None)` on timeout.
    pub async fn next<T>(
        &mut self,
        wait: Duration,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> Result<Option<T>, ConnectionError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(packet))) => {
                    if let Some(found) = pick(&packet) {
                        return Ok(Some(found));
                    }
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }

    /// Whether the broker accepted the connection (a CONNACK within `wait`).
    pub async fn connected(&mut self, wait: Duration) -> bool {
        matches!(
            self.next(wait, |p| matches!(p, Packet::ConnAck(_)).then_some(()))
                .await,
            Ok(Some(()))
        )
    }

    /// A publish on `topic` within `wait`, if any.
    pub async fn received(&mut self, topic: &str, wait: Duration) -> Option<Vec<u8>> {
        self.next(wait, |p| match p {
            Packet::Publish(m) if m.topic == topic => Some(m.payload.to_vec()),
            _ => None,
        })
        .await
        .ok()
        .flatten()
    }
}
