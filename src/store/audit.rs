//! The `audit_log` table: append-only, trimmed only by age (`audit_retention`). Ids
//! only, never a secret.

use rusqlite::{Connection, params};

use crate::error::Result;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// Correlates with logs.
    pub request_id: String,
    /// The caller's API-key id, or `-` when unauthenticated, `system` for the service itself.
    pub caller: String,
    /// What happened: `issue.api_key`, `revoke.access_token`, `key.rotate`, ...
    pub action: String,
    /// What it happened to: key id, jti, subject, kid.
    pub target: String,
    /// Free text without secrets.
    pub detail: String,
}

/// Appends one record (inside the caller's write, so it commits with the change).
pub fn append(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, request_id, caller, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![e.at, e.request_id, e.caller, e.action, e.target, e.detail])?;
    Ok(())
}

/// Deletes up to `limit` of the oldest records written before `before`; returns how many.
pub fn purge(conn: &Connection, before: i64, limit: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM audit_log WHERE id IN
               (SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
        )?
        .execute(params![before, limit])?)
}

/// The most recent `limit` records, newest first.
pub fn recent(conn: &Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn
        .prepare("SELECT at, request_id, caller, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditEntry {
            at: r.get(0)?,
            request_id: r.get(1)?,
            caller: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
