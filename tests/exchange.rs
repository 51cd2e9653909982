//! End-to-end tests of the OAuth grants (`Exchange`) and of `Issue(client)` /
//! `Issue(authorization_code)` against the real server.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TestServer, access_spec, authed, test_config};
use serde_json::{Value, json};
use tessera::clock::Clock;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, AuthorizationCodeGrant, AuthorizationCodeSpec, BumpTokenVersionRequest,
    ClientCredentialsGrant, ClientSpec, ExchangeRequest, ExchangeResponse, IssueRequest,
    IssueResponse, RefreshTokenGrant, RevokeRequest, TokenExchangeGrant,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const AT_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const REDIRECT: &str = "https://app.example/cb";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The payload of a JWT, decoded without verification (the server verified it).
fn claims(jwt: &str) -> Value {
    serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn lifetime(jwt: &str) -> i64 {
    let c = claims(jwt);
    c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
}

fn maybe_authed<T>(msg: T, key: Option<&str>) -> Request<T> {
    match key {
        Some(k) => authed(msg, k),
        None => Request::new(msg),
    }
}

async fn exchange(
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

async fn issue(s: &TestServer, c: Credential, key: Option<&str>) -> Result<IssueResponse, Status> {
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

fn client_spec(public: bool, uris: &[&str], scopes: &[&str]) -> Credential {
    Credential::Client(ClientSpec {
        name: "web-app".into(),
        public,
        redirect_uris: strings(uris),
        scopes: strings(scopes),
        ..Default::default()
    })
}

async fn register(s: &TestServer, public: bool, uris: &[&str], scopes: &[&str]) -> IssueResponse {
    issue(s, client_spec(public, uris, scopes), Some(&s.admin_key))
        .await
        .unwrap()
}

fn code_spec(client_id: &str, redirect: &str, scopes: &[&str]) -> AuthorizationCodeSpec {
    AuthorizationCodeSpec {
        client_id: client_id.into(),
        redirect_uri: redirect.into(),
        subject: "alice".into(),
        scopes: strings(scopes),
        code_challenge: CHALLENGE.into(),
        code_challenge_method: "S256".into(),
    }
}

fn cc(scopes: &[&str], audience: &[&str]) -> Grant {
    Grant::ClientCredentials(ClientCredentialsGrant {
        scopes: strings(scopes),
        audience: strings(audience),
    })
}

fn refresh(rt: &str, scopes: &[&str]) -> Grant {
    Grant::RefreshToken(RefreshTokenGrant {
        refresh_token: rt.into(),
        scopes: strings(scopes),
    })
}

fn redeem(code: &str, verifier: &str, redirect: &str, client_id: &str) -> Grant {
    Grant::AuthorizationCode(AuthorizationCodeGrant {
        code: code.into(),
        code_verifier: verifier.into(),
        redirect_uri: redirect.into(),
        client_id: client_id.into(),
    })
}

fn token_exchange(subject: &str, audience: &[&str], scopes: &[&str]) -> Grant {
    Grant::TokenExchange(TokenExchangeGrant {
        subject_token: subject.into(),
        subject_token_type: AT_TYPE.into(),
        audience: strings(audience),
        scopes: strings(scopes),
    })
}

/// A public client on `REDIRECT` with two scopes, a login front end's key, and one code.
struct CodeFlow {
    client_id: String,
    front_end: String,
}

impl CodeFlow {
    async fn new(s: &TestServer) -> CodeFlow {
        let client = register(s, true, &[REDIRECT], &["read:profile", "write:profile"]).await;
        let front_end = s.api_key(&["tessera:issue"]).await.token;
        CodeFlow {
            client_id: client.token_id,
            front_end,
        }
    }

    async fn code(&self, s: &TestServer) -> String {
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

    async fn redeem(&self, s: &TestServer, code: &str) -> Result<ExchangeResponse, Status> {
        exchange(s, redeem(code, VERIFIER, REDIRECT, &self.client_id), None).await
    }
}

/// An access token for `subject` with a refresh token (via `Issue(access_token)`).
async fn with_refresh(s: &TestServer, subject: &str) -> IssueResponse {
    let mut req = access_spec(subject);
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    s.tokens()
        .await
        .issue(authed(req, &s.admin_key))
        .await
        .unwrap()
        .into_inner()
}

async fn active(s: &TestServer, token: &str) -> bool {
    s.introspect(token).await.unwrap().active
}

/// `t` with its last character changed (always to a different one).
fn tamper(t: &str) -> String {
    let last = if t.ends_with('A') { "B" } else { "A" };
    format!("{}{last}", &t[..t.len() - 1])
}

fn code_of(r: Result<impl std::fmt::Debug, Status>) -> Code {
    r.expect_err("expected an error").code()
}

// ---------------------------------------------------------------------------------
// client_credentials

#[tokio::test]
async fn client_credentials_grants_within_the_key() {
    let s = TestServer::start().await;
    let key = s
        .api_key(&["read:a", "write:b", "tessera:introspect"])
        .await;

    // No scopes asked: the key's, minus tessera:*; audience defaults to the key id.
    let t = exchange(&s, cc(&[], &[]), Some(&key.token)).await.unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.scopes, vec!["read:a", "write:b"]);
    assert!(
        t.refresh_token.is_empty(),
        "no refresh token (RFC 6749 §4.4.3)"
    );
    assert!(t.issued_token_type.is_empty());
    let c = claims(&t.access_token);
    assert_eq!(
        c["sub"],
        key.token_id.as_str(),
        "sub = the client id (RFC 9068 §2.2), never the owner"
    );
    assert_eq!(c["owner"], "team-test", "the owner has its own claim");
    assert_eq!(c["client_id"], key.token_id.as_str());
    assert_eq!(c["aud"], json!([key.token_id]));
    assert_eq!(c["scope"], "read:a write:b");
    assert_eq!(t.expires_at.unwrap().seconds, c["exp"].as_i64().unwrap());
    let r = s.introspect(&t.access_token).await.unwrap();
    assert!(r.active);
    assert_eq!(r.client_id, key.token_id);
    assert_eq!(r.subject, key.token_id);
    assert_eq!(r.owner, "team-test", "Introspect fills owner");
    assert!(
        r.claims.is_none_or(|c| !c.fields.contains_key("owner")),
        "owner is a field, not an extra claim"
    );

    // A subset, for a named audience.
    let t = exchange(&s, cc(&["read:a"], &["ledger"]), Some(&key.token))
        .await
        .unwrap();
    assert_eq!(t.scopes, vec!["read:a"]);
    assert_eq!(claims(&t.access_token)["aud"], json!(["ledger"]));

    let rows: &[(&str, Grant, Option<&str>, Code)] = &[
        ("no key", cc(&[], &[]), None, Code::Unauthenticated),
        (
            "widening",
            cc(&["admin"], &[]),
            Some(&key.token),
            Code::PermissionDenied,
        ),
        (
            "one too many",
            cc(&["read:a", "x"], &[]),
            Some(&key.token),
            Code::PermissionDenied,
        ),
        (
            "tessera scope",
            cc(&["tessera:introspect"], &[]),
            Some(&key.token),
            Code::PermissionDenied,
        ),
        (
            "bad scope",
            cc(&["a b"], &[]),
            Some(&key.token),
            Code::InvalidArgument,
        ),
        (
            "empty audience",
            cc(&[], &[""]),
            Some(&key.token),
            Code::InvalidArgument,
        ),
    ];
    for (name, grant, k, want) in rows {
        assert_eq!(
            code_of(exchange(&s, grant.clone(), *k).await),
            *want,
            "{name}"
        );
    }
    let e = s
        .tokens()
        .await
        .exchange(authed(ExchangeRequest { grant: None }, &key.token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no grant");
}

#[tokio::test]
async fn a_client_credentials_token_is_the_clients_own_through_exchange_and_http() {
    let s = TestServer::start().await;
    // An app owned by "alice" can never mint a token that passes for alice's.
    let app = s
        .api_key_with(tessera::proto::ApiKeySpec {
            owner: "alice".into(),
            name: "reporting-app".into(),
            scopes: strings(&["read:reports"]),
            exchange_audiences: strings(&["warehouse"]),
            ..Default::default()
        })
        .await;
    let t = exchange(&s, cc(&[], &[]), Some(&app.token)).await.unwrap();
    let c = claims(&t.access_token);
    assert_eq!(c["sub"], app.token_id.as_str());
    assert_ne!(c["sub"], "alice");
    assert_eq!(c["owner"], "alice");

    // Exchanged on to the next hop, it stays the client's: same sub, same owner.
    let x = exchange(
        &s,
        token_exchange(&t.access_token, &["warehouse"], &[]),
        Some(&app.token),
    )
    .await
    .unwrap();
    let xc = claims(&x.access_token);
    assert_eq!(xc["sub"], app.token_id.as_str());
    assert_eq!(xc["owner"], "alice");
    assert_eq!(s.introspect(&x.access_token).await.unwrap().owner, "alice");

    // RFC 7662 over HTTP names the owner too; a user's token has none.
    let rs = s.api_key(&["tessera:introspect"]).await;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", rs.token_id, rs.token))
    );
    let (_, _, body) = s
        .http_post(
            "/oauth2/introspect",
            &[("Authorization", auth.as_str())],
            &format!("token={}", t.access_token),
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["sub"].as_str(), v["owner"].as_str()),
        (Some(app.token_id.as_str()), Some("alice"))
    );
    let user = s.access_token("alice").await.token;
    assert_eq!(s.introspect(&user).await.unwrap().owner, "");
    let (_, _, body) = s
        .http_post(
            "/oauth2/introspect",
            &[("Authorization", auth.as_str())],
            &format!("token={user}"),
        )
        .await;
    assert!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .get("owner")
            .is_none()
    );
}

// ---------------------------------------------------------------------------------
// Issue(client)

#[tokio::test]
async fn client_registration_rules() {
    let s = TestServer::start().await;
    let issuer = s.api_key(&["tessera:issue"]).await.token;
    let ok = client_spec(false, &[REDIRECT], &["read"]);
    assert_eq!(
        code_of(issue(&s, ok.clone(), None).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(issue(&s, ok, Some(&issuer)).await),
        Code::PermissionDenied,
        "admin only"
    );

    let rows: &[(&str, &[&str], &[&str])] = &[
        ("no redirect URI", &[], &["read"]),
        ("plain http", &["http://app.example/cb"], &["read"]),
        ("http localhost", &["http://localhost:8080/cb"], &["read"]),
        ("fragment", &["https://app.example/cb#x"], &["read"]),
        ("userinfo", &["https://u@app.example/cb"], &["read"]),
        ("custom scheme", &["com.example.app:/cb"], &["read"]),
        ("tessera scope", &[REDIRECT], &["tessera:issue"]),
        ("bad scope", &[REDIRECT], &["a b"]),
    ];
    for (name, uris, scopes) in rows {
        let e = issue(&s, client_spec(false, uris, scopes), Some(&s.admin_key)).await;
        assert_eq!(code_of(e), Code::InvalidArgument, "{name}");
    }
    let mut nameless = client_spec(true, &[REDIRECT], &[]);
    if let Credential::Client(c) = &mut nameless {
        c.name.clear();
    }
    assert_eq!(
        code_of(issue(&s, nameless, Some(&s.admin_key)).await),
        Code::InvalidArgument
    );

    // Confidential: an API key is the secret, its id the client_id.
    let conf = register(&s, false, &[REDIRECT, "http://127.0.0.1/cb"], &["read"]).await;
    assert!(conf.token.starts_with("tsk_oauth_"));
    assert!(conf.token.contains(&format!("_{}_", conf.token_id)));
    assert_eq!(conf.token_type, "client");
    assert_eq!(conf.scopes, vec!["read"]);
    assert!(conf.expires_at.is_some(), "the secret expires");
    let r = s.introspect(&conf.token).await.unwrap();
    assert!(r.active);
    assert_eq!(r.owner, "web-app");
    assert_eq!(r.environment, "oauth");

    // Public: no secret.
    let public = register(&s, true, &[REDIRECT], &["read"]).await;
    assert!(public.token.is_empty());
    assert!(!public.token_id.is_empty());
    assert!(public.expires_at.is_none());
}

// ---------------------------------------------------------------------------------
// Issue(authorization_code) + Exchange(authorization_code)

#[tokio::test]
async fn authorization_code_with_the_rfc7636_vector() {
    let s = TestServer::start().await;
    let flow = CodeFlow::new(&s).await;
    let spec = code_spec(&flow.client_id, REDIRECT, &["read:profile"]);
    let code = issue(
        &s,
        Credential::AuthorizationCode(spec),
        Some(&flow.front_end),
    )
    .await
    .unwrap();
    assert!(code.token.starts_with("tsc_"));
    assert_eq!(code.token_type, "authorization_code");
    assert_eq!(code.scopes, vec!["read:profile"]);
    let now = s.clock.now();
    let exp = code.expires_at.unwrap().seconds;
    assert!((now + 59..=now + 60).contains(&exp), "codes live 60 s");

    let t = flow.redeem(&s, &code.token).await.unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.scopes, vec!["read:profile"]);
    assert!(t.refresh_token.starts_with("tsr_"));
    let c = claims(&t.access_token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], flow.client_id.as_str());
    assert_eq!(c["aud"], json!([flow.client_id]));
    assert_eq!(c["scope"], "read:profile");
    assert!(active(&s, &t.access_token).await);
    let r = s.introspect(&t.refresh_token).await.unwrap();
    assert!(r.active);
    assert_eq!(r.client_id, flow.client_id);

    // The refresh token of a public client rotates without client authentication.
    let next = exchange(&s, refresh(&t.refresh_token, &[]), None)
        .await
        .unwrap();
    assert_ne!(next.refresh_token, t.refresh_token);
    assert_eq!(next.scopes, vec!["read:profile"]);

    // No scopes asked: the client's.
    let mut spec = code_spec(&flow.client_id, REDIRECT, &[]);
    spec.subject = "bob".into();
    let all = issue(
        &s,
        Credential::AuthorizationCode(spec),
        Some(&flow.front_end),
    )
    .await
    .unwrap();
    assert_eq!(all.scopes, vec!["read:profile", "write:profile"]);
}

#[tokio::test]
async fn authorization_code_requests_are_checked() {
    let s = TestServer::start().await;
    let flow = CodeFlow::new(&s).await;
    let loopback = register(&s, true, &["http://127.0.0.1/cb"], &["read"]).await;
    let id = flow.client_id.as_str();
    let with = |f: &dyn Fn(&mut AuthorizationCodeSpec)| {
        let mut spec = code_spec(id, REDIRECT, &["read:profile"]);
        f(&mut spec);
        Credential::AuthorizationCode(spec)
    };
    let redirect = |uri: &'static str| with(&move |c| c.redirect_uri = uri.into());
    let rows: Vec<(&str, Credential, Code)> = vec![
        // C1.5-C1.8, C1.10
        (
            "plain",
            with(&|c| c.code_challenge_method = "plain".into()),
            Code::InvalidArgument,
        ),
        (
            "no method",
            with(&|c| c.code_challenge_method.clear()),
            Code::InvalidArgument,
        ),
        (
            "unknown method",
            with(&|c| c.code_challenge_method = "S512".into()),
            Code::InvalidArgument,
        ),
        (
            "no challenge",
            with(&|c| c.code_challenge.clear()),
            Code::InvalidArgument,
        ),
        (
            "short challenge",
            with(&|c| c.code_challenge.truncate(42)),
            Code::InvalidArgument,
        ),
        (
            "challenge charset",
            with(&|c| c.code_challenge.replace_range(0..1, "+")),
            Code::InvalidArgument,
        ),
        // C3.1
        (
            "trailing slash",
            redirect("https://app.example/cb/"),
            Code::InvalidArgument,
        ),
        (
            "path case",
            redirect("https://app.example/CB"),
            Code::InvalidArgument,
        ),
        (
            "host case",
            redirect("https://APP.example/cb"),
            Code::InvalidArgument,
        ),
        (
            "extra query",
            redirect("https://app.example/cb?x=1"),
            Code::InvalidArgument,
        ),
        (
            "fragment",
            redirect("https://app.example/cb#x"),
            Code::InvalidArgument,
        ),
        (
            "userinfo",
            redirect("https://app.example@evil.example/cb"),
            Code::InvalidArgument,
        ),
        (
            "port",
            redirect("https://app.example:444/cb"),
            Code::InvalidArgument,
        ),
        (
            "subdomain",
            redirect("https://x.app.example/cb"),
            Code::InvalidArgument,
        ),
        (
            "dot segments",
            redirect("https://app.example/cb/../evil"),
            Code::InvalidArgument,
        ),
        (
            "percent-encoded",
            redirect("https://app.example/%63b"),
            Code::InvalidArgument,
        ),
        ("no redirect", redirect(""), Code::InvalidArgument),
        // others
        (
            "no subject",
            with(&|c| c.subject.clear()),
            Code::InvalidArgument,
        ),
        (
            "unknown client",
            with(&|c| c.client_id = "nope".into()),
            Code::NotFound,
        ),
        (
            "no client",
            with(&|c| c.client_id.clear()),
            Code::InvalidArgument,
        ),
        (
            "widening",
            with(&|c| c.scopes = strings(&["admin"])),
            Code::PermissionDenied,
        ),
        (
            "tessera scope",
            with(&|c| c.scopes = strings(&["tessera:admin"])),
            Code::PermissionDenied,
        ),
    ];
    for (name, cred, want) in rows {
        let got = code_of(issue(&s, cred, Some(&flow.front_end)).await);
        assert_eq!(got, want, "{name}");
    }
    let ok = with(&|_| {});
    assert_eq!(
        code_of(issue(&s, ok.clone(), None).await),
        Code::Unauthenticated
    );
    let narrow = s.api_key(&["read:profile"]).await.token;
    assert_eq!(
        code_of(issue(&s, ok.clone(), Some(&narrow)).await),
        Code::PermissionDenied,
        "needs tessera:issue"
    );
    assert!(issue(&s, ok, Some(&flow.front_end)).await.is_ok());

    // C3.2: a loopback redirect URI may change its port, nothing else.
    let lb = |uri: &str| {
        let mut c = code_spec(&loopback.token_id, uri, &["read"]);
        c.subject = "carol".into();
        Credential::AuthorizationCode(c)
    };
    for uri in ["http://127.0.0.1:53117/cb", "http://127.0.0.1/cb"] {
        let code = issue(&s, lb(uri), Some(&flow.front_end)).await.unwrap();
        let grant = redeem(&code.token, VERIFIER, uri, &loopback.token_id);
        assert!(exchange(&s, grant, None).await.is_ok(), "{uri}");
    }
    for uri in [
        "http://[::1]:53117/cb",
        "http://localhost:53117/cb",
        "http://127.0.0.1:53117/other",
    ] {
        assert_eq!(
            code_of(issue(&s, lb(uri), Some(&flow.front_end)).await),
            Code::InvalidArgument,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn bad_redemptions_neither_burn_the_code_nor_revoke() {
    let s = TestServer::start().await;
    let flow = CodeFlow::new(&s).await;
    let other = register(&s, true, &[REDIRECT], &["read:profile"]).await;
    let code = flow.code(&s).await;
    let id = flow.client_id.as_str();
    let plain_at = s.access_token("alice").await.token;
    let bad: Vec<(&str, Grant, Code)> = vec![
        // C1.2, C1.3 (B7.b), C1.9
        (
            "wrong verifier",
            redeem(&code, &format!("{}l", &VERIFIER[..42]), REDIRECT, id),
            Code::Unauthenticated,
        ),
        (
            "no verifier",
            redeem(&code, "", REDIRECT, id),
            Code::Unauthenticated,
        ),
        (
            "42-char verifier",
            redeem(&code, &VERIFIER[..42], REDIRECT, id),
            Code::Unauthenticated,
        ),
        (
            "129-char verifier",
            redeem(&code, &"a".repeat(129), REDIRECT, id),
            Code::Unauthenticated,
        ),
        (
            "verifier charset",
            redeem(&code, &format!("{}+", &VERIFIER[..42]), REDIRECT, id),
            Code::Unauthenticated,
        ),
        (
            "challenge as verifier",
            redeem(&code, CHALLENGE, REDIRECT, id),
            Code::Unauthenticated,
        ),
        // C2.5
        (
            "other redirect",
            redeem(&code, VERIFIER, "https://app.example/cb/", id),
            Code::Unauthenticated,
        ),
        (
            "no redirect",
            redeem(&code, VERIFIER, "", id),
            Code::InvalidArgument,
        ),
        // C2.4
        (
            "other client",
            redeem(&code, VERIFIER, REDIRECT, &other.token_id),
            Code::Unauthenticated,
        ),
        (
            "unknown client",
            redeem(&code, VERIFIER, REDIRECT, "nope"),
            Code::Unauthenticated,
        ),
        (
            "no client",
            redeem(&code, VERIFIER, REDIRECT, ""),
            Code::Unauthenticated,
        ),
        // not a code
        (
            "no code",
            redeem("", VERIFIER, REDIRECT, id),
            Code::InvalidArgument,
        ),
        (
            "unknown code",
            redeem(&tamper(&code), VERIFIER, REDIRECT, id),
            Code::Unauthenticated,
        ),
        (
            "access token as code",
            redeem(&plain_at, VERIFIER, REDIRECT, id),
            Code::Unauthenticated,
        ),
    ];
    for (name, grant, want) in &bad {
        let got = exchange(&s, grant.clone(), None).await;
        assert_eq!(code_of(got), *want, "{name}");
    }
    // None of that consumed the code.
    let first = flow.redeem(&s, &code).await.unwrap();
    let second = exchange(&s, refresh(&first.refresh_token, &[]), None)
        .await
        .unwrap();

    // C2.2: a replay with invalid parameters is refused and revokes nothing.
    for (name, grant, _) in &bad[..3] {
        assert!(exchange(&s, grant.clone(), None).await.is_err(), "{name}");
    }
    assert!(active(&s, &first.access_token).await);
    assert!(active(&s, &second.access_token).await);
    assert!(active(&s, &second.refresh_token).await);

    // C2.1: a valid replay is refused and revokes everything the code led to.
    let e = flow.redeem(&s, &code).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains(&code), "no secret in the message");
    for t in [
        &first.access_token,
        &second.access_token,
        &second.refresh_token,
    ] {
        assert!(
            !active(&s, t).await,
            "tokens from the reused code are inactive"
        );
    }
    assert_eq!(
        code_of(exchange(&s, refresh(&second.refresh_token, &[]), None).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn codes_expire_after_60_seconds() {
    let s = TestServer::start().await;
    let flow = CodeFlow::new(&s).await;
    let early = flow.code(&s).await;
    s.clock.advance(58);
    assert!(
        flow.redeem(&s, &early).await.is_ok(),
        "58 s old: still good"
    );

    let late = flow.code(&s).await;
    s.clock.advance(61);
    let e = flow.redeem(&s, &late).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{e:?}");
}

#[tokio::test]
async fn confidential_clients_must_authenticate() {
    let s = TestServer::start().await;
    let conf = register(&s, false, &[REDIRECT], &["read:profile"]).await;
    let public = CodeFlow::new(&s).await;
    let stranger = s.api_key(&["read:profile"]).await.token;
    let spec = code_spec(&conf.token_id, REDIRECT, &["read:profile"]);
    let code = issue(
        &s,
        Credential::AuthorizationCode(spec),
        Some(&public.front_end),
    )
    .await
    .unwrap()
    .token;
    let grant = redeem(&code, VERIFIER, REDIRECT, &conf.token_id);
    // C5.1
    assert_eq!(
        code_of(exchange(&s, grant.clone(), None).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(exchange(&s, grant.clone(), Some(&stranger)).await),
        Code::Unauthenticated
    );
    // The secret authenticates; client_id may then be left out.
    let t = exchange(&s, redeem(&code, VERIFIER, REDIRECT, ""), Some(&conf.token))
        .await
        .unwrap();
    assert_eq!(claims(&t.access_token)["client_id"], conf.token_id.as_str());

    // C4.11: so does its refresh token.
    let rt = &t.refresh_token;
    assert_eq!(
        code_of(exchange(&s, refresh(rt, &[]), None).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(exchange(&s, refresh(rt, &[]), Some(&stranger)).await),
        Code::Unauthenticated
    );
    let t2 = exchange(&s, refresh(rt, &[]), Some(&conf.token))
        .await
        .unwrap();
    assert!(
        active(&s, &t2.access_token).await,
        "failed attempts did not count as reuse"
    );

    // C4.4: a public client's refresh token is refused to another client, and that
    // refusal neither consumes nor revokes it.
    let pt = public.redeem(&s, &public.code(&s).await).await.unwrap();
    assert_eq!(
        code_of(exchange(&s, refresh(&pt.refresh_token, &[]), Some(&conf.token)).await),
        Code::Unauthenticated
    );
    assert!(
        exchange(&s, refresh(&pt.refresh_token, &[]), None)
            .await
            .is_ok()
    );

    // The client's key also serves client_credentials (a confidential client).
    // Its token is the client's own (sub = client id); the name is the owner claim.
    let cc_t = exchange(&s, cc(&[], &[]), Some(&conf.token)).await.unwrap();
    assert_eq!(claims(&cc_t.access_token)["sub"], conf.token_id.as_str());
    assert_eq!(claims(&cc_t.access_token)["owner"], "web-app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_code_redemptions_exactly_one_wins() {
    let s = TestServer::start().await;
    let flow = CodeFlow::new(&s).await;
    for trial in 0..50 {
        let code = flow.code(&s).await;
        let grant = redeem(&code, VERIFIER, REDIRECT, &flow.client_id);
        let results = race(&s, 8, grant, None).await;
        let (ok, err): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        assert_eq!(ok.len(), 1, "trial {trial}: exactly one redemption wins");
        for e in err {
            assert_eq!(
                e.unwrap_err().code(),
                Code::Unauthenticated,
                "trial {trial}"
            );
        }
        // Policy: a concurrent loser is indistinguishable from a replay, so what the
        // winner got is revoked too.
        let won = ok.into_iter().next().unwrap().unwrap();
        assert!(!active(&s, &won.access_token).await, "trial {trial}");
        assert!(!active(&s, &won.refresh_token).await, "trial {trial}");
    }
}

// ---------------------------------------------------------------------------------
// refresh_token

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let s = TestServer::start().await;
    let mut role = prost_types::Struct::default();
    role.fields.insert(
        "role".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("admin".into())),
        },
    );
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "dana".into(),
            audience: strings(&["payments-api"]),
            scopes: strings(&["read:payments", "write:payments"]),
            claims: Some(role),
            client_id: "web-app".into(),
            refresh_token: true,
            ..Default::default()
        })),
    };
    let first = s
        .tokens()
        .await
        .issue(authed(req, &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    let second = exchange(&s, refresh(&first.refresh_token, &[]), None)
        .await
        .unwrap();
    // C4.2: a new refresh token; the old one is dead.
    assert!(second.refresh_token.starts_with("tsr_"));
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(!active(&s, &first.refresh_token).await);
    assert!(active(&s, &second.refresh_token).await);
    // The new access token keeps the family's subject, audience, client and claims.
    let c = claims(&second.access_token);
    assert_eq!(c["sub"], "dana");
    assert_eq!(c["aud"], json!(["payments-api"]));
    assert_eq!(c["client_id"], "web-app");
    assert_eq!(c["role"], "admin");
    assert_eq!(second.scopes, vec!["read:payments", "write:payments"]);
    assert!(active(&s, &second.access_token).await);

    // C4.3: reuse of the first refresh token → refused, and the whole family dies.
    let e = exchange(&s, refresh(&first.refresh_token, &[]), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!active(&s, &second.refresh_token).await);
    assert_eq!(
        code_of(exchange(&s, refresh(&second.refresh_token, &[]), None).await),
        Code::Unauthenticated
    );
    for at in [&first.token, &second.access_token] {
        assert!(
            !active(&s, at).await,
            "access tokens of the family are inactive"
        );
    }

    // C4.10, C4.12: not refresh tokens at all.
    let other = with_refresh(&s, "erin").await;
    let tampered = tamper(&other.refresh_token);
    let rows: &[(&str, &str, Code)] = &[
        ("access token", &other.token, Code::Unauthenticated),
        ("tampered", &tampered, Code::Unauthenticated),
        ("garbage", "tsr_nope", Code::Unauthenticated),
        ("empty", "", Code::InvalidArgument),
    ];
    for (name, rt, want) in rows {
        assert_eq!(
            code_of(exchange(&s, refresh(rt, &[]), None).await),
            *want,
            "{name}"
        );
    }
    assert!(
        active(&s, &other.refresh_token).await,
        "the real one is untouched"
    );
}

#[tokio::test]
async fn refresh_may_only_narrow_scopes() {
    let s = TestServer::start().await;
    let t = with_refresh(&s, "fay").await;
    let e = exchange(&s, refresh(&t.refresh_token, &["admin"]), None).await;
    assert_eq!(code_of(e), Code::PermissionDenied, "C4.5 widening");
    // The refused request did not consume the token.
    let narrow = exchange(&s, refresh(&t.refresh_token, &["read:payments"]), None)
        .await
        .unwrap();
    assert_eq!(narrow.scopes, vec!["read:payments"]);
    assert_eq!(claims(&narrow.access_token)["scope"], "read:payments");
    // The grant keeps its scopes: the next rotation without scopes gets them all.
    let full = exchange(&s, refresh(&narrow.refresh_token, &[]), None)
        .await
        .unwrap();
    assert_eq!(full.scopes, vec!["read:payments", "write:payments"]);
    let r = s.introspect(&full.refresh_token).await.unwrap();
    assert_eq!(r.scopes, vec!["read:payments", "write:payments"]);
}

#[tokio::test]
async fn refresh_tokens_expire_idle_and_absolutely() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path());
    cfg.refresh_token_ttl = Duration::from_secs(100);
    cfg.refresh_family_ttl = Duration::from_secs(250);
    let s = TestServer::start_with(cfg, Clock::system()).await;

    let idle = with_refresh(&s, "gus").await;
    let t = with_refresh(&s, "gus").await;
    s.clock.advance(90);
    let t = exchange(&s, refresh(&t.refresh_token, &[]), None)
        .await
        .unwrap();
    s.clock.advance(15);
    // C4.8: unused for longer than the idle lifetime.
    assert_eq!(
        code_of(exchange(&s, refresh(&idle.refresh_token, &[]), None).await),
        Code::Unauthenticated
    );
    s.clock.advance(75);
    let t = exchange(&s, refresh(&t.refresh_token, &[]), None)
        .await
        .unwrap();
    s.clock.advance(80);
    // 260 s after the family started: past its absolute lifetime, however fresh the token.
    assert_eq!(
        code_of(exchange(&s, refresh(&t.refresh_token, &[]), None).await),
        Code::Unauthenticated
    );
}

/// Fires `n` copies of one grant at once; returns every answer.
async fn race(
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

async fn one_refresh_wins(n: usize, trials: usize) {
    let s = TestServer::start().await;
    for trial in 0..trials {
        let t = with_refresh(&s, "hal").await;
        let results = race(&s, n, refresh(&t.refresh_token, &[]), None).await;
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(w) => winners.push(w),
                Err(e) => assert_eq!(
                    e.code(),
                    Code::Unauthenticated,
                    "N={n} trial {trial}: {e:?}"
                ),
            }
        }
        assert_eq!(winners.len(), 1, "N={n} trial {trial}: exactly one success");
        // Strict policy: the losers count as reuse, so the family is dead — the winner's
        // new tokens included.
        let w = &winners[0];
        assert_eq!(
            code_of(exchange(&s, refresh(&w.refresh_token, &[]), None).await),
            Code::Unauthenticated,
            "N={n} trial {trial}"
        );
        assert!(!active(&s, &w.access_token).await, "N={n} trial {trial}");
        assert!(!active(&s, &t.token).await, "N={n} trial {trial}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_2_exactly_one_wins() {
    one_refresh_wins(2, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_8_exactly_one_wins() {
    one_refresh_wins(8, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_32_exactly_one_wins() {
    one_refresh_wins(32, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_of_different_families_all_succeed() {
    let s = TestServer::start().await;
    let mut families = Vec::new();
    for _ in 0..24 {
        families.push(with_refresh(&s, "ida").await);
    }
    let client = s.tokens().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(families.len()));
    let tasks: Vec<_> = families
        .iter()
        .map(|f| {
            let mut c = client.clone();
            let (b, g) = (barrier.clone(), refresh(&f.refresh_token, &[]));
            tokio::spawn(async move {
                b.wait().await;
                c.exchange(Request::new(ExchangeRequest { grant: Some(g) }))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap().expect("D1.7: no false reuse detection");
        assert!(active(&s, &r.access_token).await);
        assert!(active(&s, &r.refresh_token).await);
    }
}

// ---------------------------------------------------------------------------------
// token_exchange

#[tokio::test]
async fn token_exchange_downscopes_and_names_the_actor() {
    let s = TestServer::start().await;
    let mut claims_struct = prost_types::Struct::default();
    claims_struct.fields.insert(
        "role".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("admin".into())),
        },
    );
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "alice".into(),
            audience: strings(&["gateway"]),
            scopes: strings(&["read:payments", "write:payments"]),
            ttl: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            claims: Some(claims_struct),
            ..Default::default()
        })),
    };
    let subject = s
        .tokens()
        .await
        .issue(authed(req, &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    // The gateway is an audience of alice's token (by its service name) and may
    // exchange it for the payments API.
    let gateway = s.exchanger("gateway", &["payments-api"]).await;

    let t = exchange(
        &s,
        token_exchange(&subject.token, &["payments-api"], &["read:payments"]),
        Some(&gateway.token),
    )
    .await
    .unwrap();
    assert_eq!(t.issued_token_type, AT_TYPE);
    assert_eq!(t.token_type, "Bearer");
    assert!(t.refresh_token.is_empty());
    assert_eq!(t.scopes, vec!["read:payments"]);
    let c = claims(&t.access_token);
    let sc = claims(&subject.token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], json!(["payments-api"]));
    assert_eq!(c["scope"], "read:payments");
    assert_eq!(c["client_id"], gateway.token_id.as_str());
    assert_eq!(
        c["act"],
        json!({"sub": "team-test", "client_id": gateway.token_id})
    );
    assert_eq!(c["role"], "admin", "extra claims carried over");
    assert_eq!(c["ver"], sc["ver"]);
    assert!(
        c["exp"].as_i64().unwrap() <= sc["exp"].as_i64().unwrap(),
        "expiry bounded by the subject token's"
    );
    let r = s.introspect(&t.access_token).await.unwrap();
    assert!(r.active);
    let act = r
        .claims
        .unwrap()
        .fields
        .remove("act")
        .expect("act introspects");
    assert!(act.kind.is_some());

    // No scopes or audience asked: the subject token's scopes, for the caller itself.
    let same = exchange(
        &s,
        token_exchange(&subject.token, &[], &[]),
        Some(&gateway.token),
    )
    .await
    .unwrap();
    assert_eq!(same.scopes, vec!["read:payments", "write:payments"]);
    assert_eq!(claims(&same.access_token)["aud"], json!([gateway.token_id]));

    // The next hop (an audience of t by name) exchanges again: the actor chain nests
    // (RFC 8693 §4.1).
    let ledger = s.exchanger("payments-api", &["ledger"]).await;
    let hop = exchange(
        &s,
        token_exchange(&t.access_token, &["ledger"], &[]),
        Some(&ledger.token),
    )
    .await
    .unwrap();
    let c = claims(&hop.access_token);
    assert_eq!(
        c["act"],
        json!({"sub": "team-test", "client_id": ledger.token_id,
               "act": {"sub": "team-test", "client_id": gateway.token_id}})
    );
    assert_eq!(hop.scopes, vec!["read:payments"]);
}

#[tokio::test]
async fn token_exchange_refusals() {
    let s = TestServer::start().await;
    // An audience of every subject token below (`payments-api`, by name).
    let svc = s.exchanger("payments-api", &["ledger"]).await.token;
    let subject = s.access_token("alice").await.token;
    let revoked = s.access_token("alice").await.token;
    s.tokens()
        .await
        .revoke(authed(
            RevokeRequest {
                token: revoked.clone(),
                ..Default::default()
            },
            &s.admin_key,
        ))
        .await
        .unwrap();
    let with_refresh_token = with_refresh(&s, "alice").await;
    // Not an audience of the subject token, though it may exchange in general.
    let stranger = s.exchanger("stranger", &["ledger"]).await.token;
    // An audience of the subject token, but without exchange_audiences.
    let no_rights = s
        .api_key_with(tessera::proto::ApiKeySpec {
            name: "payments-api".into(),
            ..Default::default()
        })
        .await
        .token;
    let typed = |t: &str, ty: &str| {
        Grant::TokenExchange(TokenExchangeGrant {
            subject_token: t.into(),
            subject_token_type: ty.into(),
            ..Default::default()
        })
    };
    let rows: Vec<(&str, Grant, Option<&str>, Code)> = vec![
        (
            "no caller key",
            token_exchange(&subject, &[], &[]),
            None,
            Code::Unauthenticated,
        ),
        (
            "widening",
            token_exchange(&subject, &[], &["admin"]),
            Some(&svc),
            Code::PermissionDenied,
        ),
        (
            "tessera scope",
            token_exchange(&subject, &[], &["tessera:admin"]),
            Some(&svc),
            Code::PermissionDenied,
        ),
        (
            "no type",
            typed(&subject, ""),
            Some(&svc),
            Code::InvalidArgument,
        ),
        (
            "refresh-token type",
            typed(&subject, "urn:ietf:params:oauth:token-type:refresh_token"),
            Some(&svc),
            Code::InvalidArgument,
        ),
        (
            "jwt type",
            typed(&subject, "urn:ietf:params:oauth:token-type:jwt"),
            Some(&svc),
            Code::InvalidArgument,
        ),
        (
            "no subject token",
            token_exchange("", &[], &[]),
            Some(&svc),
            Code::InvalidArgument,
        ),
        (
            "revoked subject",
            token_exchange(&revoked, &[], &[]),
            Some(&svc),
            Code::Unauthenticated,
        ),
        (
            "garbage subject",
            token_exchange("a.b.c", &[], &[]),
            Some(&svc),
            Code::Unauthenticated,
        ),
        (
            "refresh token as subject",
            token_exchange(&with_refresh_token.refresh_token, &[], &[]),
            Some(&svc),
            Code::Unauthenticated,
        ),
        (
            "API key as subject",
            token_exchange(&svc, &[], &[]),
            Some(&svc),
            Code::Unauthenticated,
        ),
        (
            "empty audience",
            token_exchange(&subject, &[""], &[]),
            Some(&svc),
            Code::InvalidArgument,
        ),
        (
            "audience with a space",
            token_exchange(&subject, &["ledger x"], &[]),
            Some(&svc),
            Code::InvalidArgument,
        ),
        (
            "caller not an audience of the subject token",
            token_exchange(&subject, &["ledger"], &[]),
            Some(&stranger),
            Code::PermissionDenied,
        ),
        (
            "caller not an audience, no audience asked",
            token_exchange(&subject, &[], &[]),
            Some(&stranger),
            Code::PermissionDenied,
        ),
        (
            "audience outside exchange_audiences",
            token_exchange(&subject, &["admin-api"], &[]),
            Some(&svc),
            Code::PermissionDenied,
        ),
        (
            "re-targeting to the subject token's own audience",
            token_exchange(&subject, &["payments-api"], &[]),
            Some(&svc),
            Code::PermissionDenied,
        ),
        (
            "key without exchange_audiences",
            token_exchange(&subject, &[], &[]),
            Some(&no_rights),
            Code::PermissionDenied,
        ),
    ];
    for (name, grant, key, want) in rows {
        assert_eq!(code_of(exchange(&s, grant, key).await), want, "{name}");
    }
    // "Log out everywhere" reaches tokens not yet exchanged.
    s.tokens()
        .await
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "alice".into(),
                reason: String::new(),
            },
            &s.admin_key,
        ))
        .await
        .unwrap();
    assert_eq!(
        code_of(exchange(&s, token_exchange(&subject, &[], &[]), Some(&svc)).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn token_exchange_over_http_is_on_behalf_of() {
    let s = TestServer::start().await;
    let subject = s.access_token("alice").await.token; // aud = payments-api
    let svc = s.exchanger("payments-api", &["ledger"]).await;
    let stranger = s.exchanger("stranger", &["ledger"]).await;
    let basic = |k: &IssueResponse| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", k.token_id, k.token))
        )
    };
    let form = |audience: &str| {
        format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={subject}\
             &subject_token_type={AT_TYPE}{audience}"
        )
    };
    let rows: &[(&str, &IssueResponse, &str, u16, &str)] = &[
        ("allowed audience", &svc, "&audience=ledger", 200, ""),
        ("caller's own id by default", &svc, "", 200, ""),
        (
            "not an audience of the subject token",
            &stranger,
            "&audience=ledger",
            400,
            "invalid_target",
        ),
        (
            "audience not in exchange_audiences",
            &svc,
            "&audience=admin-api",
            400,
            "invalid_target",
        ),
        (
            "re-targeting to the subject's audience",
            &svc,
            "&audience=payments-api",
            400,
            "invalid_target",
        ),
        (
            "tab inside the audience",
            &svc,
            "&audience=led%09ger",
            400,
            "invalid_request",
        ),
    ];
    for (name, key, audience, status, error) in rows {
        let auth = basic(key);
        let (code, _, body) = s
            .http_post(
                "/oauth2/token",
                &[("Authorization", auth.as_str())],
                &form(audience),
            )
            .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, *status, "{name}: {body}");
        if *status == 200 {
            let aud = claims(v["access_token"].as_str().unwrap())["aud"].clone();
            let want = if audience.is_empty() {
                json!([svc.token_id])
            } else {
                json!(["ledger"])
            };
            assert_eq!(aud, want, "{name}");
        } else {
            assert_eq!(v["error"], *error, "{name}: {body}");
        }
    }
}

#[tokio::test]
async fn token_exchange_expiry_is_bounded_by_the_subject() {
    let s = TestServer::start().await;
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "jo".into(),
            audience: strings(&["a"]),
            scopes: strings(&["read"]),
            ttl: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            ..Default::default()
        })),
    };
    let subject = s
        .tokens()
        .await
        .issue(authed(req, &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    let svc = s.exchanger("a", &["b"]).await.token;
    s.clock.advance(10);
    let t = exchange(&s, token_exchange(&subject.token, &[], &[]), Some(&svc))
        .await
        .unwrap();
    assert_eq!(
        t.expires_at.unwrap().seconds,
        subject.expires_at.unwrap().seconds,
        "the default 15 min is cut to what the subject token has left"
    );
    s.clock.advance(25);
    assert_eq!(
        code_of(exchange(&s, token_exchange(&subject.token, &[], &[]), Some(&svc)).await),
        Code::Unauthenticated,
        "an expired subject token"
    );
    assert!(
        !active(&s, &t.access_token).await,
        "and what it became expires with it"
    );
}

// ---------------------------------------------------------------------------------
// Per-scope lifetimes, audit

#[tokio::test]
async fn per_scope_lifetime_caps_every_grant() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path());
    cfg.scope_ttl = BTreeMap::from([("write:payments".to_string(), Duration::from_secs(60))]);
    let s = TestServer::start_with(cfg, Clock::system()).await;
    let default = 15 * 60;

    let key = s.api_key(&["read:payments", "write:payments"]).await.token;
    let t = exchange(&s, cc(&[], &[]), Some(&key)).await.unwrap();
    assert_eq!(lifetime(&t.access_token), 60, "client_credentials, capped");
    let t = exchange(&s, cc(&["read:payments"], &[]), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        lifetime(&t.access_token),
        default,
        "client_credentials, uncapped"
    );

    let family = with_refresh(&s, "kim").await;
    assert_eq!(lifetime(&family.token), 60, "Issue(access_token)");
    let r = exchange(&s, refresh(&family.refresh_token, &[]), None)
        .await
        .unwrap();
    assert_eq!(lifetime(&r.access_token), 60, "refresh, capped");
    let r = exchange(&s, refresh(&r.refresh_token, &["read:payments"]), None)
        .await
        .unwrap();
    assert_eq!(
        lifetime(&r.access_token),
        default,
        "refresh narrowed past the cap"
    );

    let client = register(&s, true, &[REDIRECT], &["write:payments"]).await;
    let front_end = s.api_key(&["tessera:issue"]).await.token;
    let spec = code_spec(&client.token_id, REDIRECT, &[]);
    let code = issue(&s, Credential::AuthorizationCode(spec), Some(&front_end))
        .await
        .unwrap();
    let t = exchange(
        &s,
        redeem(&code.token, VERIFIER, REDIRECT, &client.token_id),
        None,
    )
    .await
    .unwrap();
    assert_eq!(lifetime(&t.access_token), 60, "authorization_code, capped");

    // The code-flow token's audience is the client id: the app's backend key carries
    // it as its service name.
    let svc = s.exchanger(&client.token_id, &["next"]).await.token;
    let x = exchange(
        &s,
        token_exchange(&t.access_token, &["next"], &[]),
        Some(&svc),
    )
    .await
    .unwrap();
    assert!(lifetime(&x.access_token) <= 60, "token exchange, capped");
}

/// A Tessera secret by its shape: a `tsk_`/`tsr_`/`tsc_` prefix followed by 40 or
/// more token characters, or a three-segment JWS starting `eyJ`. Random ids (at most
/// 22 characters) never match.
fn looks_like_a_secret(text: &str) -> bool {
    let token_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let opaque = ["tsk_", "tsr_", "tsc_"].iter().any(|p| {
        text.match_indices(p).any(|(i, _)| {
            text.as_bytes()[i + p.len()..]
                .iter()
                .take_while(|b| token_char(b))
                .count()
                >= 40
        })
    });
    let jws = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .any(|w| w.starts_with("eyJ") && w.split('.').count() == 3);
    opaque || jws
}

#[tokio::test]
async fn every_grant_is_audited_without_secrets() {
    let s = TestServer::start().await;
    let flow = CodeFlow::new(&s).await;
    let svc = s
        .api_key_with(tessera::proto::ApiKeySpec {
            name: flow.client_id.clone(),
            scopes: strings(&["read"]),
            exchange_audiences: strings(&["x"]),
            ..Default::default()
        })
        .await;
    let mut secrets = vec![svc.token.clone()];

    let mut req = authed(
        ExchangeRequest {
            grant: Some(cc(&[], &["x"])),
        },
        &svc.token,
    );
    req.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("req-cc-1"));
    let t = s.tokens().await.exchange(req).await.unwrap().into_inner();
    secrets.push(t.access_token.clone());

    let code = flow.code(&s).await;
    let t1 = flow.redeem(&s, &code).await.unwrap();
    let t2 = exchange(&s, refresh(&t1.refresh_token, &[]), None)
        .await
        .unwrap();
    let x = exchange(
        &s,
        token_exchange(&t2.access_token, &[], &[]),
        Some(&svc.token),
    )
    .await
    .unwrap();
    assert!(
        exchange(&s, refresh(&t1.refresh_token, &[]), None)
            .await
            .is_err()
    );
    assert!(flow.redeem(&s, &code).await.is_err());
    let client = register(&s, false, &[REDIRECT], &[]).await;
    secrets.extend([
        code,
        t1.access_token,
        t1.refresh_token,
        t2.access_token,
        t2.refresh_token,
        x.access_token,
        client.token,
    ]);

    s.flush_audit().await;
    let log = common::with_database(&s.data_dir, |db| tessera::store::audit::recent(db, 100));
    let find = |action: &str| {
        log.iter()
            .find(|e| e.kind == action)
            .unwrap_or_else(|| panic!("no {action} in the audit log"))
    };
    let cc_entry = log
        .iter()
        .find(|e| e.kind == "token.exchanged" && e.detail["grant"] == "client_credentials")
        .expect("a client_credentials record");
    assert_eq!(cc_entry.caller, svc.token_id);
    assert_eq!(cc_entry.request_id, "req-cc-1");
    assert_eq!(cc_entry.detail["grant"], "client_credentials");
    assert_eq!(
        cc_entry.token_id,
        claims(&t.access_token)["jti"].as_str().unwrap()
    );
    let fe_id = flow.front_end.split('_').nth(2).unwrap();
    assert_eq!(find("code.issued").caller, fe_id);
    assert_eq!(find("code.redeemed").caller, "-");
    assert!(log.iter().any(|e| e.kind == "token.exchanged"
        && e.detail["grant"] == "token_exchange"
        && e.caller == svc.token_id));
    for action in [
        "refresh.rotated",
        "refresh.reuse_detected",
        "code.reuse_detected",
        "client.registered",
    ] {
        find(action);
    }
    for secret in &secrets {
        assert!(
            looks_like_a_secret(secret),
            "the shape check recognises real secrets"
        );
    }
    for e in &log {
        let text = format!(
            "{} {} {} {} {:?}",
            e.request_id, e.caller, e.subject, e.token_id, e.detail
        );
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "secret in audit record {}",
                e.kind
            );
        }
        assert!(!looks_like_a_secret(&text), "{}: {text}", e.kind);
    }
}

#[tokio::test]
async fn revoking_any_token_of_a_chain_or_bumping_kills_the_chain() {
    let s = TestServer::start().await;
    // D1.5: revoking an already-rotated refresh token revokes its successors.
    let t1 = with_refresh(&s, "lou").await;
    let t2 = exchange(&s, refresh(&t1.refresh_token, &[]), None)
        .await
        .unwrap();
    s.tokens()
        .await
        .revoke(authed(
            RevokeRequest {
                token: t1.refresh_token.clone(),
                ..Default::default()
            },
            &s.admin_key,
        ))
        .await
        .unwrap();
    assert!(!active(&s, &t2.refresh_token).await);
    assert!(!active(&s, &t2.access_token).await);
    assert_eq!(
        code_of(exchange(&s, refresh(&t2.refresh_token, &[]), None).await),
        Code::Unauthenticated
    );

    // C4.9: "log out everywhere" ends every refresh family of the subject.
    let t = with_refresh(&s, "lou").await;
    s.tokens()
        .await
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "lou".into(),
                reason: "password changed".into(),
            },
            &s.admin_key,
        ))
        .await
        .unwrap();
    assert_eq!(
        code_of(exchange(&s, refresh(&t.refresh_token, &[]), None).await),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_racing_a_revoke_leaves_nothing_active() {
    // D1.8: either the refresh fails, or it succeeds and what it issued is revoked.
    let s = TestServer::start().await;
    for trial in 0..20 {
        let t = with_refresh(&s, "max").await;
        let mut a = s.tokens().await;
        let mut b = a.clone();
        let rt = t.refresh_token.clone();
        let admin = s.admin_key.clone();
        let grant = refresh(&rt, &[]);
        let (refreshed, revoked) = tokio::join!(
            tokio::spawn(async move {
                a.exchange(Request::new(ExchangeRequest { grant: Some(grant) }))
                    .await
                    .map(|r| r.into_inner())
            }),
            tokio::spawn(async move {
                let req = RevokeRequest {
                    token: rt,
                    ..Default::default()
                };
                b.revoke(authed(req, &admin)).await
            }),
        );
        revoked.unwrap().unwrap();
        if let Ok(r) = refreshed.unwrap() {
            assert!(!active(&s, &r.access_token).await, "trial {trial}");
            assert!(!active(&s, &r.refresh_token).await, "trial {trial}");
        }
        assert!(!active(&s, &t.token).await, "trial {trial}");
        assert!(!active(&s, &t.refresh_token).await, "trial {trial}");
    }
}
