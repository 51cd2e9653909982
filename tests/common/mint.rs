//! The K1 "mint" hook, for tests only: signs arbitrary header and payload bytes with
//! a running server's real signing key, so a hostile case can change exactly one
//! property of a genuine token and still carry a valid signature.
//!
//! The key is read the way an attacker who had stolen it would use it: the sealed row
//! from `<data_dir>/tessera.db`, opened with the development master key from
//! `<data_dir>/master.key`, then ring directly. Nothing in `src/` can mint like this.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::Value;
use tessera::keys::seal::MasterKey;
use tessera::test_support::{OptionalExt, Row, params};

use super::TestServer;

enum Pair {
    Ed25519(Ed25519KeyPair),
    EcP256(EcdsaKeyPair),
}

/// One of the server's signing keys, usable for arbitrary signatures.
pub struct Minter {
    /// The key's `kid`.
    pub kid: String,
    /// Its JWS algorithm (`EdDSA` or `ES256`).
    pub alg: String,
    pair: Pair,
}

impl Minter {
    /// The key signing now on the server's clock (a published successor waiting for
    /// its `activates_at` is not it).
    pub fn active(server: &TestServer) -> Minter {
        Self::load(server, None)
    }

    /// One signing key by kid, active or retired.
    pub fn for_kid(server: &TestServer, kid: &str) -> Minter {
        Self::load(server, Some(kid))
    }

    fn load(server: &TestServer, kid: Option<&str>) -> Minter {
        let now = server.clock.now();
        let kid = kid.map(str::to_string);
        let (kid, alg, sealed) = super::with_database(&server.data_dir, move |db| {
            let row = |r: &Row<'_>| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Vec<u8>>(2)?,
                ))
            };
            let sql = "SELECT kid, alg, sealed_private FROM signing_keys";
            let found = match kid {
                None => db.query_row(
                    &format!(
                        "{sql} WHERE revoked_at IS NULL AND activates_at <= ?1 \
                         AND (retired_at IS NULL OR retired_at > ?1) \
                         ORDER BY activates_at DESC, created_at DESC LIMIT 1"
                    ),
                    params![now],
                    row,
                ),
                Some(k) => db.query_row(&format!("{sql} WHERE kid = ?1"), params![k], row),
            };
            Ok(found.optional()?.expect("no such signing key"))
        });
        let master_text = std::fs::read_to_string(server.data_dir.join("master.key"))
            .expect("dev master key file");
        let master = MasterKey::from_text(&master_text).expect("master key text");
        let pkcs8 = master.open(&kid, &sealed).expect("unseal signing key");
        let pair = match alg.as_str() {
            "EdDSA" => Pair::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).expect("Ed25519 PKCS#8"),
            ),
            "ES256" => Pair::EcP256(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &SystemRandom::new(),
                )
                .expect("P-256 PKCS#8"),
            ),
            other => panic!("mint: unsupported key algorithm {other}"),
        };
        Minter { kid, alg, pair }
    }

    /// The raw public key (32-byte Ed25519, or 65-byte uncompressed SEC1 point).
    pub fn public_key(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Ed25519(p) => p.public_key().as_ref().to_vec(),
            Pair::EcP256(p) => p.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `msg` (Ed25519, or ECDSA P-256 as JOSE's fixed-width `r‖s`).
    pub fn signature(&self, msg: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Ed25519(p) => p.sign(msg).as_ref().to_vec(),
            Pair::EcP256(p) => p
                .sign(&SystemRandom::new(), msg)
                .expect("ECDSA sign")
                .as_ref()
                .to_vec(),
        }
    }

    /// Completes already-encoded segments: `signing_input` + `.` + the signature over it.
    /// The segments may be anything at all (padding, other alphabets, raw JSON).
    pub fn sign_input(&self, signing_input: &str) -> String {
        format!(
            "{signing_input}.{}",
            B64.encode(self.signature(signing_input.as_bytes()))
        )
    }

    /// A compact JWS over raw header and payload bytes: duplicate members, invalid
    /// UTF-8, a BOM, ... all survive byte for byte.
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        self.sign_input(&format!("{}.{}", B64.encode(header), B64.encode(payload)))
    }

    /// A compact JWS over JSON values.
    pub fn sign_json(&self, header: &Value, payload: &Value) -> String {
        self.sign_raw(
            header.to_string().as_bytes(),
            payload.to_string().as_bytes(),
        )
    }

    /// Decodes `token`, lets `change` edit its header and payload, and re-signs.
    pub fn tweak(&self, token: &str, change: impl FnOnce(&mut Value, &mut Value)) -> String {
        let (mut h, mut p) = decode(token);
        change(&mut h, &mut p);
        self.sign_json(&h, &p)
    }
}

/// A token's header and payload as JSON values (no signature check).
pub fn decode(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let seg = parts.next().expect("segment");
        serde_json::from_slice(&B64.decode(seg).expect("base64url segment")).expect("JSON segment")
    };
    let h = next();
    let p = next();
    (h, p)
}
