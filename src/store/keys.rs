//! The `signing_keys` table. Private halves are sealed before they get here.
//!
//! A key's state is a function of its stored timestamps and the time of asking:
//! `published` until `activates_at`, `active` from then until `retired_at`, `retired`
//! until `verify_until`, then gone; `revoked` overrides all. A rotation therefore writes
//! the whole hand-over at once (the successor's `activates_at` and its predecessor's
//! `retired_at`, the same instant), and activation needs no write at all: any process,
//! before or after a restart, reads the same answer. Only the change-log entries for
//! the transitions that happen by the clock are written later, by [`announce`], once.

use super::db::{Db, OptionalExt, params};

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
    /// When it starts (or started) signing; it is in the JWKS from `created_at`.
    pub activates_at: i64,
    /// When it stops (or stopped) signing, if scheduled.
    pub retired_at: Option<i64>,
    /// When it stops verifying and leaves the JWKS, if retired.
    pub verify_until: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("verify_until", &self.verify_until)
            .finish_non_exhaustive()
    }
}

/// What a key is at `now`, from its timestamps alone.
pub(crate) fn state_at(
    activates_at: i64,
    retired_at: Option<i64>,
    revoked: bool,
    now: i64,
) -> KeyState {
    if revoked {
        KeyState::Revoked
    } else if retired_at.is_some_and(|r| r <= now) {
        KeyState::Retired
    } else if activates_at > now {
        KeyState::Published
    } else {
        KeyState::Active
    }
}

/// Inserts a new key as it is. Its first state reaches the change log through
/// [`announce`], which every writer of keys calls before committing.
pub(crate) fn insert(conn: &Db, k: &KeyRow) -> Result<()> {
    conn.execute(
        "INSERT INTO signing_keys (kid, alg, public_key, sealed_private, created_at, activates_at, retired_at, verify_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![k.kid, k.alg, k.public_key, k.sealed_private, k.created_at, k.activates_at, k.retired_at, k.verify_until],
    )?;
    Ok(())
}

/// Schedules every key other than `except` that would still sign at `at` to retire at
/// `at`, verifying until `verify_until`.
pub(crate) fn retire_others(conn: &Db, except: &str, at: i64, verify_until: i64) -> Result<()> {
    conn.execute(
        "UPDATE signing_keys SET retired_at = ?2, verify_until = ?3
         WHERE kid != ?1 AND revoked_at IS NULL AND (retired_at IS NULL OR retired_at > ?2)",
        params![except, at, verify_until],
    )?;
    Ok(())
}

/// The outcome of [`schedule_successor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scheduled {
    /// The key that takes over.
    pub(crate) kid: String,
    /// When it signs.
    pub(crate) activates_at: i64,
    /// False when a successor was already waiting and was kept instead.
    pub(crate) inserted: bool,
}

/// Publishes `successor` to sign from its `activates_at` and hands over to it: the key
/// signing until then retires at that same instant and verifies `retire_window` longer.
///
/// At most one key waits at a time. If one already does, it is kept (the check runs in
/// the caller's transaction, so concurrent rotations agree on one successor): returned
/// as it is, or, when `successor.activates_at <= now` (rotate now), moved to sign at
/// `now` — it has been in the JWKS longer than any fresh key could be.
pub(crate) fn schedule_successor(
    conn: &Db,
    successor: &KeyRow,
    now: i64,
    retire_window: i64,
) -> Result<Scheduled> {
    let waiting: Option<(String, i64)> = conn
        .query_row(
            "SELECT kid, activates_at FROM signing_keys
             WHERE revoked_at IS NULL AND activates_at > ?1 AND (retired_at IS NULL OR retired_at > activates_at)
             ORDER BY activates_at, kid LIMIT 1",
            params![now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let scheduled = match waiting {
        Some((kid, activates_at)) if successor.activates_at > now => {
            return Ok(Scheduled {
                kid,
                activates_at,
                inserted: false,
            });
        }
        Some((kid, _)) => {
            conn.execute(
                "UPDATE signing_keys SET activates_at = ?2 WHERE kid = ?1",
                params![kid, now],
            )?;
            Scheduled {
                kid,
                activates_at: now,
                inserted: false,
            }
        }
        None => {
            insert(conn, successor)?;
            Scheduled {
                kid: successor.kid.clone(),
                activates_at: successor.activates_at,
                inserted: true,
            }
        }
    };
    let at = scheduled.activates_at;
    retire_others(conn, &scheduled.kid, at, at.saturating_add(retire_window))?;
    announce(conn, now)?;
    Ok(scheduled)
}

/// Cancels a scheduled hand-over (its successor was revoked while waiting): the key
/// signing now keeps signing.
pub(crate) fn unschedule(conn: &Db, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE signing_keys SET retired_at = NULL, verify_until = NULL
         WHERE revoked_at IS NULL AND retired_at > ?1",
        params![now],
    )?;
    Ok(())
}

/// Writes to the change log every state a key has entered by `now` that is not there
/// yet, and remembers it. Idempotent: a second call, here or in another process, finds
/// nothing to write. Within one call activations come before retirements, so a reader
/// of the log always knows a signing key.
pub(crate) fn announce(conn: &Db, now: i64) -> Result<usize> {
    let mut due: Vec<(String, KeyState)> = conn
        .query_map(
            "SELECT kid, activates_at, retired_at, announced FROM signing_keys
             WHERE revoked_at IS NULL AND (announced IS NULL OR announced != 'retired')
             ORDER BY activates_at, created_at, kid",
            params![],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<i64>(1)?,
                    r.get::<Option<i64>>(2)?,
                    r.get::<Option<String>>(3)?,
                ))
            },
        )?
        .into_iter()
        .filter_map(|(kid, activates_at, retired_at, announced)| {
            let state = state_at(activates_at, retired_at, false, now);
            (announced.as_deref() != Some(state.as_str())).then_some((kid, state))
        })
        .collect();
    due.sort_by_key(|(_, s)| match s {
        KeyState::Published => 0,
        KeyState::Active => 1,
        KeyState::Retired => 2,
        KeyState::Revoked => 3,
    });
    for (kid, state) in &due {
        conn.execute(
            "UPDATE signing_keys SET announced = ?2 WHERE kid = ?1",
            params![kid, state.as_str()],
        )?;
        changes::append(
            conn,
            now,
            &Change::SigningKey {
                kid: kid.clone(),
                state: *state,
            },
        )?;
    }
    Ok(due.len())
}

/// Every key with its state at `now`, for a change-feed snapshot: published, active and
/// retired keys still in the JWKS, and keys revoked in the last [`REVOKED_IN_SNAPSHOT`];
/// other keys are gone and not listed.
pub(crate) fn states(conn: &Db, now: i64) -> Result<Vec<(String, KeyState)>> {
    let mut out: Vec<(String, KeyState)> = load_live(conn, now)?
        .into_iter()
        .map(|k| {
            let state = state_at(k.activates_at, k.retired_at, false, now);
            (k.kid, state)
        })
        .collect();
    let revoked: Vec<String> = conn.query_map(
        "SELECT kid FROM signing_keys WHERE revoked_at > ?1 ORDER BY revoked_at, kid",
        params![now - REVOKED_IN_SNAPSHOT],
        |r| r.get(0),
    )?;
    out.extend(revoked.into_iter().map(|kid| (kid, KeyState::Revoked)));
    Ok(out)
}

/// Every key still verifying at `now` (published, active, and retired ones in their
/// window), oldest first.
pub fn load_live(conn: &Db, now: i64) -> Result<Vec<KeyRow>> {
    Ok(conn.query_map("SELECT kid, alg, public_key, sealed_private, created_at, activates_at, retired_at, verify_until
         FROM signing_keys WHERE revoked_at IS NULL AND (verify_until IS NULL OR verify_until > ?1)
         ORDER BY activates_at, created_at, kid", params![now], |r| {
        Ok(KeyRow {
            kid: r.get(0)?,
            alg: r.get(1)?,
            public_key: r.get(2)?,
            sealed_private: r.get(3)?,
            created_at: r.get(4)?,
            activates_at: r.get(5)?,
            retired_at: r.get(6)?,
            verify_until: r.get(7)?,
        })
    })?)
}

/// A signing key as an operator sees it: public facts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyListing {
    /// RFC 7638 thumbprint.
    pub(crate) kid: String,
    /// JWS algorithm.
    pub(crate) alg: String,
    /// Its state when listed.
    pub(crate) state: KeyState,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// When it starts (or started) signing.
    pub(crate) activates_at: i64,
    /// When it stops (or stopped) signing, if scheduled.
    pub(crate) retired_at: Option<i64>,
    /// When it stops (or stopped) verifying, if retired.
    pub(crate) verify_until: Option<i64>,
    /// When it was revoked, if it was.
    pub(crate) revoked_at: Option<i64>,
}

/// Every key ever held, newest first, with its state at `now`.
pub(crate) fn list(conn: &Db, now: i64) -> Result<Vec<KeyListing>> {
    // Insertion order breaks ties: SQLite's rowid, PostgreSQL's identity column.
    let inserted = if conn.is_postgres() { "ord" } else { "rowid" };
    let sql = format!(
        "SELECT kid, alg, created_at, activates_at, retired_at, verify_until, revoked_at
         FROM signing_keys ORDER BY activates_at DESC, created_at DESC, {inserted} DESC"
    );
    Ok(conn.query_map(&sql, params![], |r| {
        let activates_at: i64 = r.get(3)?;
        let retired_at: Option<i64> = r.get(4)?;
        let revoked_at: Option<i64> = r.get(6)?;
        Ok(KeyListing {
            kid: r.get(0)?,
            alg: r.get(1)?,
            state: state_at(activates_at, retired_at, revoked_at.is_some(), now),
            created_at: r.get(2)?,
            activates_at,
            retired_at,
            verify_until: r.get(5)?,
            revoked_at,
        })
    })?)
}

/// What a key is at `now`, or `None` if unknown.
pub(crate) fn state(conn: &Db, kid: &str, now: i64) -> Result<Option<KeyState>> {
    Ok(conn
        .query_row(
            "SELECT activates_at, retired_at, revoked_at IS NOT NULL FROM signing_keys WHERE kid = ?1",
            params![kid], |r| {
            Ok(state_at(r.get(0)?, r.get(1)?, r.get(2)?, now))
        })
        .optional()?)
}

/// Revokes a key: it stops signing and verifying at `at` and leaves the JWKS.
/// Records the revocation in the change log, so watchers and verifiers drop the key too.
pub(crate) fn revoke(conn: &Db, kid: &str, at: i64) -> Result<()> {
    let changed = conn.execute(
        "UPDATE signing_keys SET revoked_at = ?2,
                retired_at = CASE WHEN retired_at < ?2 THEN retired_at ELSE ?2 END,
                verify_until = CASE WHEN verify_until < ?2 THEN verify_until ELSE ?2 END,
                announced = 'revoked'
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
pub(crate) const REVOKED_IN_SNAPSHOT: i64 = 7 * 86_400;
