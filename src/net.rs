//! The listeners' defences against slow and greedy clients: a cap on open connections
//! per listener, the header-read, request and idle timeouts, and their counters.
//!
//! What applies where:
//!
//! | defence | HTTP and metrics ports | gRPC port |
//! |---|---|---|
//! | `max_connections` (excess accepted, then closed at once) | yes | yes |
//! | `header_timeout` | TLS handshake, from accept; then the complete request head, and between requests | TLS handshake and the 24-byte HTTP/2 preface, together, from accept |
//! | `http_request_timeout` (head received → response, body included) | yes (408) | `request_timeout` per call |
//! | `idle_timeout` (no byte moves either way while the server waits on the socket) | yes | no: HTTP/2 keep-alive pings find dead peers |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::Config;

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;

/// Pause after a failed `accept` (typically out of file descriptors), so the loop
/// waits for descriptors to come back instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one "connection refused" warning per listener in this period.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The source address of an HTTP request's connection, in its extensions (the
/// failed-authentication throttle counts by it).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Which listener a connection came in on (log field and metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The gRPC listener.
    Grpc,
    /// The public HTTP listener (JWKS, probes, OAuth).
    Http,
    /// The Prometheus listener.
    Metrics,
}

impl Port {
    const ALL: [Port; 3] = [Port::Grpc, Port::Http, Port::Metrics];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Port::Grpc => "grpc",
            Port::Http => "http",
            Port::Metrics => "metrics",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection was closed by the server before the client was done with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// No complete request head within `header_timeout` of accept.
    Header,
    /// A kept-alive connection sent no next request within `header_timeout`.
    KeepAlive,
    /// A request took longer than `http_request_timeout` (answered 408).
    Request,
    /// No byte moved for `idle_timeout` while the server waited on the socket.
    Idle,
    /// No HTTP/2 preface within `header_timeout` of accept (gRPC).
    Preface,
    /// The TLS handshake did not complete within `header_timeout` of accept.
    Handshake,
}

impl Timeout {
    const ALL: [Timeout; 6] = [
        Timeout::Header,
        Timeout::KeepAlive,
        Timeout::Request,
        Timeout::Idle,
        Timeout::Preface,
        Timeout::Handshake,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Timeout::Header => "header",
            Timeout::KeepAlive => "keep_alive",
            Timeout::Request => "request",
            Timeout::Idle => "idle",
            Timeout::Preface => "preface",
            Timeout::Handshake => "tls_handshake",
        }
    }
}

/// The limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// See [`Config::header_timeout`].
    pub header_timeout: Duration,
    /// See [`Config::http_request_timeout`].
    pub request_timeout: Duration,
    /// See [`Config::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`Config::max_connections`].
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` sets (the same for every listener).
    pub fn from_config(config: &Config) -> Self {
        Limits {
            header_timeout: config.header_timeout,
            request_timeout: config.http_request_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        }
    }
}

#[derive(Debug, Default)]
struct PortStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    timeouts: [AtomicU64; 6],
    /// TLS handshakes that failed (plaintext on a TLS port, no or a bad client certificate).
    tls_failed: AtomicU64,
    /// Milliseconds since `NetMetrics::epoch` of the last refusal warning, plus one.
    last_refusal_log: AtomicU64,
}

/// Connection counters of every listener, for `/metrics`.
#[derive(Debug)]
pub struct NetMetrics {
    ports: [PortStats; 3],
    epoch: std::time::Instant,
}

impl Default for NetMetrics {
    fn default() -> Self {
        NetMetrics {
            ports: Default::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

impl NetMetrics {
    fn port(&self, p: Port) -> &PortStats {
        &self.ports[p.index()]
    }

    /// Counts a connection closed by a timeout.
    pub fn timed_out(&self, p: Port, t: Timeout) {
        let i = Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
        self.port(p).timeouts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed TLS handshake.
    pub fn tls_failed(&self, p: Port) {
        self.port(p).tls_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Open connections on a listener now.
    pub fn open(&self, p: Port) -> usize {
        self.port(p).open.load(Ordering::Relaxed)
    }

    /// Whether a refusal on `p` should be logged now (at most once per period).
    fn refusal_log_due(&self, p: Port) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = &self.port(p).last_refusal_log;
        let prev = last.load(Ordering::Relaxed);
        (prev == 0 || now.saturating_sub(prev) >= REFUSAL_LOG_EVERY.as_millis() as u64)
            && last
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Appends the Prometheus text for every listener.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP tessera_connections_open Open connections, by listener.\n# TYPE tessera_connections_open gauge"
        );
        for p in Port::ALL {
            let _ = writeln!(
                out,
                "tessera_connections_open{{listener=\"{}\"}} {}",
                p.label(),
                self.open(p)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_connections_accepted_total Connections accepted, by listener.\n# TYPE tessera_connections_accepted_total counter"
        );
        for p in Port::ALL {
            let _ = writeln!(
                out,
                "tessera_connections_accepted_total{{listener=\"{}\"}} {}",
                p.label(),
                get(&self.port(p).accepted)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_connections_refused_total Connections closed at once because the listener was at max_connections.\n# TYPE tessera_connections_refused_total counter"
        );
        for p in Port::ALL {
            let _ = writeln!(
                out,
                "tessera_connections_refused_total{{listener=\"{}\"}} {}",
                p.label(),
                get(&self.port(p).refused)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_connection_timeouts_total Connections closed by a timeout, by listener and reason.\n# TYPE tessera_connection_timeouts_total counter"
        );
        for p in Port::ALL {
            for (t, c) in Timeout::ALL.iter().zip(&self.port(p).timeouts) {
                let _ = writeln!(
                    out,
                    "tessera_connection_timeouts_total{{listener=\"{}\",reason=\"{}\"}} {}",
                    p.label(),
                    t.label(),
                    get(c)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tessera_tls_handshake_failures_total TLS handshakes that failed: plaintext on a TLS port, a missing or untrusted client certificate.\n# TYPE tessera_tls_handshake_failures_total counter"
        );
        for p in [Port::Grpc, Port::Http] {
            let _ = writeln!(
                out,
                "tessera_tls_handshake_failures_total{{listener=\"{}\"}} {}",
                p.label(),
                get(&self.port(p).tls_failed)
            );
        }
    }
}

/// A place under a listener's connection cap; frees it on drop.
#[derive(Debug)]
struct Slot {
    metrics: Arc<NetMetrics>,
    port: Port,
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
struct Acceptor {
    listener: TcpListener,
    port: Port,
    limits: Limits,
    metrics: Arc<NetMetrics>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl Acceptor {
    fn new(listener: TcpListener, port: Port, limits: Limits, metrics: Arc<NetMetrics>) -> Self {
        Acceptor {
            listener,
            port,
            limits,
            metrics,
            backoff: None,
        }
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Guarded> {
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

/// A connection's stream under a deadline: when it passes while the server waits on
/// the socket, reads and writes fail with `TimedOut`, the close is counted and logged,
/// and the connection's owner drops the stream. `D` says which deadline and whose
/// connection it is: [`Accepted`] (the idle deadline, on the TCP stream) or
/// [`Preface`] (the HTTP/2 preface, above TLS).
#[derive(Debug)]
pub struct Timed<IO, D> {
    io: IO,
    state: D,
    expired: bool,
}

/// What a [`Timed`] stream watches, told of every read and write.
pub trait Deadline {
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
    fn wrap(io: IO, state: D) -> Self {
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

/// A TCP stream that holds its listener slot and, on the HTTP and metrics ports,
/// enforces the idle deadline (see [`Timed`]).
pub type Guarded = Timed<TcpStream, Accepted>;

/// What a [`Guarded`] stream knows of its connection, and its idle deadline.
#[derive(Debug)]
pub struct Accepted {
    /// Its place under the listener's cap, freed on drop.
    slot: Slot,
    /// The client's address.
    peer: SocketAddr,
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

    fn with_idle(mut self, limit: Duration) -> Self {
        let now = Instant::now();
        self.state.idle = Some((limit, now, Box::pin(tokio::time::sleep_until(now + limit))));
        self
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
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

/// A guarded connection, in the clear or inside TLS.
pub enum MaybeTls {
    /// TLS is off.
    Plain(Guarded),
    /// After a completed handshake.
    Tls(Box<tokio_rustls::server::TlsStream<Guarded>>),
}

impl MaybeTls {
    fn guarded(&self) -> &Guarded {
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(g) => Pin::new(g).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(g) => g.is_write_vectored(),
            MaybeTls::Tls(t) => t.is_write_vectored(),
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
async fn handshake(
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

/// What a gRPC call may learn about its connection, in the request extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The listener's address.
    pub local_addr: Option<SocketAddr>,
    /// The SPIFFE id of the client's verified certificate, if it has one (mTLS only).
    pub spiffe_id: Option<Arc<str>>,
}

/// A gRPC connection: capped, in the clear or TLS, and holding the HTTP/2-preface
/// deadline, which runs from accept so that it bounds the TLS handshake too (see
/// [`Timed`]). Bytes are counted after decryption: the preface is 24 bytes of HTTP/2,
/// whatever TLS wraps them in.
pub type GrpcConn = Timed<MaybeTls, Preface>;

/// What a [`GrpcConn`] knows of its connection, and its HTTP/2-preface deadline.
#[derive(Debug)]
pub struct Preface {
    /// What the connection's calls may learn about it.
    info: PeerInfo,
    /// The listener and its counters, for a close.
    port: Port,
    metrics: Arc<NetMetrics>,
    /// Bytes of HTTP/2 preface still expected, and by when; `None` once all arrived.
    left: Option<(usize, Pin<Box<Sleep>>)>,
}

impl GrpcConn {
    fn new(io: MaybeTls, spiffe_id: Option<Arc<str>>, deadline: Instant) -> Self {
        let g = io.guarded();
        let info = PeerInfo {
            remote_addr: g.state.peer,
            local_addr: g.io.local_addr().ok(),
            spiffe_id,
        };
        let (port, metrics) = (g.state.slot.port, g.state.slot.metrics.clone());
        Timed::wrap(
            io,
            Preface {
                info,
                port,
                metrics,
                left: Some((H2_PREFACE_LEN, Box::pin(tokio::time::sleep_until(deadline)))),
            },
        )
    }
}

impl Deadline for Preface {
    const REASON: Timeout = Timeout::Preface;

    fn read(&mut self, n: usize) {
        if let Some((left, _)) = &mut self.left {
            *left = left.saturating_sub(n);
            if *left == 0 {
                self.left = None;
            }
        }
    }

    fn wrote(&mut self) {}

    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.left {
            Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    fn connection(&self) -> (&NetMetrics, Port, SocketAddr) {
        (&self.metrics, self.port, self.info.remote_addr)
    }
}

impl tonic::transport::server::Connected for GrpcConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.state.info.clone()
    }
}

/// Copies the client's address where tonic's `Request::remote_addr` looks for it,
/// since the connection's own info is a [`PeerInfo`].
pub fn tcp_connect_info<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    if let Some(p) = req.extensions().get::<PeerInfo>() {
        let info = tonic::transport::server::TcpConnectInfo {
            local_addr: p.local_addr,
            remote_addr: Some(p.remote_addr),
        };
        req.extensions_mut().insert(info);
    }
    req
}

/// The gRPC listener's connections, capped, TLS-terminated when TLS is on, and
/// preface-guarded, as the stream tonic serves from. Handshakes run in their own
/// tasks, so a client that stalls in one holds up nobody else's.
pub struct GrpcIncoming {
    acceptor: Acceptor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshakes: JoinSet<Option<GrpcConn>>,
}

impl GrpcIncoming {
    /// Wraps a bound listener; with `tls`, only TLS connections get through.
    pub fn new(
        listener: TcpListener,
        limits: Limits,
        metrics: Arc<NetMetrics>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        GrpcIncoming {
            acceptor: Acceptor::new(listener, Port::Grpc, limits, metrics),
            tls,
            handshakes: JoinSet::new(),
        }
    }
}

impl tokio_stream::Stream for GrpcIncoming {
    type Item = io::Result<GrpcConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let header_timeout = this.acceptor.limits.header_timeout;
        while let Poll::Ready(conn) = this.acceptor.poll_accept(cx) {
            let deadline = Instant::now() + header_timeout;
            match &this.tls {
                None => {
                    let conn = GrpcConn::new(MaybeTls::Plain(conn), None, deadline);
                    return Poll::Ready(Some(Ok(conn)));
                }
                Some(tls) => {
                    let tls = tls.clone();
                    this.handshakes.spawn(async move {
                        let (io, spiffe) = handshake(tls, conn, deadline).await?;
                        Some(GrpcConn::new(io, spiffe, deadline))
                    });
                }
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                // Failed handshakes were counted and logged; their slots are free.
                Poll::Ready(Some(_)) => continue,
                // No handshake in flight: the accept above is what wakes us.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Serves `router` over HTTP/1.1 on `listener` with the limits, until `stop` turns
/// true; then stops accepting and lets every open connection finish its request.
pub async fn serve_http(
    listener: TcpListener,
    port: Port,
    router: Router,
    limits: Limits,
    metrics: Arc<NetMetrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut acceptor = Acceptor::new(listener, port, limits, metrics.clone());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            conn = poll_fn(|cx| acceptor.poll_accept(cx)) => {
                let conn = conn.with_idle(limits.idle_timeout);
                conns.spawn(serve_connection(conn, port, router.clone(), limits, metrics.clone(), tls.clone(), stop.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(acceptor);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    conn: Guarded,
    port: Port,
    router: Router,
    limits: Limits,
    metrics: Arc<NetMetrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let peer = conn.peer();
    // The handshake gets `header_timeout` of its own; hyper's head timer starts after.
    let conn = match tls {
        None => MaybeTls::Plain(conn),
        Some(tls) => {
            let deadline = Instant::now() + limits.header_timeout;
            let handshake = handshake(tls, conn, deadline);
            let shaken = tokio::select! {
                shaken = handshake => shaken,
                () = stopped(&mut stop) => return,
            };
            match shaken {
                Some((io, _)) => io,
                None => return,
            }
        }
    };
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let svc_metrics = metrics.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        count.fetch_add(1, Ordering::Relaxed);
        req.extensions_mut().insert(PeerAddr(peer));
        let router = router.clone();
        let metrics = svc_metrics.clone();
        async move {
            let call = router.oneshot(req.map(Body::new));
            match tokio::time::timeout(limits.request_timeout, call).await {
                Ok(Ok(response)) => Ok::<_, Infallible>(response),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    metrics.timed_out(port, Timeout::Request);
                    tracing::info!(listener = port.label(), %peer, "request timed out");
                    Ok(request_timeout_response())
                }
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let http = builder.serve_connection(TokioIo::new(conn), svc);
    tokio::pin!(http);
    let result = tokio::select! {
        r = http.as_mut() => r,
        () = stopped(&mut stop) => {
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            // hyper's head timer runs from accept and again after every response.
            let t = if served.load(Ordering::Relaxed) == 0 {
                Timeout::Header
            } else {
                Timeout::KeepAlive
            };
            metrics.timed_out(port, t);
            if t == Timeout::Header {
                tracing::info!(listener = port.label(), %peer, "closing a connection that sent no request head in time");
            } else {
                tracing::debug!(listener = port.label(), %peer, "closing an idle kept-alive connection");
            }
        }
        // Resets, malformed requests, and the idle/preface closes already logged.
        Err(e) => tracing::debug!(listener = port.label(), %peer, error = %e, "connection ended"),
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// 408 with an RFC 6749-style JSON body, closing the connection: the rest of the
/// request body, if any, is never read.
fn request_timeout_response() -> Response<Body> {
    let body = r#"{"error":"invalid_request","error_description":"request not completed in time"}"#;
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
