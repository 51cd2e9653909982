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

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::proto::envoy_authz::authorization_server::Authorization;
use crate::proto::envoy_authz::check_response::HttpResponse;
use crate::proto::envoy_authz::{
    CheckRequest, CheckResponse, DeniedHttpResponse, Entry, HeaderValue, HeaderValueOption,
    HttpStatus, OkHttpResponse, RpcStatus,
};

use crate::authority::Authority;
use crate::error::Error;
use crate::tokens::Introspection;

/// Prefix of every header Tessera sets upstream; incoming ones are removed.
pub(crate) const HEADER_PREFIX: &str = "x-tessera-";
/// Route setting: space-separated scopes the credential must all hold.
pub(crate) const REQUIRED_SCOPES: &str = "tessera_required_scopes";
/// Route setting: space-separated audiences; the token must name at least one.
pub(crate) const AUDIENCE: &str = "tessera_audience";

/// gRPC handler for Envoy's `Authorization` service.
pub(crate) struct ExtAuthzHandler(pub(crate) Arc<Authority>);

/// The identity a credential carries, as sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `x-tessera-subject`: the token's `sub`, or an API key's owner.
    pub(crate) subject: String,
    /// `x-tessera-client-id`: the token's `client_id`, or the API key id.
    pub(crate) client_id: String,
    /// `x-tessera-scopes`: space-separated, as the token's `scope` claim has them
    /// (kept as one string: it goes upstream as it is).
    pub(crate) scopes: String,
    /// `x-tessera-token-id`: the jti, or the API key id.
    pub(crate) token_id: String,
    /// The token's audiences (an API key has none).
    pub(crate) audience: Vec<String>,
}

/// What Envoy is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
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

/// The value of `key` in a map sent as entries: the last one wins, as when a protobuf
/// map is decoded; a value that is not UTF-8 is absent.
fn lookup<'a>(entries: &'a [Entry], key: &str) -> Option<&'a str> {
    let e = entries.iter().rev().find(|e| e.key == key.as_bytes())?;
    std::str::from_utf8(&e.value).ok()
}

/// Splits a route setting on U+0020 only, as scope lists are (RFC 6749 §3.3).
fn list(settings: &[Entry], key: &str) -> Vec<String> {
    lookup(settings, key)
        .map(|v| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The route's requirements (its `context_extensions`) against what the credential
/// carries.
pub(crate) fn decide(found: Option<Identity>, settings: &[Entry]) -> Decision {
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
        Introspection::AccessToken(found) => {
            let c = &found.claims;
            Some(Identity {
                scopes: c.scope.clone(),
                subject: c.sub.clone(),
                client_id: c.client_id.clone(),
                token_id: c.jti.clone(),
                audience: c.aud.clone(),
            })
        }
        Introspection::ApiKey(key) => {
            let k = &key.row;
            Some(Identity {
                subject: k.owner.clone(),
                client_id: k.id.clone(),
                scopes: k.scopes.join(" "),
                token_id: k.id.clone(),
                audience: Vec::new(),
            })
        }
        // A refresh token is for the token endpoint only, never a bearer credential.
        Introspection::RefreshToken(_) | Introspection::Inactive => None,
    }
}

/// `OVERWRITE_IF_EXISTS_OR_ADD` of Envoy's `HeaderValueOption.HeaderAppendAction`.
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

fn header(key: &str, value: String, keep_empty_value: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value,
        }),
        append_action: OVERWRITE_IF_EXISTS_OR_ADD,
        keep_empty_value,
    }
}

fn response(code: Code, http: HttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus {
            code: code as i32,
            message: String::new(),
        }),
        http_response: Some(http),
    }
}

fn denied(status: u16, challenge: &str) -> CheckResponse {
    let code = if status == 403 {
        Code::PermissionDenied
    } else {
        Code::Unauthenticated
    };
    let http = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(status),
        }),
        headers: vec![header("www-authenticate", challenge.to_string(), false)],
    };
    response(code, HttpResponse::DeniedResponse(http))
}

fn allowed(id: Identity, incoming: &[Entry]) -> CheckResponse {
    let set = [
        ("x-tessera-subject", id.subject),
        ("x-tessera-client-id", id.client_id),
        ("x-tessera-scopes", id.scopes),
        ("x-tessera-token-id", id.token_id),
    ];
    // Ours overwrite; any other x-tessera-* the client sent is removed. Removing only
    // headers we do not set keeps this right whichever order Envoy applies them in.
    // Most requests carry none: the prefix is compared in place, and only a match is
    // lowercased (Envoy sends lowercase names, but nothing here relies on it).
    let prefix = HEADER_PREFIX.len();
    let mut remove = Vec::new();
    for e in incoming {
        let ours = e
            .key
            .get(..prefix)
            .is_some_and(|p| p.eq_ignore_ascii_case(HEADER_PREFIX.as_bytes()));
        if !ours {
            continue;
        }
        let lower = String::from_utf8_lossy(&e.key).to_ascii_lowercase();
        if !set.iter().any(|(k, _)| *k == lower) && !remove.contains(&lower) {
            remove.push(lower);
        }
    }
    let http = OkHttpResponse {
        headers: set.map(|(k, v)| header(k, v, true)).into(),
        headers_to_remove: remove,
    };
    response(Code::Ok, HttpResponse::OkResponse(http))
}

#[tonic::async_trait]
impl Authorization for ExtAuthzHandler {
    async fn check(
        &self,
        mut req: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let check = req.into_inner();
        let attributes = check.attributes.as_ref();
        let headers: &[Entry] = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map_or(&[], |h| &h.headers);
        let settings: &[Entry] = attributes.map_or(&[], |a| &a.context_extensions);
        let Some(token) = lookup(headers, "authorization").and_then(bearer) else {
            return Ok(Response::new(denied(401, CHALLENGE_NONE)));
        };
        let found = match self.0.introspect(&caller, token).await {
            Ok(found) => identity(found),
            // Empty or oversize: a bad credential, not a bad call by Envoy.
            Err(Error::InvalidArgument(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let resp = match decide(found, settings) {
            Decision::Allow(id) => allowed(id, headers),
            Decision::Unauthorized(c) => denied(401, c),
            Decision::Forbidden(c) => denied(403, &c),
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

    fn route(pairs: &[(&str, &str)]) -> Vec<Entry> {
        pairs
            .iter()
            .map(|(k, v)| Entry {
                key: k.as_bytes().to_vec().into(),
                value: v.as_bytes().to_vec().into(),
            })
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

    #[test]
    fn envoys_full_messages_read_and_write_through_the_lean_ones() {
        use envoy_types::ext_authz::v3::pb as envoy;
        use prost::Message;
        let mut full = envoy::CheckRequest::default();
        let attrs = full.attributes.get_or_insert_default();
        attrs.context_extensions = [(REQUIRED_SCOPES.to_string(), "read".to_string())].into();
        let http = attrs
            .request
            .get_or_insert_default()
            .http
            .get_or_insert_default();
        http.method = "GET".into();
        http.path = "/x".into();
        http.headers = [
            ("authorization".to_string(), "Bearer t".to_string()),
            ("X-Tessera-Admin".to_string(), "forged".to_string()),
        ]
        .into();
        attrs.source = Some(Default::default());
        let lean = CheckRequest::decode(full.encode_to_vec().as_slice()).unwrap();
        let a = lean.attributes.unwrap();
        let headers = &a.request.unwrap().http.unwrap().headers;
        assert_eq!(lookup(headers, "authorization"), Some("Bearer t"));
        assert_eq!(lookup(&a.context_extensions, REQUIRED_SCOPES), Some("read"));

        let ok = allowed(id(&["read"], &[]), headers);
        let back = envoy::CheckResponse::decode(ok.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.status.unwrap().code, 0);
        let Some(envoy::HttpResponse::OkResponse(r)) = back.http_response else {
            panic!("not an OK response");
        };
        assert_eq!(r.headers_to_remove, ["x-tessera-admin"]);
        let set: Vec<_> = r
            .headers
            .iter()
            .map(|h| {
                let v = h.header.as_ref().unwrap();
                (
                    v.key.as_str(),
                    v.value.as_str(),
                    h.append_action,
                    h.keep_empty_value,
                )
            })
            .collect();
        assert!(set.contains(&("x-tessera-subject", "alice", 2, true)));
        assert!(set.contains(&("x-tessera-scopes", "read", 2, true)));

        let no = denied(403, "Bearer error=\"insufficient_scope\"");
        let back = envoy::CheckResponse::decode(no.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.status.unwrap().code, Code::PermissionDenied as i32);
        let Some(envoy::HttpResponse::DeniedResponse(r)) = back.http_response else {
            panic!("not a denial");
        };
        assert_eq!(r.status.unwrap().code, 403);
        let h = r.headers[0].header.as_ref().unwrap();
        assert_eq!(h.key, "www-authenticate");
    }
}
