//! What the admin commands print: aligned tables for people, JSON for machines, and
//! RFC 3339 UTC timestamps in both. Nothing here ever sees a secret: the List RPCs
//! carry none, and the one secret a command prints (a rotated key) is printed by the
//! command itself.

use prost_types::Timestamp;
use serde_json::{Map, Value, json};

use crate::proto::{ApiKeyInfo, AuditEvent, ClientInfo, SigningKeyInfo};
use crate::service::convert::struct_to_json;

/// RFC 3339 UTC (`2026-01-02T03:04:05Z`) of unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A timestamp for a table cell: RFC 3339, or `-` when unset.
pub(crate) fn cell_time(t: &Option<Timestamp>) -> String {
    t.as_ref()
        .map_or_else(|| "-".into(), |t| rfc3339(t.seconds))
}

/// A timestamp for JSON: RFC 3339, or `null` when unset.
pub(crate) fn json_time(t: &Option<Timestamp>) -> Value {
    t.as_ref()
        .map_or(Value::Null, |t| Value::String(rfc3339(t.seconds)))
}

/// A list for a table cell: space-separated, or `-` when empty.
pub(crate) fn cell_list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(" ")
    }
}

/// Left-aligned columns separated by two spaces, header first.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `key: value` lines, keys aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
}

/// An API key's state in words: `revoked`, `expired`, `rotated` or `live` (at `now`).
pub(crate) fn key_state(k: &ApiKeyInfo, now: i64) -> &'static str {
    if k.revoked {
        "revoked"
    } else if k.expires_at.as_ref().is_some_and(|t| t.seconds <= now) {
        "expired"
    } else if !k.rotated_to.is_empty() {
        "rotated"
    } else {
        "live"
    }
}

/// An API key as JSON (the same fields as `ApiKeyInfo`, times in RFC 3339).
pub(crate) fn api_key_json(k: &ApiKeyInfo, now: i64) -> Value {
    json!({
        "key_id": k.key_id,
        "owner": k.owner,
        "name": k.name,
        "environment": k.environment,
        "scopes": k.scopes,
        "exchange_audiences": k.exchange_audiences,
        "created_at": json_time(&k.created_at),
        "expires_at": json_time(&k.expires_at),
        "last_used_at": json_time(&k.last_used_at),
        "revoked": k.revoked,
        "rotated_to": k.rotated_to,
        "state": key_state(k, now),
    })
}

/// API keys as a table.
pub(crate) fn api_keys_table(keys: &[ApiKeyInfo], now: i64) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                k.owner.clone(),
                k.name.clone(),
                k.environment.clone(),
                key_state(k, now).into(),
                cell_time(&k.expires_at),
                cell_time(&k.last_used_at),
                cell_list(&k.scopes),
            ]
        })
        .collect();
    table(
        &[
            "KEY_ID",
            "OWNER",
            "NAME",
            "ENV",
            "STATE",
            "EXPIRES",
            "LAST_USED",
            "SCOPES",
        ],
        &rows,
    )
}

/// One API key, field by field.
pub(crate) fn api_key_fields(k: &ApiKeyInfo, now: i64) -> String {
    fields(&[
        ("key_id", k.key_id.clone()),
        ("owner", k.owner.clone()),
        ("name", k.name.clone()),
        ("environment", k.environment.clone()),
        ("state", key_state(k, now).into()),
        ("scopes", cell_list(&k.scopes)),
        ("exchange_audiences", cell_list(&k.exchange_audiences)),
        ("created_at", cell_time(&k.created_at)),
        ("expires_at", cell_time(&k.expires_at)),
        ("last_used_at", cell_time(&k.last_used_at)),
        (
            "rotated_to",
            if k.rotated_to.is_empty() {
                "-".into()
            } else {
                k.rotated_to.clone()
            },
        ),
    ])
}

/// An OAuth client as JSON.
pub(crate) fn client_json(c: &ClientInfo) -> Value {
    json!({
        "client_id": c.client_id,
        "name": c.name,
        "public": c.public,
        "redirect_uris": c.redirect_uris,
        "scopes": c.scopes,
        "created_at": json_time(&c.created_at),
    })
}

/// OAuth clients as a table.
pub(crate) fn clients_table(clients: &[ClientInfo]) -> String {
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                c.client_id.clone(),
                c.name.clone(),
                if c.public { "public" } else { "confidential" }.into(),
                cell_time(&c.created_at),
                cell_list(&c.scopes),
                cell_list(&c.redirect_uris),
            ]
        })
        .collect();
    table(
        &[
            "CLIENT_ID",
            "NAME",
            "TYPE",
            "CREATED",
            "SCOPES",
            "REDIRECT_URIS",
        ],
        &rows,
    )
}

/// A signing key as JSON.
pub(crate) fn signing_key_json(k: &SigningKeyInfo) -> Value {
    json!({
        "kid": k.kid,
        "alg": k.alg,
        "state": k.state,
        "created_at": json_time(&k.created_at),
        "activates_at": json_time(&k.activates_at),
        "retires_at": json_time(&k.retires_at),
    })
}

/// Signing keys as a table.
pub(crate) fn signing_keys_table(keys: &[SigningKeyInfo]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.alg.clone(),
                k.state.clone(),
                cell_time(&k.created_at),
                cell_time(&k.activates_at),
                cell_time(&k.retires_at),
            ]
        })
        .collect();
    table(
        &["KID", "ALG", "STATE", "CREATED", "ACTIVATES", "RETIRES"],
        &rows,
    )
}

/// An audit event's detail as a JSON object (empty when absent or unreadable).
fn detail(e: &AuditEvent) -> Map<String, Value> {
    e.detail
        .clone()
        .and_then(|s| struct_to_json(s).ok())
        .unwrap_or_default()
}

/// An audit event as JSON.
pub(crate) fn audit_json(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": json_time(&e.at),
        "kind": e.kind,
        "caller_key_id": e.caller_key_id,
        "request_id": e.request_id,
        "subject": e.subject,
        "token_id": e.token_id,
        "detail": Value::Object(detail(e)),
    })
}

/// One audit event as a log-like line: `id at kind caller=… subject=… token=… {detail}`.
pub(crate) fn audit_line(e: &AuditEvent) -> String {
    let mut line = format!(
        "{:>6}  {}  {:<22}  caller={}",
        e.id,
        cell_time(&e.at),
        e.kind,
        e.caller_key_id
    );
    if !e.subject.is_empty() {
        line.push_str(&format!(" subject={}", e.subject));
    }
    if !e.token_id.is_empty() {
        line.push_str(&format!(" token={}", e.token_id));
    }
    if !e.request_id.is_empty() && e.request_id != "-" {
        line.push_str(&format!(" request={}", e.request_id));
    }
    let d = detail(e);
    if !d.is_empty() {
        line.push_str(&format!(" {}", Value::Object(d)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn tables_align_and_trim() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq\n");
    }
}
