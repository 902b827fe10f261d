//! What the HTTPS listener admits: at most so many connections at once (a connection over the
//! cap is closed at accept, before any TLS work), `TCP_NODELAY` (so a response is not held back
//! for the client's delayed ACK), and HTTP/1.1 only: ALPN offers only `http/1.1`, and a client
//! that speaks HTTP/2 anyway (its connection preface, `PRI * HTTP/2.0`) is disconnected, because
//! hyper's automatic protocol detection would otherwise answer it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::RustlsAcceptor;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The start of the HTTP/2 connection preface (RFC 9113 §3.4); no HTTP/1 method starts so.
const H2_PREFACE: &[u8] = b"PRI ";

/// Caps connections, sets `TCP_NODELAY`, terminates TLS, refuses HTTP/2.
#[derive(Clone)]
pub(super) struct GuardedAcceptor {
    tls: RustlsAcceptor<NoDelayAcceptor>,
    permits: Arc<Semaphore>,
}

impl GuardedAcceptor {
    #[must_use]
    pub(super) fn new(tls: RustlsAcceptor, max_connections: usize) -> Self {
        Self {
            tls: tls.acceptor(NoDelayAcceptor::new()),
            permits: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for GuardedAcceptor {
    type Stream = Guarded<<RustlsAcceptor<NoDelayAcceptor> as Accept<TcpStream, S>>::Stream>;
    type Service = S;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!("connection refused: the connection limit is reached");
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other(
                "connection limit reached",
            ))));
        };
        let handshake = self.tls.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            Ok((
                Guarded {
                    inner: stream,
                    _permit: permit,
                    first: Vec::new(),
                },
                service,
            ))
        })
    }
}

/// A connection holding its slot until it closes, checking its first bytes for HTTP/2.
pub(super) struct Guarded<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    /// The first bytes read, until there are enough to tell HTTP/2's preface apart.
    first: Vec<u8>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.first.len() < H2_PREFACE.len() {
            let fresh = &buf.filled()[before..];
            let need = H2_PREFACE.len() - self.first.len();
            self.first
                .extend_from_slice(&fresh[..need.min(fresh.len())]);
            if self.first == H2_PREFACE {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "HTTP/2 without ALPN",
                )));
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
