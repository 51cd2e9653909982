//! Accepting under the connection cap: [`Acceptor`] closes what is over it, and each
//! accepted stream ([`Guarded`]) holds its place until dropped and enforces the idle
//! deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use super::{Deadline, Limits, NetMetrics, Port, Timed, Timeout};

/// Pause after a failed `accept` (typically out of file descriptors), so the loop
/// waits for descriptors to come back instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A place under a listener's connection cap; frees it on drop.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) metrics: Arc<NetMetrics>,
    pub(super) port: Port,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics
            .port(self.port)
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections up to the cap; over it, accepts and closes at once, so a flood
/// costs the server no descriptor for longer than the accept and the client learns
/// immediately instead of waiting in the kernel's backlog.
pub(super) struct Acceptor {
    listener: TcpListener,
    port: Port,
    pub(super) limits: Limits,
    metrics: Arc<NetMetrics>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl Acceptor {
    pub(super) fn new(
        listener: TcpListener,
        port: Port,
        limits: Limits,
        metrics: Arc<NetMetrics>,
    ) -> Self {
        Acceptor {
            listener,
            port,
            limits,
            metrics,
            backoff: None,
        }
    }

    pub(super) fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Guarded> {
        loop {
            if let Some(sleep) = &mut self.backoff {
                ready!(sleep.as_mut().poll(cx));
                self.backoff = None;
            }
            let (stream, peer) = match self.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(accepted)) => accepted,
                Poll::Ready(Err(e)) => {
                    // Per-connection errors (reset before accept) are harmless; running
                    // out of descriptors is not, and is worth a line.
                    if e.raw_os_error().is_some_and(|c| c == 24 || c == 23) {
                        tracing::warn!(listener = self.port.label(), error = %e, "accept failed: out of file descriptors");
                    } else {
                        tracing::debug!(listener = self.port.label(), error = %e, "accept failed");
                    }
                    self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    continue;
                }
            };
            let stats = self.metrics.port(self.port);
            if stats.open.fetch_add(1, Ordering::Relaxed) >= self.limits.max_connections {
                stats.open.fetch_sub(1, Ordering::Relaxed);
                stats.refused.fetch_add(1, Ordering::Relaxed);
                if self.metrics.refusal_log_due(self.port) {
                    tracing::warn!(
                        listener = self.port.label(),
                        %peer,
                        max_connections = self.limits.max_connections,
                        "connection cap reached: closing new connections"
                    );
                }
                drop(stream);
                continue;
            }
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let slot = Slot {
                metrics: self.metrics.clone(),
                port: self.port,
            };
            return Poll::Ready(Guarded::new(stream, peer, slot));
        }
    }
}

/// A TCP stream that holds its listener slot and, on the HTTP and metrics ports,
/// enforces the idle deadline (see [`Timed`]).
pub(crate) type Guarded = Timed<TcpStream, Accepted>;

/// What a [`Guarded`] stream knows of its connection, and its idle deadline.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// Its place under the listener's cap, freed on drop.
    pub(super) slot: Slot,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// The idle limit, the last time a byte moved, and the timer that checks it
    /// (HTTP and metrics ports only).
    idle: Option<(Duration, Instant, Pin<Box<Sleep>>)>,
}

impl Guarded {
    fn new(inner: TcpStream, peer: SocketAddr, slot: Slot) -> Self {
        Timed::wrap(
            inner,
            Accepted {
                slot,
                peer,
                idle: None,
            },
        )
    }

    pub(super) fn with_idle(mut self, limit: Duration) -> Self {
        let now = Instant::now();
        self.state.idle = Some((limit, now, Box::pin(tokio::time::sleep_until(now + limit))));
        self
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.state.peer
    }
}

impl Accepted {
    fn moved(&mut self) {
        if let Some((_, last, _)) = &mut self.idle {
            *last = Instant::now();
        }
    }
}

impl Deadline for Accepted {
    const REASON: Timeout = Timeout::Idle;

    fn read(&mut self, _: usize) {
        self.moved();
    }

    fn wrote(&mut self) {
        self.moved();
    }

    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let mut fired = false;
        if let Some((limit, last, sleep)) = &mut self.idle {
            // The timer is re-armed lazily, from the last movement, only when it fires.
            while !fired && sleep.as_mut().poll(cx).is_ready() {
                let due = *last + *limit;
                if due <= Instant::now() {
                    fired = true;
                } else {
                    sleep.as_mut().reset(due);
                }
            }
        }
        fired
    }

    fn connection(&self) -> (&NetMetrics, Port, SocketAddr) {
        (&self.slot.metrics, self.slot.port, self.peer)
    }
}
