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

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;

mod accept;
mod counters;
mod grpc;
mod handshake;
mod http;
mod timed;

pub(crate) use accept::Guarded;
pub(crate) use counters::NetMetrics;
pub(crate) use grpc::{GrpcIncoming, PeerInfo};
pub(crate) use handshake::MaybeTls;
pub(crate) use http::serve_http;
pub(crate) use timed::{Deadline, Timed};

/// The source address of an HTTP request's connection, in its extensions (the
/// failed-authentication throttle counts by it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Which listener a connection came in on (log field and metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
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
    pub(crate) fn label(self) -> &'static str {
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
pub(crate) enum Timeout {
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
    pub(crate) fn label(self) -> &'static str {
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
pub(crate) struct Limits {
    /// See [`Config::header_timeout`].
    pub(crate) header_timeout: Duration,
    /// See [`Config::http_request_timeout`].
    pub(crate) request_timeout: Duration,
    /// See [`Config::idle_timeout`].
    pub(crate) idle_timeout: Duration,
    /// See [`Config::max_connections`].
    pub(crate) max_connections: usize,
}

impl Limits {
    /// The limits `config` sets (the same for every listener).
    pub(crate) fn from_config(config: &Config) -> Self {
        Limits {
            header_timeout: config.header_timeout,
            request_timeout: config.http_request_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        }
    }
}
