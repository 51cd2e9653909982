//! [`StoreStats`]: the store's counters (group-commit batch sizes, errors, reads) and
//! their families.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::BATCH_BOUNDS;
use super::{Histogram, family};

/// The store's counters: group-commit batch sizes and storage errors.
#[derive(Debug)]
pub(crate) struct StoreStats {
    /// Writes per committed transaction.
    pub(crate) batch_size: Histogram,
    /// Storage operations that failed (begin, savepoint, commit, or a query).
    pub(crate) errors: AtomicU64,
    /// Reads run on the reader connection. Requests are answered from memory, so
    /// this moves with start-up, housekeeping, key changes and listings only.
    pub(crate) reads: AtomicU64,
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
    pub(crate) fn render(&self, out: &mut String) {
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
