//! The `change_log` table: a durable, sequence-numbered record of every change to the
//! revocation state (blocklisted jtis, token versions, revoked API keys, signing-key
//! states), and the [`Feed`] that hands committed rows to live subscribers.
//!
//! A change is appended with [`append`] inside the same store write as the change
//! itself, so it commits (or rolls back) with it and `seq` order is commit order. After
//! every COMMIT the writer thread reads the rows it has not yet published and
//! broadcasts them, before answering the batch's callers: a subscriber has been sent a
//! revocation no later than the revoker has been acknowledged.
//!
//! Sequence numbers start above 2^32 (see the migration): snapshot items are numbered
//! in the gap just below the oldest retained row, so they stay strictly increasing and
//! a resume from inside a snapshot is always "older than the log" and gets a new one.

use std::sync::{Arc, Mutex};

use super::db::{Db, OptionalExt, params};
use tokio::sync::broadcast;

use crate::error::Result;

/// One change to the revocation state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// An access token's jti is blocklisted until `expires_at` (its `exp`).
    RevokedJti {
        /// The jti.
        jti: String,
        /// Unix seconds; the entry may be dropped after it.
        expires_at: i64,
    },
    /// A subject's token version is now `version`.
    TokenVersion {
        /// `sub`.
        subject: String,
        /// Tokens with a smaller `ver` are inactive.
        version: u64,
    },
    /// An API key was revoked.
    RevokedApiKey {
        /// Its public id.
        key_id: String,
    },
    /// An API key was made, or changed other than by revocation (a rotation shortens
    /// its life): replicas load it again. Not a revocation, so never streamed.
    ApiKeyLive {
        /// Its public id.
        key_id: String,
    },
    /// A signing key entered `state`.
    SigningKey {
        /// RFC 7638 thumbprint.
        kid: String,
        /// `published`, `active`, `retired` or `revoked`.
        state: KeyState,
    },
}

impl Change {
    /// Whether revocation streams carry it: everything but [`Change::ApiKeyLive`],
    /// which only replicas need.
    pub(crate) fn streamed(&self) -> bool {
        !matches!(self, Change::ApiKeyLive { .. })
    }
}

/// A signing key's lifecycle state, as named on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// In the JWKS, not yet signing.
    Published,
    /// Signing new tokens.
    Active,
    /// No longer signing; verifies until its last token has expired.
    Retired,
    /// Emergency: verifies nothing any more.
    Revoked,
}

impl KeyState {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyState::Published => "published",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<KeyState> {
        Some(match s {
            "published" => KeyState::Published,
            "active" => KeyState::Active,
            "retired" => KeyState::Retired,
            "revoked" => KeyState::Revoked,
            _ => return None,
        })
    }
}

/// A change with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Logged {
    /// Strictly increasing, never reused.
    pub(crate) seq: u64,
    /// What changed.
    pub(crate) change: Change,
}

/// Appends `change` (made at `now`) to the log, inside the caller's transaction.
/// Returns its sequence number.
pub(crate) fn append(conn: &Db, now: i64, change: &Change) -> Result<u64> {
    let (kind, name, value, state): (&str, &str, i64, Option<&str>) = match change {
        Change::RevokedJti { jti, expires_at } => ("jti", jti, *expires_at, None),
        Change::TokenVersion { subject, version } => (
            "version",
            subject,
            i64::try_from(*version).unwrap_or(i64::MAX),
            None,
        ),
        Change::RevokedApiKey { key_id } => ("api_key", key_id, 0, None),
        Change::ApiKeyLive { key_id } => ("api_key_live", key_id, 0, None),
        Change::SigningKey { kid, state } => ("signing_key", kid, 0, Some(state.as_str())),
    };
    let seq: i64 = conn.query_row(
        "INSERT INTO change_log (at, kind, name, value, state) VALUES (?1, ?2, ?3, ?4, ?5)
             RETURNING seq",
        params![now, kind, name, value, state],
        |r| r.get(0),
    )?;
    Ok(seq as u64)
}

fn decode(kind: &str, name: String, value: i64, state: Option<String>) -> Option<Change> {
    Some(match kind {
        "jti" => Change::RevokedJti {
            jti: name,
            expires_at: value,
        },
        "version" => Change::TokenVersion {
            subject: name,
            version: value.max(0) as u64,
        },
        "api_key" => Change::RevokedApiKey { key_id: name },
        "api_key_live" => Change::ApiKeyLive { key_id: name },
        "signing_key" => Change::SigningKey {
            kid: name,
            state: KeyState::parse(state.as_deref()?)?,
        },
        _ => return None,
    })
}

/// Every row after `seq`, in order. A row this build cannot decode is skipped (and
/// logged) rather than stopping the feed: it can only come from a newer version.
pub(crate) fn after(conn: &Db, seq: u64) -> Result<Vec<Logged>> {
    let mut out = Vec::new();
    conn.for_each(
        "SELECT seq, kind, name, value, state FROM change_log WHERE seq > ?1 ORDER BY seq",
        params![seq as i64],
        |r| {
            let seq: i64 = r.get(0)?;
            let kind: String = r.get(1)?;
            match decode(&kind, r.get(2)?, r.get(3)?, r.get(4)?) {
                Some(change) => out.push(Logged {
                    seq: seq as u64,
                    change,
                }),
                None => tracing::warn!(seq, %kind, "change log: unknown row kind skipped"),
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// The last sequence number ever handed out (rows may since have been compacted).
pub(crate) fn last_seq(conn: &Db) -> Result<u64> {
    let sql = if conn.is_postgres() {
        "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
         FROM change_log_seq_seq"
    } else {
        "SELECT seq FROM sqlite_sequence WHERE name = 'change_log'"
    };
    let v: Option<i64> = conn.query_row(sql, params![], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// The oldest retained sequence number, if any row is retained.
pub(crate) fn oldest_seq(conn: &Db) -> Result<Option<u64>> {
    let v: Option<i64> =
        conn.query_row("SELECT min(seq) FROM change_log", params![], |r| r.get(0))?;
    Ok(v.map(|v| v.max(0) as u64))
}

/// Deletes up to `limit` rows written before `before`; returns how many.
pub(crate) fn purge(conn: &Db, before: i64, limit: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM change_log WHERE seq IN
           (SELECT seq FROM change_log WHERE at < ?1 ORDER BY seq LIMIT ?2)",
        params![before, limit],
    )?)
}

/// Committed changes, broadcast to live subscribers in commit order. Each message is
/// one committed batch. The ring is bounded: a receiver that falls more than its
/// capacity behind sees `Lagged` and is cut off; sending never waits.
#[derive(Clone, Debug)]
pub(crate) struct Feed {
    tx: broadcast::Sender<Arc<[Logged]>>,
    /// The last sequence number broadcast. The lock also keeps the writer and (on
    /// PostgreSQL) the tail from broadcasting the same rows twice or out of order.
    published: Arc<Mutex<u64>>,
    /// Set at shutdown: live streams end so the drain is not held up by them.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Feed {
    /// A feed keeping at most `capacity` batches for its slowest subscriber.
    pub(crate) fn new(capacity: usize) -> Feed {
        Feed {
            tx: broadcast::channel(capacity.max(1)).0,
            published: Arc::new(Mutex::new(0)),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Becomes `true` when the service is shutting down.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Tells every live stream to end (the service is shutting down).
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A new receiver of every batch committed from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<[Logged]>> {
        self.tx.subscribe()
    }

    /// Broadcasting starts after `seq` (the last one committed when the store opened).
    pub(crate) fn start_at(&self, seq: u64) {
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = seq;
    }

    /// Called by the writer thread after each COMMIT (and on PostgreSQL by the tail,
    /// for other replicas' commits): broadcasts the committed rows not yet broadcast.
    /// Cheap when there are none (an index seek). Returns how many it broadcast.
    pub(crate) fn publish_committed(&self, conn: &Db) -> Result<usize> {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let rows = after(conn, *published)?;
        let n = rows.len();
        if let Some(last) = rows.last() {
            *published = last.seq;
            // No subscriber is not an error: the log has it for later.
            let _ = self.tx.send(rows.into());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(include_str!("migrations/0006_change_log.sql"))
            .unwrap();
        c
    }

    #[test]
    fn every_kind_round_trips_in_order_and_sequences_are_never_reused() {
        let c = db();
        let c = Db::Sqlite(&c);
        let changes = [
            Change::RevokedJti {
                jti: "j".into(),
                expires_at: 99,
            },
            Change::TokenVersion {
                subject: "alice".into(),
                version: 3,
            },
            Change::RevokedApiKey {
                key_id: "0123456789abcdef".into(),
            },
            Change::SigningKey {
                kid: "k".into(),
                state: KeyState::Retired,
            },
        ];
        let seqs: Vec<u64> = changes
            .iter()
            .map(|ch| append(&c, 10, ch).unwrap())
            .collect();
        assert_eq!(seqs[0], (1 << 32) + 1);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let back: Vec<Change> = after(&c, 0)
            .unwrap()
            .into_iter()
            .map(|l| l.change)
            .collect();
        assert_eq!(back, changes);
        assert_eq!(after(&c, seqs[2]).unwrap().len(), 1);
        assert_eq!(oldest_seq(&c).unwrap(), Some(seqs[0]));

        assert_eq!(purge(&c, 11, 100).unwrap(), 4);
        assert_eq!(oldest_seq(&c).unwrap(), None);
        assert_eq!(last_seq(&c).unwrap(), seqs[3]);
        let next = append(&c, 12, &changes[0]).unwrap();
        assert_eq!(
            next,
            seqs[3] + 1,
            "compaction never makes a number reusable"
        );
    }
}
