//! Counters for `/metrics` (Prometheus text format). Plain atomics: the hot path
//! pays one relaxed increment.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Service counters.
#[derive(Debug, Default)]
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

    /// Renders the Prometheus exposition text.
    pub fn render(&self, blocklist_len: usize) -> String {
        let mut s = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(s, "# TYPE tessera_introspect_total counter");
        let _ = writeln!(
            s,
            "tessera_introspect_total{{result=\"active\"}} {}",
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
        let _ = writeln!(
            s,
            "# TYPE tessera_issued_total counter\ntessera_issued_total {}",
            get(&self.issued)
        );
        let _ = writeln!(
            s,
            "# TYPE tessera_revoked_total counter\ntessera_revoked_total {}",
            get(&self.revoked)
        );
        let _ = writeln!(
            s,
            "# TYPE tessera_version_bumps_total counter\ntessera_version_bumps_total {}",
            get(&self.bumps)
        );
        let _ = writeln!(
            s,
            "# TYPE tessera_blocklist_entries gauge\ntessera_blocklist_entries {blocklist_len}"
        );
        s
    }
}

/// Appends the process's resident memory (now and peak) and CPU time, read from
/// `/proc/self`. Off Linux the lines are simply absent.
pub fn render_process(out: &mut String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (field, name) in [
        ("VmRSS:", "tessera_process_resident_bytes"),
        ("VmHWM:", "tessera_process_peak_resident_bytes"),
    ] {
        if let Some(bytes) = status_kib(&status, field).and_then(|k| k.checked_mul(1024)) {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {bytes}");
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    if let Some(ticks) = cpu_ticks(&stat) {
        // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
        let _ = writeln!(
            out,
            "# TYPE tessera_process_cpu_seconds_total counter\n\
             tessera_process_cpu_seconds_total {:.2}",
            ticks as f64 / 100.0
        );
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n)
}

/// User plus system time from `/proc/<pid>/stat`, in ticks. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let status = "Name:\ttessera\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS:\t12 pages", "VmRSS:"), None);

        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_lines_on_linux() {
        let mut out = String::new();
        render_process(&mut out);
        for name in [
            "tessera_process_resident_bytes ",
            "tessera_process_peak_resident_bytes ",
            "tessera_process_cpu_seconds_total ",
        ] {
            assert!(out.contains(name), "{name} missing from {out}");
        }
    }
}
