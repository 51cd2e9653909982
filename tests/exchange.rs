//! What every OAuth grant shares, end to end against the real server: per-scope
//! lifetime caps, audit records without secrets, and revocation reaching a whole
//! chain. Each grant has its own file: `tests/grant_*.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::grants::*;
use common::{TestServer, authed, test_config};
use tessera::clock::Clock;
use tessera::proto::issue_request::Credential;
use tessera::proto::{BumpTokenVersionRequest, ExchangeRequest, RevokeRequest};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

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
    let log = common::with_database(&s.data_dir, |db| {
        tessera::test_support::audit::recent(db, 100)
    });
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
    s.revoke(RevokeRequest {
        token: t1.refresh_token.clone(),
        ..Default::default()
    })
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
    s.bump(BumpTokenVersionRequest {
        subject: "lou".into(),
        reason: "password changed".into(),
    })
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
