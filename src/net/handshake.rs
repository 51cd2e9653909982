//! TLS on the public listeners: [`MaybeTls`] (a guarded stream in the clear or inside
//! TLS) and the handshake, bounded by the header deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::{Guarded, Timeout};

/// A guarded connection, in the clear or inside TLS.
pub(crate) enum MaybeTls {
    /// TLS is off.
    Plain(Guarded),
    /// After a completed handshake.
    Tls(Box<tokio_rustls::server::TlsStream<Guarded>>),
}

impl MaybeTls {
    pub(super) fn guarded(&self) -> &Guarded {
        match self {
            MaybeTls::Plain(g) => g,
            MaybeTls::Tls(t) => t.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(g) => Pin::new(g).poll_read(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

/// Not vectored, on purpose, though both streams could be: told that writes are
/// vectored, h2 sends every DATA frame over 256 bytes (the answer to an Issue, say) in a
/// system call of its own rather than copy it beside the other answers ready to go;
/// told they are not, it copies frames of up to 1 KiB into its buffer and flushes them
/// together (hyper's HTTP/1 likewise copies a body after its head). On one core, Issue
/// runs 10-20 % faster so, and nothing else slower (BENCHMARKS.md, "Writes").
impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(g) => Pin::new(g).poll_write(cx, data),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(g) => Pin::new(g).poll_flush(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(g) => Pin::new(g).poll_shutdown(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Runs the TLS handshake, bounded by `deadline`; `None` (counted and logged) if it
/// fails or runs out of time. Also returns the SPIFFE id of the client certificate.
pub(super) async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    conn: Guarded,
    deadline: Instant,
) -> Option<(MaybeTls, Option<Arc<str>>)> {
    let peer = conn.peer();
    let port = conn.state.slot.port;
    let metrics = conn.state.slot.metrics.clone();
    match tokio::time::timeout_at(deadline, acceptor.accept(conn)).await {
        Ok(Ok(tls)) => {
            // Only a certificate that passed the client verifier is ever here.
            let spiffe = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::spiffe_id(leaf))
                .map(Arc::from);
            Some((MaybeTls::Tls(Box::new(tls)), spiffe))
        }
        Ok(Err(e)) => {
            metrics.tls_failed(port);
            tracing::debug!(listener = port.label(), %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.timed_out(port, Timeout::Handshake);
            tracing::info!(listener = port.label(), %peer, reason = Timeout::Handshake.label(), "closing a stalled connection");
            None
        }
    }
}
