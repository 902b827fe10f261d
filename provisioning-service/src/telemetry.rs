//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), coloured only on a
//! terminal (never ANSI codes in `docker logs` or a journal).
//!
//! Uses: nothing of the crate (the layers table, docs/architecture.md).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error and its causes on one line (`outer: cause: root cause`), for the log.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        next = cause.source();
    }
    chain
}
