//! Signing keys: the ring-backed `jsonwebtoken` provider, sealed storage, rotation and
//! the JWKS.
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

pub mod import;
pub mod jwk;
pub mod provider;
pub mod seal;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::config::SigningAlg;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};
use crate::store::changes::KeyState;
use crate::store::keys::{self as rows, KeyRow};
use seal::MasterKey;

/// The `max-age` of the served JWKS, in seconds. The default `key_publish_lead` is
/// derived from it: a verifier that cached the JWKS just before a rotation refetches
/// it before the successor signs.
pub const JWKS_MAX_AGE_SECS: u64 = 60;

/// The `Cache-Control` of the served JWKS: [`JWKS_MAX_AGE_SECS`] spelled out.
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=60";

/// The key that signs new tokens.
pub struct SigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Its one algorithm.
    pub alg: Algorithm,
    /// When it was generated or imported (Unix seconds): the signing-key age metric.
    pub created_at: i64,
    /// When it starts (or started) signing.
    pub activates_at: i64,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A key that may verify: bound to exactly one algorithm.
pub struct VerifyingKey {
    /// Its kid.
    pub kid: String,
    /// The only algorithm accepted with this key (never read from a token header).
    pub alg: Algorithm,
    /// The same algorithm's JWS name, compared to the header's `alg` byte for byte.
    pub alg_name: &'static str,
    /// Public key for the provider.
    pub decoding: DecodingKey,
    /// Stops verifying at this instant (None while active).
    pub verify_until: Option<i64>,
}

/// One consistent view of the keys.
pub struct KeySet {
    /// Signs new tokens (until `next` activates).
    pub active: Arc<SigningKey>,
    /// The published successor, signing from its `activates_at`.
    pub next: Option<Arc<SigningKey>>,
    /// Every key allowed to verify, by kid.
    pub verifying: HashMap<String, Arc<VerifyingKey>>,
    /// The published JWK Set (RFC 7517), pre-rendered.
    pub jwks_json: Arc<str>,
}

impl KeySet {
    /// The key that signs at `now`: the successor from its activation instant on.
    pub fn signer(&self, now: i64) -> &Arc<SigningKey> {
        match &self.next {
            Some(next) if now >= next.activates_at => next,
            _ => &self.active,
        }
    }
}

/// A rotation as scheduled: the successor and when it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The successor's kid.
    pub kid: String,
    /// When it signs (Unix seconds).
    pub activates_at: i64,
}

/// Signing and verification keys, loaded from and persisted to the store.
pub struct Keyring {
    set: ArcSwap<KeySet>,
    master: MasterKey,
    store: Store,
    alg: SigningAlg,
    /// How long a retired key keeps verifying.
    retire_window: i64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.set.load().active.kid)
            .finish_non_exhaustive()
    }
}

fn alg_name(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::EdDSA => Some("EdDSA"),
        Algorithm::ES256 => Some("ES256"),
        Algorithm::RS256 => Some("RS256"),
        Algorithm::PS256 => Some("PS256"),
        _ => None,
    }
}

fn parse_alg(s: &str) -> Result<Algorithm> {
    match s {
        "EdDSA" => Ok(Algorithm::EdDSA),
        "ES256" => Ok(Algorithm::ES256),
        // RSA keys are only ever imported (`tessera admin import-key`), never generated.
        "RS256" => Ok(Algorithm::RS256),
        "PS256" => Ok(Algorithm::PS256),
        other => Err(Error::internal(format!(
            "stored key has unsupported alg {other}"
        ))),
    }
}

/// A freshly generated key pair: kid, public key, PKCS#8 private key.
struct Generated {
    kid: String,
    alg: Algorithm,
    public_key: Vec<u8>,
    pkcs8: Zeroizing<Vec<u8>>,
}

fn generate(alg: SigningAlg) -> Result<Generated> {
    let rng = SystemRandom::new();
    fn err<E>(_: E) -> Error {
        Error::internal("key generation failed")
    }
    match alg {
        SigningAlg::EdDSA => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(err)?;
            let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(err)?;
            let public_key = pair.public_key().as_ref().to_vec();
            Ok(Generated {
                kid: jwk::thumbprint_ed25519(&public_key),
                alg: Algorithm::EdDSA,
                public_key,
                pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
            })
        }
        SigningAlg::ES256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(err)?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                    .map_err(err)?;
            let public_key = pair.public_key().as_ref().to_vec();
            Ok(Generated {
                kid: jwk::thumbprint_ec_p256(&public_key[1..33], &public_key[33..65]),
                alg: Algorithm::ES256,
                public_key,
                pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
            })
        }
    }
}

fn encoding_key(alg: Algorithm, pkcs8: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_der(pkcs8),
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_der(pkcs8),
        _ => EncodingKey::from_ed_der(pkcs8),
    }
}

fn decoding_key(alg: Algorithm, public_key: &[u8]) -> DecodingKey {
    match alg {
        Algorithm::ES256 => DecodingKey::from_ec_der(public_key),
        // PKCS#1 `RSAPublicKey` DER, as `keys::import` stores it.
        Algorithm::RS256 | Algorithm::PS256 => DecodingKey::from_rsa_der(public_key),
        _ => DecodingKey::from_ed_der(public_key),
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
        let mut live = store.read_now(|c| rows::load_live(c, now))?;
        if !live.iter().any(|k| k.retired_at.is_none()) {
            let g = generate(alg)?;
            let row = KeyRow {
                kid: g.kid.clone(),
                alg: alg_name(g.alg).unwrap_or("EdDSA").to_string(),
                public_key: g.public_key.clone(),
                sealed_private: master.seal(&g.kid, &g.pkcs8)?,
                created_at: now,
                activates_at: now,
                retired_at: None,
                verify_until: None,
            };
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
            live = store.read_now(|c| rows::load_live(c, now))?;
        }
        // Transitions that fell due while no process was running are logged now.
        store
            .write(move |c| rows::announce(c, now).map(|_| ()))
            .await?;
        let set = build_set(&live, &master, now).map_err(|e| match e {
            // The operator must learn which database holds keys this master key can't open.
            Error::Internal(cause) => Error::internal(format!(
                "signing keys in {}: {cause}",
                store.path().display()
            )),
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
        })
    }

    /// The current key set (cheap; lock-free).
    pub fn current(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// A key allowed to verify at `now`, by kid.
    pub fn verifying(&self, kid: &str, now: i64) -> Option<Arc<VerifyingKey>> {
        let set = self.set.load();
        let k = set.verifying.get(kid)?;
        match k.verify_until {
            Some(until) if now >= until => None,
            _ => Some(k.clone()),
        }
    }

    /// Signs `claims` as an `at+jwt` with the key that signs at `now`.
    pub fn sign<T: serde::Serialize>(&self, claims: &T, now: i64) -> Result<(String, String)> {
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

    /// Publishes a fresh key to sign from `activates_at` (`now` for an emergency); the
    /// key signing until then retires at that instant and verifies for the retire
    /// window. A successor already waiting is kept rather than doubled: returned as it
    /// is, or made to sign at once when `activates_at <= now`.
    pub async fn rotate(
        &self,
        now: i64,
        activates_at: i64,
        request_id: &str,
        caller: &str,
    ) -> Result<Rotation> {
        let activates_at = activates_at.max(now);
        let row = self.fresh_row(now, activates_at)?;
        let window = self.retire_window;
        let mut entry = AuditEntry {
            at: now,
            request_id: request_id.to_string(),
            caller: caller.to_string(),
            kind: "key.rotated".into(),
            ..AuditEntry::default()
        };
        let done = self
            .store
            .write(move |c| {
                let s = rows::schedule_successor(c, &row, now, window)?;
                entry.token_id = s.kid.clone();
                let entry = entry
                    .with("activates_at", s.activates_at)
                    .with(
                        "previous_verify_until",
                        s.activates_at.saturating_add(window),
                    )
                    .with("new_key", s.inserted);
                audit::append(c, &entry)?;
                Ok(s)
            })
            .await?;
        self.reload(now)?;
        tracing::info!(kid = %done.kid, activates_at = done.activates_at, "signing key rotation scheduled");
        Ok(Rotation {
            kid: done.kid,
            activates_at: done.activates_at,
        })
    }

    /// Rotates on schedule: when no successor waits and the key signing at `now`
    /// reaches the end of its `period` within `lead`, publishes a successor to sign at
    /// that end (or `lead` from now, if housekeeping comes late). Safe to run from
    /// several processes at once: the store keeps one successor.
    pub async fn rotate_if_due(
        &self,
        now: i64,
        period: i64,
        lead: i64,
    ) -> Result<Option<Rotation>> {
        let set = self.current();
        let signer = set.signer(now);
        if set.next.as_ref().is_some_and(|n| n.activates_at > now) {
            return Ok(None);
        }
        let ends = signer.activates_at.saturating_add(period);
        if now.saturating_add(lead) < ends {
            return Ok(None);
        }
        let at = ends.max(now.saturating_add(lead));
        self.rotate(now, at, "-", "system").await.map(Some)
    }

    /// Brings the key set up to `now` if a transition is due (a successor's activation,
    /// a retired key's window ending) and logs it: cheap when nothing is due.
    pub async fn settle(&self, now: i64) -> Result<()> {
        let set = self.current();
        let due = set.next.as_ref().is_some_and(|n| now >= n.activates_at)
            || set
                .verifying
                .values()
                .any(|k| k.verify_until.is_some_and(|u| now >= u));
        if !due {
            return Ok(());
        }
        let logged = self.store.write(move |c| rows::announce(c, now)).await?;
        self.reload(now)?;
        if logged > 0 {
            tracing::info!(kid = %self.current().active.kid, "signing key activated");
        }
        Ok(())
    }

    fn fresh_row(&self, now: i64, activates_at: i64) -> Result<KeyRow> {
        let g = generate(self.alg)?;
        Ok(KeyRow {
            kid: g.kid.clone(),
            alg: alg_name(g.alg).unwrap_or("EdDSA").to_string(),
            public_key: g.public_key.clone(),
            sealed_private: self.master.seal(&g.kid, &g.pkcs8)?,
            created_at: now,
            activates_at,
            retired_at: None,
            verify_until: None,
        })
    }

    /// Emergency revocation of `kid`: it stops verifying at once and leaves the JWKS.
    /// If it was the signing key, a fresh key is stored in the same transaction, so
    /// there is never a moment without one. Revoking a revoked key changes nothing.
    /// Returns the kid that signs from now on, or `None` if `kid` is unknown.
    pub async fn revoke(&self, kid: &str, now: i64, entry: AuditEntry) -> Result<Option<String>> {
        // Generated up front, outside the writer; stored only if `kid` turns out to
        // be the signing key when the write runs and no published successor waits to
        // take over (one that does is already in every cached JWKS, so it goes first).
        let successor = self.fresh_row(now, now)?;
        let window = self.retire_window;
        let target = kid.to_string();
        let found = self
            .store
            .write(move |c| {
                let Some(state) = rows::state(c, &target, now)? else {
                    return Ok(false);
                };
                let mut entry = entry.with("state", state.as_str());
                match state {
                    KeyState::Revoked => return Ok(true),
                    KeyState::Active => {
                        let s = rows::schedule_successor(c, &successor, now, window)?;
                        entry = entry.with("successor", s.kid);
                    }
                    // The key signing now keeps signing: its hand-over is called off.
                    KeyState::Published => rows::unschedule(c, now)?,
                    KeyState::Retired => {}
                }
                rows::revoke(c, &target, now)?;
                rows::announce(c, now)?;
                audit::append(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !found {
            return Ok(None);
        }
        self.reload(now)?;
        let active = self.current().signer(now).kid.clone();
        tracing::warn!(%kid, %active, "signing key revoked");
        Ok(Some(active))
    }

    /// Every key ever held, newest first, with its state at `now`, for operators.
    pub async fn list(&self, now: i64) -> Result<Vec<rows::KeyListing>> {
        self.store.read(move |c| rows::list(c, now)).await
    }

    /// Rebuilds the key set from the store: drops keys past their window.
    pub fn reload(&self, now: i64) -> Result<()> {
        let live = self.store.read_now(|c| rows::load_live(c, now))?;
        let old = self.set.load_full();
        let new = build_set(&live, &self.master, now)?;
        warm_active(&new)?;
        for (kid, _) in old
            .verifying
            .iter()
            .filter(|(kid, _)| !new.verifying.contains_key(*kid))
        {
            tracing::info!(%kid, "retired key left the verification set");
        }
        let dropped: Vec<Arc<SigningKey>> = [Some(&old.active), old.next.as_ref()]
            .into_iter()
            .flatten()
            .filter(|k| !new.holds_private(&k.kid))
            .cloned()
            .collect();
        self.set.store(Arc::new(new));
        for key in dropped {
            // It signs no more: its parsed private key must not outlive it in memory.
            provider::forget(key.encoding.as_bytes());
        }
        Ok(())
    }
}

/// Parses the active key and its successor into the provider's cache now, so a key
/// that cannot sign fails at load or rotation and neither the first token nor the
/// first one after activation pays a PKCS#8 parse.
fn warm_active(set: &KeySet) -> Result<()> {
    for key in [Some(&set.active), set.next.as_ref()].into_iter().flatten() {
        provider::warm(key.alg, key.encoding.as_bytes())
            .map_err(|_| Error::internal("signing key cannot be parsed"))?;
    }
    Ok(())
}

impl KeySet {
    /// Does this set hold `kid`'s private key (as signer or successor)?
    fn holds_private(&self, kid: &str) -> bool {
        self.active.kid == kid || self.next.as_ref().is_some_and(|n| n.kid == kid)
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

fn build_set(live: &[KeyRow], master: &MasterKey, now: i64) -> Result<KeySet> {
    let mut verifying = HashMap::new();
    let mut jwks = Vec::new();
    let mut active: Option<Arc<SigningKey>> = None;
    let mut next: Option<Arc<SigningKey>> = None;
    let signing = |row: &KeyRow, alg| -> Result<Arc<SigningKey>> {
        let pkcs8 = master.open(&row.kid, &row.sealed_private)?;
        Ok(Arc::new(SigningKey {
            kid: row.kid.clone(),
            alg,
            created_at: row.created_at,
            activates_at: row.activates_at,
            encoding: encoding_key(alg, &pkcs8),
        }))
    };
    // Rows come oldest activation first.
    for row in live {
        let alg = match parse_alg(&row.alg) {
            Ok(a) => a,
            Err(e) => {
                // A key we cannot use is left out rather than guessed at.
                tracing::error!(kid = %row.kid, "skipping signing key: {e}");
                continue;
            }
        };
        let name = alg_name(alg).unwrap_or("EdDSA");
        verifying.insert(
            row.kid.clone(),
            Arc::new(VerifyingKey {
                kid: row.kid.clone(),
                alg,
                alg_name: name,
                decoding: decoding_key(alg, &row.public_key),
                verify_until: row.verify_until,
            }),
        );
        jwks.push(jwk::public_jwk(name, &row.kid, &row.public_key));
        match rows::state_at(row.activates_at, row.retired_at, false, now) {
            // Newest activation wins if a crash left two signing.
            KeyState::Active => active = Some(signing(row, alg)?),
            // The earliest waiting successor is the one that takes over.
            KeyState::Published if next.is_none() => next = Some(signing(row, alg)?),
            _ => {}
        }
    }
    let active = active.ok_or_else(|| Error::internal("no active signing key"))?;
    let jwks_json: Arc<str> = serde_json::json!({ "keys": jwks }).to_string().into();
    Ok(KeySet {
        active,
        next,
        verifying,
        jwks_json,
    })
}

/// Sealing of other short-lived secrets under the same master key (the refresh grace
/// period's successor pairs), so the master key never leaves the keyring.
impl Keyring {
    /// Seals `plaintext` bound to `context` (AES-256-GCM, `context` as associated data).
    pub fn seal_secret(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.master.seal(context, plaintext)
    }

    /// Opens what [`seal_secret`](Self::seal_secret) made for the same `context`.
    pub fn open_secret(&self, context: &str, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
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
            ring.reload(1_020).expect("reload");
            assert!(provider::is_cached(second.encoding.as_bytes()));
            provider::forget(second.encoding.as_bytes());
        }
    }
}
