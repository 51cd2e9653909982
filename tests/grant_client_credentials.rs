//! End-to-end tests of the `client_credentials` grant and of `Issue(client)` against
//! the real server.

mod common;

use base64::Engine;
use common::grants::*;
use common::{TestServer, authed};
use serde_json::{Value, json};
use tessera::proto::ExchangeRequest;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tonic::Code;

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
