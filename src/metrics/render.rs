//! The Prometheus text of the service families: the `# HELP`/`# TYPE` header every
//! family starts with, and [`Metrics::render`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::labels::{GRPC_CODES, HTTP_STATUSES, REJECTS};
use super::{AuthFailure, GRPC_METHODS, Gauges, Grid, HTTP_ROUTES, Metrics, http_route_label};

/// Writes a family's `# HELP` and `# TYPE` lines.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Metrics {
    /// Renders the Prometheus exposition text of the service families.
    pub(crate) fn render(&self, g: Gauges) -> String {
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
