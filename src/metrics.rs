//! Counters and histograms for `/metrics` (Prometheus text format 0.0.4).
//!
//! The hot path pays relaxed atomic increments only: every label combination is
//! registered up front (methods, codes, routes and statuses come from fixed tables),
//! and a histogram is a fixed array of bucket counters. Nothing locks, nothing
//! allocates per call. Every family is written with `# HELP` and `# TYPE`, and every
//! sample of a family carries the same label names.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::auth::AuthFailure;
use crate::tokens::verify::Reject;

const REJECTS: [Reject; 11] = [
    Reject::Malformed,
    Reject::Header,
    Reject::UnknownKey,
    Reject::Signature,
    Reject::Claims,
    Reject::Issuer,
    Reject::Expired,
    Reject::NotYetValid,
    Reject::Lifetime,
    Reject::Revoked,
    Reject::OldVersion,
];

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Latency bucket bounds, in microseconds (0.5 ms … 10 s).
const LATENCY_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Group-commit batch-size bucket bounds (writes per transaction; the writer caps at 512).
const BATCH_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// A Prometheus histogram over integer observations (microseconds, or counts): one
/// counter per bucket, the count and the sum. Buckets are stored non-cumulative and
/// summed when rendered, so an observation touches exactly three atomics.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    /// Multiplies an observation to get the rendered unit (1e-6 for microseconds → s).
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [u64], scale: f64) -> Self {
        Histogram {
            bounds,
            // One more bucket for observations above the last bound (`+Inf`).
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram rendered in seconds.
    pub fn latency() -> Self {
        Self::new(&LATENCY_BOUNDS_US, 1e-6)
    }

    /// Records one observation, in the histogram's integer unit.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Records a duration (latency histograms).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes `_bucket`, `_sum` and `_count` samples; `labels` is `a="x",b="y"` or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(le) => {
                    let le = *le as f64 * self.scale;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum.load(Ordering::Relaxed) as f64 * self.scale
        );
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count());
    }
}

/// The gRPC methods counted one by one (`/package.Service/Method` without the slash).
/// Anything else (an unknown method) is counted as `other`; reflection is not counted.
pub const GRPC_METHODS: [&str; 16] = [
    "tessera.v1.TokenService/Issue",
    "tessera.v1.TokenService/Exchange",
    "tessera.v1.TokenService/Introspect",
    "tessera.v1.TokenService/Revoke",
    "tessera.v1.TokenService/BumpTokenVersion",
    "tessera.v1.TokenService/WatchRevocations",
    "tessera.v1.TokenService/ListApiKeys",
    "tessera.v1.TokenService/ListClients",
    "tessera.v1.TokenService/ListAuditEvents",
    "tessera.v1.KeyService/GetJwks",
    "tessera.v1.KeyService/RotateSigningKey",
    "tessera.v1.KeyService/ListSigningKeys",
    "tessera.v1.KeyService/RevokeSigningKey",
    "envoy.service.auth.v3.Authorization/Check",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
];

/// Index of the `other` method row.
pub const GRPC_OTHER: usize = GRPC_METHODS.len();

/// The row of a request path (`/package.Service/Method`).
pub fn grpc_method_index(path: &str) -> usize {
    let name = path.strip_prefix('/').unwrap_or(path);
    GRPC_METHODS
        .iter()
        .position(|m| *m == name)
        .unwrap_or(GRPC_OTHER)
}

/// gRPC status code names, by code number (0..=16).
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The HTTP routes counted one by one; any other path is `other`.
pub const HTTP_ROUTES: [&str; 8] = [
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/oauth2/token",
    "/oauth2/introspect",
    "/oauth2/revoke",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// Index of the `other` route row.
pub const HTTP_OTHER_ROUTE: usize = HTTP_ROUTES.len();

/// The route row of a request path (the routes have no parameters).
pub fn http_route_index(path: &str) -> usize {
    HTTP_ROUTES
        .iter()
        .position(|r| *r == path)
        .unwrap_or(HTTP_OTHER_ROUTE)
}

/// The route label of a row.
pub fn http_route_label(i: usize) -> &'static str {
    HTTP_ROUTES.get(i).copied().unwrap_or("other")
}

/// HTTP statuses the listeners answer with; anything else is counted as `other`.
const HTTP_STATUSES: [u16; 18] = [
    200, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 429, 500, 503, 504,
];

fn http_status_index(s: u16) -> usize {
    HTTP_STATUSES
        .iter()
        .position(|x| *x == s)
        .unwrap_or(HTTP_STATUSES.len())
}

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
pub enum Reuse {
    /// A used refresh token presented again (its family is revoked).
    RefreshToken,
    /// A redeemed authorization code presented again.
    AuthorizationCode,
}

/// Service counters.
#[derive(Debug)]
pub struct Metrics {
    /// Introspections answered active.
    pub introspect_active: AtomicU64,
    /// Introspections of opaque tokens (API keys, refresh tokens) answered inactive.
    pub introspect_inactive_opaque: AtomicU64,
    inactive: [AtomicU64; 11],
    /// Credentials issued.
    pub issued: AtomicU64,
    /// Revocations committed.
    pub revoked: AtomicU64,
    /// Token-version bumps.
    pub bumps: AtomicU64,
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    /// Calls refused over a key's rate limit.
    pub rate_limited_key: AtomicU64,
    /// Calls refused because their address failed to authenticate too often.
    pub rate_limited_address: AtomicU64,
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
pub struct Gauges {
    /// Entries in the jti blocklist.
    pub blocklist_len: usize,
    /// Seconds since the active signing key was created.
    pub signing_key_age_seconds: i64,
}

impl Metrics {
    /// Counts an access token answered inactive, by reason.
    pub fn inactive(&self, r: Reject) {
        if let Some(i) = REJECTS.iter().position(|x| *x == r) {
            self.inactive[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Increments a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused caller credential, by reason.
    pub fn auth_failure(&self, r: AuthFailure) {
        self.auth_failures[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a detected replay.
    pub fn reuse(&self, r: Reuse) {
        self.reuse[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished gRPC call: method row (see [`grpc_method_index`]), status code.
    pub fn grpc_call(&self, method: usize, code: i32, took: Duration) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < GRPC_CODES.len())
            .unwrap_or(2); // UNKNOWN
        self.grpc.record(method, code, took);
    }

    /// Counts a finished HTTP request: route row (see [`http_route_index`]), status.
    pub fn http_request(&self, route: usize, status: u16, took: Duration) {
        self.http.record(route, http_status_index(status), took);
    }

    /// Calls of a gRPC method (full name, no leading slash) answered with `code`.
    pub fn grpc_count(&self, method: &str, code: i32) -> u64 {
        self.grpc.count(grpc_method_index(method), code as usize)
    }

    /// Renders the Prometheus exposition text of the service families.
    pub fn render(&self, g: Gauges) -> String {
        let mut s = String::with_capacity(64 * 1024);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);

        family(
            &mut s,
            "tessera_grpc_requests_total",
            "counter",
            "gRPC calls finished, by method and status code.",
        );
        self.render_grid_counts(&mut s, &self.grpc, true);
        family(
            &mut s,
            "tessera_grpc_request_duration_seconds",
            "histogram",
            "gRPC call latency, from request headers to the end of the response, by method and status code.",
        );
        self.render_grid_latency(
            &mut s,
            &self.grpc,
            true,
            "tessera_grpc_request_duration_seconds",
        );
        family(
            &mut s,
            "tessera_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        self.render_grid_counts(&mut s, &self.http, false);
        family(
            &mut s,
            "tessera_http_request_duration_seconds",
            "histogram",
            "HTTP request latency, by route and status.",
        );
        self.render_grid_latency(
            &mut s,
            &self.http,
            false,
            "tessera_http_request_duration_seconds",
        );

        family(
            &mut s,
            "tessera_introspect_total",
            "counter",
            "Introspections by result (active, inactive) and reason (ok when active).",
        );
        let _ = writeln!(
            s,
            "tessera_introspect_total{{result=\"active\",reason=\"ok\"}} {}",
            get(&self.introspect_active)
        );
        let _ = writeln!(
            s,
            "tessera_introspect_total{{result=\"inactive\",reason=\"opaque\"}} {}",
            get(&self.introspect_inactive_opaque)
        );
        for (r, c) in REJECTS.iter().zip(&self.inactive) {
            let _ = writeln!(
                s,
                "tessera_introspect_total{{result=\"inactive\",reason=\"{}\"}} {}",
                r.label(),
                get(c)
            );
        }
        family(
            &mut s,
            "tessera_auth_failures_total",
            "counter",
            "gRPC callers refused, by reason (a revoked API key counts as unknown_key).",
        );
        for (r, c) in AuthFailure::ALL.iter().zip(&self.auth_failures) {
            let _ = writeln!(
                s,
                "tessera_auth_failures_total{{reason=\"{}\"}} {}",
                r.label(),
                get(c)
            );
        }
        family(
            &mut s,
            "tessera_rate_limited_total",
            "counter",
            "Calls refused with RESOURCE_EXHAUSTED / 429: over a key's rate limit (key), or from an address throttled after failed authentications (address).",
        );
        for (r, c) in [
            ("key", &self.rate_limited_key),
            ("address", &self.rate_limited_address),
        ] {
            let _ = writeln!(s, "tessera_rate_limited_total{{reason=\"{r}\"}} {}", get(c));
        }
        family(
            &mut s,
            "tessera_reuse_detections_total",
            "counter",
            "Replays detected (a used refresh token or a redeemed authorization code presented again); each revokes its grant.",
        );
        for (kind, c) in ["refresh_token", "authorization_code"]
            .iter()
            .zip(&self.reuse)
        {
            let _ = writeln!(
                s,
                "tessera_reuse_detections_total{{kind=\"{kind}\"}} {}",
                get(c)
            );
        }
        for (name, help, c) in [
            ("tessera_issued_total", "Credentials issued.", &self.issued),
            (
                "tessera_revoked_total",
                "Revocations committed.",
                &self.revoked,
            ),
            (
                "tessera_version_bumps_total",
                "Token-version bumps (log out everywhere).",
                &self.bumps,
            ),
        ] {
            family(&mut s, name, "counter", help);
            let _ = writeln!(s, "{name} {}", get(c));
        }
        family(
            &mut s,
            "tessera_blocklist_entries",
            "gauge",
            "Revoked access-token ids held in memory until they expire.",
        );
        let _ = writeln!(s, "tessera_blocklist_entries {}", g.blocklist_len);
        family(
            &mut s,
            "tessera_signing_key_age_seconds",
            "gauge",
            "Seconds since the active signing key was created.",
        );
        let _ = writeln!(
            s,
            "tessera_signing_key_age_seconds {}",
            g.signing_key_age_seconds.max(0)
        );
        s
    }

    /// Counters of a grid. Every row's first column (OK, or 200) is always written, so
    /// each method or route has a series from the start; others once they are non-zero.
    fn render_grid_counts(&self, s: &mut String, grid: &Grid, grpc: bool) {
        let (name, rows) = if grpc {
            ("tessera_grpc_requests_total", GRPC_METHODS.len() + 1)
        } else {
            ("tessera_http_requests_total", HTTP_ROUTES.len() + 1)
        };
        for row in 0..rows {
            for col in 0..grid.cols {
                let n = grid.count(row, col);
                if n == 0 && col != 0 {
                    continue;
                }
                let _ = writeln!(s, "{name}{{{}}} {n}", labels(grpc, row, col));
            }
        }
    }

    fn render_grid_latency(&self, s: &mut String, grid: &Grid, grpc: bool, name: &str) {
        let rows = grid.requests.len() / grid.cols;
        for row in 0..rows {
            for col in 0..grid.cols {
                if grid.count(row, col) == 0 && col != 0 {
                    continue;
                }
                grid.latency[row * grid.cols + col].render(s, name, &labels(grpc, row, col));
            }
        }
    }
}

fn labels(grpc: bool, row: usize, col: usize) -> String {
    if grpc {
        format!(
            "method=\"{}\",code=\"{}\"",
            GRPC_METHODS.get(row).copied().unwrap_or("other"),
            GRPC_CODES[col]
        )
    } else {
        let status = HTTP_STATUSES
            .get(col)
            .map_or_else(|| "other".to_string(), |s| s.to_string());
        format!("route=\"{}\",status=\"{status}\"", http_route_label(row))
    }
}

/// The store's counters: group-commit batch sizes and storage errors.
#[derive(Debug)]
pub struct StoreStats {
    /// Writes per committed transaction.
    pub batch_size: Histogram,
    /// Storage operations that failed (begin, savepoint, commit, or a query).
    pub errors: AtomicU64,
    /// Reads run on the reader connection. Requests are answered from memory, so
    /// this moves with start-up, housekeeping, key changes and listings only.
    pub reads: AtomicU64,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats {
            batch_size: Histogram::new(&BATCH_BOUNDS, 1.0),
            errors: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }
}

impl StoreStats {
    /// Appends the store families.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "tessera_store_batch_size",
            "histogram",
            "Writes folded into one group-committed SQLite transaction.",
        );
        self.batch_size.render(out, "tessera_store_batch_size", "");
        family(
            out,
            "tessera_store_errors_total",
            "counter",
            "Storage operations that failed (the caller saw UNAVAILABLE or INTERNAL).",
        );
        let _ = writeln!(
            out,
            "tessera_store_errors_total {}",
            self.errors.load(Ordering::Relaxed)
        );
        family(
            out,
            "tessera_store_reads_total",
            "counter",
            "Reads run on the SQLite reader connection (off the async runtime).",
        );
        let _ = writeln!(
            out,
            "tessera_store_reads_total {}",
            self.reads.load(Ordering::Relaxed)
        );
    }
}

/// Appends the standard `process_*` families (as the Prometheus client libraries name
/// them), read from `/proc/self`. Off Linux the families are simply absent.
pub fn render_process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields = stat_fields(&stat);
    // /proc reports times in USER_HZ, which Linux fixes at 100 for user space.
    const HZ: f64 = 100.0;
    if let Some(f) = &fields {
        // After the command name: utime is field 14, stime 15, starttime 22, vsize 23,
        // rss (pages) 24 — here 0-based from field 3.
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            family(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            let _ = writeln!(out, "process_cpu_seconds_total {}", (u + s) as f64 / HZ);
        }
        if let Some(v) = num(20) {
            family(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
            );
            let _ = writeln!(out, "process_virtual_memory_bytes {v}");
        }
        if let (Some(start), Some(btime)) = (num(19), boot_time()) {
            family(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            let _ = writeln!(
                out,
                "process_start_time_seconds {}",
                btime as f64 + start as f64 / HZ
            );
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(bytes) = status_kib(&status, "VmRSS:").and_then(|k| k.checked_mul(1024)) {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    // No standard name exists for the high-water mark; load tests read it.
    if let Some(bytes) = status_kib(&status, "VmHWM:").and_then(|k| k.checked_mul(1024)) {
        family(
            out,
            "tessera_process_peak_resident_bytes",
            "gauge",
            "Peak resident memory size in bytes (VmHWM).",
        );
        let _ = writeln!(out, "tessera_process_peak_resident_bytes {bytes}");
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let open = dir.count().saturating_sub(1);
        family(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {open}");
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = max_open_files(&limits) {
        family(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n)
}

/// The fields of `/proc/<pid>/stat` after the command name, which may hold spaces and
/// parentheses — so fields are counted after its last `)`. Index 0 is the state.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Boot time in Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let status = "Name:\ttessera\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS:\t12 pages", "VmRSS:"), None);

        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 777 4096 9";
        let f = stat_fields(stat).unwrap();
        assert_eq!((f[11], f[12], f[19], f[20]), ("250", "50", "777", "4096"));
        assert_eq!(stat_fields("garbage"), None);

        let limits = "Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let h = Histogram::new(&BATCH_BOUNDS, 1.0);
        for v in [1, 1, 3, 600] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "b", "");
        assert!(out.contains("b_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("b_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("b_bucket{le=\"512\"} 3\n"), "{out}");
        assert!(out.contains("b_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("b_sum 605\nb_count 4\n"), "{out}");
    }

    #[test]
    fn method_table_matches_the_served_protos() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut served = Vec::new();
        for f in set.file {
            for s in &f.service {
                for m in &s.method {
                    served.push(format!("{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
        for m in &served {
            assert!(GRPC_METHODS.contains(&m.as_str()), "{m} is not counted");
        }
        assert_eq!(grpc_method_index("/tessera.v1.TokenService/Issue"), 0);
        assert_eq!(grpc_method_index("/x.Y/Z"), GRPC_OTHER);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_families_on_linux() {
        let mut out = String::new();
        render_process(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "tessera_process_peak_resident_bytes ",
        ] {
            assert!(out.contains(name), "{name} missing from {out}");
        }
    }
}
