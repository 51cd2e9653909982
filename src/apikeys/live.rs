//! Live API keys in memory: who is calling, with which scopes.
//!
//! Filled from the store at start and updated after every committed issue or revoke,
//! so a check is a hash, a lock-free map lookup and a constant-time compare — no I/O.
//! `last_used_at` is recorded in memory and flushed to SQLite in batches. A key with a
//! rate limit carries its limiter here, one atomic per key, so admitting a call takes
//! no lock either.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::apikeys;
use crate::auth::{AuthFailure, Principal};
use crate::ratelimit::Limiter;
use crate::store::apikeys::ApiKeyRow;
use crate::tokens::EncodedOnce;

/// A live API key as the hot path sees it.
#[derive(Debug)]
pub struct Caller {
    /// Stored record (hash, owner, scopes, expiry).
    pub(crate) row: ApiKeyRow,
    /// The caller this key authenticates, built once: a call clones one `Arc`.
    pub(crate) principal: Arc<Principal>,
    /// Last use in Unix seconds, not yet flushed when > `flushed`.
    last_used: AtomicI64,
    flushed: AtomicI64,
    /// The key's rate limiter; `None` (no limit) costs nothing per call. Shared with
    /// the record that replaces this one after a rotation, so a rotation does not
    /// refill the bucket.
    limiter: Option<Arc<Limiter>>,
    /// The gRPC Introspect answer about this key. A changed record is a new `Caller`,
    /// with an answer of its own.
    pub(crate) answer: EncodedOnce,
}

impl Caller {
    /// Takes one call from the key's rate limit at `now` (the clock is read here
    /// if not given, and only for a limited key): `Err(wait)` when over it.
    pub(crate) fn admit(&self, now: Option<std::time::Instant>) -> Result<(), std::time::Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l.acquire_at_instant(now.unwrap_or_else(std::time::Instant::now)),
        }
    }
}

/// Every live API key by id.
#[derive(Default)]
pub(crate) struct Callers {
    keys: papaya::HashMap<String, Arc<Caller>>,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callers")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Callers {
    /// Adds (or replaces) a key after its durable write.
    pub(crate) fn insert(&self, row: ApiKeyRow) {
        let id = row.id.clone();
        self.keys.pin().insert(
            id,
            Arc::new(Caller {
                principal: Arc::new(Principal {
                    key_id: row.id.as_str().into(),
                    owner: row.owner.as_str().into(),
                    scopes: row.scopes.clone().into(),
                }),
                limiter: row.rate_limit.map(|l| Arc::new(Limiter::new(l))),
                row,
                last_used: AtomicI64::new(0),
                flushed: AtomicI64::new(0),
                answer: EncodedOnce::default(),
            }),
        );
    }

    /// Moves a live key's expiry (after a rotation), keeping its recorded use.
    pub(crate) fn set_expiry(&self, id: &str, expires_at: i64) {
        let keys = self.keys.pin();
        if let Some(old) = keys.get(id) {
            let mut row = old.row.clone();
            row.expires_at = expires_at;
            keys.insert(
                id.to_string(),
                Arc::new(Caller {
                    principal: old.principal.clone(),
                    row,
                    last_used: AtomicI64::new(old.last_used.load(Ordering::Relaxed)),
                    flushed: AtomicI64::new(old.flushed.load(Ordering::Relaxed)),
                    limiter: old.limiter.clone(),
                    answer: EncodedOnce::default(),
                }),
            );
        }
    }

    /// Removes a revoked key.
    pub(crate) fn remove(&self, id: &str) {
        self.keys.pin().remove(id);
    }

    /// The key with this id, if it is not revoked (it may have expired).
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Caller>> {
        self.keys.pin().get(id).cloned()
    }

    /// Is a key with this id live (not revoked, maybe expired)?
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.keys.pin().contains_key(id)
    }

    /// Checks a presented key: well formed, known, same environment, hash matches in
    /// constant time, not expired at `now`. Records the use.
    pub(crate) fn check(&self, key: &str, now: i64) -> Option<Arc<Caller>> {
        self.verify(key, now).ok()
    }

    /// As [`Callers::check`], saying why a key is refused. A revoked key is no longer
    /// in memory, so it is `UnknownKey`.
    pub(crate) fn verify(&self, key: &str, now: i64) -> Result<Arc<Caller>, AuthFailure> {
        // The structure finds the key; the stored hash vouches for the rest. Only a
        // refusal pays for the checksum, to tell a mistyped key from a wrong one.
        let parsed = apikeys::split(key).ok_or(AuthFailure::Malformed)?;
        let refused = |reason| match apikeys::parse(key) {
            None => AuthFailure::Malformed,
            Some(_) => reason,
        };
        let caller = self
            .keys
            .pin()
            .get(parsed.id)
            .cloned()
            .ok_or_else(|| refused(AuthFailure::UnknownKey))?;
        if !apikeys::verify(key, &caller.row.secret_hash) {
            return Err(refused(AuthFailure::BadSecret));
        }
        if caller.row.environment != parsed.environment {
            return Err(AuthFailure::WrongEnvironment);
        }
        if now >= caller.row.expires_at {
            return Err(AuthFailure::Expired);
        }
        caller.last_used.fetch_max(now, Ordering::Relaxed);
        Ok(caller)
    }

    /// Uses not yet written to the store; marks them written.
    pub(crate) fn take_unflushed(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for (id, c) in self.keys.pin().iter() {
            let used = c.last_used.load(Ordering::Relaxed);
            if used > c.flushed.swap(used, Ordering::Relaxed) {
                out.push((id.clone(), used));
            }
        }
        out
    }

    /// Drops keys that expired before `now`.
    pub(crate) fn purge(&self, now: i64) {
        self.keys.pin().retain(|_, c| c.row.expires_at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: &str) -> ApiKeyRow {
        ApiKeyRow {
            id: id.into(),
            secret_hash: apikeys::hash(key),
            owner: "o".into(),
            name: "n".into(),
            environment: "prod".into(),
            scopes: vec!["s".into()],
            exchange_audiences: vec![],
            created_at: 0,
            expires_at: 100,
            revoked_at: None,
            rate_limit: None,
        }
    }

    /// Changes one character in the middle of the secret part.
    fn mistype(key: &str) -> String {
        let at = key.len() - 20;
        let c = if &key[at..=at] == "A" { "B" } else { "A" };
        format!("{}{c}{}", &key[..at], &key[at + 1..])
    }

    #[test]
    fn a_refusal_says_why_though_only_refusals_check_the_checksum() {
        let callers = Callers::default();
        let (id, key) = apikeys::generate("prod");
        callers.insert(row(&id, key.expose()));
        let key = key.expose();
        assert!(callers.verify(key, 1).is_ok());

        // Same id and structure, a typo: the checksum catches it before the hash.
        assert!(matches!(
            callers.verify(&mistype(key), 1),
            Err(AuthFailure::Malformed)
        ));
        // Well formed, same id, another secret.
        let (_, other) = apikeys::generate("prod");
        let other = other
            .expose()
            .replacen(apikeys::split(other.expose()).unwrap().id, &id, 1);
        let body = &other[..other.len() - 6];
        let wrong = format!("{body}{}", apikeys::format::checksum(body));
        assert!(apikeys::parse(&wrong).is_some());
        assert!(matches!(
            callers.verify(&wrong, 1),
            Err(AuthFailure::BadSecret)
        ));
        // Well formed, unknown id; and the same with a typo.
        let (_, stranger) = apikeys::generate("prod");
        assert!(matches!(
            callers.verify(stranger.expose(), 1),
            Err(AuthFailure::UnknownKey)
        ));
        assert!(matches!(
            callers.verify(&mistype(stranger.expose()), 1),
            Err(AuthFailure::Malformed)
        ));
        assert!(matches!(
            callers.verify("tsk_prod_x", 1),
            Err(AuthFailure::Malformed)
        ));
        assert!(matches!(
            callers.verify(key, 100),
            Err(AuthFailure::Expired)
        ));
    }
}
