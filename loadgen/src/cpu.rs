//! CPU time of the processes under test, from `/proc` (procfs): on a 2-core machine the load
//! generator's own RSA shares the cores, so throughput alone measures the machine; CPU per
//! registration measures the service. Context switches per registration are counted beside it:
//! on a shared virtual machine CPU time varies by 10-30 % from one minute to the next, the
//! number of times a thread went to sleep and was woken per registration hardly at all, and
//! each costs both sides CPU.

use anyhow::Context as _;
use procfs::process::{Process, Status};
use procfs::ProcResult;

/// CPU seconds used so far by the service processes and by the Postgres cluster, and the
/// context switches of their live threads (a thread that exited takes its count with it).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub service_secs: f64,
    pub postgres_secs: f64,
    pub service_switches: u64,
    pub postgres_switches: u64,
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

/// Context switches (voluntary and not) of one live thread or process; 0 if it is gone.
fn switches(status: ProcResult<Status>) -> u64 {
    status.map_or(0, |s| {
        s.voluntary_ctxt_switches.unwrap_or(0) + s.nonvoluntary_ctxt_switches.unwrap_or(0)
    })
}

/// Context switches of every live thread of process `pid`.
fn process_switches(pid: i32) -> u64 {
    Process::new(pid)
        .and_then(|p| p.tasks())
        .map_or(0, |tasks| {
            tasks.flatten().map(|t| switches(t.status())).sum()
        })
}

impl Watched {
    /// The CPU used so far.
    pub fn sample(&self) -> anyhow::Result<CpuTimes> {
        #[allow(clippy::cast_precision_loss)]
        let tick = procfs::ticks_per_second() as f64;
        let mut times = CpuTimes::default();
        for &pid in &self.services {
            times.service_secs += process_secs(pid, true, tick)?;
            times.service_switches += process_switches(pid);
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
                    times.postgres_switches += switches(process.status());
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
            service_switches: self
                .service_switches
                .saturating_sub(earlier.service_switches),
            postgres_switches: self
                .postgres_switches
                .saturating_sub(earlier.postgres_switches),
        }
    }
}
