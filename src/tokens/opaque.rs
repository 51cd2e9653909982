//! Opaque bearer secrets: refresh tokens (`tsr_`) and authorization codes (`tsc_`).
//! 256 random bits each, stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Prefix of refresh tokens.
pub(crate) const REFRESH_PREFIX: &str = "tsr_";
/// Prefix of authorization codes.
pub(crate) const CODE_PREFIX: &str = "tsc_";
const BODY_LEN: usize = 43;

/// Mints a new secret with `prefix`.
pub(crate) fn generate(prefix: &str) -> Secret {
    let mut raw = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(raw.as_mut())
        .expect("OS random source");
    // At its full length from the start and moved, not copied, into the Secret.
    let mut s = String::with_capacity(prefix.len() + BODY_LEN);
    s.push_str(prefix);
    B64.encode_string(raw.as_ref(), &mut s);
    Secret::new(s)
}

/// Is `text` shaped like a secret with `prefix`? (Cheap; says nothing about validity.)
pub(crate) fn well_formed(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|b| b.len() == BODY_LEN && B64.decode(b).is_ok_and(|v| v.len() == 32))
}

/// The stored form.
pub fn hash(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    out
}

/// A short random public id (for families, refresh-token ids, client ids).
pub(crate) fn public_id() -> String {
    let mut b = [0u8; 12];
    SystemRandom::new().fill(&mut b).expect("OS random source");
    B64.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let t = generate(REFRESH_PREFIX);
        assert!(well_formed(t.expose(), REFRESH_PREFIX));
        assert!(!well_formed(t.expose(), CODE_PREFIX));
        assert!(!well_formed(
            &t.expose()[..t.expose().len() - 1],
            REFRESH_PREFIX
        ));
        assert_ne!(hash(t.expose()), hash(generate(REFRESH_PREFIX).expose()));
        assert_eq!(format!("{t:?}"), "[redacted]");
    }
}
