//! One SQL surface over both backends, so each table's code is written once: a
//! statement and its parameters go to SQLite as they are, and to PostgreSQL with its
//! `?N` placeholders renumbered as `$N`. The SQL in `store/` keeps to what both
//! dialects mean the same way (`ON CONFLICT`, `RETURNING`, no `rowid`); the few places
//! that differ ask [`Db::is_postgres`].
//!
//! PostgreSQL calls block the calling thread (the writer thread, or a blocking-pool
//! thread for reads) on the service's runtime, which drives the connections: store
//! code stays plain sequential functions inside one transaction, on either backend.

use std::fmt;

use tokio::runtime::Handle;
use tokio_postgres::types::{FromSql as PgFromSql, ToSql as PgToSql};

/// A value a statement can bind, on either backend.
pub trait Arg: rusqlite::ToSql + PgToSql + Sync {}
impl<T: rusqlite::ToSql + PgToSql + Sync> Arg for T {}

/// A value a row can be read into, on either backend.
pub trait Col: rusqlite::types::FromSql + for<'a> PgFromSql<'a> {}
impl<T: rusqlite::types::FromSql + for<'a> PgFromSql<'a>> Col for T {}

/// A statement's parameters, as rusqlite's `params!` spells them (used as
/// `store::db::params!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __db_params {
    () => { &[] as &[&dyn $crate::__DbArg] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::__DbArg),+] as &[&dyn $crate::__DbArg] };
}
pub use crate::__db_params as params;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `query_row` found nothing (see [`OptionalExt::optional`]).
    #[error("no rows returned")]
    NoRows,
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no, or the connection broke.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had.
    #[error("database connection: {0}")]
    Connect(String),
    /// A column held what this build cannot read.
    #[error("corrupt row: {0}")]
    Decode(String),
}

/// A statement's outcome.
pub(crate) type DbResult<T> = std::result::Result<T, DbError>;

/// `query_row`'s "no row" as `None`, as rusqlite's `OptionalExtension` has it.
pub trait OptionalExt<T> {
    /// `Ok(None)` for [`DbError::NoRows`].
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExt<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A PostgreSQL connection taken from the pool, with the runtime that drives it.
pub struct PgConn {
    pub(super) client: deadpool_postgres::Object,
    pub(super) rt: Handle,
}

/// A connection to either backend, for the length of one job or read.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// The embedded default.
    Sqlite(&'a rusqlite::Connection),
    /// The shared database of many replicas.
    Postgres(&'a PgConn),
}

impl fmt::Debug for Db<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_postgres() {
            "Db::Postgres"
        } else {
            "Db::Sqlite"
        })
    }
}

/// One row of a result, on either backend.
pub enum Row<'a> {
    /// A SQLite row.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A PostgreSQL row.
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (0-based) as a `T`.
    pub fn get<T: Col>(&self, idx: usize) -> DbResult<T> {
        match self {
            Row::Sqlite(r) => Ok(r.get(idx)?),
            Row::Postgres(r) => Ok(r.try_get(idx)?),
        }
    }
}

fn sqlite_params<'p>(
    params: &'p [&'p dyn Arg],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = &'p dyn rusqlite::ToSql>> {
    rusqlite::params_from_iter(params.iter().map(|p| *p as &dyn rusqlite::ToSql))
}

fn pg_params<'p>(params: &'p [&'p dyn Arg]) -> Vec<&'p (dyn PgToSql + Sync)> {
    params.iter().map(|p| *p as &(dyn PgToSql + Sync)).collect()
}

/// `?N` placeholders (and bare `?`, numbered in order) as PostgreSQL's `$N`. The SQL
/// here is our own: no `?` appears inside a string literal.
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        out.push('$');
        if chars.peek().is_some_and(char::is_ascii_digit) {
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
        } else {
            out.push_str(&next.to_string());
            next += 1;
        }
    }
    out
}

impl<'a> Db<'a> {
    /// Whether this is the PostgreSQL backend (for the few statements that differ).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    fn pg<T>(
        pg: &PgConn,
        sql: &str,
        run: impl AsyncFnOnce(
            &deadpool_postgres::Object,
            &tokio_postgres::Statement,
        ) -> Result<T, tokio_postgres::Error>,
    ) -> DbResult<T> {
        pg.rt
            .block_on(async {
                let stmt = pg.client.prepare_cached(&to_postgres(sql)).await?;
                run(&pg.client, &stmt).await
            })
            .map_err(|e| {
                // The statement, never its parameters (they may be secrets' hashes).
                let first = sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
                // The server's message and SQLSTATE only: its `detail` can quote a
                // row's values.
                let (code, message) = e.as_db_error().map_or(("", e.to_string()), |d| {
                    (d.code().code(), d.message().to_string())
                });
                tracing::debug!(statement = %first, code, error = %message, "statement failed");
                DbError::Postgres(e)
            })
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn Arg]) -> DbResult<usize> {
        match self {
            Db::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(sqlite_params(params))?),
            Db::Postgres(pg) => {
                Db::pg(pg, sql, async |c, s| c.execute(s, &pg_params(params)).await)
                    .map(|n| n as usize)
            }
        }
    }

    /// The first row of a query, through `f`; [`DbError::NoRows`] if there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn Arg],
        f: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(sqlite_params(params))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(DbError::NoRows),
                }
            }
            Db::Postgres(pg) => {
                let row = Db::pg(pg, sql, async |c, s| {
                    c.query_opt(s, &pg_params(params)).await
                })?;
                match row {
                    Some(r) => f(&Row::Postgres(&r)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    /// Every row of a query, each through `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn Arg],
        mut f: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        let mut out = Vec::new();
        self.for_each(sql, params, |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Hands every row of a query to `f`, without collecting them (SQLite streams;
    /// PostgreSQL holds one result set).
    pub(crate) fn for_each(
        &self,
        sql: &str,
        params: &[&dyn Arg],
        mut f: impl FnMut(&Row<'_>) -> DbResult<()>,
    ) -> DbResult<()> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(sqlite_params(params))?;
                while let Some(r) = rows.next()? {
                    f(&Row::Sqlite(r))?;
                }
                Ok(())
            }
            Db::Postgres(pg) => {
                let rows = Db::pg(pg, sql, async |c, s| c.query(s, &pg_params(params)).await)?;
                rows.iter().try_for_each(|r| f(&Row::Postgres(r)))
            }
        }
    }

    /// Runs statements without parameters, separated by `;`.
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(pg) => Ok(pg.rt.block_on(pg.client.batch_execute(sql))?),
        }
    }

    /// Runs `f` inside one read-only transaction, so every statement in it sees the
    /// same committed state.
    pub(crate) fn snapshot<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Db<'a>) -> Result<T, E>,
    ) -> Result<T, E> {
        let begin = if self.is_postgres() {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            "BEGIN"
        };
        self.execute_batch(begin)?;
        let out = f(self);
        let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.execute_batch(end);
        let out = out?;
        ended?;
        Ok(out)
    }

    /// The SQLite connection, for what only SQLite has (backups, pragmas).
    pub(crate) fn sqlite(&self) -> Option<&'a rusqlite::Connection> {
        match self {
            Db::Sqlite(c) => Some(c),
            Db::Postgres(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_for_postgres() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?12)"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $12)"
        );
        assert_eq!(to_postgres("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn sqlite_rows_read_through_the_common_surface() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Sqlite(&c);
        db.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)")
            .unwrap();
        let blob: &[u8] = &[1, 2];
        assert_eq!(
            db.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3)",
                params![7i64, "x", blob]
            )
            .unwrap(),
            1
        );
        let (a, b, c): (i64, String, Vec<u8>) = db
            .query_row("SELECT a, b, c FROM t WHERE a = ?1", params![7i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((a, b.as_str(), c.as_slice()), (7, "x", blob));
        let none = db
            .query_row("SELECT a FROM t WHERE a = 8", params![], |r| {
                r.get::<i64>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let all = db
            .query_map("SELECT a FROM t", params![], |r| r.get::<i64>(0))
            .unwrap();
        assert_eq!(all, vec![7]);
    }
}
