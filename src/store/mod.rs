//! The source of truth: SQLite (embedded, one process) or PostgreSQL (shared by many
//! replicas, see [`postgres`]), behind one handle and one SQL surface ([`db`]). One
//! writer thread per process commits concurrent writes together (group commit: one
//! fsync per batch, not per call); callers are answered only after their batch's
//! COMMIT. The one exception is the issuance audit record
//! ([`Store::audit_later`]): it joins the next batch without its caller waiting.
//! Reads at start-up rebuild the in-memory caches; every read runs off the async
//! runtime's threads (SQLite's on reader threads of their own, PostgreSQL's on the
//! blocking pool).
//!
//! The store also knows whether storage works (see [`Store::healthy`]): readiness
//! follows it, so a node whose disk is full or failing is taken out of rotation.

pub(crate) mod apikeys;
pub(crate) mod audit;
pub(crate) mod changes;
pub(crate) mod clients;
pub(crate) mod codes;
pub(crate) mod datadir;
pub(crate) mod db;
pub(crate) mod keys;
pub(crate) mod lineage;
pub(crate) mod lists;
mod postgres;
pub(crate) mod refresh;
pub(crate) mod revocation;
mod sqlite;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread;

use rusqlite::Connection;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::error::{Error, Result};
use crate::metrics::StoreStats;
use db::{Db, params};
pub(crate) use postgres::Staleness;
use writer::{AUDIT_QUEUE, AuditBuffer, Backend, Finish, Job, Outcome, Rotate, Work, writer_loop};

/// Committed batches the change feed keeps for a lagging subscriber task. Each
/// subscriber also has its own bounded queue (see `watch`); this ring only has to
/// cover the moments that task is not scheduled.
const FEED_CAPACITY: usize = 4096;

/// Whether storage works, shared by every handle and the writer thread: false once a
/// write or read fails for a storage reason (or the writer thread is gone), true again
/// once a write reaches the disk.
type Health = Arc<watch::Sender<bool>>;

fn set_health(health: &Health, ok: bool) {
    let changed = health.send_if_modified(|v| std::mem::replace(v, ok) != ok);
    if changed && ok {
        tracing::info!("storage works again");
    } else if changed {
        tracing::error!("storage failing: not ready until a write succeeds");
    }
}

/// Which database holds the state.
#[derive(Clone, Copy, Debug)]
pub enum Location<'a> {
    /// A SQLite file, locked to this process (the embedded default).
    Sqlite(&'a Path),
    /// A PostgreSQL URL, shared by any number of replicas.
    Postgres(&'a str),
}

/// A cheap-to-clone handle on the database.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Work>,
    audit_queue: Arc<Semaphore>,
    /// Audit records queued for the writer's next batch (see `audit_later`).
    audits: Arc<AuditBuffer>,
    readers: Arc<Readers>,
    /// The SQLite file, or the PostgreSQL server (never its password), for messages.
    describe: Arc<str>,
    path: Option<Arc<PathBuf>>,
    health: Health,
    /// Group-commit batch sizes and storage errors, for `/metrics`.
    pub(crate) stats: Arc<StoreStats>,
    feed: changes::Feed,
    /// How long since this replica last caught up with the shared database (never
    /// stale on SQLite, where every change is this process's own).
    staleness: Staleness,
    /// Held for as long as any handle lives: one process per data dir.
    _dir: Arc<datadir::DataDir>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.describe)
            .finish()
    }
}

/// The schema version a binary refuses to run on: one it does not know.
fn newer_than_binary(found: i64, known: usize) -> Option<Error> {
    (found > known as i64).then(|| {
        Error::internal(format!(
            "database schema version {found} is newer than this binary's {known}: \
             run the release that wrote it (or newer)"
        ))
    })
}

impl Store {
    /// Opens (creating and migrating if needed) `tessera.db` in `data_dir`, after
    /// checking that the dir is private and taking its lock (see `datadir`): fails,
    /// naming the path, when the dir is not to be trusted or another process has it.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let dir = datadir::DataDir::open(data_dir)?;
        let path = data_dir.join("tessera.db");
        Store::start(dir, Opened::Sqlite(sqlite::open(&path)?, path))
    }

    /// Opens the state at `location`, with `data_dir` held by this process (its lock
    /// file; with SQLite the default database lives in it). PostgreSQL is connected to
    /// and migrated before this returns, so an unreachable database fails the start,
    /// naming the server.
    pub(crate) async fn connect(data_dir: &Path, location: Location<'_>) -> Result<Store> {
        let dir = datadir::DataDir::open(data_dir)?;
        let opened = match location {
            Location::Sqlite(path) => Opened::Sqlite(sqlite::open(path)?, path.to_path_buf()),
            Location::Postgres(url) => {
                let url = url.to_string();
                let pool = tokio::task::spawn_blocking(move || postgres::Pool::connect(&url))
                    .await
                    .map_err(Error::internal)??;
                let last = {
                    let pool = pool.clone();
                    tokio::task::spawn_blocking(move || pool.with(changes::last_seq))
                        .await
                        .map_err(Error::internal)??
                };
                Opened::Postgres(pool, last)
            }
        };
        Store::start(dir, opened)
    }

    fn start(dir: datadir::DataDir, opened: Opened) -> Result<Store> {
        let feed = changes::Feed::new(FEED_CAPACITY);
        let health: Health = Arc::new(watch::Sender::new(true));
        let stats = Arc::new(StoreStats::default());
        let (backend, readers, describe, path, staleness) = match opened {
            Opened::Sqlite(writer_conn, path) => {
                let readers = sqlite::SqliteReaders::open(&path)?;
                feed.start_at(changes::last_seq(&Db::Sqlite(&writer_conn))?);
                (
                    Backend::Sqlite(writer_conn),
                    Readers::Sqlite(readers),
                    path.display().to_string(),
                    Some(Arc::new(path)),
                    Staleness::never(),
                )
            }
            Opened::Postgres(pool, last) => {
                let describe = pool.describe().to_string();
                feed.start_at(last);
                let staleness = Staleness::new();
                postgres::spawn_tail(
                    pool.clone(),
                    feed.clone(),
                    health.clone(),
                    staleness.clone(),
                );
                (
                    Backend::Postgres(pool.clone()),
                    Readers::Postgres(pool),
                    describe,
                    None,
                    staleness,
                )
            }
        };
        let writer_feed = feed.clone();
        let (tx, rx) = mpsc::channel::<Work>();
        let writer_health = health.clone();
        let writer_stats = stats.clone();
        let audits = Arc::new(AuditBuffer::default());
        let writer_audits = audits.clone();
        thread::Builder::new()
            .name("tessera-store-writer".into())
            .spawn(move || {
                writer_loop(
                    backend,
                    rx,
                    &writer_audits,
                    writer_health,
                    &writer_stats,
                    writer_feed,
                )
            })
            .map_err(Error::internal)?;
        Ok(Store {
            writer: tx,
            audit_queue: Arc::new(Semaphore::new(AUDIT_QUEUE)),
            audits,
            readers: Arc::new(readers),
            describe: describe.into(),
            path,
            health,
            stats,
            feed,
            staleness,
            _dir: Arc::new(dir),
        })
    }

    /// Path of the SQLite database file (`None` on PostgreSQL).
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    /// The database, for messages: the SQLite file, or the PostgreSQL server without
    /// its password.
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether the state is shared with other replicas (PostgreSQL).
    pub(crate) fn shared(&self) -> bool {
        self.path.is_none()
    }

    /// Whether this process runs the scheduled work (purges, scheduled key rotation)
    /// now: always on SQLite; on PostgreSQL, the one replica holding the scheduler lock.
    pub(crate) async fn leads(&self) -> bool {
        match &*self.readers {
            Readers::Sqlite(_) => true,
            Readers::Postgres(pool) => pool.leads().await,
        }
    }

    /// How long since this replica last caught up with the shared database.
    pub(crate) fn staleness(&self) -> &Staleness {
        &self.staleness
    }

    /// Every change-log row committed from now on, batch by batch, in commit order.
    pub(crate) fn subscribe_changes(
        &self,
    ) -> tokio::sync::broadcast::Receiver<Arc<[changes::Logged]>> {
        self.feed.subscribe()
    }

    /// Becomes `true` once [`Store::close_feed`] was called.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.feed.closing()
    }

    /// Ends every live change stream (at shutdown, so they do not hold up the drain);
    /// subscribers reconnect and resume elsewhere or later.
    pub(crate) fn close_feed(&self) {
        self.feed.close();
    }

    /// Whether storage works: false since a write or read failed for a storage reason
    /// (disk full, I/O error, database locked or unreachable, the writer thread gone),
    /// until a later write reaches the database. Readiness (`/readyz`, gRPC health)
    /// follows it.
    pub(crate) fn healthy(&self) -> bool {
        *self.health.borrow()
    }

    /// Follows [`healthy`](Self::healthy) as it changes.
    pub(crate) fn watch_health(&self) -> watch::Receiver<bool> {
        self.health.subscribe()
    }

    /// Writes and reads one row, so that storage that failed is seen working again
    /// (and storage that fails while idle is seen failing) without waiting for a
    /// caller's write. The write rewrites a value in place: it dirties a page, so the
    /// commit must reach the disk, and changes nothing anyone reads.
    pub(crate) async fn probe(&self) -> Result<()> {
        let outcome = async {
            self.write(|c| {
                c.execute(
                    "UPDATE signing_keys SET created_at = created_at
                     WHERE kid = (SELECT min(kid) FROM signing_keys)",
                    params![],
                )?;
                Ok(())
            })
            .await?;
            self.read(|c| {
                c.query_row("SELECT count(*) FROM signing_keys", params![], |r| {
                    r.get::<i64>(0)
                })?;
                Ok(())
            })
            .await
        }
        .await;
        set_health(&self.health, outcome.is_ok());
        outcome
    }

    /// Runs `f` inside the writer's current transaction (in its own savepoint, so a
    /// failing write does not undo its batch-mates) and returns once it is committed.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = f(conn);
            let outcome = match &out {
                Ok(_) => Outcome::Ok,
                Err(Error::Unavailable) => Outcome::StorageFailed,
                Err(_) => Outcome::Refused,
            };
            let finish: Finish = Box::new(move |committed: Result<()>| {
                let _ = tx.send(committed.and(out));
            });
            (outcome, finish)
        });
        // Either failure means the write never ran: the writer thread is gone, or could
        // not even begin a transaction.
        let gone = || {
            set_health(&self.health, false);
            Error::Unavailable
        };
        self.writer.send(Work::Job(job)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// A refresh rotation's decisive write (see [`refresh::rotate`]), with the audit
    /// record appended if it wins, in the writer's next batch. Returns once committed:
    /// true if the token was rotated, false if it could not be (unknown, used, expired,
    /// or its family revoked), in which case nothing was written. Cheaper than the same
    /// in a [`write`](Self::write): the writer runs rotations as data, ahead of the
    /// batch's other writes and without a savepoint each.
    pub(crate) async fn rotate_refresh(
        &self,
        rotation: refresh::Rotation,
        audit: audit::AuditEntry,
        now: i64,
    ) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        let work = Work::Rotate(Box::new(Rotate {
            rotation,
            audit,
            now,
            reply,
        }));
        // Either failure means the write never ran (see `write`).
        let gone = || {
            set_health(&self.health, false);
            Error::Unavailable
        };
        self.writer.send(work).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues an audit record for the writer's next group commit and returns without
    /// waiting for it. Only for records of credentials that need no durable state of
    /// their own (a plain access token): revocations, bumps, rotations, refresh
    /// rotation and code redemption commit their audit record with the change, before
    /// the answer. The record reaches the disk within about two batches (a batch runs
    /// at most [`writer::BATCH_BUDGET`] before its COMMIT); [`flush`](Self::flush) waits for
    /// it, and shutdown flushes. A crash can lose the records of that window, never a
    /// revocation. Refused while storage is failing, as the durable writes are.
    pub(crate) async fn audit_later(&self, entry: audit::AuditEntry) -> Result<()> {
        if !self.healthy() {
            return Err(Error::Unavailable);
        }
        let permit = match self.audit_queue.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => self
                .audit_queue
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Unavailable)?,
        };
        // Only the first record into an empty buffer wakes the writer.
        if self.audits.push((Box::new(entry), permit)) {
            self.writer.send(Work::AuditsWaiting).map_err(|_| {
                set_health(&self.health, false);
                Error::Unavailable
            })?;
        }
        Ok(())
    }

    /// Returns once everything queued before it, audit records included, is committed
    /// (the writer works in order, so an empty write is a barrier).
    pub(crate) async fn flush(&self) -> Result<()> {
        self.write(|_| Ok(())).await
    }

    /// Runs a read on a reader connection, off the async executor: on SQLite one of the
    /// reader threads, on PostgreSQL the blocking pool.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<R> + Send + 'static,
    {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let out = match &*self.readers {
            Readers::Sqlite(r) => r
                .run(move |c| f(&Db::Sqlite(c)))?
                .await
                .unwrap_or_else(|_| Err(Error::internal("a read panicked"))),
            Readers::Postgres(pool) => {
                let pool = pool.clone();
                tokio::task::spawn_blocking(move || pool.with(f))
                    .await
                    .map_err(Error::internal)?
            }
        };
        if matches!(out, Err(Error::Unavailable | Error::Internal(_))) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        // A read that works proves nothing about writes (a full disk still reads), so
        // only a failure changes the health here.
        if matches!(out, Err(Error::Unavailable)) {
            set_health(&self.health, false);
        }
        out
    }

    /// Runs a read and blocks the calling thread until it is done, for tests outside
    /// any async runtime. Not for the service: on a runtime thread the wait would stall
    /// every task queued behind it.
    #[cfg(test)]
    pub(crate) fn read_now<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Db<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        debug_assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "Store::read_now inside an async runtime: use Store::read"
        );
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        match &*self.readers {
            Readers::Sqlite(r) => r
                .run(move |c| f(&Db::Sqlite(c)))?
                .blocking_recv()
                .unwrap_or_else(|_| Err(Error::internal("a read panicked"))),
            Readers::Postgres(pool) => pool.with(f),
        }
    }
}

/// Runs `f` on a connection of its own to the database at `location`, beside (not
/// through) any running store: no data-dir lock, no writer, no feed. For offline checks
/// and tests that look at what the service wrote. Blocks the calling thread, from any
/// context (it works on a thread of its own).
pub fn inspect<R, F>(location: Location<'_>, f: F) -> Result<R>
where
    R: Send + 'static,
    F: FnOnce(&Db<'_>) -> Result<R> + Send + 'static,
{
    enum Owned {
        Sqlite(PathBuf),
        Postgres(String),
    }
    let owned = match location {
        Location::Sqlite(p) => Owned::Sqlite(p.to_path_buf()),
        Location::Postgres(u) => Owned::Postgres(u.to_string()),
    };
    thread::spawn(move || match owned {
        Owned::Sqlite(path) => {
            let conn = sqlite::open_conn(&path)?;
            f(&Db::Sqlite(&conn))
        }
        Owned::Postgres(url) => {
            // One worker drives the connection while this thread blocks on it.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(Error::internal)?;
            let _in = rt.enter();
            let pool = postgres::Pool::connect(&url)?;
            pool.with(f)
        }
    })
    .join()
    .map_err(|_| Error::internal("inspect: the connection thread panicked"))?
}

/// A database connected to and migrated, not yet serving.
enum Opened {
    Sqlite(Connection, PathBuf),
    Postgres(postgres::Pool, u64),
}

/// Where reads run.
enum Readers {
    Sqlite(sqlite::SqliteReaders),
    Postgres(postgres::Pool),
}

#[cfg(test)]
mod tests;
