//! The strict access-token verifier (`tokens::verify::verify_with_key`, what
//! Introspect, the token-exchange grant and the cache call) on hostile input.
//!
//! The first input byte picks how the rest becomes a token:
//! - 0: the bytes are the whole token text. Nobody but us holds the key, so it must
//!   never verify.
//! - 1: our real header over arbitrary payload bytes, signed with the real key: this
//!   reaches the strict JSON parser and the claim rules behind the signature check.
//! - 2: arbitrary header bytes over a genuine payload, signed with the real key.
//! - 3: `header-bytes 0xFF payload-bytes`, both arbitrary, signed.
//!
//! In a fuzzed header, `$kid` stands for the real key id, which the fuzzer could not
//! guess, so header inputs get past the key lookup.
//!
//! Whatever the input: no panic, and anything that verifies obeys the claim rules.

#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;
use ring::signature::Ed25519KeyPair;
use serde_json::json;
use tessera::config::SigningAlg;
use tessera::keys::Keyring;
use tessera::keys::seal::MasterKey;
use tessera::test_support::Store;
use tessera::tokens::verify::{Rules, verify_with_key};

const ISSUER: &str = "https://tessera.fuzz";
const NOW: i64 = 1_700_000_000;
const MAX_LIFETIME: i64 = 3_600;
const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// One keyring for the whole run, and its active key as ring can use it directly.
struct World {
    keys: Keyring,
    pair: Ed25519KeyPair,
    kid: String,
    header64: String,
    payload64: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let store = Store::open(dir.path()).expect("store");
        let master = MasterKey::from_text(MASTER).expect("master key");
        let keys = rt
            .block_on(Keyring::open(
                store.clone(),
                master,
                SigningAlg::EdDSA,
                MAX_LIFETIME,
                NOW,
            ))
            .expect("keyring");
        // Unseal the key the keyring generated, as tests/common/mint.rs does.
        let active = keys.current().active.kid.clone();
        let row = rt
            .block_on(store.read(|c| tessera::test_support::signing_keys::load_live(c, NOW)))
            .expect("key rows")
            .into_iter()
            .find(|r| r.kid == active)
            .expect("active key row");
        let pkcs8 = MasterKey::from_text(MASTER)
            .expect("master key")
            .open(&row.kid, &row.sealed_private)
            .expect("unseal");
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).expect("Ed25519 key");
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": active.clone()});
        let payload = json!({
            "iss": ISSUER, "sub": "alice", "aud": ["api"], "exp": NOW + 60, "nbf": NOW - 1,
            "iat": NOW - 1, "jti": B64.encode([7u8; 16]), "scope": "read", "client_id": "c",
            "ver": 0,
        });
        World {
            keys,
            pair,
            kid: active,
            header64: B64.encode(header.to_string()),
            payload64: B64.encode(payload.to_string()),
            _dir: dir,
        }
    })
}

fn signed(w: &World, h64: &str, p64: &str) -> String {
    let input = format!("{h64}.{p64}");
    let sig = w.pair.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

/// `header` with every `$kid` replaced by the active key id.
fn with_kid(w: &World, header: &[u8]) -> Vec<u8> {
    let kid = &w.kid;
    let mut out = Vec::with_capacity(header.len() + kid.len());
    let mut rest = header;
    while let Some(i) = rest.windows(4).position(|x| x == b"$kid") {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(kid.as_bytes());
        rest = &rest[i + 4..];
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let token = match mode % 4 {
        0 => match std::str::from_utf8(rest) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        },
        1 => signed(w, &w.header64, &B64.encode(rest)),
        2 => signed(w, &B64.encode(with_kid(w, rest)), &w.payload64),
        _ => {
            let (h, p) = match rest.iter().position(|&b| b == 0xFF) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            signed(w, &B64.encode(with_kid(w, h)), &B64.encode(p))
        }
    };
    let rules = Rules {
        keys: &w.keys,
        issuer: ISSUER,
        max_lifetime: MAX_LIFETIME,
        now: NOW,
    };
    match verify_with_key(&token, &rules) {
        Ok((claims, _jti, key)) => {
            assert!(mode % 4 != 0, "an unsigned input verified: {token:?}");
            assert_eq!(key.kid, w.kid);
            assert_eq!(claims.iss, ISSUER);
            assert!(claims.exp > NOW && claims.iat <= NOW && claims.nbf <= NOW);
            assert!(claims.exp - claims.iat <= MAX_LIFETIME);
            assert!(!claims.sub.is_empty() && !claims.aud.is_empty());
        }
        Err(reject) => {
            let _ = reject.label();
        }
    }
});
