//! The HTTPS listener's limits, with real sockets: a client that dribbles its headers, an idle
//! keep-alive connection, one connection too many, and HTTP/2 spoken without ALPN.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use test_support::{Pki, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT_SECS: u64 = 1;

async fn app(pool: PgPool, max_connections: usize) -> (TestApp, u16) {
    let mut settings = test_support::settings();
    settings.header_read_timeout_secs = TIMEOUT_SECS;
    settings.max_connections = max_connections;
    let app = TestApp::spawn_with(pool, settings, Arc::new(Pki::new())).await;
    let port = app.base.rsplit(':').next().unwrap().parse().unwrap();
    (app, port)
}

/// Reads until the peer closes (or `within` passes): how long that took, and what it sent.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some((start.elapsed(), received)),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn headers_sent_a_byte_at_a_time_are_cut_off(pool: PgPool) {
    let (app, port) = app(pool, 64).await;
    let mut stream = app.pki.connect(port, &[b"http/1.1"]).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let dribble = async {
        for byte in request.iter().cycle().take(200) {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = Instant::now();
    dribble.await;
    assert!(
        started.elapsed() < Duration::from_secs(TIMEOUT_SECS + 3),
        "the server kept a slow header reader for {:?}",
        started.elapsed()
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn an_idle_keep_alive_connection_is_closed(pool: PgPool) {
    let (app, port) = app(pool, 64).await;
    let mut stream = app.pki.connect(port, &[b"http/1.1"]).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let closed = until_closed(&mut stream, Duration::from_secs(TIMEOUT_SECS + 3)).await;
    let (after, answer) = closed.expect("the idle connection stayed open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        after >= Duration::from_millis(500),
        "closed before idling: {after:?}"
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn connections_over_the_cap_are_refused_and_a_freed_slot_is_reused(pool: PgPool) {
    // The readiness probe's keep-alive connection closes after the idle timeout: then the cap
    // is all ours.
    let (app, port) = app(pool, 3).await;
    tokio::time::sleep(Duration::from_millis(TIMEOUT_SECS * 1000 + 500)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app.pki.connect(port, &[b"http/1.1"]).await.unwrap());
    }
    let over = app.pki.connect(port, &[b"http/1.1"]).await;
    assert!(over.is_err(), "a fourth connection was served");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = app.pki.connect(port, &[b"http/1.1"]).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, answer) = until_closed(&mut again, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn http2_without_alpn_is_not_spoken(pool: PgPool) {
    let (app, port) = app(pool, 64).await;
    let mut stream = app.pki.connect(port, &[]).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (_, answer) = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection stayed open");
    // An HTTP/2 server answers with a SETTINGS frame (type 4 in the fourth byte).
    assert!(
        answer.len() < 9 || answer[3] != 4,
        "the server spoke HTTP/2: {answer:?}"
    );
}
