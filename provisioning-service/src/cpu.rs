//! CPU-bound work, a bounded number of jobs at a time: at most one fewer than the cores this
//! process may use (one on a single core), so that a burst of challenges queues here and leaves
//! an async worker free for the registrations and polls.
//!
//! A short job whose length is bounded (the challenge's two RSA public-key operations and its
//! sealing, 70 µs) runs on the async worker that took the core ([`Core::run_here`]): the hop to
//! a blocking thread and back cost more than the job itself (3.4 context switches and
//! 0.06-0.1 ms of service CPU per registration on the benchmark machine), and 70 µs is within
//! tokio's guidance for the time between two awaits. A job of unbounded length (building EK
//! certificate paths against every enabled group) runs on tokio's blocking threads
//! ([`Core::run`]).

use tokio::sync::Semaphore;

/// A CPU-bound job did not finish (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("a CPU-bound job did not finish")]
pub struct CpuError;

/// The cores this process may use (`available_parallelism` honours CPU affinity and cgroup
/// quotas): what the RSA jobs and, by default, the database pool are sized by.
#[must_use]
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[derive(Debug)]
pub struct CpuPool {
    permits: Semaphore,
}

impl CpuPool {
    /// One job fewer at a time than the cores this process may use, and at least one.
    #[must_use]
    pub fn new() -> Self {
        Self::for_cores(cores())
    }

    fn for_cores(cores: usize) -> Self {
        Self {
            permits: Semaphore::new(cores.saturating_sub(1).max(1)),
        }
    }

    /// Runs `job` on a blocking thread once a core is free.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CpuError> {
        self.core().await?.run(job).await
    }

    /// A core, once one is free.
    pub async fn core(&self) -> Result<Core<'_>, CpuError> {
        // The semaphore is never closed, so acquiring fails only in theory.
        self.permits
            .acquire()
            .await
            .map(|p| Core { _permit: p })
            .map_err(|_| CpuError)
    }

    /// A core if one is free now: a caller holding what others wait for (a database
    /// connection) keeps it across the job only when the job will not queue.
    #[must_use]
    pub fn core_now(&self) -> Option<Core<'_>> {
        self.permits.try_acquire().ok().map(|p| Core { _permit: p })
    }
}

/// One core's turn: the job given to [`Core::run`] has it to itself.
#[derive(Debug)]
pub struct Core<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Core<'_> {
    /// Runs `job` on a blocking thread; the core is free again when it ends.
    pub async fn run<T: Send + 'static>(
        self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CpuError> {
        tokio::task::spawn_blocking(job).await.map_err(|_| CpuError)
    }

    /// Runs `job`, which must be short and bounded (tens of microseconds), here on the calling
    /// async worker; the core is free again when it ends.
    pub fn run_here<T>(self, job: impl FnOnce() -> T) -> T {
        job()
    }
}

impl Default for CpuPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::CpuPool;

    #[test]
    fn jobs_leave_one_core_free_and_a_single_core_runs_one() {
        for (cores, jobs) in [(1, 1), (2, 1), (4, 3)] {
            let pool = CpuPool::for_cores(cores);
            let held: Vec<_> = (0..jobs).map_while(|_| pool.core_now()).collect();
            assert_eq!(held.len(), jobs, "{cores} cores");
            assert!(pool.core_now().is_none(), "{cores} cores: one job too many");
        }
    }
}
