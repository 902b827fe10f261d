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
//! ([`Core::run`]), bounded by its own budget, holding its core until it returns: a request
//! that goes away tells it to stop ([`Abandoned`]) but never frees the core of a job still
//! running, so the bound on concurrent jobs holds even against clients that hang up.
//!
//! Uses: nothing of the crate (the layers table, docs/architecture.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    permits: Arc<Semaphore>,
}

impl CpuPool {
    /// One job fewer at a time than the cores this process may use, and at least one.
    #[must_use]
    pub fn new() -> Self {
        Self::for_cores(cores())
    }

    fn for_cores(cores: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
        }
    }

    /// Runs `job` on a blocking thread once a core is free; `job` should stop early once its
    /// [`Abandoned`] says so.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Abandoned) -> T + Send + 'static,
    ) -> Result<T, CpuError> {
        self.core().await?.run(job).await
    }

    /// A core, once one is free.
    pub async fn core(&self) -> Result<Core, CpuError> {
        // The semaphore is never closed, so acquiring fails only in theory.
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map(|p| Core { permit: p })
            .map_err(|_| CpuError)
    }

    /// A core if one is free now: a caller holding what others wait for (a database
    /// connection) keeps it across the job only when the job will not queue.
    #[must_use]
    pub fn core_now(&self) -> Option<Core> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .ok()
            .map(|p| Core { permit: p })
    }
}

/// Set once the request that wanted a job's answer has gone (its future was dropped).
#[derive(Debug, Clone, Default)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for a job that polls it deep inside (a path search).
    #[must_use]
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

/// Sets the flag when the awaiting future is dropped, finished or not.
struct AbandonOnDrop(Abandoned);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

/// One core's turn: the job given to [`Core::run`] has it to itself.
#[derive(Debug)]
pub struct Core {
    permit: OwnedSemaphorePermit,
}

impl Core {
    /// Runs `job` on a blocking thread; the core is free again when the job returns, not when
    /// the caller stops waiting for it.
    pub async fn run<T: Send + 'static>(
        self,
        job: impl FnOnce(&Abandoned) -> T + Send + 'static,
    ) -> Result<T, CpuError> {
        let abandoned = Abandoned::default();
        let _on_drop = AbandonOnDrop(abandoned.clone());
        let permit = self.permit;
        tokio::task::spawn_blocking(move || {
            let _core = permit;
            job(&abandoned)
        })
        .await
        .map_err(|_| CpuError)
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
    use std::time::Duration;

    #[test]
    fn jobs_leave_one_core_free_and_a_single_core_runs_one() {
        for (cores, jobs) in [(1, 1), (2, 1), (4, 3)] {
            let pool = CpuPool::for_cores(cores);
            let held: Vec<_> = (0..jobs).map_while(|_| pool.core_now()).collect();
            assert_eq!(held.len(), jobs, "{cores} cores");
            assert!(pool.core_now().is_none(), "{cores} cores: one job too many");
        }
    }

    /// A caller that stops waiting (a client that hung up) tells the job, and the core stays
    /// taken until the job returns: hanging up never lets more jobs run than there are cores.
    #[tokio::test]
    async fn an_abandoned_job_is_told_and_keeps_its_core_until_it_returns() {
        let pool = CpuPool::for_cores(2);
        let (told, heard) = std::sync::mpsc::channel();
        let waiting = pool.run(move |abandoned| {
            while !abandoned.is_set() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            told.send(()).unwrap();
        });
        // The caller gives up before the job ends.
        assert!(tokio::time::timeout(Duration::from_millis(20), waiting)
            .await
            .is_err());
        assert!(pool.core_now().is_none(), "the job still holds its core");
        tokio::task::spawn_blocking(move || heard.recv().unwrap())
            .await
            .unwrap();
        for _ in 0..100 {
            if pool.core_now().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the core was not freed when the job returned");
    }
}
