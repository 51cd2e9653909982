//! API-key format: generate, parse, hash, verify. Pure functions, no I/O.
//!
//! `tsk_<environment>_<id>_<secret><check>`:
//! - `tsk_` is a fixed prefix secret scanners can match;
//! - `environment` is 1–16 of `[a-z0-9]`;
//! - `id` is 16 hex digits (64 random bits), public, used to look the key up;
//! - `secret` is 32 random bytes (256 bits) in base64url, 43 characters;
//! - `check` is the first 4 bytes of SHA-256 over everything before it, base64url
//!   (6 characters): a client can reject a mistyped key without asking the service.
//!
//! Only `hash()` of a key is ever stored; `verify` compares in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Every API key starts with this, so secret scanners can match it.
pub(crate) const PREFIX: &str = "tsk_";
const SECRET_LEN: usize = 43;
const CHECK_LEN: usize = 6;
/// Longest well-formed key; anything longer is rejected before any work.
pub const MAX_LEN: usize = PREFIX.len() + 16 + 1 + 16 + 1 + SECRET_LEN + CHECK_LEN;

/// The public parts of a syntactically valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The environment the key was minted for.
    pub environment: &'a str,
    /// The public key id.
    pub id: &'a str,
}

/// Is `env` a valid environment label?
pub fn valid_environment(env: &str) -> bool {
    (1..=16).contains(&env.len())
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Mints a new key for `environment` (which must satisfy [`valid_environment`]).
pub fn generate(environment: &str) -> (String, Secret) {
    debug_assert!(valid_environment(environment));
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = Zeroizing::new([0u8; 32]);
    // SystemRandom only fails if the OS has no entropy source; nothing sensible can go on.
    rng.fill(&mut id).expect("OS random source");
    rng.fill(secret.as_mut()).expect("OS random source");
    let id_hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    // Written in place at its full length, then moved into the Secret: no copy of the
    // text is left behind unzeroized.
    let mut text = String::with_capacity(MAX_LEN);
    text.push_str(PREFIX);
    text.push_str(environment);
    text.push('_');
    text.push_str(&id_hex);
    text.push('_');
    B64.encode_string(secret.as_ref(), &mut text);
    let check = checksum(&text);
    text.push_str(&check);
    (id_hex, Secret::new(text))
}

/// The check characters of a key whose text before them is `body`.
pub(super) fn checksum(body: &str) -> String {
    B64.encode(&digest(&SHA256, body.as_bytes()).as_ref()[..4])
}

/// A key's structure alone: prefix, environment, id and the length of the rest, without
/// the secret's encoding or the checksum. Enough to look a key up: a key that then
/// matches its stored hash is, byte for byte, one this service minted, so the hot path
/// skips [`parse`]'s hash and decoding, and runs it only to say why a key was refused.
pub(crate) fn split(key: &str) -> Option<Parsed<'_>> {
    // Everything after the environment has a fixed length: `_<id>_<secret><check>`.
    // The parts are found from the end, with no search.
    const TAIL: usize = 1 + 16 + 1 + SECRET_LEN + CHECK_LEN;
    if key.len() > MAX_LEN || !key.is_ascii() || !key.starts_with(PREFIX) {
        return None;
    }
    let env_end = key.len().checked_sub(TAIL)?;
    let environment = key.get(PREFIX.len()..env_end)?;
    let id = key.get(env_end + 1..env_end + 17)?;
    let b = key.as_bytes();
    if b.get(env_end) != Some(&b'_')
        || b.get(env_end + 17) != Some(&b'_')
        || !valid_environment(environment)
        || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    Some(Parsed { environment, id })
}

/// Parses a key's structure and checksum. `None` for anything malformed.
pub fn parse(key: &str) -> Option<Parsed<'_>> {
    let parsed = split(key)?;
    // `split` checked the length and that the key is ASCII: these slices are in bounds.
    let (body, check) = key.split_at(key.len() - CHECK_LEN);
    let secret = &body[body.len() - SECRET_LEN..];
    // Strict base64url: rejects padding, other alphabets and non-canonical trailing bits.
    if B64.decode(secret).ok()?.len() != 32 {
        return None;
    }
    if checksum(body) != check {
        return None;
    }
    Some(parsed)
}

/// The stored form of a key: SHA-256 over a domain tag and the whole key text.
/// A 256-bit random secret needs no slow hash.
pub fn hash(key: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&SHA256);
    ctx.update(b"tessera api key v1\0");
    ctx.update(key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Does `key` hash to `stored`? Constant time in the hash comparison.
pub fn verify(key: &str, stored: &[u8]) -> bool {
    crate::secret::same_bytes(&hash(key), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (id, key) = generate("prod");
        let p = parse(key.expose()).expect("parses");
        assert_eq!(
            p,
            Parsed {
                environment: "prod",
                id: &id
            }
        );
        assert!(key.expose().starts_with("tsk_prod_"));
        assert!(verify(key.expose(), &hash(key.expose())));
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn typos_fail_the_checksum() {
        let (_, key) = generate("dev");
        let text = key.expose();
        // Change one character of the secret in every position.
        let start = text.len() - SECRET_LEN - CHECK_LEN;
        for i in start..text.len() {
            let mut b = text.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let typo = String::from_utf8(b).unwrap();
            assert!(parse(&typo).is_none(), "typo at {i} accepted");
        }
        assert!(parse(&text[..text.len() - 1]).is_none(), "truncated");
        assert!(parse(&format!("{text}A")).is_none(), "extended");
        assert!(parse(&text.to_uppercase()).is_none(), "case flipped");
    }

    #[test]
    fn malformed_inputs() {
        for bad in [
            "",
            "tsk_",
            "tsk___",
            "' OR '1'='1",
            "tsk_PROD_0123456789abcdef_x",
            "%",
            "_",
            "\0",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse(&"a".repeat(10_000)).is_none());
        assert!(!valid_environment("Prod"));
        assert!(!valid_environment("a_b"));
        assert!(!valid_environment(&"a".repeat(17)));
    }

    #[test]
    fn the_structure_is_read_from_the_end_whatever_the_secret_holds() {
        let secret = "_-".repeat(21) + "A";
        let key = format!("tsk_prod_0123456789abcdef_{secret}abcdef");
        assert_eq!(
            split(&key),
            Some(Parsed {
                environment: "prod",
                id: "0123456789abcdef"
            })
        );
        for bad in [
            // An environment with an underscore, or none.
            format!("tsk_pr_od_0123456789abcdef_{secret}abcdef"),
            format!("tsk__0123456789abcdef_{secret}abcdef"),
            // The separators moved by one, an id that is not lowercase hex.
            format!("tsk_prod0_123456789abcdef_{secret}abcdef"),
            format!("tsk_prod_0123456789abcde_f{secret}abcdef"),
            format!("tsk_prod_0123456789ABCDEF_{secret}abcdef"),
            // A tail one short or one long, another prefix, a non-ASCII byte.
            format!("tsk_prod_0123456789abcdef_{secret}abcde"),
            format!("tsk_prod_0123456789abcdef_{secret}abcdefg"),
            format!("tsx_prod_0123456789abcdef_{secret}abcdef"),
            format!("tsk_prodé_0123456789abcdef_{secret}abcdef"),
        ] {
            assert_eq!(split(&bad), None, "{bad}");
        }
        for len in 0..=MAX_LEN + 1 {
            assert_eq!(split(&"_".repeat(len)), None);
        }
    }

    #[test]
    fn wrong_secret_same_id() {
        let (_, a) = generate("dev");
        let (_, b) = generate("dev");
        assert!(!verify(b.expose(), &hash(a.expose())));
    }
}
