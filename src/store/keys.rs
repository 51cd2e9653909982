//! The `signing_keys` table. Private halves are sealed before they get here.

use rusqlite::{Connection, OptionalExtension, params};

use super::changes::{self, Change, KeyState};
use crate::error::Result;

/// One signing key as stored.
#[derive(Clone)]
pub struct KeyRow {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// JWS algorithm (`EdDSA`, `ES256`).
    pub alg: String,
    /// Raw public key (32-byte Ed25519, 65-byte SEC1 P-256).
    pub public_key: Vec<u8>,
    /// AEAD-sealed PKCS#8 private key.
    pub sealed_private: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stopped signing, if it has.
    pub retired_at: Option<i64>,
    /// When it stops verifying and leaves the JWKS, if retired.
    pub verify_until: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("retired_at", &self.retired_at)
            .field("verify_until", &self.verify_until)
            .finish_non_exhaustive()
    }
}

/// Inserts a new key and records its state (active unless inserted retired) in the
/// change log.
pub fn insert(conn: &Connection, k: &KeyRow) -> Result<()> {
    conn.execute(
        "INSERT INTO signing_keys (kid, alg, public_key, sealed_private, created_at, retired_at, verify_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![k.kid, k.alg, k.public_key, k.sealed_private, k.created_at, k.retired_at, k.verify_until],
    )?;
    let state = if k.retired_at.is_none() {
        KeyState::Active
    } else {
        KeyState::Retired
    };
    changes::append(
        conn,
        k.created_at,
        &Change::SigningKey {
            kid: k.kid.clone(),
            state,
        },
    )?;
    Ok(())
}

/// Retires every signing key other than `except`, keeping them verifiable until
/// `verify_until`, and records each retirement in the change log.
pub fn retire_others(conn: &Connection, except: &str, at: i64, verify_until: i64) -> Result<()> {
    let retired: Vec<String> = conn
        .prepare(
            "UPDATE signing_keys SET retired_at = ?2, verify_until = ?3
             WHERE kid != ?1 AND retired_at IS NULL RETURNING kid",
        )?
        .query_map(params![except, at, verify_until], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for kid in retired {
        changes::append(
            conn,
            at,
            &Change::SigningKey {
                kid,
                state: KeyState::Retired,
            },
        )?;
    }
    Ok(())
}

/// Every key with its state at `now`, for a change-feed snapshot: the signing key is
/// `active`, one that stopped signing but still verifies is `retired`, one revoked in
/// the last [`REVOKED_IN_SNAPSHOT`] is `revoked`; other keys are gone and not listed.
pub fn states(conn: &Connection, now: i64) -> Result<Vec<(String, KeyState)>> {
    let mut out: Vec<(String, KeyState)> = load_live(conn, now)?
        .into_iter()
        .map(|k| {
            let state = if k.retired_at.is_none() {
                KeyState::Active
            } else {
                KeyState::Retired
            };
            (k.kid, state)
        })
        .collect();
    let revoked = conn
        .prepare("SELECT kid FROM signing_keys WHERE revoked_at > ?1 ORDER BY revoked_at, kid")?
        .query_map([now - REVOKED_IN_SNAPSHOT], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    out.extend(revoked.into_iter().map(|kid| (kid, KeyState::Revoked)));
    Ok(out)
}

/// Every key still verifying at `now` (the active one and retired ones in their window).
pub fn load_live(conn: &Connection, now: i64) -> Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare(
        "SELECT kid, alg, public_key, sealed_private, created_at, retired_at, verify_until
         FROM signing_keys WHERE revoked_at IS NULL AND (verify_until IS NULL OR verify_until > ?1)
         ORDER BY created_at, kid",
    )?;
    let rows = stmt.query_map([now], |r| {
        Ok(KeyRow {
            kid: r.get(0)?,
            alg: r.get(1)?,
            public_key: r.get(2)?,
            sealed_private: r.get(3)?,
            created_at: r.get(4)?,
            retired_at: r.get(5)?,
            verify_until: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A signing key as an operator sees it: public facts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// JWS algorithm.
    pub alg: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stopped signing, if it has.
    pub retired_at: Option<i64>,
    /// When it stops (or stopped) verifying, if retired.
    pub verify_until: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// Every key ever held, newest first.
pub fn list(conn: &Connection) -> Result<Vec<KeyListing>> {
    let mut stmt = conn.prepare(
        "SELECT kid, alg, created_at, retired_at, verify_until, revoked_at
         FROM signing_keys ORDER BY created_at DESC, rowid DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KeyListing {
            kid: r.get(0)?,
            alg: r.get(1)?,
            created_at: r.get(2)?,
            retired_at: r.get(3)?,
            verify_until: r.get(4)?,
            revoked_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What a key was when asked about: `None` if unknown, else (was it signing, was it
/// already revoked).
pub fn state(conn: &Connection, kid: &str) -> Result<Option<(bool, bool)>> {
    Ok(conn
        .prepare_cached(
            "SELECT retired_at IS NULL, revoked_at IS NOT NULL FROM signing_keys WHERE kid = ?1",
        )?
        .query_row([kid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Revokes a key: it stops signing and verifying at `at` and leaves the JWKS.
/// Records the revocation in the change log, so watchers and verifiers drop the key too.
pub fn revoke(conn: &Connection, kid: &str, at: i64) -> Result<()> {
    let changed = conn.execute(
        "UPDATE signing_keys SET revoked_at = ?2, retired_at = coalesce(retired_at, ?2),
                verify_until = min(coalesce(verify_until, ?2), ?2)
         WHERE kid = ?1 AND revoked_at IS NULL",
        params![kid, at],
    )?;
    if changed > 0 {
        changes::append(
            conn,
            at,
            &Change::SigningKey {
                kid: kid.to_string(),
                state: KeyState::Revoked,
            },
        )?;
    }
    Ok(())
}

/// How long a revoked key stays in a change-feed snapshot: past any token it could have
/// signed, so a verifier holding an old JWKS still learns to refuse it.
pub const REVOKED_IN_SNAPSHOT: i64 = 7 * 86_400;
