//! End-to-end tests of the `refresh_token` grant (rotation, reuse detection, races,
//! expiry) against the real server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::grants::*;
use common::{TestServer, string_claims, test_config};
use serde_json::json;
use tessera::clock::Clock;
use tessera::proto::issue_request::Credential;
use tessera::proto::{AccessTokenSpec, ExchangeRequest, IssueRequest};
use tonic::{Code, Request};

// ---------------------------------------------------------------------------------
// refresh_token

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let s = TestServer::start().await;
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "dana".into(),
            audience: strings(&["payments-api"]),
            scopes: strings(&["read:payments", "write:payments"]),
            claims: Some(string_claims(&[("role", "admin")])),
            client_id: "web-app".into(),
            refresh_token: true,
            ..Default::default()
        })),
    };
    let first = s.issue(req).await.unwrap();
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
