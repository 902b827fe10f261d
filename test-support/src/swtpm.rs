//! A fresh swtpm per test: manufactured with `swtpm_setup` (EK, EK certificate from swtpm's local
//! CA), served on free loopback ports, polled until ready, killed in `Drop`.
//!
//! With `DPS_TEST_TABRMD` set, each swtpm is reached through its own `tpm2-abrmd`, the
//! user-space resource manager, on the D-Bus session bus of `DBUS_SESSION_BUS_ADDRESS`
//! (scripts/test.sh starts one and runs the device client's tests so a second time): every
//! TCTI handed out is then `tabrmd:…`, for tss-esapi and tpm2-tools alike.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One local CA for the whole test process: creating its RSA-4096 keys is most of the cost of
/// `swtpm_setup`, and sharing it makes every EK certificate chain to the same root.
fn local_ca_dir() -> &'static Path {
    static CA: OnceLock<tempfile::TempDir> = OnceLock::new();
    CA.get_or_init(|| tempfile::tempdir().expect("create the local CA directory"))
        .path()
}

/// The local CA that issued every manufactured TPM's EK certificate: its self-signed root and
/// the issuing CA under it (PEM), once a TPM was manufactured.
#[must_use]
pub fn local_ca() -> (Vec<u8>, Vec<u8>) {
    let dir = local_ca_dir();
    let read =
        |name: &str| std::fs::read(dir.join(name)).expect("the local CA (manufacture a TPM first)");
    (
        read("swtpm-localca-rootca-cert.pem"),
        read("issuercert.pem"),
    )
}

/// A running swtpm. Drop it after any TPM context that talks to it.
pub struct Swtpm {
    /// The resource manager in front of it, if the tests run through one (dropped first).
    broker: Option<Broker>,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// A private D-Bus session bus (`dbus-daemon --session`), for a `tpm2-abrmd` of a test's own;
/// killed in `Drop`.
pub struct SessionBus {
    child: Child,
    pub address: String,
}

impl SessionBus {
    #[must_use]
    pub fn start() -> Self {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dbus-daemon (scripts/install-deps.sh installs it)");
        let mut address = String::new();
        let stdout = child.stdout.take().expect("dbus-daemon's stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut address)
            .expect("dbus-daemon prints its address");
        Self {
            child,
            address: address.trim().to_owned(),
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tpm2-abrmd` serving one swtpm under its own bus name.
pub struct Broker {
    child: Child,
    bus_name: String,
}

impl Broker {
    #[must_use]
    pub fn tcti(&self) -> String {
        format!("tabrmd:bus_name={},bus_type=session", self.bus_name)
    }

    /// Starts one for the swtpm on `port` when the tests run through tabrmd.
    fn start_if_asked(port: u16) -> Option<Self> {
        std::env::var_os("DPS_TEST_TABRMD")?;
        Some(Self::start(port, None))
    }

    /// Starts one for the swtpm on `port`, on the session bus at `bus` (`None`: the one in
    /// `DBUS_SESSION_BUS_ADDRESS`), and waits until it answers a command. The swtpm must have
    /// no other client: the broker keeps its one connection.
    #[must_use]
    pub fn start(port: u16, bus: Option<&str>) -> Self {
        let bus_name = format!("com.dpstpm.Tabrmd.p{}x{port}", std::process::id());
        let on_bus = |command: &mut Command| {
            if let Some(address) = bus {
                command.env("DBUS_SESSION_BUS_ADDRESS", address);
            }
        };
        let mut command = Command::new("tpm2-abrmd");
        command
            .args(["--session", "--allow-root", "--flush-all"])
            .arg(format!("--dbus-name={bus_name}"))
            .arg(format!("--tcti=swtpm:host=127.0.0.1,port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        on_bus(&mut command);
        let child = command
            .spawn()
            .expect("spawn tpm2-abrmd (scripts/install-deps.sh installs it)");
        let mut broker = Self { child, bus_name };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            assert!(
                matches!(broker.child.try_wait(), Ok(None)),
                "tpm2-abrmd exited (is DBUS_SESSION_BUS_ADDRESS a running session bus?)"
            );
            let mut probe = Command::new("tpm2_getrandom");
            probe
                .args(["--tcti", &broker.tcti(), "4"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            on_bus(&mut probe);
            if probe.status().is_ok_and(|s| s.success()) {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = broker.child.kill();
        panic!("tpm2-abrmd did not answer on {}", broker.bus_name);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    /// A newly manufactured TPM.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("create the swtpm directory");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("create the state directory");
        manufacture(dir.path(), &state);
        Self::serve(dir)
    }

    /// A TPM whose state is a copy of `fixture` (a directory holding `tpm2-00.permall`).
    pub fn start_from_state(fixture: &Path) -> Self {
        let dir = tempfile::tempdir().expect("create the swtpm directory");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("create the state directory");
        std::fs::copy(
            fixture.join("tpm2-00.permall"),
            state.join("tpm2-00.permall"),
        )
        .expect("copy the swtpm state fixture");
        Self::serve(dir)
    }

    /// The TCTI string for tss-esapi 7 (which cannot parse `swtpm:path=`), or the resource
    /// manager's in front of this swtpm.
    pub fn tcti(&self) -> String {
        match &self.broker {
            Some(broker) => broker.tcti(),
            None => format!("swtpm:host=127.0.0.1,port={}", self.port),
        }
    }

    /// The TCP port of its TPM interface.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it is reached through a resource manager (`DPS_TEST_TABRMD`).
    #[must_use]
    pub fn brokered(&self) -> bool {
        self.broker.is_some()
    }

    /// The directory holding the TPM state.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn serve(dir: tempfile::TempDir) -> Self {
        let state = dir.path().join("state");
        // A free port pair can be taken by someone else before swtpm binds it: retry.
        for _ in 0..5 {
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm (is swtpm installed? scripts/install-deps.sh)");
            if wait_ready(&mut child, port + 1) {
                return Self {
                    broker: Broker::start_if_asked(port),
                    child,
                    port,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start on any free port");
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.broker = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manufacture(dir: &Path, state: &Path) {
    let ca = local_ca_dir();
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .expect("write swtpm-localca.conf");
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n",
            localca_conf.display()
        ),
    )
    .expect("write swtpm_setup.conf");
    let out = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(state)
        .arg("--config")
        .arg(&setup_conf)
        .args(["--createek", "--create-ek-cert", "--overwrite"])
        .output()
        .expect("run swtpm_setup (is swtpm-tools installed? scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "swtpm_setup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port pair nothing listens on, drawn below Linux's ephemeral range (32768+): there,
/// outgoing connections (to Postgres, to the service) take ports at random and could take one
/// between this check and swtpm's bind. Each call starts from another place in the range.
fn free_port_pair() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let draw = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(2) + std::process::id() * 7;
        let port = 20_000 + u16::try_from(draw % 12_000).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// Polls the control port (the data port takes one client at a time; leave it to the test).
fn wait_ready(child: &mut Child, ctrl_port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        // Ready when its control port answers and it is still running (a port taken by
        // someone else would answer too, while this swtpm exits for want of it).
        if TcpStream::connect(("127.0.0.1", ctrl_port)).is_ok() {
            return matches!(child.try_wait(), Ok(None));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
