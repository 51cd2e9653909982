//! The one type for secret text: API keys and client secrets, refresh tokens, codes,
//! access tokens on their way out, and secrets read from configuration. Zeroized on
//! drop and `[redacted]` in `Debug`, so neither a forgotten buffer nor a log line of a
//! struct that holds one gives it away. (The master key is bytes, with a type of its
//! own: [`MasterKey`](crate::keys::seal::MasterKey).) And the one constant-time
//! comparison of secret bytes, `same_bytes`.

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Secret text. Read it with [`expose`](Secret::expose) where it must leave the
/// process (an answer to its owner, a request to check it), nowhere else.
#[derive(Clone, Default, Deserialize, zeroize::ZeroizeOnDrop)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Takes `text` as a secret. A `String` is moved in, not copied.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `a == b`, in time that depends on the lengths only. `subtle`'s slice comparison
/// costs about twelve instructions a byte (a barrier per byte): five thousand for a
/// token's header and payload, three hundred for a 32-byte hash. This
/// fold has no early exit for the compiler to find, and vectorizes.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    diff.ct_eq(&0).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        let s = Secret::new("tsk_live_0123456789abcdef_hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "tsk_live_0123456789abcdef_hunter2");
    }

    #[test]
    fn same_bytes_is_equality() {
        let a = b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9".to_vec();
        assert!(same_bytes(&a, &a.clone()));
        assert!(same_bytes(b"", b""));
        for i in [0, a.len() / 2, a.len() - 1] {
            let mut b = a.clone();
            b[i] ^= 1;
            assert!(!same_bytes(&a, &b), "byte {i}");
        }
        assert!(!same_bytes(&a, &a[..a.len() - 1]));
    }
}
