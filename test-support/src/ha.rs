//! A Postgres cluster that fails over: etcd, two Postgres nodes under Patroni (synchronous
//! replication) and HAProxy in front, started by `scripts/lib/ha.sh` (as `scripts/run-ha.sh`
//! starts it) in a temporary directory and stopped in `Drop`, on success and on panic.

use std::time::{Duration, Instant};

use crate::script_lib;

pub struct HaCluster {
    /// `postgres://…` through HAProxy, to whichever node is primary.
    pub database_url: String,
    dir: tempfile::TempDir,
}

impl HaCluster {
    /// The cluster with synchronous replication (a commit is acknowledged once the standby
    /// has it).
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// `synchronous: false`: asynchronous replication, where a failover may lose what the
    /// primary acknowledged but had not yet sent.
    pub fn start_with(synchronous: bool) -> Self {
        let dir = tempfile::tempdir().expect("create the cluster's directory");
        let mut cluster = Self {
            database_url: String::new(),
            dir,
        };
        let out = cluster.call("ha_start", &[if synchronous { "sync" } else { "async" }]);
        assert!(
            out.status.success(),
            "the HA cluster did not start (are patroni, etcd-server and haproxy installed? \
             scripts/install-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.database_url = cluster.env("DATABASE_URL");
        cluster
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn env(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("ha.env")).expect("ha.env");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in ha.env"))
            .to_owned()
    }

    fn call(&self, function: &str, args: &[&str]) -> std::process::Output {
        let path = self.path();
        let mut all = vec![path.as_str()];
        all.extend_from_slice(args);
        script_lib("ha.sh", function, &all)
    }

    fn must(&self, function: &str, args: &[&str]) {
        let out = self.call(function, args);
        assert!(
            out.status.success(),
            "{function} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The node that is primary now (`node1` or `node2`), if one is.
    pub fn primary(&self) -> Option<String> {
        let out = self.call("ha_primary", &[]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Waits (at most `limit`) until a node other than `former` is primary; returns it.
    pub fn wait_for_new_primary(&self, former: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            if let Some(node) = self.primary().filter(|n| n != former) {
                return node;
            }
            assert!(Instant::now() < until, "no node took over from {former}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the node that is not primary streams from it (synchronously, in a
    /// synchronous cluster): after a failover, the old primary has rejoined (`pg_rewind`).
    pub fn wait_for_standby(&self) {
        self.must("ha_wait_for_standby", &[]);
    }

    /// `kill -9` of `node`'s postmaster (its Patroni lives on).
    pub fn kill_postmaster(&self, node: &str) {
        self.must("ha_kill_postmaster", &[node]);
    }

    /// The primary `node` stops sending WAL (its WAL senders frozen until its postmaster is
    /// killed): what it commits from now on reaches no standby.
    pub fn hold_replication(&self, node: &str) {
        self.must("ha_hold_replication", &[node]);
    }

    /// `kill -9` of `node`'s Patroni (its Postgres lives on, still a primary, until a Patroni
    /// demotes it).
    pub fn kill_patroni(&self, node: &str) {
        self.must("ha_kill_patroni", &[node]);
    }

    /// Starts `node`'s Patroni again.
    pub fn start_patroni(&self, node: &str) {
        self.must("ha_start_patroni", &[node]);
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        self.call("ha_stop", &[]);
    }
}
