//! The JWKS: fetched over HTTP from Tessera's `/.well-known/jwks.json`, parsed strictly,
//! and held as the key set the shared verifier looks keys up in.
//!
//! A key is taken only if it is one Tessera could have published: an Ed25519 (`OKP`)
//! or P-256 (`EC`) public key whose `kid` is its own RFC 7638 thumbprint and whose
//! `alg`, when present, is the one its curve implies. Anything else (RSA, private
//! members, a `kid` that lies) is skipped, never guessed at. The algorithm is pinned
//! from the key, so a token's header can never choose it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tessera::keys::VerifyingKey;
use tessera::keys::jwk;
use tessera::tokens::verify::KeyLookup;

use crate::Error;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Longest a fetch may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The verifying keys from the last good JWKS, minus the kids the revocation stream
/// says were revoked. Lock-free for readers.
#[derive(Default)]
pub struct JwksKeys {
    keys: ArcSwap<HashMap<String, Arc<VerifyingKey>>>,
    revoked: ArcSwap<HashSet<String>>,
}

impl std::fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKeys")
            .field("kids", &self.keys.load().keys().collect::<Vec<_>>())
            .field("revoked", &self.revoked.load().len())
            .finish()
    }
}

impl KeyLookup for JwksKeys {
    fn verifying(&self, kid: &str, _now: i64) -> Option<Arc<VerifyingKey>> {
        // A revoked kid stays refused even if a stale JWKS still lists it.
        if self.revoked.load().contains(kid) {
            return None;
        }
        self.keys.load().get(kid).cloned()
    }
}

impl JwksKeys {
    /// Replaces the key set with a freshly fetched one.
    pub fn replace(&self, keys: HashMap<String, Arc<VerifyingKey>>) {
        self.keys.store(Arc::new(keys));
    }

    /// Does the current JWKS hold this kid?
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.load().contains_key(kid)
    }

    /// Refuses this kid from now on (a `revoked` signing-key event).
    pub fn revoke(&self, kid: &str) {
        self.revoked.rcu(|old| {
            let mut s = HashSet::clone(old);
            s.insert(kid.to_string());
            s
        });
    }

    /// Is this kid revoked?
    pub fn is_revoked(&self, kid: &str) -> bool {
        self.revoked.load().contains(kid)
    }
}

/// Parses a JWK Set document into verifying keys by kid; keys Tessera could not have
/// published are skipped. Fails only if the document itself is not a JWK Set.
pub fn parse(doc: &[u8]) -> Result<HashMap<String, Arc<VerifyingKey>>, Error> {
    let v: Value = serde_json::from_slice(doc).map_err(|_| Error::Jwks("not JSON".into()))?;
    let Some(keys) = v.get("keys").and_then(Value::as_array) else {
        return Err(Error::Jwks("no \"keys\" array".into()));
    };
    let mut out = HashMap::new();
    for k in keys {
        match parse_key(k) {
            Some(key) => {
                out.insert(key.kid.clone(), Arc::new(key));
            }
            None => tracing::warn!("skipping a JWKS entry that is not a Tessera signing key"),
        }
    }
    Ok(out)
}

fn member<'a>(k: &'a Value, name: &str) -> Option<&'a str> {
    k.get(name).and_then(Value::as_str)
}

fn parse_key(k: &Value) -> Option<VerifyingKey> {
    let obj = k.as_object()?;
    // A private member means a leaked secret, not a verification key: refuse the entry.
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| obj.contains_key(*m))
    {
        return None;
    }
    if let Some(u) = member(k, "use")
        && u != "sig"
    {
        return None;
    }
    let kid = member(k, "kid")?;
    let (alg, name, thumbprint, public_key) = match (member(k, "kty")?, member(k, "crv")?) {
        ("OKP", "Ed25519") => {
            let x = B64.decode(member(k, "x")?).ok()?;
            if x.len() != 32 {
                return None;
            }
            (Algorithm::EdDSA, "EdDSA", jwk::thumbprint_ed25519(&x), x)
        }
        ("EC", "P-256") => {
            let x = B64.decode(member(k, "x")?).ok()?;
            let y = B64.decode(member(k, "y")?).ok()?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (
                Algorithm::ES256,
                "ES256",
                jwk::thumbprint_ec_p256(&x, &y),
                point,
            )
        }
        _ => return None,
    };
    if let Some(a) = member(k, "alg")
        && a != name
    {
        return None;
    }
    // Tessera's kid is the key's thumbprint: a kid that is not cannot be one of ours.
    if kid != thumbprint {
        return None;
    }
    // The same raw-key constructors the service's keyring uses with its ring provider.
    let decoding = match alg {
        Algorithm::ES256 => DecodingKey::from_ec_der(&public_key),
        _ => DecodingKey::from_ed_der(&public_key),
    };
    Some(VerifyingKey {
        kid: thumbprint,
        alg,
        alg_name: name,
        decoding,
        verify_until: None,
    })
}

/// Fetches the JWKS document from a plain `http://` URL, with a timeout and a size cap.
pub async fn fetch(url: &http::Uri) -> Result<Vec<u8>, Error> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url))
        .await
        .map_err(|_| Error::Jwks("fetch timed out".into()))?
}

async fn fetch_inner(url: &http::Uri) -> Result<Vec<u8>, Error> {
    let host = url
        .host()
        .ok_or_else(|| Error::Config("jwks_url has no host".into()))?;
    let port = url.port_u16().unwrap_or(80);
    let io = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| Error::Jwks(format!("connect: {e}")))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| Error::Jwks(format!("handshake: {e}")))?;
    let conn = tokio::spawn(conn);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let req = http::Request::get(url.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, authority)
        .header(
            http::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .body(Empty::new())
        .map_err(|e| Error::Jwks(format!("request: {e}")))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| Error::Jwks(format!("request: {e}")))?;
    if !resp.status().is_success() {
        conn.abort();
        return Err(Error::Jwks(format!("status {}", resp.status())));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|_| Error::Jwks("body unreadable or too large".into()))?
        .to_bytes();
    conn.abort();
    Ok(body.to_vec())
}

/// Checks a JWKS URL: plain `http` only (the in-cluster or sidecar hop).
pub fn parse_url(url: &str) -> Result<http::Uri, Error> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| Error::Config("jwks_url is not a URL".into()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(Error::Config(
            "jwks_url must be an http:// URL with a host".into(),
        ));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 Appendix A's public key and its thumbprint.
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn doc(key: Value) -> Vec<u8> {
        serde_json::json!({ "keys": [key] })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn takes_a_key_whose_kid_is_its_thumbprint() {
        let keys = parse(&doc(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": X, "alg": "EdDSA", "use": "sig", "kid": KID
        })))
        .expect("a JWKS");
        let k = keys.get(KID).expect("kept");
        assert_eq!((k.alg, k.alg_name), (Algorithm::EdDSA, "EdDSA"));
    }

    #[test]
    fn skips_keys_tessera_could_not_have_published() {
        let good = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": X, "kid": KID });
        type Spoil = (&'static str, fn(&mut Value));
        let bad: [Spoil; 7] = [
            ("kid that is not the thumbprint", |k| {
                k["kid"] = "other".into()
            }),
            ("alg of another curve", |k| k["alg"] = "ES256".into()),
            ("encryption key", |k| k["use"] = "enc".into()),
            ("private member", |k| k["d"] = X.into()),
            ("short x", |k| k["x"] = "AAAA".into()),
            ("symmetric", |k| k["kty"] = "oct".into()),
            ("no kid", |k| {
                k.as_object_mut().unwrap().remove("kid");
            }),
        ];
        for (name, spoil) in bad {
            let mut k = good.clone();
            spoil(&mut k);
            assert!(parse(&doc(k)).expect("a JWKS").is_empty(), "{name}");
        }
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{").is_err());
    }

    #[test]
    fn revoked_kid_is_refused_even_if_listed() {
        let keys = JwksKeys::default();
        keys.replace(
            parse(&doc(
                serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": X, "kid": KID }),
            ))
            .unwrap(),
        );
        assert!(keys.verifying(KID, 0).is_some());
        keys.revoke(KID);
        assert!(keys.verifying(KID, 0).is_none());
    }

    #[test]
    fn only_plain_http_urls() {
        assert!(parse_url("http://tessera:8080/.well-known/jwks.json").is_ok());
        assert!(parse_url("https://tessera/.well-known/jwks.json").is_err());
        assert!(parse_url("/.well-known/jwks.json").is_err());
    }
}
