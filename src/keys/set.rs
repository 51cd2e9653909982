//! The in-memory key set: the signing key, its waiting successor, every key still
//! allowed to verify, and the JWKS they make, built from the store's rows in one go.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::Value;

use super::seal::MasterKey;
use super::{jwk, provider};
use crate::error::{Error, Result};
use crate::store::changes::KeyState;
use crate::store::keys::{self as rows, KeyRow};

/// The key that signs new tokens.
pub struct SigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Its one algorithm.
    pub(crate) alg: Algorithm,
    /// When it was generated or imported (Unix seconds): the signing-key age metric.
    pub(crate) created_at: i64,
    /// When it starts (or started) signing.
    pub(crate) activates_at: i64,
    pub(super) encoding: EncodingKey,
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

impl VerifyingKey {
    /// Is `now` inside the key's verification window?
    pub(crate) fn verifies_at(&self, now: i64) -> bool {
        self.verify_until.is_none_or(|until| now < until)
    }
}

/// One consistent view of the keys.
pub struct KeySet {
    /// Signs new tokens (until `next` activates).
    pub active: Arc<SigningKey>,
    /// The published successor, signing from its `activates_at`.
    pub(crate) next: Option<Arc<SigningKey>>,
    /// Every key allowed to verify, by kid.
    pub verifying: HashMap<String, Arc<VerifyingKey>>,
    /// The JWK Set (RFC 7517) of every key in `verifying`, pre-rendered.
    jwks_json: Arc<str>,
    /// Each published JWK with the instant it stops verifying, so that [`jwks_at`]
    /// can leave a key out the moment its window ends, from memory.
    ///
    /// [`jwks_at`]: KeySet::jwks_at
    published: Vec<(Option<i64>, Value)>,
}

impl KeySet {
    /// The key that signs at `now`: the successor from its activation instant on.
    pub(crate) fn signer(&self, now: i64) -> &Arc<SigningKey> {
        match &self.next {
            Some(next) if now >= next.activates_at => next,
            _ => &self.active,
        }
    }

    /// The JWK Set as served at `now`. Memory only: the JWKS is public and
    /// unauthenticated, so no request for it may reach the store. A key whose window
    /// has ended is left out at once, before housekeeping drops it from the set.
    pub(crate) fn jwks_at(&self, now: i64) -> Arc<str> {
        let ended = |until: &Option<i64>| until.is_some_and(|u| now >= u);
        if !self.published.iter().any(|(until, _)| ended(until)) {
            return self.jwks_json.clone();
        }
        let live: Vec<&Value> = self
            .published
            .iter()
            .filter(|(until, _)| !ended(until))
            .map(|(_, jwk)| jwk)
            .collect();
        render(&live)
    }

    /// Does this set hold `kid`'s private key (as signer or successor)?
    pub(super) fn holds_private(&self, kid: &str) -> bool {
        self.active.kid == kid || self.next.as_ref().is_some_and(|n| n.kid == kid)
    }
}

pub(super) fn alg_name(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::EdDSA => Some("EdDSA"),
        Algorithm::ES256 => Some("ES256"),
        Algorithm::RS256 => Some("RS256"),
        Algorithm::PS256 => Some("PS256"),
        _ => None,
    }
}

pub(super) fn parse_alg(s: &str) -> Result<Algorithm> {
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

/// Parses the active key and its successor into the provider's cache now, so a key
/// that cannot sign fails at load or rotation and neither the first token nor the
/// first one after activation pays a PKCS#8 parse.
pub(super) fn warm_active(set: &KeySet) -> Result<()> {
    for key in [Some(&set.active), set.next.as_ref()].into_iter().flatten() {
        provider::warm(key.alg, key.encoding.as_bytes())
            .map_err(|_| Error::internal("signing key cannot be parsed"))?;
    }
    Ok(())
}

pub(super) fn build_set(live: &[KeyRow], master: &MasterKey, now: i64) -> Result<KeySet> {
    let mut verifying = HashMap::new();
    let mut published = Vec::new();
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
        match jwk::try_public_jwk(name, &row.kid, &row.public_key) {
            Some(jwk) => published.push((row.verify_until, jwk)),
            // A JWKS entry of `null` would make strict clients reject the whole set.
            None => tracing::error!(kid = %row.kid, "signing key has no publishable JWK"),
        }
        match rows::state_at(row.activates_at, row.retired_at, false, now) {
            // Newest activation wins if a crash left two signing.
            KeyState::Active => active = Some(signing(row, alg)?),
            // The earliest waiting successor is the one that takes over.
            KeyState::Published if next.is_none() => next = Some(signing(row, alg)?),
            _ => {}
        }
    }
    let active = active.ok_or_else(|| Error::internal("no active signing key"))?;
    let jwks_json = render(&published.iter().map(|(_, jwk)| jwk).collect::<Vec<_>>());
    Ok(KeySet {
        active,
        next,
        verifying,
        jwks_json,
        published,
    })
}

fn render(keys: &[&Value]) -> Arc<str> {
    serde_json::json!({ "keys": keys }).to_string().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlg;

    #[test]
    fn a_key_with_no_publishable_jwk_is_left_out_of_the_jwks_not_nulled() {
        let master =
            MasterKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").expect("master");
        let active =
            super::super::lifecycle::fresh_row(SigningAlg::EdDSA, &master, 100, 100).expect("row");
        let misshapen = KeyRow {
            kid: "short".into(),
            alg: "ES256".into(),
            public_key: vec![4, 1, 2, 3],
            created_at: 10,
            activates_at: 10,
            retired_at: Some(100),
            verify_until: Some(1_000),
            ..active.clone()
        };
        let set = build_set(&[misshapen, active.clone()], &master, 200).expect("set");
        let jwks: Value = serde_json::from_str(&set.jwks_at(200)).expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1, "{jwks}");
        assert_eq!(keys[0]["kid"], active.kid.as_str());
        provider::forget(set.active.encoding.as_bytes());
    }
}
