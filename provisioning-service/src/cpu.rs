//! CPU-bound work (the challenge's RSA) off the async workers: it runs on tokio's blocking
//! threads, at most one job per core at a time, so a burst of challenges queues here instead of
//! starving the registrations and polls that share the async workers.

use tokio::sync::Semaphore;

/// A CPU-bound job did not finish (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("a CPU-bound job did not finish")]
pub struct CpuError;

#[derive(Debug)]
pub struct CpuPool {
    permits: Semaphore,
}

impl CpuPool {
    /// One job at a time per core this process may use.
    #[must_use]
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            permits: Semaphore::new(cores),
        }
    }

    /// Runs `job` on a blocking thread once a core is free.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CpuError> {
        // The semaphore is never closed, so acquiring fails only in theory.
        let _permit = self.permits.acquire().await.map_err(|_| CpuError)?;
        tokio::task::spawn_blocking(job).await.map_err(|_| CpuError)
    }
}

impl Default for CpuPool {
    fn default() -> Self {
        Self::new()
    }
}
