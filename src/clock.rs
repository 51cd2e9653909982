//! The one source of time. Tests move it forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(not(target_os = "linux"))]
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
        wall_secs().saturating_add(self.shift.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) by `secs`. For tests.
    pub fn advance(&self, secs: i64) {
        self.shift.fetch_add(secs, Ordering::Relaxed);
    }
}

/// The wall clock in whole Unix seconds. On Linux, from the coarse clock: a copy the
/// kernel updates every tick (at most a few milliseconds behind), read from memory,
/// where the precise clock also reads and scales the CPU's time-stamp counter. Whole
/// seconds do not show the difference; an Introspect reads the clock twice (for the
/// API key and for the token), and the precise reads cost ~70 ns of a hot one's
/// ~12 µs (BENCHMARKS.md).
#[cfg(target_os = "linux")]
fn wall_secs() -> i64 {
    rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec
}

#[cfg(not(target_os = "linux"))]
fn wall_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_system_clock_in_seconds_moved_by_the_shift() {
        let system = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        let clock = Clock::system();
        let (before, now, after) = (system(), clock.now(), system());
        // The coarse clock may lag the precise one by a tick across a second's edge.
        assert!(
            (before - 1..=after).contains(&now),
            "{before} {now} {after}"
        );
        clock.clone().advance(3_600);
        let (before, now) = (system(), clock.now());
        assert!(
            (before + 3_599..=before + 3_601).contains(&now),
            "{before} {now}"
        );
    }
}
