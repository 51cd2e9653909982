//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization.
//!
//! Envoy is the gRPC caller (its own API key with `tessera:introspect`, sent as
//! `initial_metadata`, checked by the usual interceptor). The credential judged is the
//! HTTP request's `authorization: Bearer <token>` header, through the same call as
//! `Introspect`: the verified-token cache and the exact revocation state.
//!
//! Allowed: OK, with `x-tessera-subject`, `x-tessera-client-id`, `x-tessera-scopes`
//! and `x-tessera-token-id` set on the upstream request and every other incoming
//! `x-tessera-*` header removed, so a client can never pass one off. Denied: 401 with
//! an RFC 6750 §3 challenge, or 403 `insufficient_scope` when the route's
//! `context_extensions` ask for scopes (`tessera_required_scopes`) or an audience
//! (`tessera_audience`) the credential lacks.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::{Request, Response, Status};

use crate::authority::{Authority, Introspection};
use crate::error::Error;

/// Prefix of every header Tessera sets upstream; incoming ones are removed.
pub const HEADER_PREFIX: &str = "x-tessera-";
/// Route setting: space-separated scopes the credential must all hold.
pub const REQUIRED_SCOPES: &str = "tessera_required_scopes";
/// Route setting: space-separated audiences; the token must name at least one.
pub const AUDIENCE: &str = "tessera_audience";

/// gRPC handler for Envoy's `Authorization` service.
pub struct ExtAuthzHandler(pub Arc<Authority>);

/// The identity a credential carries, as sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `x-tessera-subject`: the token's `sub`, or an API key's owner.
    pub subject: String,
    /// `x-tessera-client-id`: the token's `client_id`, or the API key id.
    pub client_id: String,
    /// `x-tessera-scopes`: space-separated, as the token's `scope` claim has them
    /// (kept as one string: it goes upstream as it is).
    pub scopes: String,
    /// `x-tessera-token-id`: the jti, or the API key id.
    pub token_id: String,
    /// The token's audiences (an API key has none).
    pub audience: Vec<String>,
}

/// What Envoy is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through with these headers.
    Allow(Identity),
    /// 401 with `WWW-Authenticate: <challenge>`.
    Unauthorized(&'static str),
    /// 403 `insufficient_scope`, naming what the route needs.
    Forbidden(String),
}

/// No credential: RFC 6750 §3.1 says no error code then.
const CHALLENGE_NONE: &str = "Bearer";
const CHALLENGE_INVALID: &str = "Bearer error=\"invalid_token\"";

/// The bearer token of an `authorization` header value, if it is one: `Bearer`
/// (any case), one space, then the token exactly as sent. Nothing is trimmed, so the
/// token judged is byte for byte the one `Introspect` would judge (a b64token has no
/// whitespace, RFC 6750 §2.1: padding makes it invalid, never valid).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Splits a route setting on U+0020 only, as scope lists are (RFC 6749 §3.3).
fn list(settings: &HashMap<String, String>, key: &str) -> Vec<String> {
    settings
        .get(key)
        .map(|v| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The route's requirements against what the credential carries.
pub fn decide(found: Option<Identity>, settings: &HashMap<String, String>) -> Decision {
    let Some(id) = found else {
        return Decision::Unauthorized(CHALLENGE_INVALID);
    };
    let required = list(settings, REQUIRED_SCOPES);
    let audiences = list(settings, AUDIENCE);
    let scopes_ok = required
        .iter()
        .all(|r| id.scopes.split(' ').any(|s| s == r));
    let audience_ok = audiences.is_empty() || audiences.iter().any(|a| id.audience.contains(a));
    if scopes_ok && audience_ok {
        return Decision::Allow(id);
    }
    // RFC 6750 §3: `scope` names what the resource needs; quotes and backslashes
    // cannot occur in it (scope tokens are validated where they enter), but the route
    // setting is the operator's text, so keep only what the grammar allows.
    let scope: String = required
        .join(" ")
        .chars()
        .filter(|c| matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e' | ' '))
        .collect();
    Decision::Forbidden(if scope.is_empty() {
        "Bearer error=\"insufficient_scope\"".to_string()
    } else {
        format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
    })
}

fn identity(found: Introspection) -> Option<Identity> {
    match found {
        Introspection::AccessToken(c) => Some(Identity {
            scopes: c.scope,
            subject: c.sub,
            client_id: c.client_id,
            token_id: c.jti,
            audience: c.aud,
        }),
        Introspection::ApiKey(k) => Some(Identity {
            subject: k.owner.clone(),
            client_id: k.id.clone(),
            scopes: k.scopes.join(" "),
            token_id: k.id.clone(),
            audience: Vec::new(),
        }),
        // A refresh token is for the token endpoint only, never a bearer credential.
        Introspection::RefreshToken(_) | Introspection::Inactive => None,
    }
}

fn denied(status: HttpStatusCode, challenge: &str) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(status).add_header(
        "www-authenticate",
        challenge,
        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
        false,
    );
    let code = if status == HttpStatusCode::Forbidden {
        Status::permission_denied("")
    } else {
        Status::unauthenticated("")
    };
    let mut resp = CheckResponse::with_status(code);
    resp.set_http_response(http);
    resp
}

fn allowed(id: Identity, incoming: Option<&HashMap<String, String>>) -> CheckResponse {
    let mut http = OkHttpResponseBuilder::new();
    let set = [
        ("x-tessera-subject", id.subject),
        ("x-tessera-client-id", id.client_id),
        ("x-tessera-scopes", id.scopes),
        ("x-tessera-token-id", id.token_id),
    ];
    // Ours overwrite; any other x-tessera-* the client sent is removed. Removing only
    // headers we do not set keeps this right whichever order Envoy applies them in.
    // Most requests carry none: the prefix is compared in place, and only a match
    // is lowercased (Envoy sends lowercase names, but nothing here relies on it).
    let prefix = HEADER_PREFIX.len();
    for name in incoming.into_iter().flat_map(|h| h.keys()) {
        let ours = name
            .as_bytes()
            .get(..prefix)
            .is_some_and(|p| p.eq_ignore_ascii_case(HEADER_PREFIX.as_bytes()));
        if !ours {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if !set.iter().any(|(k, _)| *k == lower) {
            http.remove_header(lower);
        }
    }
    for (k, v) in set {
        http.add_header(k, v, Some(HeaderAppendAction::OverwriteIfExistsOrAdd), true);
    }
    let mut resp = CheckResponse::with_status(Status::ok(""));
    resp.set_http_response(http);
    resp
}

#[tonic::async_trait]
impl Authorization for ExtAuthzHandler {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let caller = super::caller(&req)?;
        let check = req.into_inner();
        let headers = check.get_client_headers();
        let token = headers
            .and_then(|h| h.get("authorization"))
            .and_then(|v| bearer(v));
        let Some(token) = token else {
            return Ok(Response::new(denied(
                HttpStatusCode::Unauthorized,
                CHALLENGE_NONE,
            )));
        };
        let found = match self.0.introspect(&caller, token).await {
            Ok(found) => identity(found),
            // Empty or oversize: a bad credential, not a bad call by Envoy.
            Err(Error::InvalidArgument(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let empty = HashMap::new();
        let settings = check
            .attributes
            .as_ref()
            .map(|a| &a.context_extensions)
            .unwrap_or(&empty);
        let resp = match decide(found, settings) {
            Decision::Allow(id) => allowed(id, headers),
            Decision::Unauthorized(c) => denied(HttpStatusCode::Unauthorized, c),
            Decision::Forbidden(c) => denied(HttpStatusCode::Forbidden, &c),
        };
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(scopes: &[&str], aud: &[&str]) -> Identity {
        Identity {
            subject: "alice".into(),
            client_id: "c".into(),
            scopes: scopes.join(" "),
            token_id: "t".into(),
            audience: aud.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn route(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_a_bearer_header_carries_a_credential() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(
            bearer("Bearer  abc"),
            Some(" abc"),
            "padding stays, to be refused"
        );
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn route_requirements_decide_between_allow_and_403() {
        let none = route(&[]);
        assert!(matches!(
            decide(Some(id(&[], &[])), &none),
            Decision::Allow(_)
        ));
        assert_eq!(
            decide(None, &none),
            Decision::Unauthorized("Bearer error=\"invalid_token\"")
        );
        let r = route(&[(REQUIRED_SCOPES, "read  write"), (AUDIENCE, "api other")]);
        assert!(matches!(
            decide(Some(id(&["write", "read", "x"], &["other"])), &r),
            Decision::Allow(_)
        ));
        assert_eq!(
            decide(Some(id(&["read"], &["api"])), &r),
            Decision::Forbidden("Bearer error=\"insufficient_scope\", scope=\"read write\"".into())
        );
        assert!(matches!(
            decide(Some(id(&["read", "write"], &["elsewhere"])), &r),
            Decision::Forbidden(_)
        ));
        let hostile = route(&[(REQUIRED_SCOPES, "a\"b\\c")]);
        assert_eq!(
            decide(Some(id(&[], &[])), &hostile),
            Decision::Forbidden("Bearer error=\"insufficient_scope\", scope=\"abc\"".into())
        );
    }
}
