//! The one source of time. Tests move it forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in whole Unix seconds, with a shift that tests can set.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    shift: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        secs.saturating_add(self.shift.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) by `secs`. For tests.
    pub fn advance(&self, secs: i64) {
        self.shift.fetch_add(secs, Ordering::Relaxed);
    }
}
