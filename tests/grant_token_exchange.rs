//! End-to-end tests of RFC 8693 token exchange against the real server.

mod common;

use base64::Engine;
use common::grants::*;
use common::{TestServer, string_claims};
use serde_json::{Value, json};
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, BumpTokenVersionRequest, IssueRequest, IssueResponse, RevokeRequest,
    TokenExchangeGrant,
};
use tonic::Code;

// ---------------------------------------------------------------------------------
// token_exchange

#[tokio::test]
async fn token_exchange_downscopes_and_names_the_actor() {
    let s = TestServer::start().await;
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "alice".into(),
            audience: strings(&["gateway"]),
            scopes: strings(&["read:payments", "write:payments"]),
            ttl: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            claims: Some(string_claims(&[("role", "admin")])),
            ..Default::default()
        })),
    };
    let subject = s.issue(req).await.unwrap();
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
    s.revoke(RevokeRequest {
        token: revoked.clone(),
        ..Default::default()
    })
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
    s.bump(BumpTokenVersionRequest {
        subject: "alice".into(),
        reason: String::new(),
    })
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
    let subject = s.issue(req).await.unwrap();
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
