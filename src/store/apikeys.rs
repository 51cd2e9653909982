//! The `api_keys` table.

use super::db::{Db, DbResult, OptionalExt, Row, params};

use super::changes::{self, Change};
use super::lists;
use crate::error::Result;
use crate::ratelimit::RateLimit;

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
    /// Request rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

impl std::fmt::Debug for ApiKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRow")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("environment", &self.environment)
            .field("scopes", &self.scopes)
            .field("exchange_audiences", &self.exchange_audiences)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// Inserts a new key.
pub(crate) fn insert(conn: &Db, k: &ApiKeyRow) -> Result<()> {
    conn.execute(
        "INSERT INTO api_keys (id, secret_hash, owner, name, environment, scopes, exchange_audiences, created_at, expires_at,
                               rate_per_second, rate_burst)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            k.id,
            &k.secret_hash[..],
            k.owner,
            k.name,
            k.environment,
            lists::encode(&k.scopes),
            lists::encode(&k.exchange_audiences),
            k.created_at,
            k.expires_at,
            k.rate_limit.map(|l| i64::from(l.per_second)),
            k.rate_limit.map(|l| i64::from(l.burst))
        ],
    )?;
    // Other replicas load it from the change log.
    changes::append(
        conn,
        k.created_at,
        &Change::ApiKeyLive {
            key_id: k.id.clone(),
        },
    )?;
    Ok(())
}

/// Marks a key revoked (and records that in the change log); returns whether it
/// existed and was live.
pub(crate) fn revoke(conn: &Db, id: &str, at: i64) -> Result<bool> {
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
pub(crate) fn touch(conn: &Db, uses: &[(String, i64)]) -> Result<()> {
    for (id, at) in uses {
        conn.execute(
            "UPDATE api_keys SET last_used_at = ?2
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            params![id, at],
        )?;
    }
    Ok(())
}

/// Every key that is neither revoked nor expired at `now`.
pub(crate) fn load_live(conn: &Db, now: i64) -> Result<Vec<ApiKeyRow>> {
    load(conn, "revoked_at IS NULL AND expires_at > ?1", params![now])
}

/// One key by id if it is neither revoked nor expired at `now` (a replica loading a
/// key another made).
pub(crate) fn find_live(conn: &Db, id: &str, now: i64) -> Result<Option<ApiKeyRow>> {
    Ok(load(
        conn,
        "id = ?2 AND revoked_at IS NULL AND expires_at > ?1",
        params![now, id],
    )?
    .pop())
}

fn load(conn: &Db, filter: &str, args: &[&dyn super::db::Arg]) -> Result<Vec<ApiKeyRow>> {
    let sql = format!(
        "SELECT id, secret_hash, owner, name, environment, scopes, created_at, expires_at, revoked_at,
                exchange_audiences, rate_per_second, rate_burst
         FROM api_keys WHERE {filter}"
    );
    Ok(conn.query_map(&sql, args, |r| {
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
            rate_limit: rate_limit(r, 10)?,
        })
    })?)
}

/// The limit stored in columns `i` (per second) and `i + 1` (burst). A pair that no
/// longer passes [`RateLimit::new`] (it cannot be written so) is read as no limit.
fn rate_limit(r: &Row<'_>, i: usize) -> DbResult<Option<RateLimit>> {
    let per_second: Option<i64> = r.get(i)?;
    let burst: Option<i64> = r.get(i + 1)?;
    let burst = burst.and_then(|b| u32::try_from(b).ok()).unwrap_or(0);
    Ok(per_second
        .and_then(|p| u32::try_from(p).ok())
        .and_then(|p| RateLimit::new(p, burst).ok()))
}

/// Ids of keys revoked before their expiry that have not yet expired at `now`.
pub(crate) fn revoked_unexpired(conn: &Db, now: i64) -> Result<Vec<String>> {
    Ok(conn.query_map(
        "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND expires_at > ?1",
        params![now],
        |r| r.get(0),
    )?)
}

/// How many keys were ever issued (bootstrap runs only on an empty table).
pub(crate) fn count(conn: &Db) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM api_keys", params![], |r| r.get(0))?)
}

/// An API key as an operator sees it: no secret, no hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiKeyListing {
    /// Public key id.
    pub(crate) id: String,
    /// Owner.
    pub(crate) owner: String,
    /// Service name.
    pub(crate) name: String,
    /// Environment.
    pub(crate) environment: String,
    /// Scopes.
    pub(crate) scopes: Vec<String>,
    /// Exchange audiences.
    pub(crate) exchange_audiences: Vec<String>,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds.
    pub(crate) expires_at: i64,
    /// Last flushed use, Unix seconds.
    pub(crate) last_used_at: Option<i64>,
    /// Unix seconds, if revoked.
    pub(crate) revoked_at: Option<i64>,
    /// The key that succeeded it by rotation.
    pub(crate) rotated_to: Option<String>,
    /// Request rate limit, if any.
    pub(crate) rate_limit: Option<RateLimit>,
}

fn listing(r: &Row<'_>) -> DbResult<ApiKeyListing> {
    Ok(ApiKeyListing {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        environment: r.get(3)?,
        scopes: lists::get(r, 4)?,
        exchange_audiences: lists::get(r, 5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        last_used_at: r.get(8)?,
        revoked_at: r.get(9)?,
        rotated_to: r.get(10)?,
        rate_limit: rate_limit(r, 11)?,
    })
}

/// What `ListApiKeys` filters on; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiKeyFilter {
    /// Only this owner.
    pub(crate) owner: String,
    /// Only this environment.
    pub(crate) environment: String,
    /// Also revoked and expired keys.
    pub(crate) include_revoked: bool,
}

/// Up to `limit` keys matching `f`, newest first, strictly after the cursor
/// `(created_at, id)` in that order. Liveness is judged at `now`.
pub(crate) fn list(
    conn: &Db,
    f: &ApiKeyFilter,
    after: Option<(i64, &str)>,
    now: i64,
    limit: u32,
) -> Result<Vec<ApiKeyListing>> {
    let (after_at, after_id) = after.unwrap_or((i64::MAX, ""));
    Ok(conn.query_map(
        "SELECT id, owner, name, environment, scopes, exchange_audiences, created_at, expires_at,
                last_used_at, revoked_at, rotated_to, rate_per_second, rate_burst
         FROM api_keys
         WHERE (?1 = '' OR owner = ?1) AND (?2 = '' OR environment = ?2)
           AND (?3 OR (revoked_at IS NULL AND expires_at > ?4))
           AND (created_at < ?5 OR (created_at = ?5 AND ?6 != '' AND id < ?6))
         ORDER BY created_at DESC, id DESC LIMIT ?7",
        params![
            f.owner,
            f.environment,
            f.include_revoked,
            now,
            after_at,
            after_id,
            i64::from(limit)
        ],
        listing,
    )?)
}

/// One key by id, as an operator sees it (whatever its state).
pub(crate) fn find_listing(conn: &Db, id: &str) -> Result<Option<ApiKeyListing>> {
    Ok(conn
        .query_row(
            "SELECT id, owner, name, environment, scopes, exchange_audiences, created_at, expires_at,
                    last_used_at, revoked_at, rotated_to, rate_per_second, rate_burst
             FROM api_keys WHERE id = ?1",
            params![id],
            listing,
        )
        .optional()?)
}

/// Ends `old` in favour of `new`: links them and moves the old key's expiry to
/// `until` if that is sooner. Returns the old key's expiry after the change, or
/// `None` if it is revoked or unknown.
pub(crate) fn rotate(conn: &Db, old: &str, new: &str, until: i64) -> Result<Option<i64>> {
    let expires: Option<i64> = conn
        .query_row(
            "UPDATE api_keys SET rotated_to = ?2,
                 expires_at = CASE WHEN expires_at < ?3 THEN expires_at ELSE ?3 END
             WHERE id = ?1 AND revoked_at IS NULL RETURNING expires_at",
            params![old, new, until],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(at) = expires {
        // Its shorter life reaches the other replicas through the log.
        changes::append(
            conn,
            at.min(until),
            &Change::ApiKeyLive {
                key_id: old.to_string(),
            },
        )?;
    }
    Ok(expires)
}
