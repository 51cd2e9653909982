//! Signing keys: the ring-backed `jsonwebtoken` provider, sealed storage, rotation and
//! the JWKS.
//!
//! The [`Keyring`] holds the active signing key and every key still allowed to verify,
//! in one immutable [`KeySet`] swapped atomically on rotation: readers never lock.
//! A retired key keeps verifying until the last token it could have signed has
//! expired (`max_access_token_ttl` after retirement), then leaves the JWKS.

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
use crate::store::keys::{self as rows, KeyRow};
use seal::MasterKey;

/// The key that signs new tokens.
pub struct SigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Its one algorithm.
    pub alg: Algorithm,
    /// When it was generated or imported (Unix seconds): the signing-key age metric.
    pub created_at: i64,
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
    /// Signs new tokens.
    pub active: Arc<SigningKey>,
    /// Every key allowed to verify, by kid.
    pub verifying: HashMap<String, Arc<VerifyingKey>>,
    /// The published JWK Set (RFC 7517), pre-rendered.
    pub jwks_json: Arc<str>,
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
        let set = build_set(&live, &master).map_err(|e| match e {
            // The operator must learn which database holds keys this master key can't open.
            Error::Internal(cause) => Error::internal(format!(
                "signing keys in {}: {cause}",
                store.path().display()
            )),
            other => other,
        })?;
        warm_active(&set)?;
        tracing::info!(kid = %set.active.kid, keys = set.verifying.len(), "signing keys loaded");
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

    /// Signs `claims` with the active key as an `at+jwt`.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<(String, String)> {
        let key = self.set.load().active.clone();
        let mut header = Header::new(key.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        let jwt = jsonwebtoken::encode(&header, claims, &key.encoding).map_err(Error::internal);
        if self.set.load().active.kid != key.kid {
            // Raced a rotation: the provider may have re-parsed the retired key; drop it again.
            provider::forget(key.encoding.as_bytes());
        }
        Ok((jwt?, key.kid.clone()))
    }

    /// Generates a new active key; the previous one verifies for the retire window.
    pub async fn rotate(&self, now: i64, request_id: &str, caller: &str) -> Result<String> {
        let g = generate(self.alg)?;
        let row = KeyRow {
            kid: g.kid.clone(),
            alg: alg_name(g.alg).unwrap_or("EdDSA").to_string(),
            public_key: g.public_key.clone(),
            sealed_private: self.master.seal(&g.kid, &g.pkcs8)?,
            created_at: now,
            retired_at: None,
            verify_until: None,
        };
        let until = now.saturating_add(self.retire_window);
        let entry = AuditEntry {
            at: now,
            request_id: request_id.to_string(),
            caller: caller.to_string(),
            kind: "key.rotated".into(),
            token_id: g.kid.clone(),
            ..AuditEntry::default()
        }
        .with("previous_verify_until", until);
        let kid = g.kid.clone();
        self.store
            .write(move |c| {
                rows::insert(c, &row)?;
                rows::retire_others(c, &row.kid, now, until)?;
                audit::append(c, &entry)
            })
            .await?;
        self.reload(now)?;
        tracing::info!(%kid, "signing key rotated");
        Ok(kid)
    }

    /// Emergency revocation of `kid`: it stops verifying at once and leaves the JWKS.
    /// If it was the signing key, a fresh key is stored in the same transaction, so
    /// there is never a moment without one. Revoking a revoked key changes nothing.
    /// Returns the kid that signs from now on, or `None` if `kid` is unknown.
    pub async fn revoke(&self, kid: &str, now: i64, entry: AuditEntry) -> Result<Option<String>> {
        // Generated up front, outside the writer; stored only if `kid` turns out to
        // be the signing key when the write runs (a rotation may have got there first).
        let g = generate(self.alg)?;
        let successor = KeyRow {
            kid: g.kid.clone(),
            alg: alg_name(g.alg).unwrap_or("EdDSA").to_string(),
            public_key: g.public_key.clone(),
            sealed_private: self.master.seal(&g.kid, &g.pkcs8)?,
            created_at: now,
            retired_at: None,
            verify_until: None,
        };
        let target = kid.to_string();
        let found = self
            .store
            .write(move |c| {
                let Some((signing, revoked)) = rows::state(c, &target)? else {
                    return Ok(false);
                };
                if revoked {
                    return Ok(true);
                }
                let mut entry = entry.with("was_signing", signing);
                if signing {
                    rows::insert(c, &successor)?;
                    entry = entry.with("successor", successor.kid.clone());
                }
                rows::revoke(c, &target, now)?;
                audit::append(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !found {
            return Ok(None);
        }
        self.reload(now)?;
        let active = self.current().active.kid.clone();
        tracing::warn!(%kid, %active, "signing key revoked");
        Ok(Some(active))
    }

    /// Every key ever held, newest first, for operators.
    pub async fn list(&self) -> Result<Vec<rows::KeyListing>> {
        self.store.read(rows::list).await
    }

    /// Rebuilds the key set from the store: drops keys past their window.
    pub fn reload(&self, now: i64) -> Result<()> {
        let live = self.store.read_now(|c| rows::load_live(c, now))?;
        let old = self.set.load_full();
        let new = build_set(&live, &self.master)?;
        warm_active(&new)?;
        for (kid, _) in old
            .verifying
            .iter()
            .filter(|(kid, _)| !new.verifying.contains_key(*kid))
        {
            tracing::info!(%kid, "retired key left the verification set");
        }
        let retired = (old.active.kid != new.active.kid).then(|| old.active.clone());
        self.set.store(Arc::new(new));
        if let Some(key) = retired {
            // It signs no more: its parsed private key must not outlive it in memory.
            provider::forget(key.encoding.as_bytes());
        }
        Ok(())
    }
}

/// Parses the active key into the provider's cache now, so a key that cannot sign
/// fails at load or rotation and the first token pays no PKCS#8 parse.
fn warm_active(set: &KeySet) -> Result<()> {
    provider::warm(set.active.alg, set.active.encoding.as_bytes())
        .map_err(|_| Error::internal("active signing key cannot be parsed"))
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

fn build_set(live: &[KeyRow], master: &MasterKey) -> Result<KeySet> {
    let mut verifying = HashMap::new();
    let mut jwks = Vec::new();
    let mut active: Option<Arc<SigningKey>> = None;
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
        if row.retired_at.is_none() {
            // Newest active wins if a crash left two (rows are ordered by creation).
            let pkcs8 = master.open(&row.kid, &row.sealed_private)?;
            active = Some(Arc::new(SigningKey {
                kid: row.kid.clone(),
                alg,
                created_at: row.created_at,
                encoding: encoding_key(alg, &pkcs8),
            }));
        }
    }
    let active = active.ok_or_else(|| Error::internal("no active signing key"))?;
    let jwks_json: Arc<str> = serde_json::json!({ "keys": jwks }).to_string().into();
    Ok(KeySet {
        active,
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

    #[tokio::test]
    async fn active_key_is_parsed_at_load_and_forgotten_on_rotation() {
        for alg in [SigningAlg::EdDSA, SigningAlg::ES256] {
            let tmp = tempfile::tempdir().expect("tmp");
            let ring = keyring(tmp.path(), alg).await;
            let first = ring.current().active.clone();
            assert!(provider::is_cached(first.encoding.as_bytes()), "{alg:?}");

            ring.rotate(1_010, "-", "test").await.expect("rotate");
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
