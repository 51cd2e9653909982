//! Pure OAuth grant rules, no I/O: PKCE (RFC 7636, `S256` only), redirect-URI
//! registration and matching (RFC 9700 §2.1/§4.1.3, RFC 8252 §7.3), scope narrowing,
//! the RFC 8693 `act` chain. Refusals are [`Error`]s of the OAuth kinds (`InvalidGrant`,
//! `InvalidScope`, `InvalidTarget`, ...), which answer as a gRPC status or as an
//! RFC 6749 §5.2 error alike.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::digest::{SHA256, digest};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tokens::{MAX_AUDIENCES, SERVICE_SCOPE_PREFIX, check_list, normalize_scopes};

/// The one PKCE method accepted.
pub(crate) const S256: &str = "S256";
/// RFC 8693 token-type URN of an access token (the only subject and issued type).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Lifetime of an authorization code, in seconds.
pub(crate) const CODE_TTL: i64 = 60;
/// Longest redirect URI accepted.
pub(crate) const MAX_REDIRECT_URI_LEN: usize = 2048;
/// Most redirect URIs one client may register.
pub(crate) const MAX_REDIRECT_URIS: usize = 16;
/// Longest `act` chain (RFC 8693 §4.1) a token may carry.
pub(crate) const MAX_ACT_DEPTH: usize = 8;

// ---------------------------------------------------------------------------------
// PKCE

/// Is `s` a well-formed `code_verifier` or `code_challenge` (RFC 7636 §4.1 ABNF:
/// 43–128 characters of `[A-Za-z0-9-._~]`)?
pub(crate) fn pkce_value_ok(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Checks the PKCE part of an authorization request. `S256` is mandatory: a missing
/// challenge, a missing method (RFC 7636 would default it to `plain`), `plain` and
/// unknown methods are refused. An `S256` challenge is base64url(SHA-256), so it must
/// be exactly 43 characters that decode to 32 bytes.
pub(crate) fn check_code_challenge(challenge: &str, method: &str) -> Result<()> {
    if challenge.is_empty() {
        return Err(Error::InvalidArgument(
            "code_challenge is required: PKCE with S256 is mandatory".into(),
        ));
    }
    match method {
        S256 => {}
        "plain" => {
            return Err(Error::InvalidArgument(
                "code_challenge_method plain is not allowed: use S256".into(),
            ));
        }
        "" => {
            return Err(Error::InvalidArgument(
                "code_challenge_method is required and must be S256".into(),
            ));
        }
        _ => {
            return Err(Error::InvalidArgument(
                "code_challenge_method must be S256".into(),
            ));
        }
    }
    let decoded = B64.decode(challenge).map(|v| v.len());
    if !pkce_value_ok(challenge) || challenge.len() != 43 || decoded != Ok(32) {
        return Err(Error::InvalidArgument(
            "code_challenge must be BASE64URL(SHA-256(code_verifier)): 43 characters".into(),
        ));
    }
    Ok(())
}

/// `BASE64URL(SHA-256(ASCII(verifier)))` (RFC 7636 §4.2).
pub(crate) fn s256(verifier: &str) -> String {
    B64.encode(digest(&SHA256, verifier.as_bytes()))
}

/// Checks a `code_verifier` against the stored challenge, in constant time. Every
/// failure is `invalid_grant` (RFC 7636 §4.6).
pub(crate) fn verify_pkce(verifier: &str, challenge: &str) -> Result<()> {
    if verifier.is_empty() {
        return Err(Error::InvalidGrant("code_verifier is required"));
    }
    if !pkce_value_ok(verifier) {
        return Err(Error::InvalidGrant(
            "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
        ));
    }
    if crate::secret::same_bytes(s256(verifier).as_bytes(), challenge.as_bytes()) {
        Ok(())
    } else {
        Err(Error::InvalidGrant(
            "code_verifier does not match the code_challenge",
        ))
    }
}

// ---------------------------------------------------------------------------------
// Redirect URIs

/// Splits an `http` loopback URI (`http://127.0.0.1[:port]…` or `http://[::1][:port]…`)
/// into its host literal and what follows the port. `None` for anything else —
/// including `localhost`, which RFC 8252 §8.3 advises against.
fn loopback_parts(uri: &str) -> Option<(&'static str, &str)> {
    let rest = uri.strip_prefix("http://")?;
    let (host, after) = if let Some(r) = rest.strip_prefix("127.0.0.1") {
        ("127.0.0.1", r)
    } else if let Some(r) = rest.strip_prefix("[::1]") {
        ("[::1]", r)
    } else {
        return None;
    };
    let tail = match after.strip_prefix(':') {
        Some(p) => {
            let end = p.find(['/', '?']).unwrap_or(p.len());
            let (port, tail) = p.split_at(end);
            let valid = (1..=5).contains(&port.len())
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|n| n != 0);
            if !valid {
                return None;
            }
            tail
        }
        None => after,
    };
    // `127.0.0.1.evil.example`, `127.0.0.1@evil.example`: not loopback.
    (tail.is_empty() || tail.starts_with('/') || tail.starts_with('?')).then_some((host, tail))
}

/// Checks a redirect URI for registration: `https` with a host and no userinfo, or
/// `http` on a loopback IP literal (RFC 9700 §2.6, RFC 8252 §7.3); printable ASCII,
/// no fragment (RFC 6749 §3.1.2), at most [`MAX_REDIRECT_URI_LEN`] bytes.
pub(crate) fn check_redirect_registration(uri: &str) -> Result<()> {
    if uri.is_empty()
        || uri.len() > MAX_REDIRECT_URI_LEN
        || !uri.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::InvalidArgument(format!(
            "a redirect URI must be 1-{MAX_REDIRECT_URI_LEN} printable ASCII characters without spaces"
        )));
    }
    if uri.contains('#') {
        return Err(Error::InvalidArgument(
            "a redirect URI must not contain a fragment".into(),
        ));
    }
    if let Some(rest) = uri.strip_prefix("https://") {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains(['@', '\\']) {
            return Err(Error::InvalidArgument(
                "an https redirect URI needs a host and no userinfo".into(),
            ));
        }
        return Ok(());
    }
    if uri.starts_with("http://") {
        return match loopback_parts(uri) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidArgument(
                "http redirect URIs are allowed only on a loopback IP literal \
                 (http://127.0.0.1:port/... or http://[::1]:port/...)"
                    .into(),
            )),
        };
    }
    Err(Error::InvalidArgument(
        "a redirect URI must use https (or http on a loopback IP literal)".into(),
    ))
}

/// Does a presented redirect URI match a registered one? Exact, octet-for-octet
/// comparison (RFC 9700 §4.1.3), with the one exception RFC 8252 §7.3 requires: a
/// loopback URI may differ in its port.
pub(crate) fn redirect_uri_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    match (loopback_parts(registered), loopback_parts(presented)) {
        (Some((h1, t1)), Some((h2, t2))) => h1 == h2 && t1 == t2,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------
// Scopes

/// `scopes` without the `tessera:*` scopes, which never go into tokens.
pub(crate) fn without_service_scopes(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| !s.starts_with(SERVICE_SCOPE_PREFIX))
        .cloned()
        .collect()
}

/// The scopes to grant: the requested ones, normalized, if they are all within
/// `available`; `available` (minus `tessera:*`) when none are requested. Asking for a
/// scope outside `available`, or for a `tessera:*` scope, is `invalid_scope`.
pub(crate) fn grant_scopes(requested: &[String], available: &[String]) -> Result<Vec<String>> {
    let requested = normalize_scopes(requested)?;
    if requested.is_empty() {
        let mut out = without_service_scopes(available);
        out.sort();
        out.dedup();
        return Ok(out);
    }
    if let Some(s) = requested
        .iter()
        .find(|s| s.starts_with(SERVICE_SCOPE_PREFIX))
    {
        return Err(Error::InvalidScope(format!(
            "scope {s} governs Tessera itself and is never put in a token"
        )));
    }
    if let Some(s) = requested.iter().find(|s| !available.contains(s)) {
        return Err(Error::InvalidScope(format!(
            "scope {s} is not within the scopes this grant holds"
        )));
    }
    Ok(requested)
}

// ---------------------------------------------------------------------------------
// Token exchange: on behalf of, never re-targeting

/// May the service with API key `key_id` (named `key_name`) act for a token with
/// audience `aud`? Only if the token was issued to it: its key id, or its key's name
/// (the service name), is one of the token's audiences. Exact comparison.
pub(crate) fn is_audience(aud: &[String], key_id: &str, key_name: &str) -> bool {
    aud.iter()
        .any(|a| a == key_id || (!key_name.is_empty() && a == key_name))
}

/// The audience of a token-exchange result. Every requested entry must be in the
/// caller key's `allowed` list (`exchange_audiences`), else `invalid_target`; none
/// requested means the caller's own key id — a narrower token for the caller itself,
/// which is already an audience of the subject token.
pub(crate) fn exchange_audience(
    requested: &[String],
    caller_key_id: &str,
    allowed: &[String],
) -> Result<Vec<String>> {
    if requested.is_empty() {
        return Ok(vec![caller_key_id.to_string()]);
    }
    check_list("audience", requested, true, MAX_AUDIENCES)?;
    if let Some(a) = requested.iter().find(|a| !allowed.contains(a)) {
        return Err(Error::InvalidTarget(format!(
            "audience {a:?} is not in this API key's exchange_audiences"
        )));
    }
    let mut out = requested.to_vec();
    out.dedup();
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Actor chain

/// Depth of an `act` chain (0 for none).
pub(crate) fn act_depth(act: Option<&Value>) -> usize {
    let mut depth = 0;
    let mut cur = act;
    while let Some(Value::Object(m)) = cur {
        depth += 1;
        cur = m.get("act");
    }
    depth
}

/// The `act` claim of a token obtained by `actor` (its key owner and key id) through
/// token exchange: `{"sub", "client_id"}`, with the subject token's own `act` nested
/// inside as `act.act` (RFC 8693 §4.1: the current actor outermost).
pub(crate) fn actor_claim(
    actor_sub: &str,
    actor_client_id: &str,
    prior: Option<&Value>,
) -> Result<Value> {
    if act_depth(prior) >= MAX_ACT_DEPTH {
        return Err(Error::InvalidArgument(format!(
            "the subject token has been exchanged {MAX_ACT_DEPTH} times already"
        )));
    }
    let mut act = Map::new();
    act.insert("sub".into(), Value::String(actor_sub.into()));
    act.insert("client_id".into(), Value::String(actor_client_id.into()));
    if let Some(p) = prior {
        act.insert("act".into(), p.clone());
    }
    Ok(Value::Object(act))
}

/// What a presented authorization code turns out to be, decided in the write that
/// spends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeUse {
    /// Never used and still inside its lifetime: redeem it.
    First,
    /// Never used but expired: refuse, revoke nothing.
    Expired,
    /// Used before (a replay, or the loser of a race): what the first redemption
    /// issued is revoked. There is no grace period for codes (OAuth 2.1 §4.1.3).
    Replay,
}

/// Classifies a presented authorization code from its row: `used_at` and `expires_at`
/// as stored, at instant `now`.
pub(crate) fn code_use(used_at: Option<i64>, expires_at: i64, now: i64) -> CodeUse {
    match used_at {
        Some(_) => CodeUse::Replay,
        None if now >= expires_at => CodeUse::Expired,
        None => CodeUse::First,
    }
}

/// What a presented refresh token turns out to be, decided in the write that spends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshUse {
    /// Never used: rotate it.
    First,
    /// Used moments ago by the same client (a retry after a lost response): answer
    /// with the successor pair the first use got, revoke nothing.
    GraceRetry,
    /// Used before and not a retry: a replay. The family is revoked.
    Reuse,
}

/// What the store kept of a used token's first use for the grace period.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraceRecord<'a> {
    /// The client that made the first use.
    pub(crate) presenter: &'a str,
    /// End of the grace window (first use + `refresh_reuse_grace`), inclusive.
    pub(crate) until: i64,
    /// Whether the successor refresh token has itself been used since: then whoever
    /// retries is not the client that lost the response.
    pub(crate) successor_used: bool,
}

/// Classifies a presented refresh token. `expires_at` is the earlier of the token's
/// idle and its family's absolute expiry; `grace` is `None` when no successor pair was
/// kept (grace period 0, or housekeeping dropped it). A retry is honoured only inside
/// the window, by the client that made the first use, before the token expired (an
/// expired token is never honoured, grace or not) and while the successor is unused;
/// any other use of a used token is a reuse.
pub(crate) fn refresh_use(
    used_at: Option<i64>,
    expires_at: i64,
    now: i64,
    grace: Option<GraceRecord<'_>>,
    presenter: &str,
) -> RefreshUse {
    if used_at.is_none() {
        return RefreshUse::First;
    }
    match grace {
        Some(g)
            if now <= g.until
                && now < expires_at
                && g.presenter == presenter
                && !g.successor_used =>
        {
            RefreshUse::GraceRetry
        }
        _ => RefreshUse::Reuse,
    }
}

#[cfg(test)]
mod tests;
