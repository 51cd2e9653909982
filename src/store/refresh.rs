//! The `refresh_families`, `refresh_tokens` and `family_access_tokens` tables.
//!
//! A family is one grant; every rotation adds a token to it and marks the previous one
//! used. Revoking the family kills every token in it and returns the access tokens it
//! minted so the caller can blocklist them.

use super::db::{Db, OptionalExt, params};

use super::lists;
use crate::error::Result;

/// A refresh family: the grant a chain of refresh tokens carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRow {
    /// Random id, also the audit target.
    pub id: String,
    /// Whose grant.
    pub subject: String,
    /// For which client.
    pub client_id: String,
    /// Audience of access tokens minted from it.
    pub audience: Vec<String>,
    /// Scopes of the grant (a refresh may only narrow them).
    pub scopes: Vec<String>,
    /// Extra claims (JSON object text).
    pub claims: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The family dies at this instant however often it rotates.
    pub absolute_expires_at: i64,
    /// Set once the family is revoked.
    pub revoked_at: Option<i64>,
}

/// One refresh token (only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the token text.
    pub token_hash: [u8; 32],
    /// The family it belongs to.
    pub family_id: String,
    /// Public id (for audit and introspection).
    pub id: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds (idle expiry).
    pub expires_at: i64,
    /// Set when it was rotated away.
    pub used_at: Option<i64>,
}

/// Inserts a new family.
pub(crate) fn insert_family(conn: &Db, f: &FamilyRow) -> Result<()> {
    conn.execute(
        "INSERT INTO refresh_families (id, subject, client_id, audience, scopes, claims, created_at, absolute_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            f.id,
            f.subject,
            f.client_id,
            lists::encode(&f.audience),
            lists::encode(&f.scopes),
            f.claims,
            f.created_at,
            f.absolute_expires_at
        ],
    )?;
    Ok(())
}

/// Inserts a refresh token into its family.
pub(crate) fn insert_token(conn: &Db, t: &TokenRow) -> Result<()> {
    conn.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&t.token_hash[..], t.family_id, t.id, t.issued_at, t.expires_at])?;
    Ok(())
}

/// Remembers that `jti` was minted from `family_id`, so revoking the family can blocklist it.
pub(crate) fn record_access_token(
    conn: &Db,
    family_id: &str,
    jti: &str,
    expires_at: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO family_access_tokens (family_id, jti, expires_at) VALUES (?1, ?2, ?3)",
        params![family_id, jti, expires_at],
    )?;
    Ok(())
}

/// [`find`]'s statement.
pub(super) const FIND: &str =
    "SELECT t.token_hash, t.family_id, t.id, t.issued_at, t.expires_at, t.used_at,
            f.id, f.subject, f.client_id, f.audience, f.scopes, f.claims, f.created_at,
            f.absolute_expires_at, f.revoked_at
     FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
     WHERE t.token_hash = ?1";

/// Looks a token up by hash, with its family.
pub(crate) fn find(conn: &Db, token_hash: &[u8; 32]) -> Result<Option<(TokenRow, FamilyRow)>> {
    Ok(conn
        .query_row(FIND, params![&token_hash[..]], |r| {
            let h: Vec<u8> = r.get(0)?;
            let mut token_hash = [0u8; 32];
            if h.len() == 32 {
                token_hash.copy_from_slice(&h);
            }
            Ok((
                TokenRow {
                    token_hash,
                    family_id: r.get(1)?,
                    id: r.get(2)?,
                    issued_at: r.get(3)?,
                    expires_at: r.get(4)?,
                    used_at: r.get(5)?,
                },
                FamilyRow {
                    id: r.get(6)?,
                    subject: r.get(7)?,
                    client_id: r.get(8)?,
                    audience: lists::get(r, 9)?,
                    scopes: lists::get(r, 10)?,
                    claims: r.get(11)?,
                    created_at: r.get(12)?,
                    absolute_expires_at: r.get(13)?,
                    revoked_at: r.get(14)?,
                },
            ))
        })
        .optional()?)
}

/// What a refresh rotation writes if it wins: the presented token is marked used, its
/// successor stored, the new access token recorded on the family, and (with a grace
/// period) the sealed successor pair kept.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    /// SHA-256 of the presented token.
    pub(crate) used: [u8; 32],
    /// The successor refresh token.
    pub(crate) successor: TokenRow,
    /// The access token minted with it: its jti and expiry.
    pub(crate) jti: String,
    /// Unix seconds.
    pub(crate) access_expires_at: i64,
    /// The successor pair, sealed for a retry inside the grace period.
    pub(crate) grace: Option<GraceRow>,
}

/// A rotation's decisive write, for the common case: marks the presented token used at
/// `now` only if it is unused and unexpired and its family is live and within its
/// absolute expiry, then stores what the rotation issued. One statement decides, so of
/// concurrent rotations of one token exactly one wins; nothing is read back. False (and
/// nothing written) when the token is unknown, used, expired or its family revoked: the
/// caller then looks at the token to say which, and whether it is a retry or a reuse.
pub(crate) fn rotate(conn: &Db, r: &Rotation, now: i64) -> Result<bool> {
    let won = conn.execute(
        "UPDATE refresh_tokens SET used_at = ?2
         WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
           AND family_id = ?3
           AND EXISTS (SELECT 1 FROM refresh_families f
                       WHERE f.id = ?3 AND f.revoked_at IS NULL AND f.absolute_expires_at > ?2)",
        params![&r.used[..], now, r.successor.family_id],
    )? == 1;
    if won {
        insert_token(conn, &r.successor)?;
        record_access_token(conn, &r.successor.family_id, &r.jti, r.access_expires_at)?;
        if let Some(g) = &r.grace {
            insert_grace(conn, g)?;
        }
    }
    Ok(won)
}

/// Revokes a family; returns the (jti, exp) of access tokens it minted that are still
/// alive. The caller blocklists them in the same write (with what was derived from
/// them, [`lineage::block_with_descendants`](super::lineage::block_with_descendants)):
/// the blocklist is what says a token from a revoked family is dead, in memory and in
/// [`lineage::still_live`](super::lineage::still_live).
pub(crate) fn revoke_family(conn: &Db, family_id: &str, at: i64) -> Result<Vec<(String, i64)>> {
    conn.execute(
        "UPDATE refresh_families SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![family_id, at],
    )?;
    drop_grace_of_family(conn, family_id)?;
    Ok(conn.query_map("SELECT jti, expires_at FROM family_access_tokens WHERE family_id = ?1 AND expires_at >= ?2", params![family_id, at], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Revokes every live family of `subject` ("log out everywhere"); returns their access tokens.
pub(crate) fn revoke_subject(conn: &Db, subject: &str, at: i64) -> Result<Vec<(String, i64)>> {
    let ids: Vec<String> = conn.query_map(
        "SELECT id FROM refresh_families WHERE subject = ?1 AND revoked_at IS NULL",
        params![subject],
        |r| r.get(0),
    )?;
    let mut out = Vec::new();
    for id in ids {
        out.extend(revoke_family(conn, &id, at)?);
    }
    Ok(out)
}

/// Deletes up to `limit` dead families — revoked, or past their absolute expiry, before
/// `dead_before` — with their refresh-token rows, once none of the access tokens they
/// minted is still recorded. First drops minted-access-token rows that expired before
/// `minted_before` (any family: an expired token needs no revoking). Returns how many
/// families went. A live family keeps every row, so reuse detection still sees its used
/// tokens; revoked access tokens stay on the separate blocklist until they expire.
pub(crate) fn purge(conn: &Db, dead_before: i64, minted_before: i64, limit: i64) -> Result<usize> {
    conn.execute(
        "DELETE FROM family_access_tokens WHERE (family_id, jti) IN
           (SELECT family_id, jti FROM family_access_tokens WHERE expires_at < ?1 LIMIT ?2)",
        params![minted_before, limit],
    )?;
    let ids: Vec<String> = conn.query_map(
        "SELECT id FROM (
                 SELECT id FROM refresh_families WHERE revoked_at < ?1
                 UNION
                 SELECT id FROM refresh_families WHERE absolute_expires_at < ?1
             ) AS dead
             WHERE NOT EXISTS (SELECT 1 FROM family_access_tokens a WHERE a.family_id = dead.id)
             LIMIT ?2",
        params![dead_before, limit],
        |r| r.get(0),
    )?;
    for id in &ids {
        conn.execute(
            "DELETE FROM refresh_tokens WHERE family_id = ?1",
            params![id],
        )?;
        conn.execute("DELETE FROM refresh_families WHERE id = ?1", params![id])?;
    }
    Ok(ids.len())
}

/// A used refresh token's successor pair, kept sealed for the grace window.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct GraceRow {
    /// SHA-256 of the used token (also the sealing context).
    pub token_hash: [u8; 32],
    /// Its family.
    pub family_id: String,
    /// The client that made the first use.
    pub presenter: String,
    /// SHA-256 of the successor refresh token.
    pub successor_hash: [u8; 32],
    /// `nonce || ciphertext || tag` of the pair.
    pub sealed: Vec<u8>,
    /// End of the window, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for GraceRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraceRow")
            .field("family_id", &self.family_id)
            .field("presenter", &self.presenter)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn hash32(v: Vec<u8>) -> [u8; 32] {
    let mut h = [0u8; 32];
    if v.len() == 32 {
        h.copy_from_slice(&v);
    }
    h
}

/// Stores the sealed successor pair of a token just used.
pub(crate) fn insert_grace(conn: &Db, g: &GraceRow) -> Result<()> {
    conn.execute(
            "INSERT INTO refresh_grace (token_hash, family_id, presenter, successor_hash, sealed, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
        &g.token_hash[..],
        g.family_id,
        g.presenter,
        &g.successor_hash[..],
        g.sealed,
        g.expires_at
    ])?;
    Ok(())
}

/// The sealed successor pair of a used token, with whether that successor has been
/// used in turn; `None` once housekeeping dropped it (or there never was one).
pub(crate) fn find_grace(conn: &Db, token_hash: &[u8; 32]) -> Result<Option<(GraceRow, bool)>> {
    Ok(conn
        .query_row(
            "SELECT g.token_hash, g.family_id, g.presenter, g.successor_hash, g.sealed, g.expires_at,
                    t.used_at IS NOT NULL
             FROM refresh_grace g LEFT JOIN refresh_tokens t ON t.token_hash = g.successor_hash
             WHERE g.token_hash = ?1",
            params![&token_hash[..]], |r| {
            Ok((
                GraceRow {
                    token_hash: hash32(r.get(0)?),
                    family_id: r.get(1)?,
                    presenter: r.get(2)?,
                    successor_hash: hash32(r.get(3)?),
                    sealed: r.get(4)?,
                    expires_at: r.get(5)?,
                },
                r.get::<Option<bool>>(6)?.unwrap_or(true),
            ))
        })
        .optional()?)
}

/// Drops every sealed pair of a family (it was revoked: nothing of it may be handed out).
pub(crate) fn drop_grace_of_family(conn: &Db, family_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM refresh_grace WHERE family_id = ?1",
        params![family_id],
    )?;
    Ok(())
}

/// Drops sealed pairs whose window ended before `now` (housekeeping).
pub(crate) fn purge_grace(conn: &Db, now: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM refresh_grace WHERE expires_at < ?1",
        params![now],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const NOW: i64 = 1_000;

    fn family(id: &str, absolute_expires_at: i64) -> FamilyRow {
        FamilyRow {
            id: id.into(),
            subject: "alice".into(),
            client_id: "app".into(),
            audience: vec!["api".into()],
            scopes: vec!["read".into()],
            claims: "{}".into(),
            created_at: 0,
            absolute_expires_at,
            revoked_at: None,
        }
    }

    fn token(n: u8, family_id: &str, expires_at: i64) -> TokenRow {
        TokenRow {
            token_hash: [n; 32],
            family_id: family_id.into(),
            id: format!("rt-{n}"),
            issued_at: 0,
            expires_at,
            used_at: None,
        }
    }

    fn rotation(used: u8, successor: u8, family_id: &str) -> Rotation {
        Rotation {
            used: [used; 32],
            successor: token(successor, family_id, NOW + 100),
            jti: format!("jti-{successor}"),
            access_expires_at: NOW + 60,
            grace: None,
        }
    }

    #[test]
    fn rotate_takes_only_a_live_unused_token_and_writes_nothing_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .read_now(|c| {
                insert_family(c, &family("live", NOW + 1_000))?;
                insert_family(c, &family("old", NOW))?;
                insert_family(c, &family("revoked", NOW + 1_000))?;
                revoke_family(c, "revoked", NOW - 1)?;
                insert_token(c, &token(1, "live", NOW + 10))?;
                insert_token(c, &token(2, "live", NOW))?;
                insert_token(c, &token(3, "old", NOW + 10))?;
                insert_token(c, &token(4, "revoked", NOW + 10))?;
                // (name, rotation, wins)
                let cases = [
                    ("unknown token", rotation(9, 19, "live"), false),
                    ("idle expiry reached", rotation(2, 12, "live"), false),
                    ("absolute expiry reached", rotation(3, 13, "old"), false),
                    ("family revoked", rotation(4, 14, "revoked"), false),
                    ("another family named", rotation(1, 15, "old"), false),
                    ("live and unused", rotation(1, 11, "live"), true),
                    ("used just now", rotation(1, 16, "live"), false),
                ];
                for (name, r, wins) in cases {
                    assert_eq!(rotate(c, &r, NOW)?, wins, "{name}");
                    let stored = find(c, &r.successor.token_hash)?.is_some();
                    assert_eq!(stored, wins, "{name}: successor stored");
                }
                let (used, _) = find(c, &[1; 32])?.unwrap();
                assert_eq!(used.used_at, Some(NOW));
                assert_eq!(find(c, &[2; 32])?.unwrap().0.used_at, None);
                let minted = revoke_family(c, "live", NOW)?;
                assert_eq!(minted, vec![("jti-11".to_string(), NOW + 60)]);
                Ok(())
            })
            .unwrap();
    }
}
