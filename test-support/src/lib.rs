//! What the workspace's integration tests share, in one place: a fresh swtpm per test
//! ([`swtpm`], [`tpm::TestTpm`]), a throwaway TLS PKI ([`pki`]), the service running in-process
//! over HTTPS on loopback with named protocol steps ([`service::TestApp`]), what a device
//! presents ([`device`]), a real MQTT broker asking the service's hooks ([`broker`]), a
//! custom allocation webhook over HTTPS ([`webhook`]), and a Postgres cluster that fails over
//! (Patroni, etcd, HAProxy: [`ha`]).
//!
//! Real parts only: swtpm through tss-esapi, Postgres through `#[sqlx::test]` (a fresh database
//! per test, from the cluster `scripts/test.sh` starts), rustls on both ends. Fixtures clean up
//! in `Drop`. Not published; panics are how a fixture reports a broken test machine.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::missing_panics_doc,
    clippy::must_use_candidate
)]

pub mod broker;
pub mod device;
pub mod ha;
pub mod mqtt;
pub mod outage;
pub mod pki;
pub mod service;
pub mod swtpm;
pub mod tpm;
pub mod webhook;

pub use broker::{Broker, Mosquitto};
pub use device::{enrollment, Device};
pub use ha::HaCluster;
pub use pki::{IssuingPki, Pki};
pub use service::{settings, TestApp, API, HUBS, HUB_AUTH_SECRET, ID_SCOPE, POLICY, POLICY_KEY};
pub use swtpm::Swtpm;
pub use tpm::TestTpm;
pub use webhook::{Reply, Webhook};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Runs `function` of `scripts/lib/{script}` with `args`: the ephemeral servers the tests share
/// with the demo and the scripts are started by the same shell functions.
pub(crate) fn script_lib(script: &str, function: &str, args: &[&str]) -> std::process::Output {
    let path = workspace_root().join("scripts/lib").join(script);
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && {function} \"$@\"", path.display()))
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run bash (scripts/lib/{script}): {e}"))
}

/// Unix seconds now.
#[must_use]
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A seeded RNG; the seed is printed so a failure can be replayed with `TEST_SEED`.
#[must_use]
pub fn rng(label: &str) -> ChaCha20Rng {
    let seed: u64 = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{label}: rng seed {seed} (replay with TEST_SEED={seed})");
    ChaCha20Rng::seed_from_u64(seed)
}

/// The workspace root.
#[must_use]
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Holds a generated section of a document (between `<!-- generated: NAME -->` and
/// `<!-- end: NAME -->`) to `content`: with `UPDATE_DOCS=1` it rewrites the section, otherwise
/// it fails when the committed text differs (so the document cannot drift from the code).
pub fn check_generated_section(path: &std::path::Path, name: &str, content: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let (open, close) = (
        format!("<!-- generated: {name} -->\n"),
        format!("<!-- end: {name} -->"),
    );
    let start = text.find(&open).expect("the section's opening marker") + open.len();
    let end = text[start..]
        .find(&close)
        .expect("the section's closing marker")
        + start;
    if text[start..end] == *content {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, format!("{}{content}{}", &text[..start], &text[end..])).unwrap();
        return;
    }
    panic!(
        "{} section {name} is out of date: run the test with UPDATE_DOCS=1 and commit the file",
        path.display()
    );
}

/// `binary SUBCOMMAND --help` for each subcommand, as a generated Markdown section: one
/// heading and one text block per command, run with an empty environment (`--help` shows the
/// values of set variables).
#[must_use]
pub fn help_reference(binary: &str, name: &str, subcommands: &[&str]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for sub in subcommands {
        let output = std::process::Command::new(binary)
            .args([*sub, "--help"])
            .env_clear()
            .output()
            .unwrap();
        assert!(output.status.success(), "{name} {sub} --help");
        let help = String::from_utf8(output.stdout).unwrap();
        let _ = write!(out, "\n### `{name} {sub}`\n\n```text\n{help}```\n");
    }
    out.push('\n');
    out
}
