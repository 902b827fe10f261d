//! CPU-bound work (the challenge's RSA) off the async workers: it runs on tokio's blocking
//! threads, at most one job per core at a time, so a burst of challenges queues here instead of
//! starving the registrations and polls that share the async workers.

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
    /// One job at a time per core this process may use.
    #[must_use]
    pub fn new() -> Self {
        Self {
            permits: Semaphore::new(cores()),
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
}

impl Default for CpuPool {
    fn default() -> Self {
        Self::new()
    }
}
