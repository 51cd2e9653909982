//! In-memory revocation state: the jti blocklist and per-subject token versions.
//!
//! These are caches of the store, kept exact: they are filled from SQLite at start and
//! updated right after every committed write. Lookups are lock-free (`papaya`), so
//! Introspect never waits on a revocation in progress.

use crate::tokens::Jti;

/// Blocklist and token versions.
#[derive(Default)]
pub struct Revocations {
    /// Revoked jti → the token's `exp` (entry kept until then).
    blocklist: papaya::HashMap<Jti, i64>,
    /// Subject → current token version (absent = 0).
    versions: papaya::HashMap<String, u64>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("blocklisted", &self.blocklist.len())
            .field("versions", &self.versions.len())
            .finish()
    }
}

impl Revocations {
    /// Empty, with room for `blocked` blocklist entries (no rehashing while loading).
    pub fn with_capacity(blocked: usize) -> Self {
        Revocations {
            blocklist: papaya::HashMap::with_capacity(blocked),
            versions: papaya::HashMap::default(),
        }
    }

    /// Is this jti revoked?
    pub fn is_blocked(&self, jti: Jti) -> bool {
        self.blocklist.pin().contains_key(&jti)
    }

    /// Adds a revoked jti (after its durable write).
    pub fn block(&self, jti: Jti, exp: i64) {
        self.blocklist
            .pin()
            .update_or_insert(jti, |old| (*old).max(exp), exp);
    }

    /// The subject's current token version.
    pub fn version(&self, subject: &str) -> u64 {
        self.versions.pin().get(subject).copied().unwrap_or(0)
    }

    /// Records a subject's version (after its durable write). Never moves backwards.
    pub fn set_version(&self, subject: &str, version: u64) {
        self.versions.pin().update_or_insert(
            subject.to_string(),
            |old| (*old).max(version),
            version,
        );
    }

    /// Drops blocklist entries of tokens that expired before `before`.
    pub fn purge(&self, before: i64) -> usize {
        let map = self.blocklist.pin();
        let n = map.len();
        map.retain(|_, exp| *exp >= before);
        n - map.len()
    }

    /// Number of blocklisted jtis.
    pub(crate) fn blocklist_len(&self) -> usize {
        self.blocklist.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_purge() {
        let r = Revocations::default();
        r.block(1, 100);
        r.block(2, 200);
        assert!(r.is_blocked(1) && r.is_blocked(2) && !r.is_blocked(3));
        assert_eq!(r.purge(150), 1);
        assert!(!r.is_blocked(1) && r.is_blocked(2));
    }

    #[test]
    fn versions_only_move_forward() {
        let r = Revocations::default();
        assert_eq!(r.version("alice"), 0);
        r.set_version("alice", 3);
        r.set_version("alice", 2);
        assert_eq!(r.version("alice"), 3);
    }
}
