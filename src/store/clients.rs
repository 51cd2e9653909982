//! The `oauth_clients` table: registered OAuth clients of the authorization-code flow.

use super::db::{Db, DbResult, OptionalExt, Row, params};

use super::lists;
use crate::error::Result;

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRow {
    /// `client_id`; for a confidential client, also the id of its first secret (API key).
    pub(crate) id: String,
    /// Human label; also the owner of a confidential client's API key.
    pub(crate) name: String,
    /// Public clients (no secret) cannot authenticate; confidential ones must.
    pub(crate) public: bool,
    /// Redirect URIs, matched exactly.
    pub(crate) redirect_uris: Vec<String>,
    /// The most an authorization code for this client may carry.
    pub(crate) scopes: Vec<String>,
    /// Unix seconds.
    pub(crate) created_at: i64,
}

/// Inserts a client.
pub(crate) fn insert(conn: &Db, c: &ClientRow) -> Result<()> {
    conn.execute(
        "INSERT INTO oauth_clients (id, name, public, redirect_uris, scopes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            c.id,
            c.name,
            i64::from(c.public),
            lists::encode(&c.redirect_uris),
            lists::encode(&c.scopes),
            c.created_at
        ],
    )?;
    Ok(())
}

/// A client from its columns `id, name, public, redirect_uris, scopes, created_at`.
fn client_row(r: &Row<'_>) -> DbResult<ClientRow> {
    Ok(ClientRow {
        id: r.get(0)?,
        name: r.get(1)?,
        public: r.get::<i64>(2)? != 0,
        redirect_uris: lists::get(r, 3)?,
        scopes: lists::get(r, 4)?,
        created_at: r.get(5)?,
    })
}

/// Looks a client up by id.
pub(crate) fn find(conn: &Db, id: &str) -> Result<Option<ClientRow>> {
    Ok(conn
        .query_row(
            "SELECT id, name, public, redirect_uris, scopes, created_at FROM oauth_clients WHERE id = ?1",
            params![id],
            client_row,
        )
        .optional()?)
}

/// Up to `limit` clients, newest first, strictly after the cursor `(created_at, id)`.
pub(crate) fn list(conn: &Db, after: Option<(i64, &str)>, limit: u32) -> Result<Vec<ClientRow>> {
    let (after_at, after_id) = after.unwrap_or((i64::MAX, ""));
    Ok(conn.query_map(
        "SELECT id, name, public, redirect_uris, scopes, created_at FROM oauth_clients
         WHERE created_at < ?1 OR (created_at = ?1 AND ?2 != '' AND id < ?2)
         ORDER BY created_at DESC, id DESC LIMIT ?3",
        params![after_at, after_id, i64::from(limit)],
        client_row,
    )?)
}

/// Records that API key `key_id` is a secret of confidential client `client_id`.
pub(crate) fn add_secret(conn: &Db, key_id: &str, client_id: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO client_secrets (key_id, client_id) VALUES (?1, ?2)",
        params![key_id, client_id],
    )?;
    Ok(())
}

/// Makes `key_id` the client's current secret (the one the next rotation replaces).
pub(crate) fn set_current_secret(conn: &Db, client_id: &str, key_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE oauth_clients SET secret_key_id = ?2 WHERE id = ?1",
        params![client_id, key_id],
    )?;
    Ok(())
}

/// The id of the client's current secret key: the last rotated-in one, else the
/// client's own id (its first secret). `None` for an unknown client.
pub(crate) fn current_secret(conn: &Db, client_id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT coalesce(secret_key_id, id) FROM oauth_clients WHERE id = ?1",
            params![client_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// The client whose secret API key `key_id` is, if it is one.
pub(crate) fn client_of_secret(conn: &Db, key_id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT client_id FROM client_secrets WHERE key_id = ?1",
            params![key_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every rotated-in secret key whose id differs from its client's id, as
/// `(key_id, client_id)`: what authentication must map back to the client.
pub(crate) fn rotated_secrets(conn: &Db) -> Result<Vec<(String, String)>> {
    Ok(conn.query_map(
        "SELECT key_id, client_id FROM client_secrets WHERE key_id != client_id",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}
