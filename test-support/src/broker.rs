//! A real MQTT broker for the hub tests: an ephemeral RabbitMQ node (Debian's rabbitmq-server,
//! `rabbitmq_mqtt` over TLS, `rabbitmq_auth_backend_http` asking the service's hooks), started
//! by the same shell function the demo uses (`scripts/lib/rabbitmq.sh`) and stopped in `Drop`.

use std::path::Path;
use std::process::Command;

use crate::pki::Pki;

pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
}

fn lib(function: &str, args: &[&str]) -> std::process::Output {
    let script = crate::workspace_root().join("scripts/lib/rabbitmq.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && {function} \"$@\"", script.display()))
        .arg("rabbitmq.sh")
        .args(args)
        .output()
        .expect("run bash (scripts/lib/rabbitmq.sh)")
}

impl Broker {
    /// A node whose MQTT-over-TLS listener uses `pki`'s server certificate and whose users,
    /// vhosts, resources and topics are asked of `hook_base` (`http://HOST:PORT/SECRET/hubs/HUB`).
    pub fn start(pki: &Pki, hook_base: &str) -> Self {
        let dir = tempfile::tempdir().expect("create the broker directory");
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let tls = pki.dir.path().display().to_string();
            let state = dir.path().join("node");
            let out = lib(
                "rmq_start",
                &[
                    &state.display().to_string(),
                    &port.to_string(),
                    hook_base,
                    &tls,
                ],
            );
            if out.status.success() {
                return Self { port, dir };
            }
            eprintln!(
                "RabbitMQ did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("RabbitMQ did not start (is rabbitmq-server installed? scripts/install-deps.sh)");
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        lib(
            "rmq_stop",
            &[&self.state().join("node").display().to_string()],
        );
    }
}
