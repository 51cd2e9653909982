//! List columns (scopes, audiences, redirect URIs) are stored as JSON arrays of
//! strings — never joined on whitespace, so an entry comes back exactly as it went in.

use super::db::{DbError, DbResult, Row};

/// A list as its column text: a JSON array of strings.
pub(crate) fn encode(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

/// A list column read back. Anything but a JSON array of strings is a corrupt row.
pub(crate) fn decode(text: &str) -> DbResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| DbError::Decode(format!("list column: {e}")))
}

/// Column `idx` of a row, decoded as a list.
pub(crate) fn get(row: &Row<'_>, idx: usize) -> DbResult<Vec<String>> {
    let text: String = row.get(idx)?;
    decode(&text)
}

/// Migration 3: rewrites the space-joined list columns of earlier versions as JSON
/// arrays, splitting them exactly as those versions read them back.
pub(crate) fn migrate_space_joined(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    const COLUMNS: &[(&str, &str, &str)] = &[
        ("api_keys", "id", "scopes"),
        ("refresh_families", "id", "audience"),
        ("refresh_families", "id", "scopes"),
        ("oauth_clients", "id", "redirect_uris"),
        ("oauth_clients", "id", "scopes"),
        ("authorization_codes", "code_hash", "scopes"),
    ];
    for (table, key, column) in COLUMNS {
        // Identifiers come from the constant table above, never from input.
        let rows: Vec<(rusqlite::types::Value, String)> = conn
            .prepare(&format!("SELECT {key}, {column} FROM {table}"))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut update = conn.prepare(&format!(
            "UPDATE {table} SET {column} = ?2 WHERE {key} = ?1"
        ))?;
        for (id, joined) in rows {
            let items: Vec<String> = joined.split_whitespace().map(str::to_string).collect();
            update.execute(rusqlite::params![id, encode(&items)])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_exactly() {
        for items in [
            vec![],
            vec!["a b".to_string()],
            vec![" ".to_string(), "\t".to_string()],
            vec!["x\"y\\z".to_string(), "サービス".to_string()],
        ] {
            assert_eq!(decode(&encode(&items)).unwrap(), items);
        }
        assert!(decode("a b").is_err());
        assert!(decode("[1]").is_err());
        assert!(decode("{}").is_err());
    }
}
