//! Tokens: access-token claims, the one strict verifier and its cache of verified
//! tokens, opaque refresh tokens and codes, and the pure rules about scopes and
//! lifetimes.

pub mod cache;
pub mod claims;
mod introspect;
mod issue;
pub mod opaque;
pub(crate) mod strict_json;
pub mod verify;

pub(crate) use introspect::EncodedOnce;
pub use introspect::Introspection;
pub use issue::AccessTokenRequest;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::error::{Error, Result};

/// A token id: 128 random bits. Revocation is keyed on it, never on token bytes, so
/// every encoding of one token (ECDSA `(r, n−s)`, say) is revoked together.
pub type Jti = u128;

/// A fresh random jti and its text form (22 base64url characters). Its bits come from
/// the thread's CSPRNG (ChaCha12, seeded and reseeded from the OS): a jti is public
/// and has only to be unique and unguessable, and asking the OS for every one cost a
/// system call per token (~0.4 µs, a sixth of what issuing spends around the
/// signature). Secrets (API keys, refresh tokens, codes) still come from the OS.
pub(crate) fn new_jti() -> (Jti, String) {
    let b: [u8; 16] = rand::random();
    (u128::from_be_bytes(b), B64.encode(b))
}

/// Parses a jti's text form; `None` unless it is exactly one we could have minted.
pub fn parse_jti(s: &str) -> Option<Jti> {
    if s.len() != 22 {
        return None;
    }
    let b: [u8; 16] = B64.decode(s).ok()?.try_into().ok()?;
    Some(u128::from_be_bytes(b))
}

/// Most scopes a request may carry.
pub(crate) const MAX_SCOPES: usize = 64;
/// Longest scope, subject, audience, client id, name or claim key.
pub(crate) const MAX_FIELD_LEN: usize = 256;
/// Scopes that govern Tessera itself; never copied into access tokens.
pub(crate) const SERVICE_SCOPE_PREFIX: &str = "tessera:";

/// Validates RFC 6749 §3.3 scope tokens, sorts and de-duplicates them.
pub(crate) fn normalize_scopes(scopes: &[String]) -> Result<Vec<String>> {
    if scopes.len() > MAX_SCOPES {
        return Err(Error::InvalidArgument(format!(
            "at most {MAX_SCOPES} scopes"
        )));
    }
    for s in scopes {
        let ok = !s.is_empty()
            && s.len() <= MAX_FIELD_LEN
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(Error::InvalidArgument("a scope must be 1-256 printable ASCII characters without spaces, quotes or backslashes".into()));
        }
    }
    let mut out = scopes.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Is `c` invisible or text-reordering: a control character, or one of the format,
/// separator and filler characters that make one identifier look like another
/// (`admin\u{200b}`, bidi overrides as in "Trojan Source")?
pub(crate) fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' // soft hyphen
                | '\u{034F}' // combining grapheme joiner
                | '\u{061C}' // Arabic letter mark
                | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
                | '\u{180E}' // Mongolian vowel separator
                | '\u{200B}'..='\u{200F}' // zero-width space and joiners, LRM, RLM
                | '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
                | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
                | '\u{FEFF}' // byte-order mark
                | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
                | '\u{E0000}'..='\u{E007F}' // tags
        )
}

/// Is `v` acceptable as an identifier (subject, audience, client id, ...): at most
/// [`MAX_FIELD_LEN`] bytes and nothing [hidden](is_hidden). Issuance refuses anything
/// else, so the verifier refuses it too: such a token was never minted here.
pub(crate) fn valid_field(v: &str) -> bool {
    v.len() <= MAX_FIELD_LEN && !v.chars().any(is_hidden)
}

/// Most audiences one token (or one key's `exchange_audiences`) may list.
pub(crate) const MAX_AUDIENCES: usize = 64;

/// Is `v` acceptable as one entry of a list (an audience, an extra-claim name): 1 to
/// [`MAX_FIELD_LEN`] bytes with no whitespace (any Unicode `White_Space`), control or
/// [hidden](is_hidden) character. Lists travel space-separated (RFC 6749 §3.3), so an
/// entry with whitespace in it could not come back as itself.
pub(crate) fn valid_list_entry(v: &str) -> bool {
    !v.is_empty() && valid_field(v) && !v.chars().any(char::is_whitespace)
}

/// Checks every entry of a list field and its length (`1..=max` entries, or `0..=max`
/// when `required` is false). The message names the field, never echoes the value.
pub(crate) fn check_list(what: &str, items: &[String], required: bool, max: usize) -> Result<()> {
    if (required && items.is_empty()) || items.len() > max {
        let min = usize::from(required);
        return Err(Error::InvalidArgument(format!(
            "{what}: between {min} and {max} entries"
        )));
    }
    if !items.iter().all(|v| valid_list_entry(v)) {
        return Err(Error::InvalidArgument(format!(
            "{what}: each entry must be 1-{MAX_FIELD_LEN} bytes without whitespace, control or invisible characters"
        )));
    }
    Ok(())
}

/// Checks a free-text identifier field (subject, audience, owner, name, client id).
pub(crate) fn check_field(what: &str, v: &str, required: bool) -> Result<()> {
    if required && v.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is required")));
    }
    if !valid_field(v) {
        return Err(Error::InvalidArgument(format!(
            "{what} must be at most {MAX_FIELD_LEN} bytes without control or invisible characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jti_round_trip_and_rejects() {
        let (j, s) = new_jti();
        assert_eq!(parse_jti(&s), Some(j));
        assert_eq!(parse_jti(""), None);
        assert_eq!(parse_jti(&format!("{s}=")), None);
        assert_eq!(parse_jti("' OR '1'='1 ----------"), None);
    }

    #[test]
    fn jtis_do_not_repeat_across_threads() {
        // Each thread has its own generator: seeded apart, they must not meet.
        let per_thread = || (0..5_000).map(|_| new_jti().0).collect::<Vec<_>>();
        let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(per_thread)).collect();
        let mut all: Vec<Jti> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.extend(per_thread());
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn identifiers_refuse_hidden_characters() {
        for ok in [
            "alice",
            "Zoë",
            "payments-api",
            "サービス",
            "user@example.com",
            "",
        ] {
            assert!(valid_field(ok), "{ok:?}");
        }
        for bad in [
            "admin\u{200b}",
            "admin\u{0}",
            "\u{202e}nimda",
            "\u{2066}admin",
            "admin\u{feff}",
            "ad\u{ad}min",
            "admin\n",
            "admin\u{2028}",
            "admin\u{e0041}",
            "\u{3164}",
        ] {
            assert!(!valid_field(bad), "{bad:?}");
            assert!(check_field("subject", bad, true).is_err(), "{bad:?}");
        }
        assert!(!valid_field(&"x".repeat(MAX_FIELD_LEN + 1)));
        assert!(check_field("subject", "", true).is_err());
    }

    #[test]
    fn list_entries_refuse_whitespace_of_every_kind() {
        for ok in ["payments-api", "https://api.example/x", "サービス", "a:b"] {
            assert!(valid_list_entry(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "a\tb",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{3000}b",
            "a\u{85}b",
            "a\nb",
            "\u{200b}",
            "a\u{2028}b",
        ] {
            assert!(!valid_list_entry(bad), "{bad:?}");
        }
        assert!(!valid_list_entry(&"x".repeat(MAX_FIELD_LEN + 1)));
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_list("audience", &list(&["a", "b"]), true, 2).is_ok());
        assert!(check_list("audience", &list(&[]), true, 2).is_err());
        assert!(check_list("exchange_audiences", &list(&[]), false, 2).is_ok());
        assert!(check_list("audience", &list(&["a", "b", "c"]), true, 2).is_err());
        assert!(check_list("audience", &list(&["a b"]), true, 2).is_err());
        assert!(check_list("audience", &list(&[" "]), true, 2).is_err());
    }

    #[test]
    fn scopes() {
        assert_eq!(
            normalize_scopes(&["b".into(), "a".into(), "b".into()]).unwrap(),
            vec!["a", "b"]
        );
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\0"] {
            assert!(normalize_scopes(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(normalize_scopes(&vec!["x".to_string(); 65]).is_err());
    }
}
