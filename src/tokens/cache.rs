//! The verified-token cache: Introspect of a token already seen costs a hash and a
//! few memory lookups instead of a signature verification.
//!
//! Only what can never change for the same bytes is cached: "this signature verifies
//! under key `kid`, and these are its claims". Everything that *can* change is checked
//! again on every call, hit or miss:
//!
//! - here: the claim times against the clock (which tests, and NTP, may move), and
//!   that the key is still in its verification window;
//! - by the caller (`Authority::check_access_token`): the blocklist and the
//!   subject's token version.
//!
//! So a cached token that is revoked, bumped, expired, or whose key has left the set
//! is inactive on the very next call. Entries leave at the token's own `exp` and are
//! bounded both in number and in bytes.
//!
//! An entry is keyed by the SHA-256 of the token's signature segment, and holds the
//! token's header and payload, which a hit must match byte for byte (in constant
//! time). That is the whole token compared, for a quarter of the hashing: the key
//! hashes ~90 bytes instead of ~480. No usable token is kept: the header and payload
//! are no credential without the signature, and the signature is kept only hashed.
//! A forged token that reuses a cached signature under another payload is a miss,
//! goes through full verification, and is refused there; it neither reads nor
//! displaces the genuine entry.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use ring::digest;

use super::Jti;
use super::claims::AccessClaims;
use super::introspect::EncodedOnce;
use super::verify::{self, Reject, Rules};
use crate::clock::Clock;
use crate::keys::VerifyingKey;
use crate::secret::same_bytes;

/// Default bound on the number of cached tokens.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;
/// Default bound on the cache's size in bytes: about 14,000 typical 500-byte tokens.
pub const DEFAULT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// Bytes one entry costs besides its token's length, its kept header and payload, and
/// its Introspect answer (counted as the header and payload's length again):
/// the claims' struct and strings, allocation headers, and the cache's map, deque and
/// timer nodes. Measured before the header and payload were kept: resident memory grew
/// by about 1,700 bytes per cached 500-byte token; they add their own length.
const ENTRY_OVERHEAD: usize = 1_200;

/// SHA-256 of the token's signature segment.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 32]);

/// A key is its own hash: its first eight bytes. They are uniform, and chosen by no one
/// (an entry is made only for a token whose signature verified, and a lookup cannot aim
/// at a bucket without finding SHA-256 inputs for it): as good a hash as SipHash's over
/// all 32 bytes, which cost a tenth of a cache hit.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(head));
    }
}

/// Hashes a [`Key`] to its first eight bytes.
#[derive(Clone, Copy, Default)]
struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// See [`KeyHash`].
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only a [`Key`] is hashed here, through `write_u64`; anything else is folded in
    /// (FNV-1a), not lost.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A token whose signature and claims verified.
pub struct Verified {
    /// Its claims.
    pub claims: AccessClaims,
    /// Its jti, parsed.
    pub jti: Jti,
    /// The key that verified it (checked again on every use).
    pub key: Arc<VerifyingKey>,
    /// The token's `header.payload`, which a lookup must match.
    signed: Box<[u8]>,
    /// The gRPC Introspect answer about this token.
    pub(crate) answer: EncodedOnce,
    /// Estimated size, for the byte bound.
    weight: u32,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("claims", &self.claims)
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

/// Expires an entry at its token's `exp`.
struct UntilExp(Clock);

impl Expiry<Key, Arc<Verified>> for UntilExp {
    fn expire_after_create(&self, _: &Key, v: &Arc<Verified>, _: Instant) -> Option<Duration> {
        Some(until_exp(v.claims.exp, self.0.now()))
    }
}

fn until_exp(exp: i64, now: i64) -> Duration {
    Duration::from_secs(exp.saturating_sub(now).max(0) as u64)
}

/// Verified access tokens by SHA-256, with hit and miss counts.
pub struct VerifiedCache {
    entries: Cache<Key, Arc<Verified>, KeyHash>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// A cache of at most `max_entries` tokens and about `max_bytes` bytes. `clock`
    /// only times evictions; every answer is checked against the caller's `now`.
    pub fn new(max_entries: u64, max_bytes: u64, clock: Clock) -> Self {
        // One budget enforces both bounds: no entry weighs less than its share of
        // the bytes, so the budget never holds more than `max_entries` of them.
        let floor = u32::try_from(max_bytes / max_entries.max(1)).unwrap_or(u32::MAX);
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_: &Key, v: &Arc<Verified>| v.weight.max(floor))
            .expire_after(UntilExp(clock))
            .build_with_hasher(KeyHash);
        VerifiedCache {
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Verifies `token` against `rules`, from the cache when it was seen before.
    /// Blocklist and token-version checks are left to the caller.
    pub fn verify(&self, token: &str, rules: &Rules<'_>) -> Result<Arc<Verified>, Reject> {
        // No dot: not a JWS at all, and verification says so. (`memchr` searches
        // 32 bytes at a time, `str::rsplit_once` 8: ~90 instructions per hit
        // instead of ~370.)
        let (signed, signature) = match memchr::memrchr(b'.', token.as_bytes()) {
            Some(dot) => (&token[..dot], &token[dot + 1..]),
            None => ("", token),
        };
        let key = cache_key(signature);
        if let Some(hit) = self.entries.get(&key)
            && same_bytes(&hit.signed, signed.as_bytes())
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            recheck(&hit, rules)?;
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (claims, jti, key_used) = verify::verify_with_key(token, rules)?;
        // The answer, once made, is shorter than `header.payload` (its base64 JSON).
        let weight =
            u32::try_from(ENTRY_OVERHEAD + token.len() + 2 * signed.len()).unwrap_or(u32::MAX);
        let found = Arc::new(Verified {
            claims,
            jti,
            key: key_used,
            signed: signed.as_bytes().into(),
            answer: EncodedOnce::default(),
            weight,
        });
        self.entries.insert(key, found.clone());
        Ok(found)
    }

    /// Lookups answered from the cache.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that had to verify the signature.
    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Cached tokens (approximate while evictions are pending).
    pub(crate) fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Is the cache empty (approximately, like [`len`](Self::len))?
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the cache's Prometheus lines to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tessera_verified_cache_total Introspections of access tokens, by verified-token cache result.\n\
             # TYPE tessera_verified_cache_total counter\n\
             tessera_verified_cache_total{{result=\"hit\"}} {}\n\
             tessera_verified_cache_total{{result=\"miss\"}} {}",
            self.hits(),
            self.misses()
        );
        let _ = writeln!(
            out,
            "# HELP tessera_verified_cache_entries Access tokens in the verified-token cache.\n\
             # TYPE tessera_verified_cache_entries gauge\ntessera_verified_cache_entries {}",
            self.len()
        );
    }
}

fn cache_key(signature: &str) -> Key {
    let d = digest::digest(&digest::SHA256, signature.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Key(out)
}

/// What a cached verification cannot vouch for: the key may have left its window and
/// the clock may have moved past `exp` (or back before `nbf`).
fn recheck(v: &Verified, rules: &Rules<'_>) -> Result<(), Reject> {
    if !rules.keys.still_verifies(&v.key, rules.now) {
        return Err(Reject::UnknownKey);
    }
    verify::check_claims(&v.claims, rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlg;
    use crate::keys::Keyring;
    use crate::keys::seal::MasterKey;
    use crate::store::Store;

    const NOW: i64 = 1_000_000;

    async fn keyring(dir: &std::path::Path) -> Keyring {
        let store = Store::open(dir).expect("store");
        let master =
            MasterKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").expect("master");
        Keyring::open(store, master, SigningAlg::EdDSA, 3_700, NOW)
            .await
            .expect("keyring")
    }

    /// A key ring in a fresh store, and an empty cache of `max_entries` tokens.
    async fn setup(max_entries: u64) -> (tempfile::TempDir, Keyring, VerifiedCache) {
        let tmp = tempfile::tempdir().expect("tmp");
        let keys = keyring(tmp.path()).await;
        let cache = VerifiedCache::new(max_entries, 1 << 20, clock_at_now());
        (tmp, keys, cache)
    }

    fn token(keys: &Keyring, exp: i64) -> String {
        let (_, jti) = crate::tokens::new_jti();
        let claims = AccessClaims {
            iss: "https://issuer.test".into(),
            sub: "alice".into(),
            aud: vec!["api".into()],
            exp,
            nbf: NOW,
            iat: NOW,
            jti,
            scope: "read".into(),
            client_id: "c".into(),
            ver: 0,
            act: None,
            owner: None,
            extra: Default::default(),
        };
        keys.sign(&claims, NOW).expect("sign").0
    }

    /// The cache's eviction clock, set to the tests' `NOW`.
    fn clock_at_now() -> Clock {
        let clock = Clock::system();
        clock.advance(NOW - clock.now());
        clock
    }

    fn rules(keys: &Keyring, now: i64) -> Rules<'_> {
        Rules {
            keys,
            issuer: "https://issuer.test",
            max_lifetime: 3_600,
            now,
        }
    }

    #[tokio::test]
    async fn second_verify_is_a_hit_and_still_checks_time_and_key() {
        let (_tmp, keys, cache) = setup(1_000).await;
        let t = token(&keys, NOW + 600);

        let first = cache.verify(&t, &rules(&keys, NOW)).expect("verifies");
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        let again = cache.verify(&t, &rules(&keys, NOW + 1)).expect("cached");
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(Arc::ptr_eq(&first, &again));

        // Still in the cache, yet refused once the clock passes exp or goes before nbf.
        assert_eq!(
            cache.verify(&t, &rules(&keys, NOW + 600)).err(),
            Some(Reject::Expired)
        );
        assert_eq!(
            cache.verify(&t, &rules(&keys, NOW - 1)).err(),
            Some(Reject::NotYetValid)
        );
        assert_eq!(cache.hits(), 3);

        // The key leaves its window (rotation, then past the retire window).
        keys.rotate(NOW + 2, NOW + 2, "-", "test")
            .await
            .expect("rotate");
        assert!(cache.verify(&t, &rules(&keys, NOW + 3)).is_ok());
        assert_eq!(
            cache.verify(&t, &rules(&keys, NOW + 2 + 3_700)).err(),
            Some(Reject::UnknownKey)
        );
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let (_tmp, keys, cache) = setup(1_000).await;
        let t = token(&keys, NOW + 600);
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        for _ in 0..2 {
            assert!(cache.verify(&forged, &rules(&keys, NOW)).is_err());
        }
        assert_eq!((cache.hits(), cache.misses()), (0, 2));
        cache.entries.run_pending_tasks();
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn bounded_in_entries() {
        let (_tmp, keys, cache) = setup(8).await;
        for _ in 0..50 {
            let t = token(&keys, NOW + 600);
            cache.verify(&t, &rules(&keys, NOW)).expect("verifies");
        }
        cache.entries.run_pending_tasks();
        assert!(cache.len() <= 8, "{} entries", cache.len());
    }

    #[test]
    fn entries_live_until_exp() {
        assert_eq!(until_exp(1_600, 1_000), Duration::from_secs(600));
        assert_eq!(until_exp(1_000, 1_600), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_cached_signature_under_another_payload_is_a_miss_and_refused() {
        let (_tmp, keys, cache) = setup(1_000).await;
        let t = token(&keys, NOW + 600);
        let other = token(&keys, NOW + 600);
        let genuine = cache.verify(&t, &rules(&keys, NOW)).expect("verifies");

        // `other`'s header and payload (another jti) with `t`'s signature.
        let (_, signature) = t.rsplit_once('.').expect("jws");
        let (signed, _) = other.rsplit_once('.').expect("jws");
        let forged = format!("{signed}.{signature}");
        assert_eq!(
            cache.verify(&forged, &rules(&keys, NOW)).err(),
            Some(Reject::Signature)
        );
        assert_eq!((cache.hits(), cache.misses()), (0, 2));

        // The genuine entry is still there and still answers.
        let again = cache.verify(&t, &rules(&keys, NOW)).expect("cached");
        assert!(Arc::ptr_eq(&genuine, &again));
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn key_is_the_digest_of_the_signature_segment() {
        assert!(cache_key("c") != cache_key("d"));
        assert_eq!(
            cache_key("sig").0.as_slice(),
            digest::digest(&digest::SHA256, b"sig").as_ref()
        );
    }

    #[test]
    fn a_key_hashes_to_its_first_eight_bytes() {
        use std::hash::BuildHasher;
        let key = cache_key("sig");
        let head = u64::from_ne_bytes(key.0[..8].try_into().expect("8 bytes"));
        assert_eq!(KeyHash.hash_one(key), head);
        assert_ne!(KeyHash.hash_one(cache_key("other")), head);
        // Anything else still spreads.
        assert_ne!(KeyHash.hash_one("a"), KeyHash.hash_one("b"));
    }
}
