//! The SQLite backend: the file's connections (WAL, `synchronous = FULL`), its numbered
//! migrations, and the pool of reader connections.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::thread;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::lists;
use crate::error::{Error, Result};

/// Numbered migrations, applied in order inside one transaction.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_oauth.sql"),
    include_str!("migrations/0003_lists_lineage.sql"),
    include_str!("migrations/0004_housekeeping.sql"),
    include_str!("migrations/0005_admin_surface.sql"),
    include_str!("migrations/0006_change_log.sql"),
    include_str!("migrations/0007_key_lifecycle.sql"),
    include_str!("migrations/0008_refresh_grace_client_secrets.sql"),
    include_str!("migrations/0009_rate_limits.sql"),
    include_str!("migrations/0010_drop_family_jti_index.sql"),
];

/// Data rewrites SQL cannot express, run right after the migration to `version`.
fn rewrite_after(version: usize, conn: &Connection) -> rusqlite::Result<()> {
    match version {
        3 => lists::migrate_space_joined(conn),
        _ => Ok(()),
    }
}

pub(super) fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
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
    // The query planner must not look at bound values. When it may, a statement whose
    // plan consulted one (a join with `refresh_families`, whose partial index makes the
    // planner ask) is marked for re-preparation, and the statement cache's clearing of
    // bindings expires it: every use of a cached statement would parse and plan it again.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if let Some(e) = super::newer_than_binary(current, MIGRATIONS.len()) {
        return Err(e);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        rewrite_after(i + 1, &tx)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(tx.commit()?)
}

/// Opens (creating and migrating if need be) the database file at `path`: the
/// writer's connection.
pub(super) fn open(path: &Path) -> Result<Connection> {
    // Only the operator sees these (start-up, offline tools): name the file and
    // the cause, which the runtime mapping to `Unavailable` would drop.
    let mut conn = open_conn(path)
        .map_err(|e| Error::internal(format!("cannot open database {}: {e}", path.display())))?;
    migrate(&mut conn).map_err(|e| match e {
        Error::Internal(cause) => Error::internal(format!(
            "cannot migrate database {}: {cause}",
            path.display()
        )),
        other => other,
    })?;
    Ok(conn)
}

/// A read for a reader thread, run against its connection.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Reader connections, each on a thread of its own that takes reads from one shared
/// queue. In WAL mode readers neither block the writer nor each other, so concurrent
/// reads (a refresh rotation's lookup, a listing) run side by side; and a read is one
/// hand-over to a reader thread and one back, with no lock for the two to contend on
/// (a thread that is busy takes the next read from the queue without sleeping).
pub(super) struct SqliteReaders {
    queue: crossbeam_channel::Sender<ReadJob>,
}

impl SqliteReaders {
    /// Opens the connections and starts their threads, which end once every handle on
    /// the store is dropped.
    pub(super) fn open(path: &Path) -> Result<SqliteReaders> {
        let n = thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        let (queue, jobs) = crossbeam_channel::unbounded::<ReadJob>();
        for i in 0..n {
            let conn = open_conn(path).map_err(|e| {
                Error::internal(format!("cannot open database {}: {e}", path.display()))
            })?;
            let jobs = jobs.clone();
            thread::Builder::new()
                .name(format!("tessera-store-reader-{i}"))
                .spawn(move || serve_reads(&conn, &jobs))
                .map_err(Error::internal)?;
        }
        Ok(SqliteReaders { queue })
    }

    /// Queues `f` for the next free reader; its result arrives on the receiver (which
    /// closes without one if `f` panicked).
    pub(super) fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R>>> {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.queue.send(job).map_err(|_| Error::Unavailable)?;
        Ok(rx)
    }
}

/// A reader thread: runs reads until the queue closes. A read that panics is reported
/// to its caller as a failure (its result channel closes) and leaves the connection as
/// it found it, outside any transaction, for the next.
fn serve_reads(conn: &Connection, jobs: &crossbeam_channel::Receiver<ReadJob>) {
    for job in jobs {
        if panic::catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::store::db::Db;
    use crate::store::refresh;

    #[test]
    fn cached_statements_are_not_prepared_again_on_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("tessera.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO refresh_families (id, subject, client_id, audience, scopes, claims, created_at, absolute_expires_at)
             VALUES ('f', 's', 'c', '[]', '[]', '{}', 0, 99)",
        )
        .unwrap();
        for i in 0..10u8 {
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, id, issued_at, expires_at)
                 VALUES (?1, 'f', 't', 0, 99)",
                [vec![i; 32]],
            )
            .unwrap();
        }
        let db = Db::Sqlite(&conn);
        for i in 0..10u8 {
            assert!(refresh::find(&db, &[i; 32]).unwrap().is_some());
        }
        let again = conn
            .prepare_cached(refresh::FIND)
            .unwrap()
            .get_status(StatementStatus::RePrepare);
        assert_eq!(again, 0, "refresh::find was prepared again on its uses");
    }
}
