//! What a revocation request names, and so what revoking it reaches — decided from
//! the shape of the text alone, before any lookup, so that the answer to an unknown or
//! forged credential cannot depend on what the store holds.

use crate::tokens::{self, Jti, opaque};

/// A credential given by its text (`Revoke(token)`, RFC 7009's `token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// `tsk_…`: an API key. Revoking it ends that key only, and only if it is the real
    /// key (a right id with a wrong secret changes nothing).
    ApiKey,
    /// A well-formed `tsr_…` refresh token. Revoking it ends its whole family, every
    /// access token the family minted and everything exchanged from those.
    RefreshToken,
    /// `tsr_…` but not a refresh token's shape: nothing of ours.
    MalformedRefreshToken,
    /// Anything else: an access token if it verifies. Revoking a genuine one
    /// blocklists its jti and everything exchanged from it.
    AccessToken,
}

/// Classifies a presented credential by its shape.
pub(crate) fn presented(token: &str) -> Presented {
    if token.starts_with(crate::apikeys::format::PREFIX) {
        Presented::ApiKey
    } else if token.starts_with(opaque::REFRESH_PREFIX) {
        if opaque::well_formed(token, opaque::REFRESH_PREFIX) {
            Presented::RefreshToken
        } else {
            Presented::MalformedRefreshToken
        }
    } else {
        Presented::AccessToken
    }
}

/// A credential given by its public id (`Revoke(token_id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    /// 16 lower-case hex digits: an API key's id.
    ApiKey,
    /// A jti of ours. Without the token its `exp` is unknown, so the blocklist entry
    /// must outlive any token that could carry it.
    AccessToken(Jti),
    /// Neither: nothing to revoke (the call still succeeds, RFC 7009 §2.2).
    Nothing,
}

/// Classifies a public id by its shape.
pub(crate) fn named(id: &str) -> Named {
    if id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Named::ApiKey;
    }
    match tokens::parse_jti(id) {
        Some(jti) => Named::AccessToken(jti),
        None => Named::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_credentials_are_told_apart_by_shape() {
        let (_, key) = crate::apikeys::generate("prod");
        let refresh = opaque::generate(opaque::REFRESH_PREFIX);
        let code = opaque::generate(opaque::CODE_PREFIX);
        let rows: &[(&str, &str, Presented)] = &[
            ("an API key", key.expose(), Presented::ApiKey),
            ("a mangled API key", "tsk_prod_x", Presented::ApiKey),
            ("a refresh token", refresh.expose(), Presented::RefreshToken),
            (
                "a truncated refresh token",
                &refresh.expose()[..20],
                Presented::MalformedRefreshToken,
            ),
            (
                "a bare refresh prefix",
                "tsr_",
                Presented::MalformedRefreshToken,
            ),
            (
                "a JWT",
                "eyJhbGciOiJFZERTQSJ9.e30.c2ln",
                Presented::AccessToken,
            ),
            (
                "an authorization code",
                code.expose(),
                Presented::AccessToken,
            ),
            ("garbage", "not a token", Presented::AccessToken),
        ];
        for (name, text, want) in rows {
            assert_eq!(presented(text), *want, "{name}");
        }
    }

    #[test]
    fn named_ids_are_told_apart_by_shape() {
        let (_, jti) = tokens::new_jti();
        assert_eq!(named("0123456789abcdef"), Named::ApiKey);
        assert_eq!(
            named(&jti),
            Named::AccessToken(tokens::parse_jti(&jti).unwrap())
        );
        let rows = [
            ("upper-case hex", "0123456789ABCDEF"),
            ("15 hex digits", "0123456789abcde"),
            ("17 hex digits", "0123456789abcdef0"),
            ("empty", ""),
            ("a family id", "not-an-id"),
        ];
        for (name, id) in rows {
            assert_eq!(named(id), Named::Nothing, "{name}");
        }
    }
}
