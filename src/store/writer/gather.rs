//! When a batch begins: how long the writer lets work gather before it opens the
//! transaction. Audit records nobody waits for may wait a few milliseconds for company;
//! a durable write waits only while others are arriving close behind it, so concurrent
//! callers share one COMMIT (one `fsync`) and a lone caller waits for nothing.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{MAX_BATCH, Work};

/// How long the writer lets a batch that holds only queued audit records (nobody
/// waiting on it) fill before it begins: one COMMIT for many issuances instead of one
/// each. With [`BATCH_BUDGET`](super::BATCH_BUDGET) and the COMMIT this keeps a
/// record in memory for ~20 ms at most in normal operation.
pub(super) const AUDIT_WINDOW: Duration = Duration::from_millis(5);

/// How long the writer holds a batch open for one more durable write, while such writes
/// have lately been arriving closer together than this: one COMMIT (one `fsync`) for
/// the writes of many concurrent callers instead of one each, when they come fast
/// enough to share it. Writes that arrive further apart (a lone caller, a quiet
/// service) begin at once and wait for nothing.
const GAP: Duration = Duration::from_micros(500);

/// How many recent gaps (see [`GAP`]) a batch waits for its next write: when none
/// comes in that long the stream has paused, typically because every caller is waiting
/// on this very batch, and holding it open longer only idles the CPU. On one core,
/// waiting out the whole `GAP` then cost refresh rotation and revocation ~10 % of
/// their throughput.
const STALL: u32 = 2;

/// The longest a batch is held open for more durable writes before it begins, from
/// the moment it took its first work: what the gathering may add to a write's latency.
/// Shorter than [`AUDIT_WINDOW`], so it never lengthens an audit record's stay.
const JOB_WINDOW: Duration = Duration::from_millis(2);

/// Waits up to [`AUDIT_WINDOW`] for more audit records to join the batch; stops at
/// once when a write whose caller waits arrives (it joins the batch too).
pub(super) fn gather_audits(rx: &mpsc::Receiver<Work>, waiting: &mut Vec<Work>, pace: &mut Pace) {
    let deadline = Instant::now() + AUDIT_WINDOW;
    while waiting.len() < MAX_BATCH {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(w) => {
                pace.received(&w);
                let awaited = w.awaited();
                waiting.push(w);
                if awaited {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Takes everything already queued, then, if the batch holds a durable write and such
/// writes have lately been coming fast, holds it open for more (see [`hold_for`]).
/// `opened` is when the batch took its first work: a batch an audit record opened (and
/// held for [`AUDIT_WINDOW`]) is not held longer for a write that joined it late.
pub(super) fn gather_jobs(
    rx: &mpsc::Receiver<Work>,
    waiting: &mut Vec<Work>,
    pace: &mut Pace,
    opened: Instant,
) {
    loop {
        while waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => {
                    pace.received(&w);
                    waiting.push(w);
                }
                Err(_) => break,
            }
        }
        if !waiting.iter().any(Work::awaited) {
            return;
        }
        let Some(wait) = hold_for(pace.gap, opened.elapsed(), waiting.len()) else {
            return;
        };
        match rx.recv_timeout(wait) {
            Ok(w) => {
                pace.received(&w);
                waiting.push(w);
            }
            Err(_) => return,
        }
    }
}

/// How long a batch holding `len` writes, open for `open_for`, waits for one more
/// before it begins; `None` to begin now. It waits only while durable writes have
/// lately come less than [`GAP`] apart (`recent_gap`), at most `GAP` and [`STALL`]
/// times the recent gap for each next one, [`JOB_WINDOW`] in all, and never once the
/// batch is full.
fn hold_for(recent_gap: Duration, open_for: Duration, len: usize) -> Option<Duration> {
    if len >= MAX_BATCH || recent_gap >= GAP {
        return None;
    }
    let left = JOB_WINDOW.checked_sub(open_for)?;
    (!left.is_zero()).then(|| left.min(GAP).min(recent_gap * STALL))
}

/// The recent spacing of durable writes as the writer receives them: a moving average
/// of the time between one and the next (each gap counted as at most [`JOB_WINDOW`], so
/// one quiet spell is forgotten after a few writes).
pub(super) struct Pace {
    last: Option<Instant>,
    gap: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        // Until writes are seen coming fast, none waits.
        Pace {
            last: None,
            gap: JOB_WINDOW,
        }
    }
}

impl Pace {
    pub(super) fn received(&mut self, work: &Work) {
        if !work.awaited() {
            return;
        }
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            let gap = now.duration_since(last).min(JOB_WINDOW);
            self.gap = (self.gap * 7 + gap) / 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Outcome;

    #[test]
    fn a_batch_is_held_open_only_while_writes_come_fast_and_not_for_long() {
        let us = Duration::from_micros;
        // (name, recent gap, open for, writes in the batch, expected wait)
        let cases = [
            ("writes far apart: begin now", GAP, us(0), 1, None),
            ("writes further apart still", us(5_000), us(0), 1, None),
            (
                "writes close: wait two of their gaps",
                us(100),
                us(0),
                1,
                Some(us(200)),
            ),
            (
                "writes fairly close: at most GAP",
                us(400),
                us(0),
                1,
                Some(GAP),
            ),
            (
                "close, window nearly spent",
                us(100),
                JOB_WINDOW - us(50),
                3,
                Some(us(50)),
            ),
            ("close, window spent", us(100), JOB_WINDOW, 3, None),
            (
                "close, past the window",
                us(100),
                JOB_WINDOW + us(1),
                3,
                None,
            ),
            ("close, batch full", us(100), us(0), MAX_BATCH, None),
        ];
        for (name, gap, open_for, len, want) in cases {
            assert_eq!(hold_for(gap, open_for, len), want, "{name}");
        }
    }

    #[test]
    fn pace_follows_the_spacing_of_durable_writes_only() {
        let job = || Work::Job(Box::new(|_| (Outcome::Ok, Box::new(|_| ()))));
        let mut pace = Pace::default();
        assert_eq!(pace.gap, JOB_WINDOW, "nothing seen: no write waits");
        for _ in 0..64 {
            pace.received(&job());
        }
        assert!(pace.gap < GAP, "a burst of writes: {:?}", pace.gap);
        // A quiet spell counts as one long gap, soon forgotten.
        pace.last = Some(Instant::now() - Duration::from_secs(60));
        pace.received(&job());
        assert!(pace.gap <= JOB_WINDOW, "{:?}", pace.gap);
        for _ in 0..32 {
            pace.received(&job());
        }
        assert!(pace.gap < GAP, "{:?}", pace.gap);
    }
}
