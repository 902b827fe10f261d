//! CPU time of the processes under test, from `/proc` (procfs): on a 2-core machine the load
//! generator's own RSA shares the cores, so throughput alone measures the machine; CPU per
//! registration measures the service.

use anyhow::Context as _;
use procfs::process::Process;

/// CPU seconds used so far by the service processes and by the Postgres cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub service_secs: f64,
    pub postgres_secs: f64,
}

/// Whose CPU to count.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// The service instances' pids.
    pub services: Vec<i32>,
    /// The postmaster's pid: counted with its live children (the backends) and, through its
    /// `cutime`/`cstime`, the children that exited (backends of closed connections).
    pub postmaster: Option<i32>,
}

/// Seconds of CPU (user + system) of one process; with `children`, plus those of its exited,
/// reaped children.
fn process_secs(pid: i32, children: bool, tick: f64) -> anyhow::Result<f64> {
    let stat = Process::new(pid)
        .and_then(|p| p.stat())
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let mut ticks = stat.utime + stat.stime;
    if children {
        ticks += u64::try_from(stat.cutime + stat.cstime).unwrap_or(0);
    }
    #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
    Ok(ticks as f64 / tick)
}

impl Watched {
    /// The CPU used so far.
    pub fn sample(&self) -> anyhow::Result<CpuTimes> {
        #[allow(clippy::cast_precision_loss)]
        let tick = procfs::ticks_per_second() as f64;
        let mut times = CpuTimes::default();
        for &pid in &self.services {
            times.service_secs += process_secs(pid, true, tick)?;
        }
        if let Some(postmaster) = self.postmaster {
            times.postgres_secs += process_secs(postmaster, true, tick)?;
            for process in procfs::process::all_processes()?.flatten() {
                // A backend may exit between the listing and the read: skip it (its time is
                // then in the postmaster's cutime at the next sample).
                let Ok(stat) = process.stat() else { continue };
                if stat.ppid == postmaster {
                    #[allow(clippy::cast_precision_loss)]
                    let secs = (stat.utime + stat.stime) as f64 / tick;
                    times.postgres_secs += secs;
                }
            }
        }
        Ok(times)
    }
}

impl std::ops::Sub for CpuTimes {
    type Output = CpuTimes;
    fn sub(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            service_secs: self.service_secs - earlier.service_secs,
            postgres_secs: self.postgres_secs - earlier.postgres_secs,
        }
    }
}
