//! Helpers shared by the OAuth grant tests (`tests/grant_*.rs`, `tests/exchange.rs`):
//! request builders for each grant, the RFC 7636 code flow, and token inspection.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AuthorizationCodeGrant, AuthorizationCodeSpec, ClientCredentialsGrant, ClientSpec,
    ExchangeRequest, ExchangeResponse, IssueRequest, IssueResponse, RefreshTokenGrant,
    TokenExchangeGrant,
};
use tonic::{Code, Request, Status};

use super::{TestServer, access_spec, authed};

/// RFC 7636 Appendix B.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const AT_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const REDIRECT: &str = "https://app.example/cb";

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The payload of a JWT, decoded without verification (the server verified it).
pub fn claims(jwt: &str) -> Value {
    serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

pub fn lifetime(jwt: &str) -> i64 {
    let c = claims(jwt);
    c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
}

pub fn maybe_authed<T>(msg: T, key: Option<&str>) -> Request<T> {
    match key {
        Some(k) => authed(msg, k),
        None => Request::new(msg),
    }
}

pub async fn exchange(
    s: &TestServer,
    grant: Grant,
    key: Option<&str>,
) -> Result<ExchangeResponse, Status> {
    s.tokens()
        .await
        .exchange(maybe_authed(ExchangeRequest { grant: Some(grant) }, key))
        .await
        .map(|r| r.into_inner())
}

pub async fn issue(
    s: &TestServer,
    c: Credential,
    key: Option<&str>,
) -> Result<IssueResponse, Status> {
    s.tokens()
        .await
        .issue(maybe_authed(
            IssueRequest {
                credential: Some(c),
            },
            key,
        ))
        .await
        .map(|r| r.into_inner())
}

pub fn client_spec(public: bool, uris: &[&str], scopes: &[&str]) -> Credential {
    Credential::Client(ClientSpec {
        name: "web-app".into(),
        public,
        redirect_uris: strings(uris),
        scopes: strings(scopes),
        ..Default::default()
    })
}

pub async fn register(
    s: &TestServer,
    public: bool,
    uris: &[&str],
    scopes: &[&str],
) -> IssueResponse {
    issue(s, client_spec(public, uris, scopes), Some(&s.admin_key))
        .await
        .unwrap()
}

pub fn code_spec(client_id: &str, redirect: &str, scopes: &[&str]) -> AuthorizationCodeSpec {
    AuthorizationCodeSpec {
        client_id: client_id.into(),
        redirect_uri: redirect.into(),
        subject: "alice".into(),
        scopes: strings(scopes),
        code_challenge: CHALLENGE.into(),
        code_challenge_method: "S256".into(),
    }
}

pub fn cc(scopes: &[&str], audience: &[&str]) -> Grant {
    Grant::ClientCredentials(ClientCredentialsGrant {
        scopes: strings(scopes),
        audience: strings(audience),
    })
}

pub fn refresh(rt: &str, scopes: &[&str]) -> Grant {
    Grant::RefreshToken(RefreshTokenGrant {
        refresh_token: rt.into(),
        scopes: strings(scopes),
    })
}

pub fn redeem(code: &str, verifier: &str, redirect: &str, client_id: &str) -> Grant {
    Grant::AuthorizationCode(AuthorizationCodeGrant {
        code: code.into(),
        code_verifier: verifier.into(),
        redirect_uri: redirect.into(),
        client_id: client_id.into(),
    })
}

pub fn token_exchange(subject: &str, audience: &[&str], scopes: &[&str]) -> Grant {
    Grant::TokenExchange(TokenExchangeGrant {
        subject_token: subject.into(),
        subject_token_type: AT_TYPE.into(),
        audience: strings(audience),
        scopes: strings(scopes),
    })
}

/// A public client on `REDIRECT` with two scopes, a login front end's key, and one code.
pub struct CodeFlow {
    pub client_id: String,
    pub front_end: String,
}

impl CodeFlow {
    pub async fn new(s: &TestServer) -> CodeFlow {
        let client = register(s, true, &[REDIRECT], &["read:profile", "write:profile"]).await;
        let front_end = s.api_key(&["tessera:issue"]).await.token;
        CodeFlow {
            client_id: client.token_id,
            front_end,
        }
    }

    pub async fn code(&self, s: &TestServer) -> String {
        let spec = code_spec(&self.client_id, REDIRECT, &["read:profile"]);
        issue(
            s,
            Credential::AuthorizationCode(spec),
            Some(&self.front_end),
        )
        .await
        .unwrap()
        .token
    }

    pub async fn redeem(&self, s: &TestServer, code: &str) -> Result<ExchangeResponse, Status> {
        exchange(s, redeem(code, VERIFIER, REDIRECT, &self.client_id), None).await
    }
}

/// An access token for `subject` with a refresh token (via `Issue(access_token)`).
pub async fn with_refresh(s: &TestServer, subject: &str) -> IssueResponse {
    let mut req = access_spec(subject);
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    s.issue(req).await.unwrap()
}

pub async fn active(s: &TestServer, token: &str) -> bool {
    s.introspect(token).await.unwrap().active
}

/// `t` with its last character changed (always to a different one).
pub fn tamper(t: &str) -> String {
    let last = if t.ends_with('A') { "B" } else { "A" };
    format!("{}{last}", &t[..t.len() - 1])
}

pub fn code_of(r: Result<impl std::fmt::Debug, Status>) -> Code {
    r.expect_err("expected an error").code()
}

/// Fires `n` copies of one grant at once; returns every answer.
pub async fn race(
    s: &TestServer,
    n: usize,
    grant: Grant,
    key: Option<String>,
) -> Vec<Result<ExchangeResponse, Status>> {
    let client = s.tokens().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut c = client.clone();
            let (b, g, k) = (barrier.clone(), grant.clone(), key.clone());
            tokio::spawn(async move {
                let req = maybe_authed(ExchangeRequest { grant: Some(g) }, k.as_deref());
                b.wait().await;
                c.exchange(req).await.map(|r| r.into_inner())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
