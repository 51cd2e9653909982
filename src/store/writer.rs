//! The writer thread: takes the writes waiting (holding the batch open a moment while
//! more arrive close behind, see [`gather`]), runs them in one transaction (each in its
//! own savepoint), commits once, then answers; and the issuance audit records
//! queued by [`Store::audit_later`](super::Store::audit_later), which join a batch
//! without anyone waiting on them.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::db::{Db, PgConn};
use super::{Health, audit, changes, postgres, refresh, set_health};
use crate::error::{Error, Result};
use crate::metrics::StoreStats;

mod gather;
use gather::{Pace, gather_audits, gather_jobs};

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// Work one batch may run before it commits, however many writes are waiting: what
/// bounds how long an audit record queued by
/// [`Store::audit_later`](super::Store::audit_later) stays in memory (the batch
/// running when it arrives, then its own, each this long plus a COMMIT).
pub(super) const BATCH_BUDGET: Duration = Duration::from_millis(8);

/// Audit records queued and not yet committed before `audit_later` makes its caller
/// wait: a writer that falls behind slows issuance instead of growing memory.
pub(super) const AUDIT_QUEUE: usize = 16_384;

/// A write: runs against the connection, says how it went, and hands back what to do
/// once the batch's fate (commit or not) is known.
pub(super) type Job = Box<dyn FnOnce(&Db<'_>) -> (Outcome, Finish) + Send>;
pub(super) type Finish = Box<dyn FnOnce(Result<()>) + Send>;

/// What the writer thread writes to.
pub(super) enum Backend {
    /// Its own connection to the SQLite file.
    Sqlite(Connection),
    /// A connection from the pool, taken for each batch.
    Postgres(postgres::Pool),
}

/// One batch's connection.
#[allow(clippy::large_enum_variant)] // one per batch, on the writer thread's stack
enum Session<'a> {
    Sqlite(&'a Connection),
    Postgres(PgConn),
}

impl Session<'_> {
    fn db(&self) -> Db<'_> {
        match self {
            Session::Sqlite(c) => Db::Sqlite(c),
            Session::Postgres(pg) => Db::Postgres(pg),
        }
    }
}

impl Backend {
    fn session(&self) -> Result<Session<'_>> {
        match self {
            Backend::Sqlite(c) => Ok(Session::Sqlite(c)),
            Backend::Postgres(pool) => Ok(Session::Postgres(pool.take()?)),
        }
    }

    /// Opens the batch's transaction. On PostgreSQL it also takes the store's
    /// transaction lock, which every replica's writer takes: batches commit one at a
    /// time across replicas, as on SQLite, so a check-then-write (a refresh token's
    /// rotation, a code's redemption, the bootstrap key) has one winner cluster-wide,
    /// and change-log sequence order is commit order.
    fn begin(&self, db: &Db<'_>) -> Result<()> {
        let sql = match self {
            Backend::Sqlite(_) => "BEGIN IMMEDIATE",
            Backend::Postgres(pool) => pool.begin_locked(),
        };
        Ok(db.execute_batch(sql)?)
    }

    /// Rows this connection has changed so far (SQLite's count; PostgreSQL's commit
    /// is proof enough that the server is there).
    fn changes(&self) -> Option<u64> {
        match self {
            Backend::Sqlite(c) => Some(c.total_changes()),
            Backend::Postgres(_) => None,
        }
    }
}

/// What the writer thread is handed.
pub(super) enum Work {
    /// A write whose caller waits for its commit.
    Job(Job),
    /// Audit records nobody waits for are in the [`AuditBuffer`], which was empty
    /// before the first of them: they are what this batch is for, if nothing else is.
    AuditsWaiting,
    /// A refresh rotation's decisive write, whose caller waits for its commit.
    Rotate(Box<Rotate>),
}

impl Work {
    /// Whether a caller waits for this work's commit.
    fn awaited(&self) -> bool {
        !matches!(self, Work::AuditsWaiting)
    }
}

/// An audit record queued by [`Store::audit_later`](super::Store::audit_later), with
/// the permit that holds its place in the queue until its batch has committed.
pub(super) type QueuedAudit = (Box<audit::AuditEntry>, OwnedSemaphorePermit);

/// The audit records queued for the writer's next batch. They wait here rather than in
/// the writer's channel so that queueing one does not wake the writer: only the first
/// into an empty buffer does (with [`Work::AuditsWaiting`]), and the writer then lets
/// the batch fill for [`AUDIT_WINDOW`](gather::AUDIT_WINDOW) without being woken by
/// each record after it.
#[derive(Default)]
pub(super) struct AuditBuffer(Mutex<Vec<QueuedAudit>>);

impl AuditBuffer {
    /// Adds a record; true if the buffer was empty, so the writer must be told.
    pub(super) fn push(&self, record: QueuedAudit) -> bool {
        let mut waiting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        waiting.push(record);
        waiting.len() == 1
    }

    /// Every record waiting.
    fn take(&self) -> Vec<QueuedAudit> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A refresh rotation's decisive write (see [`refresh::rotate`]) with its audit record.
/// It is data, not a closure, so the writer can run it again: the rotations waiting
/// when a batch begins run first, before anything else has touched the transaction,
/// and without a savepoint each (a savepoint copies every page a write touches). If one
/// fails, the transaction is rolled back and begun again, and they run once more, each
/// in a savepoint of its own.
pub(super) struct Rotate {
    pub(super) rotation: refresh::Rotation,
    /// Appended if the rotation wins.
    pub(super) audit: audit::AuditEntry,
    /// Unix seconds.
    pub(super) now: i64,
    /// Whether it won, once committed.
    pub(super) reply: oneshot::Sender<Result<bool>>,
}

/// How one write went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    /// Refused for its own reasons (a missing row, a rule): says nothing about storage.
    Refused,
    /// Storage failed under it (disk full, I/O error, locked).
    StorageFailed,
}

/// Takes the jobs waiting (as many as [`MAX_BATCH`] and [`BATCH_BUDGET`] allow), runs
/// them in one transaction, commits once, then answers. A batch in which storage failed
/// marks the store unhealthy; one that committed a change (so reached the disk) marks
/// it healthy. Committed change-log rows are published before anyone is answered.
pub(super) fn writer_loop(
    backend: Backend,
    rx: mpsc::Receiver<Work>,
    queued: &AuditBuffer,
    health: Health,
    stats: &StoreStats,
    feed: changes::Feed,
) {
    let failed = || stats.errors.fetch_add(1, Ordering::Relaxed);
    let mut pace = Pace::default();
    while let Ok(first) = rx.recv() {
        let opened = Instant::now();
        pace.received(&first);
        let mut waiting = vec![first];
        if !waiting[0].awaited() {
            gather_audits(&rx, &mut waiting, &mut pace);
        }
        // Everything already queued joins before BEGIN: if BEGIN fails (storage locked
        // or failing, after the busy timeout), all of it hears so at once instead of
        // each write waiting out its own timeout in turn.
        gather_jobs(&rx, &mut waiting, &mut pace, opened);
        waiting.retain(Work::awaited);
        let audits = queued.take();
        if waiting.is_empty() && audits.is_empty() {
            // Its records went with an earlier batch.
            continue;
        }
        let started = Instant::now();
        let changes_before = backend.changes();
        let session = backend.session();
        let begun = match &session {
            Ok(s) => backend.begin(&s.db()),
            Err(_) => Err(Error::Unavailable),
        };
        if let Err(e) = begun {
            abandon(&e, waiting, audits, &rx, &health, &failed);
            continue;
        }
        let Ok(session) = session else { continue };
        let conn = session.db();
        let mut done = Vec::new();
        let mut rotated = Vec::new();
        let mut storage_failed = false;
        let (rotations, waiting): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|w| matches!(w, Work::Rotate(_)));
        let mut taken = rotations.len() + audits.len();
        let rotations = rotations.into_iter().filter_map(|w| match w {
            Work::Rotate(r) => Some(r),
            _ => None,
        });
        let rotations: Vec<_> = rotations.collect();
        match rotations
            .iter()
            .map(|r| rotate(&conn, r))
            .collect::<Result<Vec<_>>>()
        {
            Ok(wins) => rotated.extend(rotations.into_iter().zip(wins.into_iter().map(Ok))),
            Err(e) => {
                tracing::warn!(error = %e, "store: a refresh rotation failed; its batch begins again");
                let _ = conn.execute_batch("ROLLBACK");
                if let Err(e) = backend.begin(&conn) {
                    let waiting = rotations.into_iter().map(Work::Rotate).chain(waiting);
                    abandon(&e, waiting, audits, &rx, &health, &failed);
                    continue;
                }
                for r in rotations {
                    let (failed_storage, won) = rotate_in_savepoint(&conn, &r, &failed);
                    storage_failed |= failed_storage;
                    rotated.push((r, won));
                }
            }
        }
        let mut waiting = waiting.into_iter();
        let mut next = waiting.next();
        while let Some(work) = next.take() {
            let work_awaited = work.awaited();
            match work {
                Work::Job(job) => {
                    let (failed_storage, finish) = run_job(&conn, job, &failed);
                    storage_failed |= failed_storage;
                    done.push(finish);
                }
                Work::AuditsWaiting => {}
                // One that arrived after the batch began: other writes may have run,
                // so it takes a savepoint.
                Work::Rotate(r) => {
                    let (failed_storage, won) = rotate_in_savepoint(&conn, &r, &failed);
                    storage_failed |= failed_storage;
                    rotated.push((r, won));
                }
            }
            taken += usize::from(work_awaited);
            next = waiting.next();
            if next.is_none() && taken < MAX_BATCH && started.elapsed() < BATCH_BUDGET {
                next = rx.try_recv().ok();
                if let Some(w) = &next {
                    pace.received(w);
                }
            }
        }
        // And the records queued while the batch ran (a marker for them may have been
        // taken above with nothing else to show for it).
        let mut audits = audits;
        audits.extend(queued.take());
        if !audits.is_empty() {
            storage_failed |= !append_audits(&conn, &audits, &failed);
        }
        let committed = conn.execute_batch("COMMIT").map_err(Error::from);
        stats.batch_size.observe(taken as u64);
        if committed.is_err() {
            failed();
            let _ = conn.execute_batch("ROLLBACK");
            storage_failed = true;
            if !audits.is_empty() {
                tracing::error!(records = audits.len(), "store: audit records lost");
            }
        } else {
            // Before anyone is answered: a subscriber never learns of a revocation
            // later than the revoker is told it is done.
            match feed.publish_committed(&conn) {
                // Other replicas' tails wake on it: one notification per batch that
                // changed something (they poll too, so one lost here only delays).
                Ok(n) if n > 0 && conn.is_postgres() => {
                    if let Err(e) = conn.execute_batch(postgres::NOTIFY) {
                        tracing::warn!(error = %e, "change log: cannot notify other replicas");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "change log: cannot read committed rows"),
            }
        }
        let wrote = match (changes_before, backend.changes()) {
            (Some(before), Some(after)) => after > before,
            _ => committed.is_ok(),
        };
        if storage_failed {
            set_health(&health, false);
        } else if wrote {
            set_health(&health, true);
        }
        for finish in done {
            finish(match &committed {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::Unavailable),
            });
        }
        for (r, won) in rotated {
            let _ = r
                .reply
                .send(committed.as_ref().map_err(|_| Error::Unavailable).and(won));
        }
        // Frees the audit records' places in the queue only now they are committed.
        drop(audits);
    }
}

/// A batch whose transaction could not begin: nothing in it ran. Dropping the work
/// closes its channels, so the callers see Unavailable; its audit records are lost.
fn abandon(
    e: &Error,
    waiting: impl IntoIterator<Item = Work>,
    audits: Vec<QueuedAudit>,
    rx: &mpsc::Receiver<Work>,
    health: &Health,
    failed: &impl Fn() -> u64,
) {
    tracing::error!(error = %e, "store: cannot begin transaction");
    set_health(health, false);
    failed();
    // What queued up while BEGIN waited out the busy timeout would only wait out its
    // own in turn: it hears now, with the rest.
    let late = std::iter::from_fn(|| rx.try_recv().ok());
    waiting.into_iter().chain(late).for_each(drop);
    if !audits.is_empty() {
        tracing::error!(records = audits.len(), "store: audit records lost");
    }
}

/// Opens the savepoint one write runs in, so a write that fails leaves no trace and
/// spares its batch-mates. False (counted and logged) if storage would not open it.
fn open_savepoint(conn: &Db<'_>, failed: &impl Fn() -> u64) -> bool {
    match conn.execute_batch("SAVEPOINT job") {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "store: cannot open savepoint");
            failed();
            false
        }
    }
}

/// Closes the savepoint [`open_savepoint`] opened, keeping the write or undoing it.
fn close_savepoint(conn: &Db<'_>, keep: bool, failed: &impl Fn() -> u64) {
    let end = if keep {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    if let Err(e) = conn.execute_batch(end) {
        tracing::error!(error = %e, "store: cannot close savepoint");
        failed();
    }
}

/// Runs one job in its own savepoint; says whether storage failed under it.
fn run_job(conn: &Db<'_>, job: Job, failed: &impl Fn() -> u64) -> (bool, Finish) {
    if !open_savepoint(conn, failed) {
        // Run nothing: the caller hears Unavailable.
        let finish: Finish = Box::new(move |_| drop(job));
        return (true, finish);
    }
    let (outcome, finish) = job(conn);
    close_savepoint(conn, outcome == Outcome::Ok, failed);
    (outcome == Outcome::StorageFailed, finish)
}

/// Runs a rotation's decisive write and, if it wins, appends its audit record.
fn rotate(conn: &Db<'_>, r: &Rotate) -> Result<bool> {
    let won = refresh::rotate(conn, &r.rotation, r.now)?;
    if won {
        audit::append(conn, &r.audit)?;
    }
    Ok(won)
}

/// Runs a rotation in its own savepoint; says whether storage failed under it, and
/// how it went.
fn rotate_in_savepoint(
    conn: &Db<'_>,
    r: &Rotate,
    failed: &impl Fn() -> u64,
) -> (bool, Result<bool>) {
    if !open_savepoint(conn, failed) {
        return (true, Err(Error::Unavailable));
    }
    let won = rotate(conn, r);
    close_savepoint(conn, won.is_ok(), failed);
    (matches!(won, Err(Error::Unavailable)), won)
}

/// Appends a batch's queued audit records together, in their own savepoint: if
/// storage fails under them the rest of the batch still commits. False if they failed.
fn append_audits(conn: &Db<'_>, audits: &[QueuedAudit], failed: &impl Fn() -> u64) -> bool {
    let appended = conn
        .execute_batch("SAVEPOINT audits")
        .map_err(Error::from)
        .and_then(|()| audits.iter().try_for_each(|(e, _)| audit::append(conn, e)));
    match appended {
        Ok(()) => conn.execute_batch("RELEASE audits").is_ok(),
        Err(e) => {
            tracing::error!(error = %e, records = audits.len(), "store: audit records lost");
            failed();
            let _ = conn.execute_batch("ROLLBACK TO audits; RELEASE audits");
            false
        }
    }
}
