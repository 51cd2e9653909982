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
