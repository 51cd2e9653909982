//! The SQLite backend: the file's connections (WAL, `synchronous = FULL`), its numbered
//! migrations, and the pool of reader connections.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::thread;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

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

/// Reader connections: in WAL mode readers neither block the writer nor each other, so
/// concurrent reads (a refresh rotation's lookup, a listing) each take a free one
/// instead of queueing behind a single connection.
pub(super) struct SqliteReaders {
    conns: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl SqliteReaders {
    pub(super) fn open(path: &Path) -> rusqlite::Result<SqliteReaders> {
        let n = thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
        Ok(SqliteReaders {
            conns: (0..n)
                .map(|_| open_conn(path).map(Mutex::new))
                .collect::<rusqlite::Result<_>>()?,
            next: Default::default(),
        })
    }

    /// Runs `f` on the first free connection, starting from a rotating index; waits for
    /// that one if all are busy.
    pub(super) fn with<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let free = (0..n).find_map(|i| self.conns[(start + i) % n].try_lock().ok());
        let conn = match free {
            Some(c) => c,
            None => self.conns[start % n]
                .lock()
                .map_err(|_| Error::internal("reader lock poisoned"))?,
        };
        f(&conn)
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
