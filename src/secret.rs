//! The one type for secret text: API keys and client secrets, refresh tokens, codes,
//! access tokens on their way out, and secrets read from configuration. Zeroized on
//! drop and `[redacted]` in `Debug`, so neither a forgotten buffer nor a log line of a
//! struct that holds one gives it away. (The master key is bytes, with a type of its
//! own: [`MasterKey`](crate::keys::seal::MasterKey).)

use serde::Deserialize;

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
}
