//! SQLite, the source of truth. One writer thread commits concurrent writes together
//! (group commit: one fsync per batch, not per call); callers are answered only after
//! their batch's COMMIT. Reads at start-up rebuild the in-memory caches.

pub mod apikeys;
pub mod audit;
pub mod changes;
pub mod clients;
pub mod codes;
pub mod datadir;
pub mod keys;
pub mod lineage;
pub mod lists;
pub mod refresh;
pub mod revocation;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Numbered migrations, applied in order inside one transaction.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_oauth.sql"),
    include_str!("migrations/0003_lists_lineage.sql"),
    include_str!("migrations/0004_housekeeping.sql"),
    include_str!("migrations/0006_change_log.sql"),
];

/// Data rewrites SQL cannot express, run right after the migration to `version`.
fn rewrite_after(version: usize, conn: &Connection) -> rusqlite::Result<()> {
    match version {
        3 => lists::migrate_space_joined(conn),
        _ => Ok(()),
    }
}

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// Committed batches the change feed keeps for a lagging subscriber task. Each
/// subscriber also has its own bounded queue (see `watch`); this ring only has to
/// cover the moments that task is not scheduled.
const FEED_CAPACITY: usize = 4096;

/// A write: runs against the connection, says whether it succeeded, and hands back
/// what to do once the batch's fate (commit or not) is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(Result<()>) + Send>;

/// A cheap-to-clone handle on the database.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    feed: changes::Feed,
    /// Held for as long as any handle lives: one process per data dir.
    _dir: Arc<datadir::DataDir>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // FULL: a revocation we acknowledged survives power loss, not just a process crash.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        rewrite_after(i + 1, &tx)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

impl Store {
    /// Opens (creating and migrating if needed) `tessera.db` in `data_dir`, after
    /// checking that the dir is private and taking its lock (see [`datadir`]): fails,
    /// naming the path, when the dir is not to be trusted or another process has it.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let dir = datadir::DataDir::open(data_dir)?;
        let path = dir.path().join("tessera.db");
        let mut writer_conn = open_conn(&path)?;
        migrate(&mut writer_conn)?;
        let reader = open_conn(&path)?;
        let feed = changes::Feed::new(FEED_CAPACITY);
        let published = changes::last_seq(&writer_conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_feed = feed.clone();
        thread::Builder::new()
            .name("tessera-store-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, writer_feed, published))
            .map_err(Error::internal)?;
        Ok(Store {
            writer: tx,
            reader: Arc::new(Mutex::new(reader)),
            path: Arc::new(path),
            feed,
            _dir: Arc::new(dir),
        })
    }

    /// Every change-log row committed from now on, batch by batch, in commit order.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<[changes::Logged]>> {
        self.feed.subscribe()
    }

    /// Becomes `true` once [`Store::close_feed`] was called.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.feed.closing()
    }

    /// Ends every live change stream (at shutdown, so they do not hold up the drain);
    /// subscribers reconnect and resume elsewhere or later.
    pub fn close_feed(&self) {
        self.feed.close();
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside the writer's current transaction (in its own savepoint, so a
    /// failing write does not undo its batch-mates) and returns once it is committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = f(conn);
            let ok = out.is_ok();
            let finish: Finish = Box::new(move |committed: Result<()>| {
                let _ = tx.send(committed.and(out));
            });
            (ok, finish)
        });
        self.writer.send(job).map_err(|_| Error::Unavailable)?;
        rx.await.map_err(|_| Error::Unavailable)?
    }

    /// Runs a read on the reader connection, off the async executor.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| Error::internal("reader lock poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(Error::internal)?
    }

    /// Runs a read synchronously (start-up only, before serving).
    pub fn read_now<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| Error::internal("reader lock poisoned"))?;
        f(&conn)
    }
}

/// Takes every job waiting, runs them in one transaction, commits once, publishes the
/// batch's change-log rows, then answers.
fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, feed: changes::Feed, mut published: u64) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut done = Vec::with_capacity(jobs.len());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Nothing ran: dropping the jobs closes their channels, so callers see Unavailable.
            tracing::error!(error = %e, "store: cannot begin transaction");
            continue;
        }
        for job in jobs {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                tracing::error!(error = %e, "store: cannot open savepoint");
                continue;
            }
            let (ok, finish) = job(&conn);
            // A failed job leaves no trace; its batch-mates keep their writes.
            let end = if ok {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "store: cannot close savepoint");
            }
            done.push(finish);
        }
        let committed = conn.execute_batch("COMMIT").map_err(Error::from);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            // Before anyone is answered: a subscriber never learns of a revocation
            // later than the revoker is told it is done.
            feed.publish_committed(&conn, &mut published);
        }
        for finish in done {
            finish(match &committed {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::Unavailable),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_leaves_no_trace_and_spares_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(move |c| {
                    revocation::block_jti(c, &format!("jti-{i}"), 1_000 + i)?;
                    if i % 10 == 0 {
                        return Err(Error::InvalidArgument("refused".into()));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 180);
        let rows = store
            .read(|c| revocation::load_blocklist(c, 0))
            .await
            .unwrap();
        assert_eq!(rows.len(), 180);
        assert!(!rows.iter().any(|(j, _)| j == "jti-0" || j == "jti-10"));
    }

    #[test]
    fn space_joined_lists_of_version_2_become_json_lists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("tessera.db")).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(MIGRATIONS[1]).unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute_batch(
                "INSERT INTO api_keys (id, secret_hash, owner, name, environment, scopes, created_at, expires_at)
                 VALUES ('k', x'00', 'o', 'n', 'test', 'read write', 0, 9999999999);
                 INSERT INTO refresh_families (id, subject, client_id, audience, scopes, claims, created_at, absolute_expires_at)
                 VALUES ('f', 's', 'c', 'api  other', '', '{}', 0, 99);
                 INSERT INTO refresh_tokens (token_hash, family_id, id, issued_at, expires_at)
                 VALUES (x'0101010101010101010101010101010101010101010101010101010101010101', 'f', 't', 0, 99);
                 INSERT INTO oauth_clients (id, name, public, redirect_uris, scopes, created_at)
                 VALUES ('c', 'app', 1, 'https://a.example/cb https://b.example/cb', 'read', 0);",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        store
            .read_now(|c| {
                let keys = apikeys::load_live(c, 1)?;
                assert_eq!(keys[0].scopes, vec!["read", "write"]);
                assert!(keys[0].exchange_audiences.is_empty());
                let (_, f) = refresh::find(c, &[1; 32])?.unwrap();
                assert_eq!(f.audience, vec!["api", "other"]);
                assert!(f.scopes.is_empty());
                let client = clients::find(c, "c")?.unwrap();
                assert_eq!(
                    client.redirect_uris,
                    vec!["https://a.example/cb", "https://b.example/cb"]
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn migrations_are_idempotent_and_wal_is_on() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open(dir.path()).unwrap();
        let (mode, version): (String, i64) = store
            .read_now(|c| {
                let m = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let v = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok((m, v))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version as usize, MIGRATIONS.len());
    }
}
