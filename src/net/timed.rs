//! [`Timed`]: a connection's stream under a deadline, the one wrapper behind the idle
//! and the HTTP/2-preface timeouts.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{NetMetrics, Port, Timeout};

/// A connection's stream under a deadline: when it passes while the server waits on
/// the socket, reads and writes fail with `TimedOut`, the close is counted and logged,
/// and the connection's owner drops the stream. `D` says which deadline and whose
/// connection it is: [`Accepted`](super::accept::Accepted) (the idle deadline, on
/// the TCP stream) or [`Preface`](super::grpc::Preface) (the HTTP/2 preface, above
/// TLS).
#[derive(Debug)]
pub(crate) struct Timed<IO, D> {
    pub(super) io: IO,
    pub(super) state: D,
    expired: bool,
}

/// What a [`Timed`] stream watches, told of every read and write.
pub(crate) trait Deadline {
    /// The reason a close by this deadline is counted and logged under.
    const REASON: Timeout;
    /// `n` bytes were read (0 at the end of the stream).
    fn read(&mut self, n: usize);
    /// Bytes were written.
    fn wrote(&mut self);
    /// Whether the deadline has passed; if not, the task is woken when it may have.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool;
    /// The counters, the listener and the client, to count and name a close.
    fn connection(&self) -> (&NetMetrics, Port, SocketAddr);
}

impl<IO, D: Deadline> Timed<IO, D> {
    pub(super) fn wrap(io: IO, state: D) -> Self {
        Timed {
            io,
            state,
            expired: false,
        }
    }

    /// Called when the socket is not ready: fails once the deadline has passed, else
    /// makes sure the task wakes up when it does.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        if !self.state.poll_passed(cx) {
            return Poll::Pending;
        }
        self.expired = true;
        let (metrics, port, peer) = self.state.connection();
        metrics.timed_out(port, D::REASON);
        tracing::info!(listener = port.label(), peer = %peer, reason = D::REASON.label(), "closing a stalled connection");
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<IO: AsyncRead + Unpin, D: Deadline + Unpin> AsyncRead for Timed<IO, D> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.state.read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx),
        }
    }
}

impl<IO: AsyncWrite + Unpin, D: Deadline + Unpin> AsyncWrite for Timed<IO, D> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        match Pin::new(&mut this.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.state.wrote();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx).map_ok(|()| 0),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.state.wrote();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx).map_ok(|()| 0),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
