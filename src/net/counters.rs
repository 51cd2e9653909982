//! The listeners' connection counters (open, accepted, refused, timed out, failed TLS
//! handshakes), and their Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{Port, Timeout};

/// At most one "connection refused" warning per listener in this period.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(super) struct PortStats {
    pub(super) open: AtomicUsize,
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    timeouts: [AtomicU64; 6],
    /// TLS handshakes that failed (plaintext on a TLS port, no or a bad client certificate).
    tls_failed: AtomicU64,
    /// Milliseconds since `NetMetrics::epoch` of the last refusal warning, plus one.
    last_refusal_log: AtomicU64,
}

/// Connection counters of every listener, for `/metrics`.
#[derive(Debug)]
pub(crate) struct NetMetrics {
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
    pub(super) fn port(&self, p: Port) -> &PortStats {
        &self.ports[p.index()]
    }

    /// Counts a connection closed by a timeout.
    pub(crate) fn timed_out(&self, p: Port, t: Timeout) {
        let i = Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
        self.port(p).timeouts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed TLS handshake.
    pub(crate) fn tls_failed(&self, p: Port) {
        self.port(p).tls_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Open connections on a listener now.
    pub(crate) fn open(&self, p: Port) -> usize {
        self.port(p).open.load(Ordering::Relaxed)
    }

    /// Whether a refusal on `p` should be logged now (at most once per period).
    pub(super) fn refusal_log_due(&self, p: Port) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = &self.port(p).last_refusal_log;
        let prev = last.load(Ordering::Relaxed);
        (prev == 0 || now.saturating_sub(prev) >= REFUSAL_LOG_EVERY.as_millis() as u64)
            && last
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Appends the Prometheus text for every listener.
    pub(crate) fn render(&self, out: &mut String) {
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
