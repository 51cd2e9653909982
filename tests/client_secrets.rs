//! Client-secret rotation (`Issue(client{rotate_secret_of, overlap})`): a confidential
//! client gets a new secret for the same client id; the old secret keeps working for
//! the overlap, then only the new one does. Through the real server, over gRPC and the
//! HTTP token endpoint, with the test clock moved instead of sleeping.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use common::{TestServer, authed};
use serde_json::Value;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    ApiKeySpec, AuthorizationCodeGrant, AuthorizationCodeSpec, ClientCredentialsGrant, ClientSpec,
    ExchangeRequest, ExchangeResponse, IssueRequest, IssueResponse, ListAuditEventsRequest,
    RefreshTokenGrant,
};
use tonic::{Code, Status};

const REDIRECT: &str = "https://app.example/cb";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const HOUR: i64 = 3600;

async fn issue(s: &TestServer, c: Credential, key: &str) -> Result<IssueResponse, Status> {
    s.tokens()
        .await
        .issue(authed(
            IssueRequest {
                credential: Some(c),
            },
            key,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn register(s: &TestServer, public: bool) -> IssueResponse {
    let spec = ClientSpec {
        name: "web-app".into(),
        public,
        redirect_uris: vec![REDIRECT.into()],
        scopes: vec!["read:profile".into()],
        ..Default::default()
    };
    issue(s, Credential::Client(spec), &s.admin_key)
        .await
        .unwrap()
}

fn rotation(client_id: &str, overlap_secs: Option<i64>) -> Credential {
    Credential::Client(ClientSpec {
        rotate_secret_of: client_id.into(),
        overlap: overlap_secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        ..Default::default()
    })
}

async fn exchange(s: &TestServer, grant: Grant, key: &str) -> Result<ExchangeResponse, Status> {
    s.tokens()
        .await
        .exchange(authed(ExchangeRequest { grant: Some(grant) }, key))
        .await
        .map(|r| r.into_inner())
}

fn client_credentials() -> Grant {
    Grant::ClientCredentials(ClientCredentialsGrant {
        scopes: vec![],
        audience: vec![],
    })
}

fn sub(jwt: &str) -> String {
    let c: Value =
        serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    c["sub"].as_str().unwrap().to_string()
}

/// `client_credentials` at the HTTP token endpoint with HTTP Basic `client_id:secret`.
async fn http_token(s: &TestServer, client_id: &str, secret: &str) -> (u16, String) {
    let basic = format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")));
    let (status, _, body) = s
        .http_post(
            "/oauth2/token",
            &[("Authorization", basic.as_str())],
            "grant_type=client_credentials",
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn old_and_new_secrets_both_work_inside_the_overlap_and_only_the_new_after() {
    let s = TestServer::start().await;
    let client = register(&s, false).await;
    let rotated = issue(&s, rotation(&client.token_id, Some(HOUR)), &s.admin_key)
        .await
        .unwrap();
    assert_eq!(rotated.token_id, client.token_id, "the client id is stable");
    assert_eq!(rotated.token_type, "client");
    assert_ne!(rotated.token, client.token, "a new secret");
    let (old, new) = (client.token.as_str(), rotated.token.as_str());
    let audited = s
        .list_audit_events(ListAuditEventsRequest {
            kind: "client.secret_rotated".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(audited.len(), 1);
    let detail = format!("{:?}", audited[0].detail);
    assert!(
        detail.contains(&client.token_id),
        "names the client: {detail}"
    );
    assert!(
        !detail.contains(new) && !detail.contains(old),
        "no secret in the audit"
    );

    for (name, secret) in [("old", old), ("new", new)] {
        // gRPC, the secret as the caller's key: the token is the client's own.
        let t = exchange(&s, client_credentials(), secret).await.unwrap();
        assert_eq!(sub(&t.access_token), client.token_id, "{name} secret, gRPC");
        // HTTP Basic with the (unchanged) client id.
        let (status, body) = http_token(&s, &client.token_id, secret).await;
        assert_eq!(status, 200, "{name} secret, HTTP: {body}");
    }

    s.clock.advance(HOUR + 1);
    let e = exchange(&s, client_credentials(), old).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unauthenticated,
        "old secret after the overlap"
    );
    let (status, body) = http_token(&s, &client.token_id, old).await;
    assert_eq!(
        status, 401,
        "old secret over HTTP after the overlap: {body}"
    );
    let t = exchange(&s, client_credentials(), new).await.unwrap();
    assert_eq!(sub(&t.access_token), client.token_id);
    let (status, body) = http_token(&s, &client.token_id, new).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_grant_started_with_the_old_secret_continues_with_the_new_one() {
    let s = TestServer::start().await;
    let client = register(&s, false).await;
    let front_end = s.api_key(&["tessera:issue"]).await.token;
    let code = issue(
        &s,
        Credential::AuthorizationCode(AuthorizationCodeSpec {
            client_id: client.token_id.clone(),
            redirect_uri: REDIRECT.into(),
            subject: "alice".into(),
            scopes: vec![],
            code_challenge: CHALLENGE.into(),
            code_challenge_method: "S256".into(),
        }),
        &front_end,
    )
    .await
    .unwrap()
    .token;
    let rotated = issue(&s, rotation(&client.token_id, None), &s.admin_key)
        .await
        .unwrap();
    // The code, issued before the rotation, is redeemed with the new secret.
    let redeemed = exchange(
        &s,
        Grant::AuthorizationCode(AuthorizationCodeGrant {
            code,
            code_verifier: VERIFIER.into(),
            redirect_uri: REDIRECT.into(),
            client_id: client.token_id.clone(),
        }),
        &rotated.token,
    )
    .await
    .unwrap();
    // Its refresh token rotates with either secret during the overlap (same client).
    let refresh = |rt: &str| {
        Grant::RefreshToken(RefreshTokenGrant {
            refresh_token: rt.into(),
            scopes: vec![],
        })
    };
    let next = exchange(&s, refresh(&redeemed.refresh_token), &client.token)
        .await
        .unwrap();
    exchange(&s, refresh(&next.refresh_token), &rotated.token)
        .await
        .unwrap();
}

#[tokio::test]
async fn rotating_a_public_unknown_or_misused_client_is_refused() {
    let s = TestServer::start().await;
    let public = register(&s, true).await;
    let conf = register(&s, false).await;
    let plain = s.api_key(&["tessera:issue"]).await.token;
    let rows: Vec<(&str, Credential, &str, Code)> = vec![
        (
            "public client",
            rotation(&public.token_id, None),
            &s.admin_key,
            Code::FailedPrecondition,
        ),
        (
            "unknown client",
            rotation("no-such-client", None),
            &s.admin_key,
            Code::NotFound,
        ),
        (
            "not an admin",
            rotation(&conf.token_id, None),
            &plain,
            Code::PermissionDenied,
        ),
        (
            "overlap over 30 days",
            rotation(&conf.token_id, Some(31 * 86_400)),
            &s.admin_key,
            Code::InvalidArgument,
        ),
        (
            "registration fields with rotate_secret_of",
            Credential::Client(ClientSpec {
                rotate_secret_of: conf.token_id.clone(),
                scopes: vec!["write:all".into()],
                ..Default::default()
            }),
            &s.admin_key,
            Code::InvalidArgument,
        ),
        (
            "overlap without rotate_secret_of",
            Credential::Client(ClientSpec {
                name: "x".into(),
                redirect_uris: vec![REDIRECT.into()],
                overlap: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            &s.admin_key,
            Code::InvalidArgument,
        ),
        (
            "the client's key rotated as a plain API key",
            Credential::ApiKey(ApiKeySpec {
                rotate_from: conf.token_id.clone(),
                ..Default::default()
            }),
            &s.admin_key,
            Code::FailedPrecondition,
        ),
    ];
    for (name, cred, key, want) in rows {
        let got = issue(&s, cred, key).await.map(|_| ()).unwrap_err();
        assert_eq!(got.code(), want, "{name}: {}", got.message());
    }
    // Nothing changed: the confidential client's one secret still works.
    exchange(&s, client_credentials(), &conf.token)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_secret_still_stands_for_its_client_after_a_restart_and_rotates_again() {
    let s = TestServer::start().await;
    let client = register(&s, false).await;
    let first = issue(&s, rotation(&client.token_id, Some(0)), &s.admin_key)
        .await
        .unwrap();
    let s = s.restart().await;
    let (status, body) = http_token(&s, &client.token_id, &first.token).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_token(&s, &client.token_id, &client.token).await;
    assert_eq!(status, 401, "overlap 0: the old secret stopped at once");
    // A second rotation replaces the current (rotated-in) secret.
    let second = issue(&s, rotation(&client.token_id, Some(HOUR)), &s.admin_key)
        .await
        .unwrap();
    assert_eq!(second.token_id, client.token_id);
    for secret in [&first.token, &second.token] {
        let t = exchange(&s, client_credentials(), secret).await.unwrap();
        assert_eq!(sub(&t.access_token), client.token_id);
    }
}
