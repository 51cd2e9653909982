//! The gRPC listener: connections capped, TLS-terminated and preface-guarded
//! ([`GrpcIncoming`], [`GrpcConn`]), and what a call may learn about its connection
//! ([`PeerInfo`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::accept::Acceptor;
use super::handshake::handshake;
use super::{Deadline, Limits, MaybeTls, NetMetrics, Port, Timed, Timeout};

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;

/// What a gRPC call may learn about its connection, in the request extensions.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    /// The client's address.
    pub(crate) remote_addr: SocketAddr,
    /// The SPIFFE id of the client's verified certificate, if it has one (mTLS only).
    pub(crate) spiffe_id: Option<Arc<str>>,
}

/// A gRPC connection: capped, in the clear or TLS, and holding the HTTP/2-preface
/// deadline, which runs from accept so that it bounds the TLS handshake too (see
/// [`Timed`]). Bytes are counted after decryption: the preface is 24 bytes of HTTP/2,
/// whatever TLS wraps them in.
pub(crate) type GrpcConn = Timed<MaybeTls, Preface>;

/// What a [`GrpcConn`] knows of its connection, and its HTTP/2-preface deadline.
#[derive(Debug)]
pub(crate) struct Preface {
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

/// The gRPC listener's connections, capped, TLS-terminated when TLS is on, and
/// preface-guarded, as the stream tonic serves from. Handshakes run in their own
/// tasks, so a client that stalls in one holds up nobody else's.
pub(crate) struct GrpcIncoming {
    acceptor: Acceptor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshakes: JoinSet<Option<GrpcConn>>,
}

impl GrpcIncoming {
    /// Wraps a bound listener; with `tls`, only TLS connections get through.
    pub(crate) fn new(
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
