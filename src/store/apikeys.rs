//! The `api_keys` table.

use rusqlite::{Connection, params};

use super::changes::{self, Change};
use super::lists;
use crate::error::Result;

/// One API key as stored: the secret only as its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Public key id.
    pub id: String,
    /// `apikeys::hash` of the key.
    pub secret_hash: [u8; 32],
    /// Who owns the calling application.
    pub owner: String,
    /// Human label (service name).
    pub name: String,
    /// Environment label, also embedded in the key text.
    pub environment: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Audiences this key may ask for in a token exchange (empty: it may not exchange).
    pub exchange_audiences: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the key is dead from this instant.
    pub expires_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for ApiKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRow")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("environment", &self.environment)
            .field("scopes", &self.scopes)
            .field("exchange_audiences", &self.exchange_audiences)
            .finish_non_exhaustive()
    }
}

/// Inserts a new key.
pub fn insert(conn: &Connection, k: &ApiKeyRow) -> Result<()> {
    conn.execute(
        "INSERT INTO api_keys (id, secret_hash, owner, name, environment, scopes, exchange_audiences, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            k.id,
            &k.secret_hash[..],
            k.owner,
            k.name,
            k.environment,
            lists::encode(&k.scopes),
            lists::encode(&k.exchange_audiences),
            k.created_at,
            k.expires_at
        ],
    )?;
    Ok(())
}

/// Marks a key revoked (and records that in the change log); returns whether it
/// existed and was live.
pub fn revoke(conn: &Connection, id: &str, at: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, at],
    )?;
    if n == 1 {
        changes::append(
            conn,
            at,
            &Change::RevokedApiKey {
                key_id: id.to_string(),
            },
        )?;
    }
    Ok(n == 1)
}

/// Records when keys were last used (batched off the hot path).
pub fn touch(conn: &Connection, uses: &[(String, i64)]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
    )?;
    for (id, at) in uses {
        stmt.execute(params![id, at])?;
    }
    Ok(())
}

/// Every key that is neither revoked nor expired at `now`.
pub fn load_live(conn: &Connection, now: i64) -> Result<Vec<ApiKeyRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, secret_hash, owner, name, environment, scopes, created_at, expires_at, revoked_at,
                exchange_audiences
         FROM api_keys WHERE revoked_at IS NULL AND expires_at > ?1",
    )?;
    let rows = stmt.query_map([now], |r| {
        let hash: Vec<u8> = r.get(1)?;
        let mut secret_hash = [0u8; 32];
        if hash.len() == 32 {
            secret_hash.copy_from_slice(&hash);
        }
        Ok(ApiKeyRow {
            id: r.get(0)?,
            secret_hash,
            owner: r.get(2)?,
            name: r.get(3)?,
            environment: r.get(4)?,
            scopes: lists::get(r, 5)?,
            exchange_audiences: lists::get(r, 9)?,
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            revoked_at: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ids of keys revoked before their expiry that have not yet expired at `now`.
pub fn revoked_unexpired(conn: &Connection, now: i64) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND expires_at > ?1")?;
    let rows = stmt.query_map([now], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many keys were ever issued (bootstrap runs only on an empty table).
pub fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?)
}
