//! The `audit_log` table: append-only, trimmed only by age (`audit_retention`). Ids
//! only, never a secret.
//!
//! Event kinds (the `kind` column, `AuditEvent.kind` on the wire) are listed in
//! [`KINDS`]; the README documents each.

use super::db::{Db, DbResult, Row, params};
use serde_json::{Map, Value};

use crate::error::Result;

/// Every event kind written, so `ListAuditEvents` can refuse a mistyped filter.
pub(crate) const KINDS: &[&str] = &[
    "api_key.issued",
    "api_key.rotated",
    "api_key.revoked",
    "client.registered",
    "client.secret_rotated",
    "token.issued",
    "token.exchanged",
    "token.revoked",
    "token_version.bumped",
    "code.issued",
    "code.redeemed",
    "code.reuse_detected",
    "refresh.rotated",
    "refresh.revoked",
    "refresh.reuse_detected",
    "refresh.grace_retry",
    "revoke.noop",
    "key.created",
    "key.rotated",
    "key.revoked",
    "admin.recovered",
    "master_key.resealed",
];

/// One audit record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditEntry {
    /// Increasing record id (0 until stored).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Correlates with logs.
    pub request_id: String,
    /// The caller's API-key id, or `-` when unauthenticated, `system` for the service
    /// itself, `offline` for an operator's command on the data dir.
    pub caller: String,
    /// What happened: one of `KINDS`.
    pub kind: String,
    /// The subject concerned, if any.
    pub subject: String,
    /// The credential concerned: key id, jti, family id, code id, kid.
    pub token_id: String,
    /// Structured details (ids, scopes, counts) without secrets.
    pub detail: Map<String, Value>,
}

impl AuditEntry {
    /// Sets the subject concerned.
    pub(crate) fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Adds one detail.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_string(), value.into());
        self
    }
}

/// Appends one record (inside the caller's write, so it commits with the change).
pub(crate) fn append(conn: &Db, e: &AuditEntry) -> Result<()> {
    let detail = serde_json::to_string(&e.detail).map_err(crate::error::Error::internal)?;
    conn.execute(
        "INSERT INTO audit_log (at, request_id, caller, kind, subject, token_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.at,
            e.request_id,
            e.caller,
            e.kind,
            e.subject,
            e.token_id,
            detail
        ],
    )?;
    Ok(())
}

/// Deletes up to `limit` of the oldest records written before `before`; returns how many.
pub(crate) fn purge(conn: &Db, before: i64, limit: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM audit_log WHERE id IN
               (SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
        params![before, limit],
    )?)
}

fn row(r: &Row<'_>) -> DbResult<AuditEntry> {
    let detail: String = r.get(7)?;
    // Written by `append` as an object; anything else would be a hand edit: show it as a note.
    let detail = match serde_json::from_str(&detail) {
        Ok(Value::Object(m)) => m,
        _ => Map::from_iter([("note".to_string(), Value::String(detail))]),
    };
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        request_id: r.get(2)?,
        caller: r.get(3)?,
        kind: r.get(4)?,
        subject: r.get(5)?,
        token_id: r.get(6)?,
        detail,
    })
}

/// The most recent `limit` records, newest first.
pub fn recent(conn: &Db, limit: u32) -> Result<Vec<AuditEntry>> {
    Ok(conn.query_map(
        "SELECT id, at, request_id, caller, kind, subject, token_id, detail
         FROM audit_log ORDER BY id DESC LIMIT ?1",
        params![i64::from(limit)],
        row,
    )?)
}

/// What `ListAuditEvents` filters on; empty strings and `None` match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this subject.
    pub subject: String,
    /// Only this caller key id.
    pub caller: String,
    /// Only this kind.
    pub kind: String,
    /// At or after (Unix seconds).
    pub since: Option<i64>,
    /// Before (Unix seconds).
    pub until: Option<i64>,
}

/// Up to `limit` records matching `f` with an id below `before_id`, newest first.
pub fn list(
    conn: &Db,
    f: &AuditFilter,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    Ok(conn.query_map(
        "SELECT id, at, request_id, caller, kind, subject, token_id, detail FROM audit_log
         WHERE (?1 = '' OR subject = ?1) AND (?2 = '' OR caller = ?2) AND (?3 = '' OR kind = ?3)
           AND at >= ?4 AND at < ?5 AND id < ?6
         ORDER BY id DESC LIMIT ?7",
        params![
            f.subject,
            f.caller,
            f.kind,
            f.since.unwrap_or(i64::MIN),
            f.until.unwrap_or(i64::MAX),
            before_id.unwrap_or(i64::MAX),
            i64::from(limit)
        ],
        row,
    )?)
}
