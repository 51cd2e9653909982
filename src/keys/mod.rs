//! Signing keys: the ring-backed `jsonwebtoken` provider ([`provider`]), sealed
//! storage ([`seal`]), the in-memory key set and its JWKS (`set`), rotation and
//! revocation (`lifecycle`), and RSA key import (`import`).
//!
//! The [`Keyring`] holds the signing key, its published successor if one is waiting,
//! and every key still allowed to verify, in one immutable [`KeySet`] swapped
//! atomically: readers never lock.
//!
//! Publish before sign: a successor is in the JWKS from the moment it is stored and
//! signs only from its `activates_at`, at least `key_publish_lead` later, so a
//! verifier that caches the JWKS has it before the first token it signs. Signing
//! compares `now` with that instant on every call (one atomic load and a compare), so
//! activation is exact without waiting for a timer; housekeeping then reloads the set
//! and logs the transition. A retired key keeps verifying until the last token it
//! could have signed has expired (`max_access_token_ttl` after retirement), then
//! leaves the JWKS.

pub(crate) mod import;
pub mod jwk;
mod lifecycle;
pub mod provider;
pub mod seal;
mod set;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use jsonwebtoken::Header;

use crate::config::SigningAlg;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};
use crate::store::keys as rows;
pub(crate) use lifecycle::Rotation;
use seal::MasterKey;
pub use set::{KeySet, SigningKey, VerifyingKey};
use set::{build_set, warm_active};

/// The `max-age` of the served JWKS, in seconds. The default `key_publish_lead` is
/// derived from it: a verifier that cached the JWKS just before a rotation refetches
/// it before the successor signs.
pub(crate) const JWKS_MAX_AGE_SECS: u64 = 60;

/// The `Cache-Control` of the served JWKS: [`JWKS_MAX_AGE_SECS`] spelled out.
pub(crate) const JWKS_CACHE_CONTROL: &str = "public, max-age=60";

/// Signing and verification keys, loaded from and persisted to the store.
pub struct Keyring {
    set: ArcSwap<KeySet>,
    master: MasterKey,
    store: Store,
    alg: SigningAlg,
    /// How long a retired key keeps verifying.
    retire_window: i64,
    /// Hands out reload tickets, in the order reloads start.
    reload_tickets: AtomicU64,
    /// The ticket of the reload whose set is in place.
    newest_reload: Mutex<u64>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.set.load().active.kid)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads the keys from the store, generating the first one if there is none.
    pub async fn open(
        store: Store,
        master: MasterKey,
        alg: SigningAlg,
        retire_window: i64,
        now: i64,
    ) -> Result<Self> {
        provider::install();
        let mut live = store.read(move |c| rows::load_live(c, now)).await?;
        if !live.iter().any(|k| k.retired_at.is_none()) {
            let row = lifecycle::fresh_row(alg, &master, now, now)?;
            // Check-and-insert in one transaction: concurrent first starts make one key.
            store
                .write(move |c| {
                    if rows::load_live(c, now)?
                        .iter()
                        .any(|k| k.retired_at.is_none())
                    {
                        return Ok(());
                    }
                    rows::insert(c, &row)?;
                    audit::append(c, &system_audit(now, "key.created", &row.kid))
                })
                .await?;
            live = store.read(move |c| rows::load_live(c, now)).await?;
        }
        // Transitions that fell due while no process was running are logged now.
        store
            .write(move |c| rows::announce(c, now).map(|_| ()))
            .await?;
        let set = build_set(&live, &master, now).map_err(|e| match e {
            // The operator must learn which database holds keys this master key can't open.
            Error::Internal(cause) => {
                Error::internal(format!("signing keys in {}: {cause}", store.describe()))
            }
            other => other,
        })?;
        warm_active(&set)?;
        tracing::info!(kid = %set.active.kid, next = ?set.next.as_ref().map(|n| &n.kid), keys = set.verifying.len(), "signing keys loaded");
        Ok(Keyring {
            set: ArcSwap::from_pointee(set),
            master,
            store,
            alg,
            retire_window,
            reload_tickets: AtomicU64::new(0),
            newest_reload: Mutex::new(0),
        })
    }

    /// The current key set (cheap; lock-free).
    pub fn current(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// A key allowed to verify at `now`, by kid.
    pub(crate) fn verifying(&self, kid: &str, now: i64) -> Option<Arc<VerifyingKey>> {
        let set = self.set.load();
        let k = set.verifying.get(kid)?;
        k.verifies_at(now).then(|| k.clone())
    }

    /// Is `key`, handed out by [`verifying`](Self::verifying), still allowed to verify
    /// at `now`? While the set that holds it is current, found by address among the
    /// few keys of the set, which costs less than hashing its kid; after a reload (a
    /// new set of new keys), by kid.
    pub(crate) fn still_verifies(&self, key: &Arc<VerifyingKey>, now: i64) -> bool {
        let set = self.set.load();
        let current = set
            .verifying
            .values()
            .find(|k| Arc::ptr_eq(k, key))
            .or_else(|| set.verifying.get(&key.kid));
        current.is_some_and(|k| k.verifies_at(now))
    }

    /// Signs `claims` as an `at+jwt` with the key that signs at `now`.
    pub(crate) fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
        now: i64,
    ) -> Result<(String, String)> {
        let key = self.set.load().signer(now).clone();
        let mut header = Header::new(key.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        let jwt = jsonwebtoken::encode(&header, claims, &key.encoding).map_err(Error::internal);
        if !self.set.load().holds_private(&key.kid) {
            // Raced a rotation: the provider may have re-parsed the retired key; drop it again.
            provider::forget(key.encoding.as_bytes());
        }
        Ok((jwt?, key.kid.clone()))
    }

    /// Every key ever held, newest first, with its state at `now`, for operators.
    pub(crate) async fn list(&self, now: i64) -> Result<Vec<rows::KeyListing>> {
        self.store.read(move |c| rows::list(c, now)).await
    }

    /// Rebuilds the key set from the store: drops keys past their window. The read
    /// runs off the async runtime (see [`Store::read`]); reloads that overlap keep the
    /// set of the one that started last.
    pub(crate) async fn reload(&self, now: i64) -> Result<()> {
        // Taken before the read: the write that prompted any earlier ticket had
        // committed by then, so the newest ticket's read sees it too, and a set read
        // for an older ticket may be dropped.
        let ticket = self.reload_tickets.fetch_add(1, Ordering::Relaxed) + 1;
        let live = self.store.read(move |c| rows::load_live(c, now)).await?;
        let new = Arc::new(build_set(&live, &self.master, now)?);
        warm_active(&new)?;
        let old = {
            let mut newest = self
                .newest_reload
                .lock()
                .map_err(|_| Error::internal("keyring reload lock poisoned"))?;
            if *newest > ticket {
                None
            } else {
                *newest = ticket;
                Some(self.set.swap(new.clone()))
            }
        };
        let Some(old) = old else {
            // Overtaken: the set in place is newer; drop what this one parsed for nothing.
            let current = self.current();
            forget_unheld(&new, &current);
            return Ok(());
        };
        for (kid, _) in old
            .verifying
            .iter()
            .filter(|(kid, _)| !new.verifying.contains_key(*kid))
        {
            tracing::info!(%kid, "retired key left the verification set");
        }
        forget_unheld(&old, &new);
        Ok(())
    }
}

/// Drops the parsed private keys `from` holds and `to` does not: a key that signs no
/// more must not outlive it in memory.
fn forget_unheld(from: &KeySet, to: &KeySet) {
    for key in [Some(&from.active), from.next.as_ref()]
        .into_iter()
        .flatten()
    {
        if !to.holds_private(&key.kid) {
            provider::forget(key.encoding.as_bytes());
        }
    }
}

fn system_audit(now: i64, kind: &str, kid: &str) -> AuditEntry {
    AuditEntry {
        at: now,
        request_id: "-".into(),
        caller: "system".into(),
        kind: kind.into(),
        token_id: kid.into(),
        ..AuditEntry::default()
    }
}

/// Sealing of other short-lived secrets under the same master key (the refresh grace
/// period's successor pairs), so the master key never leaves the keyring.
impl Keyring {
    /// Seals `plaintext` bound to `context` (AES-256-GCM, `context` as associated data).
    pub(crate) fn seal_secret(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.master.seal(context, plaintext)
    }

    /// Opens what [`seal_secret`](Self::seal_secret) made for the same `context`.
    pub(crate) fn open_secret(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        self.master.open(context, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    async fn keyring(dir: &std::path::Path, alg: SigningAlg) -> Keyring {
        let store = Store::open(dir).expect("store");
        let master = MasterKey::from_text(MASTER).expect("master");
        Keyring::open(store, master, alg, 3600, 1_000)
            .await
            .expect("keyring")
    }

    #[test]
    fn jwks_cache_control_says_the_max_age_the_publish_lead_assumes() {
        assert_eq!(
            JWKS_CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE_SECS}")
        );
    }

    #[tokio::test]
    async fn active_key_is_parsed_at_load_and_forgotten_on_rotation() {
        for alg in [SigningAlg::EdDSA, SigningAlg::ES256] {
            let tmp = tempfile::tempdir().expect("tmp");
            let ring = keyring(tmp.path(), alg).await;
            let first = ring.current().active.clone();
            assert!(provider::is_cached(first.encoding.as_bytes()), "{alg:?}");

            ring.rotate(1_010, 1_010, "-", "test")
                .await
                .expect("rotate");
            let second = ring.current().active.clone();
            assert_ne!(first.kid, second.kid);
            assert!(!provider::is_cached(first.encoding.as_bytes()), "{alg:?}");
            assert!(provider::is_cached(second.encoding.as_bytes()), "{alg:?}");
            // The retired key still verifies; it just no longer signs.
            assert!(ring.verifying(&first.kid, 1_020).is_some());

            // Housekeeping reloads keep the active key parsed.
            ring.reload(1_020).await.expect("reload");
            assert!(provider::is_cached(second.encoding.as_bytes()));
            provider::forget(second.encoding.as_bytes());
        }
    }

    #[tokio::test]
    async fn a_key_handed_out_still_verifies_across_reloads_until_its_window_ends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ring = keyring(tmp.path(), SigningAlg::EdDSA).await;
        let kid = ring.current().active.kid.clone();
        let held = ring
            .verifying(&kid, 1_000)
            .expect("the active key verifies");
        assert!(ring.still_verifies(&held, 1_000));

        ring.rotate(1_010, 1_010, "-", "test")
            .await
            .expect("rotate");
        // The rotation loaded a new set of new keys: the held one is found by kid.
        let current = ring
            .verifying(&kid, 1_020)
            .expect("the retired key verifies");
        assert!(!Arc::ptr_eq(&held, &current));
        let until = current.verify_until.expect("retired");
        for key in [&held, &current] {
            assert!(ring.still_verifies(key, until - 1));
            assert!(!ring.still_verifies(key, until), "past its window");
        }
        provider::forget(ring.current().active.encoding.as_bytes());
    }

    #[tokio::test]
    async fn an_overtaken_reload_keeps_the_newer_set_and_forgets_what_it_parsed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ring = keyring(tmp.path(), SigningAlg::EdDSA).await;
        let first = ring.current().active.clone();
        // As if a reload that started later had already put its set in place.
        *ring.newest_reload.lock().expect("lock") = u64::MAX;
        ring.rotate(1_010, 1_010, "-", "test")
            .await
            .expect("rotate");
        assert_eq!(ring.current().active.kid, first.kid, "older read dropped");
        let stored = ring.store.read(|c| rows::load_live(c, 1_010)).await;
        let newest = stored.expect("rows").pop().expect("a row");
        assert_ne!(newest.kid, first.kid);
        let pkcs8 = ring.master.open(&newest.kid, &newest.sealed_private);
        let pkcs8 = pkcs8.expect("open");
        assert!(
            !provider::is_cached(&pkcs8),
            "its parse was dropped with it"
        );

        *ring.newest_reload.lock().expect("lock") = 0;
        ring.reload(1_010).await.expect("reload");
        assert_eq!(ring.current().active.kid, newest.kid);
        provider::forget(ring.current().active.encoding.as_bytes());
    }
}
