//! The `signing_keys` table. Private halves are sealed before they get here.

use rusqlite::{Connection, params};

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
/// `active`, one that stopped signing but still verifies is `retired`; keys past their
/// window are gone and not listed.
pub fn states(conn: &Connection, now: i64) -> Result<Vec<(String, KeyState)>> {
    Ok(load_live(conn, now)?
        .into_iter()
        .map(|k| {
            let state = if k.retired_at.is_none() {
                KeyState::Active
            } else {
                KeyState::Retired
            };
            (k.kid, state)
        })
        .collect())
}

/// Every key still verifying at `now` (the active one and retired ones in their window).
pub fn load_live(conn: &Connection, now: i64) -> Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare(
        "SELECT kid, alg, public_key, sealed_private, created_at, retired_at, verify_until
         FROM signing_keys WHERE verify_until IS NULL OR verify_until > ?1 ORDER BY created_at, kid",
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
