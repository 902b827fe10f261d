//! A real MQTT broker for the hub tests: an ephemeral RabbitMQ node (Debian's rabbitmq-server,
//! `rabbitmq_mqtt` over TLS, `rabbitmq_auth_backend_http` asking the service's hooks), started
//! by the same shell function the demo uses (`scripts/lib/rabbitmq.sh`) and stopped in `Drop`.

use crate::pki::Pki;
use crate::script_lib as lib;
use std::path::Path;

pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Starts a broker with `start(port)` on a free loopback port, three tries; its port.
fn on_a_free_port(what: &str, start: impl Fn(u16) -> std::process::Output) -> u16 {
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let out = start(port);
        if out.status.success() {
            return port;
        }
        eprintln!(
            "{what} did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("{what} did not start (is it installed? scripts/install-deps.sh)");
}

impl Broker {
    /// A node whose MQTT-over-TLS listener uses `pki`'s server certificate and whose users,
    /// vhosts, resources and topics are asked of `hook_base` (`http://HOST:PORT/SECRET/hubs/HUB`).
    pub fn start(pki: &Pki, hook_base: &str) -> Self {
        let dir = tempfile::tempdir().expect("create the broker directory");
        let tls = pki.dir.path().display().to_string();
        let state = dir.path().join("node").display().to_string();
        let port = on_a_free_port("RabbitMQ", |port| {
            lib(
                "rabbitmq.sh",
                "rmq_start",
                &[&state, &port.to_string(), hook_base, &tls],
            )
        });
        Self { port, dir }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        lib(
            "rabbitmq.sh",
            "rmq_stop",
            &[&self.state().join("node").display().to_string()],
        );
    }
}

/// An ephemeral Mosquitto broker taking certificate logins (`scripts/lib/mosquitto.sh`, as the
/// demo starts it), stopped in `Drop`.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// A broker whose listener uses `pki`'s server certificate, requires client certificates
    /// under `client_ca` (PEM) not revoked by `crl_file` (PEM), and lets `backend_cn` read every
    /// device's events.
    pub fn start(pki: &Pki, client_ca: &Path, crl_file: &Path, backend_cn: &str) -> Self {
        let dir = tempfile::tempdir().expect("create the broker directory");
        let port = on_a_free_port("Mosquitto", |port| {
            lib(
                "mosquitto.sh",
                "mosq_start",
                &[
                    &dir.path().display().to_string(),
                    &port.to_string(),
                    &pki.dir.path().display().to_string(),
                    &client_ca.display().to_string(),
                    &crl_file.display().to_string(),
                    backend_cn,
                ],
            )
        });
        Self { port, dir }
    }

    /// The file holding the broker's pid (for `crl-sync --reload-pidfile`).
    #[must_use]
    pub fn pid_file(&self) -> std::path::PathBuf {
        self.dir.path().join("mosquitto.pid")
    }

    /// What the broker logged (connections, refusals, subscriptions).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        lib(
            "mosquitto.sh",
            "mosq_stop",
            &[&self.dir.path().display().to_string()],
        );
    }
}
