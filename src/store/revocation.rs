//! The `jti_blocklist` and `token_versions` tables.

use super::db::{Db, OptionalExt, params};

use super::changes::{self, Change};
use crate::error::Result;

/// Blocklists `jti` until `expires_at`. Idempotent; keeps the later expiry.
pub(crate) fn block_jti(conn: &Db, jti: &str, expires_at: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO jti_blocklist (jti, expires_at) VALUES (?1, ?2)
         ON CONFLICT (jti) DO UPDATE SET expires_at = CASE
             WHEN excluded.expires_at > jti_blocklist.expires_at THEN excluded.expires_at
             ELSE jti_blocklist.expires_at END",
        params![jti, expires_at],
    )?;
    Ok(())
}

/// Every blocklisted jti still needed at `now`.
#[cfg(test)]
pub(crate) fn load_blocklist(conn: &Db, now: i64) -> Result<Vec<(String, i64)>> {
    Ok(conn.query_map(
        "SELECT jti, expires_at FROM jti_blocklist WHERE expires_at >= ?1",
        params![now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// How many blocklisted jtis are still needed at `now` (to size the map up front).
pub(crate) fn count_blocklist(conn: &Db, now: i64) -> Result<usize> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM jti_blocklist WHERE expires_at >= ?1",
        params![now],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Hands every blocklisted jti still needed at `now` to `f`, one row at a time: a
/// million entries are streamed into memory, never collected as strings first.
pub(crate) fn for_each_blocked(conn: &Db, now: i64, mut f: impl FnMut(&str, i64)) -> Result<()> {
    Ok(conn.for_each(
        "SELECT jti, expires_at FROM jti_blocklist WHERE expires_at >= ?1",
        params![now],
        |row| {
            let jti: String = row.get(0)?;
            f(&jti, row.get(1)?);
            Ok(())
        },
    )?)
}

/// Drops entries whose token has expired before `before`; returns how many.
pub(crate) fn purge_blocklist(conn: &Db, before: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM jti_blocklist WHERE expires_at < ?1",
        params![before],
    )?)
}

/// Increments `subject`'s token version, records it in the change log, and returns
/// the new one.
pub(crate) fn bump_version(conn: &Db, subject: &str, now: i64) -> Result<u64> {
    let v: i64 = conn
        .query_row(
            "INSERT INTO token_versions (subject, version, updated_at) VALUES (?1, 1, ?2)
             ON CONFLICT (subject) DO UPDATE SET version = token_versions.version + 1, updated_at = excluded.updated_at
             RETURNING version",
            params![subject, now], |r| r.get(0))?;
    let version = v as u64;
    changes::append(
        conn,
        now,
        &Change::TokenVersion {
            subject: subject.to_string(),
            version,
        },
    )?;
    Ok(version)
}

/// One subject's current version (0 if never bumped).
pub(crate) fn version(conn: &Db, subject: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT version FROM token_versions WHERE subject = ?1",
            params![subject],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// Every subject's version.
pub(crate) fn load_versions(conn: &Db) -> Result<Vec<(String, u64)>> {
    Ok(conn.query_map(
        "SELECT subject, version FROM token_versions",
        params![],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)? as u64)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn blocklist_streams_only_live_entries() {
        let raw = Connection::open_in_memory().expect("db");
        raw.execute_batch(include_str!("migrations/0001_init.sql"))
            .expect("schema");
        let conn = Db::Sqlite(&raw);
        block_jti(&conn, "live-a", 200).expect("insert");
        block_jti(&conn, "live-b", 100).expect("insert");
        block_jti(&conn, "gone", 99).expect("insert");
        assert_eq!(count_blocklist(&conn, 100).expect("count"), 2);
        let mut seen = Vec::new();
        for_each_blocked(&conn, 100, |jti, exp| seen.push((jti.to_string(), exp))).expect("scan");
        seen.sort();
        assert_eq!(
            seen,
            vec![("live-a".to_string(), 200), ("live-b".to_string(), 100)]
        );
        assert_eq!(load_blocklist(&conn, 100).expect("load").len(), 2);
    }
}
