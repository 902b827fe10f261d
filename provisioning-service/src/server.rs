//! Serving the router over HTTPS until Ctrl-C or SIGTERM, with the listener's limits: a cap on
//! open connections, a deadline for the TLS handshake and for each request's headers (which
//! also closes an idle keep-alive connection: waiting for the next request is waiting for its
//! headers), HTTP/1.1 only (`guard`).
//!
//! Uses: `app`, `http`, `store` (the layers table, docs/architecture.md).

mod guard;

use std::sync::Arc;
use std::time::Duration;

use axum::ServiceExt;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;
use tower::Layer as _;
use tower_http::normalize_path::NormalizePathLayer;

use crate::app::App;

/// Serves `app` on `listener` with TLS until `shutdown` resolves, then drains for up to 10 s.
pub async fn serve_tls(
    app: App,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    listener.set_nonblocking(true)?;
    let settings = app.settings();
    let deadline = Duration::from_secs(settings.header_read_timeout_secs);
    let tls = RustlsAcceptor::new(RustlsConfig::from_config(tls)).handshake_timeout(deadline);
    let mut server = axum_server::from_tcp(listener)
        .acceptor(guard::GuardedAcceptor::new(tls, settings.max_connections));
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline);
    server
        .handle(handle)
        .serve(
            // Paths are matched without a trailing slash: the Node service SDK posts bulk
            // operations to `/enrollments/?api-version=…` (Azure/azure-iot-sdk-node,
            // provisioning/service/src/provisioningserviceclient.ts,
            // `_runBulkEnrollmentOperation`), and DPS takes both forms.
            // Their static words are matched in any case, as DPS does
            // (`http::canonical_route_case`).
            ServiceExt::<axum::http::Request<hyper::body::Incoming>>::into_make_service_with_connect_info::<
                std::net::SocketAddr,
            >(
                NormalizePathLayer::trim_trailing_slash().layer(
                    tower::util::MapRequestLayer::new(
                        crate::http::canonical_route_case::<hyper::body::Incoming>,
                    )
                    .layer(crate::http::router(app)),
                ),
            ),
        )
        .await
}

/// Serves `router` over plain HTTP on `listener` until `shutdown` resolves: the side
/// listeners, the brokers' auth hooks (`http::hub_hooks::router`) and the metrics
/// (`http::metrics_router`), each on an address the operator keeps private.
pub async fn serve_plain(
    router: axum::Router,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Sweeps expired challenges and ended throttle windows every `period`, forever (run it beside
/// the server; on several instances only one sweeps at a time). Failures are logged and the
/// next period tries again.
pub async fn housekeeping(app: App, period: Duration) {
    /// Rows deleted per table per sweep at most.
    const BATCH: i64 = 10_000;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = time::OffsetDateTime::now_utc();
        let stale_before = now - app.settings().longest_throttle_window();
        let swept = async {
            let mut tx = app.pool().begin().await?;
            let swept =
                crate::store::housekeeping::sweep(&mut tx, now, stale_before, BATCH).await?;
            tx.commit().await?;
            Ok::<_, crate::store::StoreError>(swept)
        };
        match swept.await {
            Ok(Some(s)) if s.throttle_rows + s.challenges > 0 => {
                tracing::info!(
                    throttle_rows = s.throttle_rows,
                    challenges = s.challenges,
                    "swept"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping sweep failed"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
