//! `WatchRevocations`: the revocation state as a resumable stream.
//!
//! A subscription starts from a consistent point of the change log (see
//! [`store::changes`](crate::store::changes)): a snapshot of the whole state as of the
//! last sequence `S` followed by `snapshot_done` (numbered `S`), or, when the caller
//! names a sequence the log still holds, a replay of every row after it. Then live
//! deltas. The hand-over has no gap and no duplicate: the subscription joins the
//! broadcast *before* it reads the store, and drops broadcast rows at or below the
//! last sequence the read covered.
//!
//! Each subscriber has its own bounded queue, filled by its own task with
//! `try_send`: a subscriber that cannot keep up is cut off with `RESOURCE_EXHAUSTED`
//! and nothing it does ever slows a write.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::Stream;

use crate::auth::{self, Caller};
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::store::changes::{self, Change, Logged};
use crate::store::{apikeys as apikey_rows, keys as key_rows, revocation as revocation_rows};

/// Heartbeat interval while a stream is idle, unless configured otherwise.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Events a subscriber may have queued before it is cut off, unless configured otherwise.
pub(crate) const DEFAULT_BUFFER: usize = 4096;

/// How long change-log rows are kept: the longest access-token lifetime plus an hour.
/// By then every jti revoked in a dropped row has expired anyway; a subscriber away
/// for longer resumes with a fresh snapshot, which costs it nothing it still needed.
pub(crate) fn retention(config: &crate::config::Config) -> i64 {
    config.max_access_token_ttl.as_secs() as i64 + 3600
}

/// One item of a revocation stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// Strictly increasing within a stream, except that a heartbeat repeats the
    /// sequence of the event before it (it marks no change). Resume with the last
    /// one seen.
    pub(crate) seq: u64,
    /// What it says.
    pub(crate) kind: EventKind,
}

/// What an [`Event`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A change to the revocation state (from the snapshot or the log).
    Change(Change),
    /// The snapshot is complete; deltas follow.
    SnapshotDone,
    /// Nothing happened for a heartbeat interval; the stream is alive.
    Heartbeat,
}

/// The stream handed to the transport: queued events, then, if the subscriber was cut
/// off, the reason.
pub(crate) struct Subscription {
    rx: mpsc::Receiver<Event>,
    end: Option<oneshot::Receiver<Error>>,
}

impl Stream for Subscription {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(ev)) => return Poll::Ready(Some(Ok(ev))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        // The feeding task is gone: it either ended the stream or left a reason.
        let Some(mut end) = self.end.take() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut end).poll(cx) {
            Poll::Ready(Ok(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => {
                self.end = Some(end);
                Poll::Pending
            }
        }
    }
}

/// Where a subscription starts, read in one transaction.
enum Start {
    /// A snapshot, already numbered, ending with `snapshot_done` at `last`.
    Snapshot(Vec<Event>, u64),
    /// The log rows after the caller's sequence, up to `last`.
    Replay(Vec<Logged>, u64),
}

/// Reads the starting point: a replay when the log still holds every row after
/// `after`, a snapshot otherwise.
fn read_start(conn: &crate::store::db::Db, after: u64, now: i64) -> Result<Start> {
    conn.snapshot(|tx| read_in(tx, after, now))
}

fn read_in(tx: &crate::store::db::Db, after: u64, now: i64) -> Result<Start> {
    let last = changes::last_seq(tx)?;
    let oldest = changes::oldest_seq(tx)?;
    // A sequence from the future (another database) is treated as unknown: snapshot.
    let replayable =
        after != 0 && after <= last && (after == last || oldest.is_some_and(|o| after + 1 >= o));
    if replayable {
        let rows = changes::after(tx, after)?
            .into_iter()
            .filter(|l| l.change.streamed())
            .collect();
        return Ok(Start::Replay(rows, last));
    }
    let mut items: Vec<Change> = Vec::new();
    revocation_rows::for_each_blocked(tx, now, |jti, exp| {
        items.push(Change::RevokedJti {
            jti: jti.to_string(),
            expires_at: exp,
        })
    })?;
    for (subject, version) in revocation_rows::load_versions(tx)? {
        items.push(Change::TokenVersion { subject, version });
    }
    for key_id in apikey_rows::revoked_unexpired(tx, now)? {
        items.push(Change::RevokedApiKey { key_id });
    }
    for (kid, state) in key_rows::states(tx, now)? {
        items.push(Change::SigningKey { kid, state });
    }
    // Snapshot items take the numbers just below the oldest retained row (or below
    // `last + 1` when none is retained): strictly increasing, below `snapshot_done`,
    // and never a resumable position, since the log holds nothing before its oldest row.
    let floor = oldest.unwrap_or(last + 1);
    let n = items.len() as u64;
    let first = floor
        .checked_sub(1 + n)
        .filter(|f| *f > 0)
        .ok_or_else(|| Error::internal("change log sequence too low for this snapshot"))?;
    let mut events: Vec<Event> = items
        .into_iter()
        .zip(first..)
        .map(|(change, seq)| Event {
            seq,
            kind: EventKind::Change(change),
        })
        .collect();
    events.push(Event {
        seq: last,
        kind: EventKind::SnapshotDone,
    });
    Ok(Start::Snapshot(events, last))
}

/// Why a subscriber was cut off.
fn too_slow(buffer: usize) -> Error {
    Error::ResourceExhausted(format!(
        "this subscriber fell more than {buffer} events behind and was disconnected; \
         reconnect with after_sequence set to the last sequence received"
    ))
}

impl Authority {
    /// Opens a revocation stream (caller needs `tessera:introspect`) after `after`
    /// (0: snapshot first).
    pub(crate) async fn watch_revocations(
        &self,
        caller: &Caller,
        after: u64,
    ) -> Result<Subscription> {
        caller.require(auth::SCOPE_INTROSPECT)?;
        // Join the broadcast first: anything committed from here on reaches us, and
        // what the read below also covers is dropped by sequence.
        let live = self.store.subscribe_changes();
        let closing = self.store.closing();
        let now = self.clock.now();
        let start = self.store.read(move |c| read_start(c, after, now)).await?;
        let buffer = self.config.watch_buffer.max(1);
        let heartbeat = self.config.watch_heartbeat.max(Duration::from_millis(10));
        let (tx, rx) = mpsc::channel(buffer);
        let (end_tx, end_rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = feed(start, live, closing, tx, buffer, heartbeat).await {
                tracing::info!(reason = %e, "revocation subscriber cut off");
                let _ = end_tx.send(e);
            }
        });
        Ok(Subscription {
            rx,
            end: Some(end_rx),
        })
    }
}

/// One subscriber's task: the starting events (waiting for the subscriber, which only
/// delays itself), then live rows without ever waiting. `Ok` ends the stream quietly
/// (subscriber gone, or server shutting down); `Err` is sent as the stream's status.
async fn feed(
    start: Start,
    mut live: broadcast::Receiver<Arc<[Logged]>>,
    mut closing: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<Event>,
    buffer: usize,
    heartbeat: Duration,
) -> Result<()> {
    let mut last = match start {
        Start::Snapshot(events, last) => {
            for ev in events {
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
            last
        }
        Start::Replay(rows, last) => {
            for l in rows {
                let ev = Event {
                    seq: l.seq,
                    kind: EventKind::Change(l.change),
                };
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
            last
        }
    };
    let offer = |tx: &mpsc::Sender<Event>, ev: Event| -> Result<bool> {
        match tx.try_send(ev) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Err(too_slow(buffer)),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(false),
        }
    };
    let mut idle_until = Instant::now() + heartbeat;
    loop {
        tokio::select! {
            batch = live.recv() => match batch {
                Ok(batch) => {
                    let seen = last;
                    for l in batch.iter().filter(|l| l.seq > seen && l.change.streamed()) {
                        let ev = Event { seq: l.seq, kind: EventKind::Change(l.change.clone()) };
                        if !offer(&tx, ev)? {
                            return Ok(());
                        }
                        last = l.seq;
                    }
                    idle_until = Instant::now() + heartbeat;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(too_slow(buffer)),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep_until(idle_until) => {
                if !offer(&tx, Event { seq: last, kind: EventKind::Heartbeat })? {
                    return Ok(());
                }
                idle_until = Instant::now() + heartbeat;
            }
            _ = tx.closed() => return Ok(()),
            _ = closing.wait_for(|c| *c) => return Ok(()),
        }
    }
}
