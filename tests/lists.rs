//! Lists are lists (contract Part 2): scopes, audiences and redirect URIs are stored as
//! lists, never joined on whitespace; every entry is checked where it enters, over gRPC
//! and HTTP; HTTP splits `scope` and `audience` on U+0020 only.

mod common;

use common::{TestServer, authed, string_claims};
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, ClientCredentialsGrant, ExchangeRequest, IssueRequest,
    RefreshTokenGrant,
};
use tessera::test_support::params;
use tonic::Code;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn access(audience: &[&str], refresh_token: bool) -> IssueRequest {
    IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "alice".into(),
            audience: strings(audience),
            scopes: strings(&["read"]),
            refresh_token,
            ..AccessTokenSpec::default()
        })),
    }
}

fn count(s: &TestServer, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    common::with_database(&s.data_dir, move |db| {
        Ok(db.query_row(&sql, params![], |r| r.get::<i64>(0))?)
    })
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn audiences_with_whitespace_are_refused_up_front_and_spend_nothing() {
    let s = TestServer::start().await;
    let mut tk = s.tokens().await;
    let families = count(&s, "refresh_families");
    s.flush_audit().await;
    let audit = count(&s, "audit_log");
    let rows: &[(&str, &[&str])] = &[
        ("space inside", &["a b"]),
        ("a lone space", &[" "]),
        ("tab inside", &["a\tb"]),
        ("no-break space inside", &["a\u{a0}b"]),
        ("ideographic space", &["\u{3000}"]),
        ("empty", &[""]),
        ("one good, one bad", &["payments-api", "a b"]),
    ];
    for (name, audience) in rows {
        for refresh in [false, true] {
            let e = tk
                .issue(authed(access(audience, refresh), &s.admin_key))
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                Code::InvalidArgument,
                "{name} (refresh {refresh})"
            );
            assert!(!e.message().contains('\u{a0}'), "{name}: value echoed");
        }
        let e = tk
            .exchange(authed(
                ExchangeRequest {
                    grant: Some(Grant::ClientCredentials(ClientCredentialsGrant {
                        scopes: Vec::new(),
                        audience: strings(audience),
                    })),
                },
                &s.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "client_credentials {name}");
        let e = tk
            .issue(authed(
                IssueRequest {
                    credential: Some(Credential::ApiKey(ApiKeySpec {
                        owner: "o".into(),
                        environment: "test".into(),
                        exchange_audiences: strings(audience),
                        ..ApiKeySpec::default()
                    })),
                },
                &s.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "exchange_audiences {name}");
    }
    assert_eq!(
        count(&s, "refresh_families"),
        families,
        "no family was started"
    );
    s.flush_audit().await;
    assert_eq!(count(&s, "audit_log"), audit, "nothing was issued");
}

#[tokio::test]
async fn a_refresh_family_round_trips_its_audience_list_exactly() {
    let s = TestServer::start().await;
    let mut tk = s.tokens().await;
    let audience = [
        "zeta-api",
        "https://api.example/v1?tenant=a&x=1",
        "サービス",
        "alpha\"quoted\\",
        "payments-api",
    ];
    let t = tk
        .issue(authed(access(&audience, true), &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    let mut rt = t.refresh_token;
    for round in 0..3 {
        let r = s.introspect(&rt).await.unwrap();
        assert!(r.active, "round {round}");
        assert_eq!(
            r.audience,
            strings(&audience),
            "refresh token, round {round}"
        );
        let next = tk
            .exchange(ExchangeRequest {
                grant: Some(Grant::RefreshToken(RefreshTokenGrant {
                    refresh_token: rt.clone(),
                    scopes: Vec::new(),
                })),
            })
            .await
            .unwrap()
            .into_inner();
        let at = s.introspect(&next.access_token).await.unwrap();
        assert!(at.active, "round {round}");
        assert_eq!(
            at.audience,
            strings(&audience),
            "access token, round {round}"
        );
        rt = next.refresh_token;
    }
    // Stored as a JSON array, not as text to split.
    let stored = common::with_database(&s.data_dir, |db| {
        let sql = "SELECT audience FROM refresh_families";
        Ok(db.query_row(sql, params![], |r| r.get::<String>(0))?)
    });
    let parsed: Vec<String> = serde_json::from_str(&stored).unwrap();
    assert_eq!(parsed, strings(&audience));
}

#[tokio::test]
async fn extra_claim_names_are_list_entries_and_owner_is_reserved() {
    let s = TestServer::start().await;
    let mut tk = s.tokens().await;
    let with_claim = |name: &str| IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "alice".into(),
            audience: strings(&["api"]),
            claims: Some(string_claims(&[(name, "v")])),
            ..AccessTokenSpec::default()
        })),
    };
    for (name, claim) in [
        ("space", "my role"),
        ("tab", "role\t"),
        ("no-break space", "role\u{a0}x"),
        ("control", "ro\u{7}le"),
        ("zero-width", "role\u{200b}"),
        ("empty", ""),
        ("owner is set by Tessera", "owner"),
    ] {
        let e = tk
            .issue(authed(with_claim(claim), &s.admin_key))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}");
    }
    tk.issue(authed(with_claim("tenant-id"), &s.admin_key))
        .await
        .expect("a plain claim name");
}

#[tokio::test]
async fn http_splits_scope_and_audience_on_single_spaces_only() {
    let s = TestServer::start().await;
    let cc = s
        .api_key_with(ApiKeySpec {
            scopes: strings(&["read:things", "write:things"]),
            ..ApiKeySpec::default()
        })
        .await;
    let auth = basic(&cc.token_id, &cc.token);
    let post = |form: String| {
        let auth = auth.clone();
        let s = &s;
        async move {
            let (status, _, body) = s
                .http_post("/oauth2/token", &[("Authorization", auth.as_str())], &form)
                .await;
            (status, json(&body))
        }
    };
    let (status, v) =
        post("grant_type=client_credentials&scope=read:things+write:things&audience=a+b".into())
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scope"], "read:things write:things");
    let at = s
        .introspect(v["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(at.audience, strings(&["a", "b"]));

    let rows: &[(&str, &str, &str)] = &[
        (
            "tab in scope",
            "scope=read:things%09write:things",
            "invalid_scope",
        ),
        (
            "no-break space in scope",
            "scope=read:things%C2%A0write:things",
            "invalid_scope",
        ),
        (
            "double space in scope",
            "scope=read:things++write:things",
            "invalid_scope",
        ),
        (
            "leading space in scope",
            "scope=+read:things",
            "invalid_scope",
        ),
        (
            "trailing space in scope",
            "scope=read:things+",
            "invalid_scope",
        ),
        (
            "newline in scope",
            "scope=read:things%0Awrite:things",
            "invalid_scope",
        ),
        ("tab in audience", "audience=a%09b", "invalid_request"),
        (
            "no-break space in audience",
            "audience=a%C2%A0b",
            "invalid_request",
        ),
        (
            "em space in audience",
            "audience=a%E2%80%83b",
            "invalid_request",
        ),
        (
            "double space in audience",
            "audience=a++b",
            "invalid_request",
        ),
        ("lone space audience", "audience=+", "invalid_request"),
    ];
    for (name, params, error) in rows {
        let (status, v) = post(format!("grant_type=client_credentials&{params}")).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some(*error)),
            "{name}: {v}"
        );
    }

    // A malformed scope on a refresh request is refused before the token is touched.
    let t = s
        .issue(IssueRequest {
            credential: Some(Credential::AccessToken(AccessTokenSpec {
                subject: "alice".into(),
                audience: strings(&["api"]),
                scopes: strings(&["read", "write"]),
                refresh_token: true,
                ..AccessTokenSpec::default()
            })),
        })
        .await
        .unwrap();
    let form = format!(
        "grant_type=refresh_token&refresh_token={}&scope=read%09write",
        t.refresh_token
    );
    let (status, _, body) = s.http_post("/oauth2/token", &[], &form).await;
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (400, "invalid_scope".into())
    );
    assert!(
        s.introspect(&t.refresh_token).await.unwrap().active,
        "not spent"
    );
}
