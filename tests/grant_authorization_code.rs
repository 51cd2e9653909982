//! End-to-end tests of `Issue(authorization_code)` and the `authorization_code`
//! grant with PKCE against the real server.

mod common;

use common::TestServer;
use common::grants::*;
use serde_json::json;
use tessera::proto::AuthorizationCodeSpec;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tonic::Code;

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
