//! Who is calling: `authorization: Bearer <api key>`, or else a client certificate's
//! SPIFFE id mapped in `spiffe_callers` → a [`Principal`] in the request extensions,
//! checked once by an interceptor before any handler runs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tonic::{Request, Status};

use crate::apikeys::Refusal;
use crate::authority::Authority;
use crate::error::Error;

/// Calls Introspect.
pub(crate) const SCOPE_INTROSPECT: &str = "tessera:introspect";
/// Issues access tokens and authorization codes.
pub(crate) const SCOPE_ISSUE: &str = "tessera:issue";
/// Revokes tokens and bumps token versions.
pub(crate) const SCOPE_REVOKE: &str = "tessera:revoke";
/// Everything, including API keys, clients and key rotation.
pub const SCOPE_ADMIN: &str = "tessera:admin";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The caller's API-key id, or its SPIFFE id (logged and audited; not secret).
    pub key_id: Arc<str>,
    /// Owner of the calling application.
    pub owner: Arc<str>,
    /// Scopes of the caller's key.
    pub scopes: Arc<[String]>,
}

impl Principal {
    /// Does this caller hold `scope` (admin holds every scope)?
    pub(crate) fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == SCOPE_ADMIN)
    }
}

/// The caller of one request, if any, and the request id.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None` when no credential was presented. Shared with the live key set: a
    /// call costs one reference count, not a copy.
    pub principal: Option<Arc<Principal>>,
    /// From `x-request-id`, or generated.
    pub request_id: RequestId,
}

impl Caller {
    /// The principal, if it holds `scope`: `UNAUTHENTICATED` without a credential,
    /// `PERMISSION_DENIED` without the scope.
    pub(crate) fn require(&self, scope: &str) -> Result<&Principal, Error> {
        let p = self.principal.as_ref().ok_or(Error::Unauthenticated(
            "missing credential: send authorization: Bearer <api key>",
        ))?;
        if !p.has(scope) {
            let who = if p.key_id.starts_with("spiffe://") {
                "SPIFFE id"
            } else {
                "API key"
            };
            return Err(Error::PermissionDenied(format!(
                "this {who} lacks the {scope} scope"
            )));
        }
        Ok(p)
    }

    /// Key id for audit records (`-` when anonymous).
    pub(crate) fn audit_id(&self) -> &str {
        self.principal.as_ref().map_or("-", |p| &*p.key_id)
    }
}

/// Why a caller was refused (the `reason` label of `tessera_auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential where the call needs one.
    Missing,
    /// `authorization` is not `Bearer <api key>`, or the key is not in API-key format.
    Malformed,
    /// More than one `authorization` header.
    Duplicate,
    /// Well formed, but no live key has this id (never issued, or revoked).
    UnknownKey,
    /// The id is known but the secret does not match.
    BadSecret,
    /// The key's environment part differs from the stored key's.
    WrongEnvironment,
    /// The key has expired.
    Expired,
    /// A known caller without the scope (or right) the call needs.
    PermissionDenied,
}

impl AuthFailure {
    /// Every reason, in label order.
    pub(crate) const ALL: [AuthFailure; 8] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Duplicate,
        AuthFailure::UnknownKey,
        AuthFailure::BadSecret,
        AuthFailure::WrongEnvironment,
        AuthFailure::Expired,
        AuthFailure::PermissionDenied,
    ];

    /// The metric label and log field.
    pub(crate) fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Duplicate => "duplicate",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSecret => "bad_secret",
            AuthFailure::WrongEnvironment => "wrong_environment",
            AuthFailure::Expired => "expired",
            AuthFailure::PermissionDenied => "permission_denied",
        }
    }
}

/// Counts and logs a refused credential: the key id when the key parses, the reason,
/// the request id (from the span); never the key.
fn refused(authority: &Authority, key: Option<&str>, reason: AuthFailure) -> Status {
    authority.metrics().auth_failure(reason);
    let key_id = key.and_then(crate::apikeys::parse).map(|p| p.id);
    tracing::info!(
        key_id = %key_id.unwrap_or("-"),
        reason = %reason.label(),
        "authentication failed"
    );
    Error::Unauthenticated(match reason {
        AuthFailure::Duplicate => "send exactly one authorization: Bearer <api key>",
        AuthFailure::Malformed if key.is_none() => "authorization must be: Bearer <api key>",
        _ => "invalid API key",
    })
    .into()
}

/// The API key of an `authorization` value in the `Bearer` scheme (`Bearer` or
/// `bearer`), trimmed; `None` for any other scheme. One reading for the gRPC interceptor
/// and the OAuth endpoints alike.
pub(crate) fn bearer_key(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// The request-id header, in both directions.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id: the caller's `x-request-id` when it is fit to log and echo (1–64
/// printable ASCII characters), else one of ours. It shares the header's bytes, so
/// taking it from a request copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id in a header value, if it is fit to log and echo.
    pub(crate) fn from_header(v: &HeaderValue) -> Option<Self> {
        let id = v.as_bytes();
        let sane = !id.is_empty() && id.len() <= 64 && id.iter().all(u8::is_ascii_graphic);
        sane.then(|| RequestId(v.clone()))
    }

    /// The id a request's headers carry, if it is fit to log and echo.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers.get(&REQUEST_ID).and_then(Self::from_header)
    }

    /// The id a request's headers carry, else a fresh one.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        Self::from_headers(headers).unwrap_or_else(Self::fresh)
    }

    /// A fresh id of our own.
    pub(crate) fn fresh() -> Self {
        // Base64url: always a valid header value.
        let id = HeaderValue::from_bytes(&fresh_request_id());
        RequestId(id.unwrap_or(HeaderValue::from_static("-")))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }

    /// The id as a header value, as the request carries it.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as a header value for the answer, marked never-indexed for HPACK (RFC
    /// 7541 §6.2.3): a value unique to each call is never sent twice, so indexing it
    /// only churned the connection's header table. Each answer inserted a new entry,
    /// evicting one a later answer could have used, and the encoder first compared it
    /// with every earlier id it still held: about 7 % of the instructions of a health
    /// check.
    pub(crate) fn into_answer_header(self) -> HeaderValue {
        let mut v = self.0;
        v.set_sensitive(true);
        v
    }
}

/// The given id if it is fit to log and echo, else a fresh one.
impl From<&str> for RequestId {
    fn from(given: &str) -> Self {
        HeaderValue::from_str(given)
            .ok()
            .and_then(|v| Self::from_header(&v))
            .unwrap_or_else(Self::fresh)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request id of our own: unique, not secret, 16 base64url characters. A random
/// prefix drawn once per process and a counter, so that no call pays for a read of the
/// OS random source (a system call, about as costly as the rest of an empty call's
/// middleware).
fn fresh_request_id() -> [u8; 16] {
    use base64::Engine;
    use ring::rand::SecureRandom;
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: LazyLock<[u8; 6]> = LazyLock::new(|| {
        let mut b = [0u8; 6];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .expect("OS random source");
        b
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut raw = [0u8; 12];
    raw[..6].copy_from_slice(&*PREFIX);
    raw[6..].copy_from_slice(&n[2..]);
    let mut id = [0u8; 16];
    // 12 bytes are always 16 characters: the slice is exactly long enough.
    let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(raw, &mut id);
    id
}

/// The principal of a SPIFFE-identified caller, from `spiffe_callers`; `None` for an
/// id not listed there (the call is then anonymous).
fn spiffe_principal(
    callers: &HashMap<String, Arc<[String]>>,
    req: &Request<()>,
) -> Option<Arc<Principal>> {
    let id = req
        .extensions()
        .get::<crate::net::PeerInfo>()?
        .spiffe_id
        .as_deref()?;
    let Some(scopes) = callers.get(id) else {
        tracing::debug!(spiffe_id = %id, "client certificate's SPIFFE id is not in spiffe_callers");
        return None;
    };
    Some(Arc::new(Principal {
        key_id: id.into(),
        owner: id.into(),
        scopes: scopes.clone(),
    }))
}

/// Builds the interceptor: a bad or repeated credential fails the call here; a missing
/// one is left for the handler to judge (Exchange and GetJwks need none). An API key
/// takes precedence over a SPIFFE client certificate: the key is the more specific
/// credential, and a workload that sends one means to be that key.
pub(crate) fn interceptor(
    authority: Arc<Authority>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    let spiffe: Arc<HashMap<String, Arc<[String]>>> = Arc::new(
        authority
            .config
            .spiffe_callers
            .iter()
            .map(|(id, scopes)| (id.clone(), Arc::from(scopes.clone())))
            .collect(),
    );
    move |mut req: Request<()>| {
        // By the headers' static names: looking one up by `&str` parses the name first.
        let headers: &axum::http::HeaderMap = req.metadata().as_ref();
        // Made sane (or made up) by the middleware before: only checked here.
        let request_id = RequestId::of(headers);
        // Two credentials in one call would let a proxy and the service disagree on
        // which one counts: refuse instead of silently taking the first.
        let mut credentials = headers.get_all(AUTHORIZATION).iter();
        let credential = credentials.next();
        if credentials.next().is_some() {
            return Err(refused(&authority, None, AuthFailure::Duplicate));
        }
        let principal = match credential {
            None if spiffe.is_empty() => None,
            None => spiffe_principal(&spiffe, &req),
            Some(v) => {
                let key = v
                    .to_str()
                    .ok()
                    .and_then(bearer_key)
                    .ok_or_else(|| refused(&authority, None, AuthFailure::Malformed))?;
                let peer = req
                    .extensions()
                    .get::<crate::net::PeerInfo>()
                    .map(|p| p.remote_addr.ip());
                let c = authority
                    .authenticate_api_key(key, peer)
                    .map_err(|r| match r {
                        Refusal::Failed(reason) => refused(&authority, Some(key), reason),
                        Refusal::Limited(e) => Status::from(e),
                    })?;
                Some(c.principal.clone())
            }
        };
        req.extensions_mut().insert(Caller {
            principal,
            request_id,
        });
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_key_is_read_in_either_case_of_the_scheme_and_trimmed() {
        assert_eq!(bearer_key("Bearer tsk_a"), Some("tsk_a"));
        assert_eq!(bearer_key("bearer  tsk_a "), Some("tsk_a"));
        assert_eq!(bearer_key("BEARER tsk_a"), None);
        assert_eq!(bearer_key("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_key("Bearer"), None);
    }

    #[test]
    fn fresh_request_ids_are_distinct_and_header_safe() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::fresh().as_str().to_string())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }

    #[test]
    fn request_ids_are_base64url_of_the_prefix_and_the_counter() {
        use base64::Engine;
        let id = fresh_request_id();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id)
            .expect("base64url");
        assert_eq!(raw.len(), 12);
        let next = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(fresh_request_id())
            .expect("base64url");
        assert_eq!(raw[..6], next[..6], "one prefix per process");
        let count = |b: &[u8]| b[6..].iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
        assert!(count(&next) > count(&raw), "a counter");
    }

    #[test]
    fn a_sane_given_request_id_is_kept_and_a_bad_one_replaced() {
        assert_eq!(RequestId::from("abc-123").as_str(), "abc-123");
        for bad in ["", "has space", "\u{7f}", &"x".repeat(65)] {
            let id = RequestId::from(bad);
            assert_ne!(id.as_str(), bad, "{bad:?}");
            assert_eq!(id.as_str().len(), 16, "a fresh one");
        }
    }
}
