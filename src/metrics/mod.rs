//! Counters and histograms for `/metrics` (Prometheus text format 0.0.4).
//!
//! The hot path pays relaxed atomic increments only: every label combination is
//! registered up front (methods, codes, routes and statuses come from fixed tables),
//! and a histogram is a fixed array of bucket counters. Nothing locks, nothing
//! allocates per call. Every family is written with `# HELP` and `# TYPE`, and every
//! sample of a family carries the same label names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::auth::AuthFailure;
use crate::tokens::verify::Reject;

mod histogram;
mod labels;
mod process;
mod render;
mod store;

pub(crate) use histogram::Histogram;
pub(crate) use labels::{
    GRPC_CODES, GRPC_METHODS, GRPC_OTHER, HTTP_ROUTES, grpc_method_index, http_route_index,
    http_route_label,
};
pub(crate) use process::render_process;
pub(crate) use render::family;
pub(crate) use store::StoreStats;

use labels::{HTTP_STATUSES, REJECTS, http_status_index};

/// Requests and latencies per (row, column) — (method, code) or (route, status).
#[derive(Debug)]
struct Grid {
    cols: usize,
    requests: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
}

impl Grid {
    fn new(rows: usize, cols: usize) -> Self {
        Grid {
            cols,
            requests: (0..rows * cols).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..rows * cols).map(|_| Histogram::latency()).collect(),
        }
    }

    fn record(&self, row: usize, col: usize, took: Duration) {
        let i = row * self.cols + col;
        if let (Some(c), Some(h)) = (self.requests.get(i), self.latency.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
            h.observe_duration(took);
        }
    }

    fn count(&self, row: usize, col: usize) -> u64 {
        self.requests
            .get(row * self.cols + col)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Refresh-token and authorization-code reuse, the two replay detections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// A used refresh token presented again (its family is revoked).
    RefreshToken,
    /// A redeemed authorization code presented again.
    AuthorizationCode,
}

/// Service counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Introspections answered active.
    pub(crate) introspect_active: AtomicU64,
    /// Introspections of opaque tokens (API keys, refresh tokens) answered inactive.
    pub(crate) introspect_inactive_opaque: AtomicU64,
    inactive: [AtomicU64; 11],
    /// Credentials issued.
    pub(crate) issued: AtomicU64,
    /// Revocations committed.
    pub(crate) revoked: AtomicU64,
    /// Token-version bumps.
    pub(crate) bumps: AtomicU64,
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    /// Calls refused over a key's rate limit.
    pub(crate) rate_limited_key: AtomicU64,
    /// Calls refused because their address failed to authenticate too often.
    pub(crate) rate_limited_address: AtomicU64,
    reuse: [AtomicU64; 2],
    grpc: Grid,
    http: Grid,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            introspect_active: AtomicU64::new(0),
            introspect_inactive_opaque: AtomicU64::new(0),
            inactive: Default::default(),
            issued: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            bumps: AtomicU64::new(0),
            auth_failures: Default::default(),
            rate_limited_key: AtomicU64::new(0),
            rate_limited_address: AtomicU64::new(0),
            reuse: Default::default(),
            grpc: Grid::new(GRPC_METHODS.len() + 1, GRPC_CODES.len()),
            http: Grid::new(HTTP_ROUTES.len() + 1, HTTP_STATUSES.len() + 1),
        }
    }
}

/// Gauges read when `/metrics` is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauges {
    /// Entries in the jti blocklist.
    pub(crate) blocklist_len: usize,
    /// Seconds since the active signing key was created.
    pub(crate) signing_key_age_seconds: i64,
}

impl Metrics {
    /// Counts an access token answered inactive, by reason.
    pub(crate) fn inactive(&self, r: Reject) {
        if let Some(i) = REJECTS.iter().position(|x| *x == r) {
            self.inactive[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Increments a counter.
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused caller credential, by reason.
    pub(crate) fn auth_failure(&self, r: AuthFailure) {
        self.auth_failures[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a detected replay.
    pub(crate) fn reuse(&self, r: Reuse) {
        self.reuse[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished gRPC call: method row (see [`grpc_method_index`]), status code.
    pub(crate) fn grpc_call(&self, method: usize, code: i32, took: Duration) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < GRPC_CODES.len())
            .unwrap_or(2); // UNKNOWN
        self.grpc.record(method, code, took);
    }

    /// Counts a finished HTTP request: route row (see [`http_route_index`]), status.
    pub(crate) fn http_request(&self, route: usize, status: u16, took: Duration) {
        self.http.record(route, http_status_index(status), took);
    }
}
