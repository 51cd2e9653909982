//! Standard OAuth 2.0 over HTTP, on the same listener as the JWKS: the RFC 6749 token
//! endpoint (with RFC 8693 token exchange), RFC 7662 introspection, RFC 7009 revocation and RFC 8414 metadata. This layer only
//! translates form posts to [`Authority`] calls and answers to RFC JSON.
//!
//! Client authentication: HTTP Basic `client_id:client_secret` (client id = API-key
//! id, secret = the API key), `client_secret_post`, or `Authorization: Bearer <api key>`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::auth::{self, Caller};
use crate::authority::Authority;
use crate::error::Error;
use crate::net::PeerAddr;
use crate::oauth::{
    ClientCredentialsRequest, CodeRedemption, RefreshRequest, TokenExchangeRequest,
};
use crate::secret::Secret;
use crate::tokens::Introspection;
use crate::tokens::{normalize_scopes, valid_list_entry};

/// Largest form body accepted.
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;

/// An error as an OAuth HTTP answer: the status and RFC 6749 §5.2 JSON body of
/// `Error::mapping`, never cached. A 401 carries the challenge RFC 6749 §5.2 asks
/// for; a rate limit, `Retry-After`.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut r = no_store(
            status,
            json!({ "error": self.oauth_error(), "error_description": self.message() }),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\""),
            );
        }
        if let Some(d) = self.retry_after() {
            // Rounded up: a client that waits the whole seconds given is never early.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}

/// RFC 6749 §5.2: a 401 challenges with the scheme the client authenticated with.
/// An [`Error`] knows nothing of the request, so its answer says Basic (right for a
/// client that sent its secret in the body, or nothing); a client that sent a Bearer
/// key is told Bearer (RFC 6750 §3).
pub(crate) async fn challenge_in_clients_scheme(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| auth::bearer_key(v).is_some());
    let mut r = next.run(req).await;
    if bearer && r.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tessera\", error=\"invalid_token\""),
        );
    }
    r
}

fn body_too_large() -> Error {
    Error::TooLarge(format!("request body larger than {MAX_FORM_BYTES} bytes"))
}

/// Turns the body-limit layer's plain-text 413 into an RFC 6749 JSON error, so an
/// OAuth client parses every refusal the same way.
pub(crate) async fn body_too_large_as_json(r: Response) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large().into_response()
    } else {
        r
    }
}

/// JSON with `Cache-Control: no-store` (OAuth 2.1: token responses are never cached).
pub(crate) fn no_store(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// A parsed `application/x-www-form-urlencoded` body: every parameter at most once.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses a body; repeated parameters are an error (RFC 6749 §3.2).
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, Error> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return Err(Error::InvalidArgument(
                "content type must be application/x-www-form-urlencoded".into(),
            ));
        }
        if body.len() > MAX_FORM_BYTES {
            return Err(body_too_large());
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| Error::InvalidArgument("malformed form body".into()))?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(Error::InvalidArgument(format!(
                    "parameter {k} given more than once"
                )));
            }
        }
        Ok(Form(pairs))
    }

    /// A parameter's value, empty when absent.
    pub fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(k2, _)| k2 == k)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Was the parameter sent at all (even empty)?
    pub(crate) fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(k2, _)| k2 == k)
    }

    /// A space-separated list parameter (`scope`, `audience`), split on U+0020 only
    /// (RFC 6749 §3.3). Absent or empty is an empty list. An empty entry (a leading,
    /// trailing or doubled space) is refused, and so is an entry holding any other
    /// whitespace (a tab, a no-break space) or a control character: it is not a list
    /// separator, and no token could carry such an entry. A bad `scope` is
    /// `invalid_scope`; a bad `audience` is `invalid_request`.
    pub fn list(&self, k: &str) -> Result<Vec<String>, Error> {
        let v = self.get(k);
        if v.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<String> = v.split(' ').map(str::to_string).collect();
        if k == "scope" {
            if normalize_scopes(&items).is_err() {
                return Err(Error::InvalidScope(
                    "scope: scope tokens separated by single spaces, each 1-256 printable ASCII \
                     characters without quotes or backslashes"
                        .into(),
                ));
            }
        } else if !items.iter().all(|i| valid_list_entry(i)) {
            return Err(Error::InvalidArgument(format!(
                "{k}: entries separated by single spaces, each without whitespace, control or \
                 invisible characters"
            )));
        }
        Ok(items)
    }
}

/// The client's API key from Basic auth, a Bearer header, or `client_secret_post`.
/// `Ok(None)` when the request carries no client credential at all. One method per
/// request (RFC 6749 §2.3): a header together with `client_secret`, or two
/// `Authorization` headers, is `invalid_request`, before either is checked. With Basic
/// or `client_secret_post`, the `client_id` sent comes along, to be bound to the key.
pub fn client_key(
    headers: &HeaderMap,
    form: &Form,
) -> Result<Option<(String, Option<String>)>, Error> {
    let mut auth_headers = headers.get_all(header::AUTHORIZATION).iter();
    let first = auth_headers.next();
    if auth_headers.next().is_some() {
        return Err(Error::InvalidArgument(
            "send one Authorization header, not several".into(),
        ));
    }
    if first.is_some() && form.has("client_secret") {
        return Err(Error::InvalidArgument(
            "use one client authentication method: HTTP Basic or client_secret in the body, not both".into(),
        ));
    }
    if let Some(v) = first {
        let v = v
            .to_str()
            .map_err(|_| Error::Unauthenticated("malformed authorization header"))?;
        if let Some(b) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        {
            let raw = STANDARD
                .decode(b.trim())
                .map_err(|_| Error::Unauthenticated("malformed Basic credentials"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| Error::Unauthenticated("malformed Basic credentials"))?;
            let (id, secret) = text
                .split_once(':')
                .ok_or(Error::Unauthenticated("malformed Basic credentials"))?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded before encoding.
            let decode = |s: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(|(_, v)| v)
            };
            let (id, secret) = (
                decode(id).unwrap_or_default(),
                decode(secret).unwrap_or_default(),
            );
            return Ok(Some((secret, Some(id))));
        }
        if let Some(k) = auth::bearer_key(v) {
            return Ok(Some((k.to_string(), None)));
        }
        return Err(Error::Unauthenticated("unsupported authorization scheme"));
    }
    let secret = form.get("client_secret");
    if !secret.is_empty() {
        return Ok(Some((
            secret.to_string(),
            Some(form.get("client_id").to_string()),
        )));
    }
    Ok(None)
}

/// The client id sent with a secret must be the client that API key authenticates
/// as: the key's own id, or, for a rotated-in client secret, its client's id.
fn bind_client_id(authority: &Authority, client_id: &str, key: &str) -> Result<(), Error> {
    match crate::apikeys::parse(key) {
        Some(p) if authority.client_of_key(p.id) == client_id => Ok(()),
        _ => Err(Error::Unauthenticated("client authentication failed")),
    }
}

/// Authenticates the client; `None` when no credential was presented. `peer` is the
/// connection's address, for the failed-authentication throttle.
pub(crate) fn caller(
    authority: &Authority,
    headers: &HeaderMap,
    form: &Form,
    peer: Option<IpAddr>,
) -> Result<Caller, Error> {
    let principal = match client_key(headers, form)? {
        None => None,
        Some((key, claimed)) => Some({
            if let Some(id) = claimed {
                bind_client_id(authority, &id, &key)?;
            }
            match authority.authenticate_api_key(&key, peer) {
                Ok(c) => c.principal.clone(),
                Err(crate::apikeys::Refusal::Failed(_)) => {
                    return Err(Error::Unauthenticated("client authentication failed"));
                }
                Err(crate::apikeys::Refusal::Limited(e)) => return Err(e),
            }
        }),
    };
    let request_id = auth::RequestId::of(headers);
    Ok(Caller {
        principal,
        request_id,
    })
}

/// The connection's source address, if the listener recorded it.
fn peer_ip(peer: Option<Extension<PeerAddr>>) -> Option<IpAddr> {
    peer.map(|Extension(PeerAddr(a))| a.ip())
}

/// Parses the form and requires an authenticated client.
fn authenticated(
    a: &Authority,
    headers: &HeaderMap,
    body: &[u8],
    peer: Option<IpAddr>,
) -> Result<(Form, Caller), Error> {
    let form = Form::parse(headers, body)?;
    let caller = caller(a, headers, &form, peer)?;
    if caller.principal.is_none() {
        return Err(Error::Unauthenticated("client authentication required"));
    }
    Ok((form, caller))
}

/// `POST /oauth2/introspect` (RFC 7662).
pub(crate) async fn introspect(
    State(a): State<Arc<Authority>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (form, caller) = authenticated(&a, &headers, &body, peer_ip(peer))?;
    let token = form.get("token");
    let body = match a.introspect(&caller, token).await? {
        Introspection::Inactive => json!({ "active": false }),
        Introspection::AccessToken(found) => {
            let c = &found.claims;
            let mut m = c.extra.clone();
            let mut put = |k: &str, v: Value| {
                m.insert(k.into(), v);
            };
            put("active", json!(true));
            put("token_type", json!("Bearer"));
            if !c.scope.is_empty() {
                put("scope", json!(c.scope));
            }
            put("client_id", json!(c.client_id));
            put("sub", json!(c.sub));
            put("aud", json!(c.aud));
            put("iss", json!(c.iss));
            put("exp", json!(c.exp));
            put("iat", json!(c.iat));
            put("nbf", json!(c.nbf));
            put("jti", json!(c.jti));
            put("ver", json!(c.ver));
            if let Some(owner) = &c.owner {
                put("owner", json!(owner));
            }
            if let Some(act) = &c.act {
                put("act", act.clone());
            }
            Value::Object(m)
        }
        Introspection::ApiKey(key) => {
            let k = &key.row;
            json!({
                "active": true, "token_type": "api_key", "scope": k.scopes.join(" "), "client_id": k.id,
                "sub": k.owner, "iss": a.config().issuer, "iat": k.created_at, "exp": k.expires_at,
                "jti": k.id, "owner": k.owner, "environment": k.environment,
            })
        }
        Introspection::RefreshToken(pair) => {
            let (t, f) = &*pair;
            json!({
                "active": true, "token_type": "refresh_token", "scope": f.scopes.join(" "),
                "client_id": f.client_id, "sub": f.subject, "aud": f.audience, "iss": a.config().issuer,
                "iat": t.issued_at, "exp": t.expires_at.min(f.absolute_expires_at), "jti": t.id,
            })
        }
    };
    Ok(no_store(StatusCode::OK, body))
}

/// `POST /oauth2/revoke` (RFC 7009): 200 with an empty body, also for unknown tokens.
/// An operator (`tessera:revoke`) revokes any token; a client, its own tokens.
pub(crate) async fn revoke(
    State(a): State<Arc<Authority>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (form, caller) = authenticated(&a, &headers, &body, peer_ip(peer))?;
    a.revoke_for_client(&caller, form.get("token")).await?;
    Ok(no_store(StatusCode::OK, json!({})))
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414): what is actually supported.
///
/// Tessera has no authorization endpoint: a login front end authenticates the user and
/// calls `Issue(authorization_code)`. With `authorization_endpoint` configured (that
/// front end's URL) the code grant and `response_types_supported: ["code"]` are
/// advertised; without it the code grant is left out and `response_types_supported`
/// is `["none"]` (RFC 8414 makes the member required and non-empty; `none` is the
/// registered value for "nothing from an authorization endpoint"). Public clients
/// authenticate with `none` at the token endpoint. No JWT client authentication is
/// offered, so no `*_signing_alg_values_supported` member is published.
pub(crate) async fn metadata(State(a): State<Arc<Authority>>) -> Response {
    let iss = a.config().issuer.trim_end_matches('/');
    let code_flow = a.config().authorization_endpoint.as_deref();
    let grant_types: Vec<&str> = GRANT_TYPES
        .iter()
        .copied()
        .filter(|g| code_flow.is_some() || *g != "authorization_code")
        .collect();
    let mut doc = json!({
        "issuer": a.config().issuer,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "response_types_supported": if code_flow.is_some() { ["code"] } else { ["none"] },
    });
    if let Some(url) = code_flow {
        doc["authorization_endpoint"] = json!(url);
    }
    let mut r = Json(doc).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// RFC 8693 grant type.
pub(crate) const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Grant types `/oauth2/token` accepts.
pub(crate) const GRANT_TYPES: &[&str] = &[
    "client_credentials",
    "refresh_token",
    "authorization_code",
    TOKEN_EXCHANGE_GRANT,
];

/// `POST /oauth2/token` (RFC 6749 §3.2, RFC 8693). Translates the form into one of the
/// grant methods the gRPC `Exchange` also calls.
pub(crate) async fn token(
    State(a): State<Arc<Authority>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let form = Form::parse(&headers, &body)?;
    let caller = caller(&a, &headers, &form, peer_ip(peer))?;
    let secret = |k: &str| Secret::new(form.get(k).to_string());
    let granted = match form.get("grant_type") {
        "" => return Err(Error::InvalidArgument("grant_type is required".into())),
        "client_credentials" => {
            let req = ClientCredentialsRequest {
                client_id: form.get("client_id").to_string(),
                scopes: form.list("scope")?,
                audience: form.list("audience")?,
            };
            a.grant_client_credentials(&caller, req).await?
        }
        "refresh_token" => {
            let req = RefreshRequest {
                client_id: form.get("client_id").to_string(),
                refresh_token: secret("refresh_token"),
                scopes: form.list("scope")?,
            };
            a.grant_refresh_token(&caller, req).await?
        }
        "authorization_code" => {
            let req = CodeRedemption {
                client_id: form.get("client_id").to_string(),
                code: secret("code"),
                code_verifier: secret("code_verifier"),
                redirect_uri: form.get("redirect_uri").to_string(),
            };
            a.grant_authorization_code(&caller, req).await?
        }
        TOKEN_EXCHANGE_GRANT => {
            if !form.get("actor_token").is_empty() || !form.get("actor_token_type").is_empty() {
                return Err(Error::InvalidArgument(
                    "actor_token is not supported: the authenticated client is the actor".into(),
                ));
            }
            let wanted = form.get("requested_token_type");
            if !wanted.is_empty() && wanted != crate::oauth::rules::ACCESS_TOKEN_TYPE {
                return Err(Error::InvalidArgument(
                    "only access tokens can be requested".into(),
                ));
            }
            let req = TokenExchangeRequest {
                subject_token: secret("subject_token"),
                subject_token_type: form.get("subject_token_type").to_string(),
                audience: form.list("audience")?,
                scopes: form.list("scope")?,
            };
            a.grant_token_exchange(&caller, req).await?
        }
        _ => {
            return Err(Error::UnsupportedGrantType(
                "supported: client_credentials, refresh_token, authorization_code, token-exchange"
                    .into(),
            ));
        }
    };
    let mut body = json!({
        "access_token": granted.access_token.expose(),
        "token_type": granted.token_type,
        "expires_in": granted.expires_at - granted.issued_at,
        "scope": granted.scopes.join(" "),
    });
    if !granted.refresh_token.expose().is_empty() {
        body["refresh_token"] = json!(granted.refresh_token.expose());
    }
    if !granted.issued_token_type.is_empty() {
        body["issued_token_type"] = json!(granted.issued_token_type);
    }
    Ok(no_store(StatusCode::OK, body))
}
