//! The one strict access-token verification. Every check the `jsonwebtoken` crate
//! leaves to its user is made here, in this order:
//!
//! 1. size and shape: at most `MAX_TOKEN_LEN` ASCII bytes, exactly three segments;
//! 2. header: strict base64url, a JSON object without duplicates, *only* `alg`, `typ`
//!    and `kid` (so `crit`, `jwk`, `jku`, `x5u`, `x5c`, `b64`, `zip`, `enc`, ... are all
//!    refused rather than half-understood), `typ` = `at+jwt`;
//! 3. key: `kid` names a key in our own set (no fallback, no fetching), and the
//!    header's `alg` equals that key's one algorithm, byte for byte;
//! 4. signature, through the ring provider — before the claims are even parsed;
//! 5. claims: exact types, exact `iss`, and time checks with no leeway (this service's
//!    own clock set `exp`/`nbf`), plus a lifetime cap.
//!
//! Revocation and token-version checks come after, in the caller, from memory.

use std::sync::Arc;

use std::borrow::Cow;
use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::de::{Error as _, MapAccess};

use super::claims::AccessClaims;
use super::strict_json::{MaybeStr, Members, Name, Strict};
use super::{Jti, strict_json};
use crate::keys::{Keyring, VerifyingKey};

/// Where verification finds a key by `kid`: the service's own [`Keyring`], or a
/// verifier's cached JWKS (the `tessera-verifier` crate). One trait, so both run this
/// very module's checks rather than a copy of them.
pub trait KeyLookup: Send + Sync {
    /// The key allowed to verify at `now` under this kid, if any.
    fn verifying(&self, kid: &str, now: i64) -> Option<Arc<VerifyingKey>>;

    /// Is `key`, which [`verifying`](Self::verifying) handed out before, still allowed
    /// to verify at `now`? (A cached verification asks on every use.)
    fn still_verifies(&self, key: &Arc<VerifyingKey>, now: i64) -> bool {
        self.verifying(&key.kid, now).is_some()
    }
}

impl KeyLookup for Keyring {
    fn verifying(&self, kid: &str, now: i64) -> Option<Arc<VerifyingKey>> {
        Keyring::verifying(self, kid, now)
    }

    fn still_verifies(&self, key: &Arc<VerifyingKey>, now: i64) -> bool {
        Keyring::still_verifies(self, key, now)
    }
}

/// Longest token accepted; longer input is refused before any decoding.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. For logs and metrics only — callers see `active: false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a compact JWS of the right size and shape.
    Malformed,
    /// A header member, type or algorithm we do not accept.
    Header,
    /// No such key, or a key past its verification window.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// A claim is missing or has the wrong type.
    Claims,
    /// Issued by someone else.
    Issuer,
    /// Past `exp`.
    Expired,
    /// Before `nbf`, or `iat` in the future.
    NotYetValid,
    /// Lives longer than any token we mint.
    Lifetime,
    /// On the blocklist.
    Revoked,
    /// Older than the subject's token version.
    OldVersion,
}

impl Reject {
    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Header => "header",
            Reject::UnknownKey => "unknown_key",
            Reject::Signature => "signature",
            Reject::Claims => "claims",
            Reject::Issuer => "issuer",
            Reject::Expired => "expired",
            Reject::NotYetValid => "not_yet_valid",
            Reject::Lifetime => "lifetime",
            Reject::Revoked => "revoked",
            Reject::OldVersion => "old_version",
        }
    }
}

/// What verification needs besides the token.
pub struct Rules<'a> {
    /// Our keys.
    pub keys: &'a dyn KeyLookup,
    /// Expected `iss`, exactly.
    pub issuer: &'a str,
    /// Longest lifetime (`exp − iat`) of any token we mint, in seconds.
    pub max_lifetime: i64,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Verifies signature and claims of an access token.
pub(crate) fn verify(token: &str, rules: &Rules<'_>) -> Result<(AccessClaims, Jti), Reject> {
    verify_with_key(token, rules).map(|(claims, jti, _)| (claims, jti))
}

/// `verify`, also naming the key that verified the signature.
pub fn verify_with_key(
    token: &str,
    rules: &Rules<'_>,
) -> Result<(AccessClaims, Jti, Arc<VerifyingKey>), Reject> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.is_ascii() {
        return Err(Reject::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed);
    };
    if h64.is_empty() || p64.is_empty() || s64.is_empty() {
        return Err(Reject::Malformed);
    }

    let header = B64.decode(h64).ok().ok_or(Reject::Malformed)?;
    let header = strict_json::parse_members(&header, Header::default()).ok_or(Reject::Malformed)?;
    let (Some(alg), Some(typ), Some(kid)) = header.three() else {
        // Exactly alg, typ, kid, all strings: anything else is a member we would have
        // to understand.
        return Err(Reject::Header);
    };
    if typ != "at+jwt" && typ != "application/at+jwt" {
        return Err(Reject::Header);
    }
    let key = rules
        .keys
        .verifying(kid, rules.now)
        .ok_or(Reject::UnknownKey)?;
    if alg != key.alg_name {
        return Err(Reject::Header);
    }

    let signing_input = &token[..h64.len() + 1 + p64.len()];
    if !crate::keys::provider::verify_jws(s64, signing_input.as_bytes(), &key.decoding, key.alg) {
        return Err(Reject::Signature);
    }

    let payload = B64.decode(p64).map_err(|_| Reject::Claims)?;
    let (claims, jti) = AccessClaims::from_json(&payload).ok_or(Reject::Claims)?;
    check_claims(&claims, rules)?;
    Ok((claims, jti, key))
}

/// A protected header as parsed: the three members we understand, read straight from
/// the decoded bytes (borrowed unless escaped), and the names of any others.
#[derive(Default)]
struct Header<'a> {
    alg: Option<MaybeStr<'a>>,
    typ: Option<MaybeStr<'a>>,
    kid: Option<MaybeStr<'a>>,
    /// Names of other members: any refuses the header, but a repeated one is still a
    /// duplicate (malformed), as for every other object.
    others: BTreeSet<Cow<'a, str>>,
}

impl<'a> Header<'a> {
    /// `alg`, `typ` and `kid` when the header has exactly these three members, each
    /// a string.
    fn three(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        if !self.others.is_empty() {
            return (None, None, None);
        }
        fn s<'s>(m: &'s Option<MaybeStr<'_>>) -> Option<&'s str> {
            m.as_ref().and_then(|v| v.0.as_deref())
        }
        (s(&self.alg), s(&self.typ), s(&self.kid))
    }
}

impl<'de> Members<'de> for Header<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: Name<'de>, map: &mut A) -> Result<(), A::Error> {
        let slot = match name.0.as_ref() {
            "alg" => &mut self.alg,
            "typ" => &mut self.typ,
            "kid" => &mut self.kid,
            _ => {
                map.next_value::<Strict>()?;
                return if self.others.insert(name.0) {
                    Ok(())
                } else {
                    Err(A::Error::custom("duplicate member name"))
                };
            }
        };
        let value = map.next_value::<MaybeStr<'de>>()?;
        if slot.replace(value).is_some() {
            return Err(A::Error::custom("duplicate member name"));
        }
        Ok(())
    }
}

/// The claim checks, separate so unit tests can reach them without signing.
pub(crate) fn check_claims(c: &AccessClaims, rules: &Rules<'_>) -> Result<(), Reject> {
    if c.iss.as_bytes() != rules.issuer.as_bytes() {
        return Err(Reject::Issuer);
    }
    // No leeway: `exp == now` is expired (RFC 7519 "on or after").
    if rules.now >= c.exp {
        return Err(Reject::Expired);
    }
    if c.nbf > rules.now || c.iat > rules.now {
        return Err(Reject::NotYetValid);
    }
    if c.exp.saturating_sub(c.iat) > rules.max_lifetime || c.exp <= c.iat || c.nbf < c.iat {
        return Err(Reject::Lifetime);
    }
    Ok(())
}
