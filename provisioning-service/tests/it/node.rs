//! Running the unmodified Azure Node SDKs from npm: whether Node.js is here, and the packages
//! installed once per build directory.

use std::path::{Path, PathBuf};
use std::process::Command;

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Node.js and npm are installed; else prints why the calling test is skipped.
pub fn available(what: &str) -> bool {
    let here = has("node") && has("npm");
    if !here {
        eprintln!("skipped: Node.js and npm are not installed ({what} runs on them)");
    }
    here
}

/// Installs `packages` (pinned `name@version`) once into the build directory's `dir`; returns
/// its `node_modules`. `--ignore-scripts`: tss.js's native dependency builds only on Windows,
/// where it is used.
pub fn installed(dir: &str, packages: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let modules = dir.join("node_modules");
    let all_there = packages.iter().all(|p| {
        let name = p.rsplit_once('@').map_or(*p, |(name, _)| name);
        modules.join(name).join("package.json").exists()
    });
    if !all_there {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefix",
            ])
            .arg(&dir)
            .args(packages)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm install {packages:?} failed");
    }
    modules
}

/// Runs `script` (in `tests/node/`) with `args` and `env` on a blocking thread (the service
/// answering it runs on the test's runtime); returns its standard output, failing the test with
/// both outputs if it fails.
pub async fn run(script: &str, args: &[&str], env: Vec<(&'static str, String)>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node")
        .join(script);
    let mut node = Command::new("node");
    node.arg(script).args(args).envs(env);
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}
