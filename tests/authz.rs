//! Who may revoke what: no lock-out from below (a caller revokes only credentials whose
//! scopes it holds, the last live admin key stays, offline recovery), RFC 7009 client
//! self-revocation, one client authentication per request, and the request-size limit.

mod common;

use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestServer, access_spec, authed};
use serde_json::Value;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, IntrospectRequest, IssueRequest, IssueResponse, RevokeRequest,
};
use tessera::test_support::params;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn admin_spec(ttl_secs: Option<i64>) -> IssueRequest {
    IssueRequest {
        credential: Some(Credential::ApiKey(ApiKeySpec {
            owner: "ops".into(),
            environment: "ops".into(),
            scopes: vec!["tessera:admin".into()],
            ttl: ttl_secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            ..ApiKeySpec::default()
        })),
    }
}

async fn issue_admin(s: &TestServer, by: &str) -> IssueResponse {
    s.tokens()
        .await
        .issue(authed(admin_spec(None), by))
        .await
        .unwrap()
        .into_inner()
}

async fn revoke(s: &TestServer, token: &str, token_id: &str, key: &str) -> Result<(), Status> {
    let req = RevokeRequest {
        token: token.into(),
        token_id: token_id.into(),
        ..RevokeRequest::default()
    };
    s.tokens().await.revoke(authed(req, key)).await.map(|_| ())
}

/// Does `key` still authenticate? (Issuing an access token needs only `tessera:issue`,
/// which admin keys hold; an introspection by an admin answers for any key.)
async fn key_live(s: &TestServer, key: &str, admin: &str) -> bool {
    let req = IntrospectRequest {
        token: key.into(),
        token_type_hint: String::new(),
    };
    s.tokens()
        .await
        .introspect(authed(req, admin))
        .await
        .unwrap()
        .into_inner()
        .active
}

#[tokio::test]
async fn revoking_an_api_key_needs_every_scope_it_holds() {
    let s = TestServer::start().await;
    let admin_id = tessera::apikeys::parse(&s.admin_key)
        .unwrap()
        .id
        .to_string();
    let revoker = s.api_key(&["tessera:revoke"]).await;
    let wider = s.api_key(&["tessera:revoke", "read:payments"]).await;
    let same = s.api_key(&["tessera:revoke"]).await;
    let none = s.api_key(&[]).await;

    // The lock-out from below: by id and by the full key text, both refused.
    for (name, token, token_id) in [
        ("admin key by token_id", "", admin_id.as_str()),
        ("admin key by text", s.admin_key.as_str(), ""),
        ("wider key by token_id", "", wider.token_id.as_str()),
        ("wider key by text", wider.token.as_str(), ""),
    ] {
        let e = revoke(&s, token, token_id, &revoker.token)
            .await
            .expect_err(name);
        assert_eq!(e.code(), Code::PermissionDenied, "{name}: {e:?}");
        assert!(
            !e.message().contains(&s.admin_key) && !e.message().contains(&wider.token),
            "{name}: secret in the message"
        );
        assert!(
            e.message().contains("tessera:admin") || e.message().contains("read:payments"),
            "{name}: the message names the missing scope: {}",
            e.message()
        );
    }
    assert!(key_live(&s, &s.admin_key, &s.admin_key).await);
    assert!(key_live(&s, &wider.token, &s.admin_key).await);

    // Keys whose scopes the caller holds: fine, by id or by text.
    revoke(&s, "", &same.token_id, &revoker.token)
        .await
        .unwrap();
    revoke(&s, &none.token, "", &revoker.token).await.unwrap();
    assert!(!key_live(&s, &same.token, &s.admin_key).await);
    assert!(!key_live(&s, &none.token, &s.admin_key).await);
    // Tokens keep needing only the operator scope (they never carry tessera:*).
    let t = s.access_token("alice").await;
    revoke(&s, &t.token, "", &revoker.token).await.unwrap();
    assert!(!s.introspect(&t.token).await.unwrap().active);
    // The admin holds every scope.
    revoke(&s, "", &wider.token_id, &s.admin_key).await.unwrap();
    assert!(!key_live(&s, &wider.token, &s.admin_key).await);
}

#[tokio::test]
async fn the_last_live_admin_key_cannot_be_revoked_over_the_api() {
    let s = TestServer::start().await;
    let admin_id = tessera::apikeys::parse(&s.admin_key)
        .unwrap()
        .id
        .to_string();
    let e = revoke(&s, "", &admin_id, &s.admin_key).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("last live admin"), "{}", e.message());
    let e = revoke(&s, &s.admin_key, "", &s.admin_key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "by text too: {e:?}");
    assert!(key_live(&s, &s.admin_key, &s.admin_key).await);

    // With a second admin key, the first may go; then the second is the last.
    let b = issue_admin(&s, &s.admin_key).await;
    revoke(&s, "", &admin_id, &b.token).await.unwrap();
    assert!(!key_live(&s, &s.admin_key, &b.token).await);
    // An admin key that has expired does not count as a live one.
    let short = s
        .tokens()
        .await
        .issue(authed(admin_spec(Some(60)), &b.token))
        .await
        .unwrap()
        .into_inner();
    s.clock.advance(61);
    assert!(!key_live(&s, &short.token, &b.token).await);
    let e = revoke(&s, "", &b.token_id, &b.token).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(key_live(&s, &b.token, &b.token).await);
}

/// Two admin keys revoking each other at the same moment: the check and the revocation
/// are one store transaction, so exactly one wins and one admin key survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revocations_of_the_last_two_admin_keys_leave_one() {
    let s = Arc::new(TestServer::start().await);
    let first = issue_admin(&s, &s.admin_key).await;
    let admin_id = tessera::apikeys::parse(&s.admin_key)
        .unwrap()
        .id
        .to_string();
    revoke(&s, "", &admin_id, &first.token).await.unwrap();
    let mut survivor = first;
    for round in 0..12 {
        let other = issue_admin(&s, &survivor.token).await;
        let (mut c1, mut c2) = (s.tokens().await, s.tokens().await);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier.clone());
        let (a, b) = (survivor.clone(), other.clone());
        let t1 = tokio::spawn(async move {
            let req = authed(
                RevokeRequest {
                    token_id: b.token_id.clone(),
                    ..RevokeRequest::default()
                },
                &a.token,
            );
            b1.wait().await;
            c1.revoke(req).await.map(|_| ())
        });
        let (a, b) = (survivor.clone(), other.clone());
        let t2 = tokio::spawn(async move {
            let req = authed(
                RevokeRequest {
                    token_id: a.token_id.clone(),
                    ..RevokeRequest::default()
                },
                &b.token,
            );
            b2.wait().await;
            c2.revoke(req).await.map(|_| ())
        });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        let wins = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: exactly one wins: {r1:?} {r2:?}");
        for r in [&r1, &r2] {
            if let Err(e) = r {
                // The loser either met the last-admin rule or had already been revoked
                // by the time its call was authenticated.
                assert!(
                    matches!(e.code(), Code::FailedPrecondition | Code::Unauthenticated),
                    "round {round}: {e:?}"
                );
            }
        }
        let next = if r1.is_ok() { survivor } else { other };
        assert!(
            key_live(&s, &next.token, &next.token).await,
            "round {round}: the key that was not revoked is live"
        );
        survivor = next;
    }
    // Whatever the interleavings, one admin key is still there and it works.
    let e = revoke(&s, "", &survivor.token_id, &survivor.token)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

/// `tessera admin recover` on the data dir of a stopped server whose admin keys are
/// lost: it mints a fresh admin key into `admin.key` (0600, replacing the old file),
/// audits it, prints the path but never the key; the restarted server accepts it.
#[tokio::test]
async fn admin_recover_writes_a_fresh_admin_key_the_server_accepts() {
    // `admin recover` works offline on the data dir's SQLite file.
    if common::on_postgres() {
        return;
    }
    let s = TestServer::start().await;
    let dir = s.data_dir.clone();
    let old_admin = s.admin_key.clone();
    let old_id = tessera::apikeys::parse(&old_admin).unwrap().id.to_string();
    // The operator's working admin key replaces the bootstrap one ...
    let working = issue_admin(&s, &old_admin).await;
    revoke(&s, "", &old_id, &working.token).await.unwrap();
    // ... and is then lost: nothing left on disk can administer the service.
    let mut s = s;
    s.stop().await;

    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["admin", "recover", "--data-dir"])
        .arg(&dir)
        .env_remove("TESSERA_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let path = dir.join("admin.key");
    assert!(
        stdout.contains(&path.display().to_string()),
        "prints the path: {stdout}"
    );
    let recovered = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_ne!(recovered, old_admin, "the old file is replaced");
    let rec_id = tessera::apikeys::parse(&recovered)
        .expect("a well-formed key")
        .id
        .to_string();
    assert!(
        !stdout.contains(&recovered) && !stderr.contains(&recovered),
        "the key is never printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let (caller, target) = common::with_database(&dir, |db| {
        Ok(db.query_row(
            "SELECT caller, token_id FROM audit_log WHERE kind = 'admin.recovered'",
            params![],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?)
    });
    assert_eq!(
        (caller.as_str(), target.as_str()),
        ("offline", rec_id.as_str())
    );

    let s = s.restart().await;
    // The recovered key administers: it issues an API key ...
    let k = s
        .tokens()
        .await
        .issue(authed(admin_spec(None), &recovered))
        .await
        .expect("the recovered key is an admin key")
        .into_inner();
    assert!(key_live(&s, &k.token, &recovered).await);
    // ... and the revoked bootstrap key stays dead.
    let e = s
        .tokens()
        .await
        .issue(authed(access_spec("x"), &old_admin))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[test]
fn admin_recover_refuses_a_dir_without_a_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("typo");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["admin", "recover", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("typo"), "names the path: {stderr}");
    assert!(!dir.exists(), "no store is created");
}

#[tokio::test]
async fn repeated_authorization_metadata_is_unauthenticated() {
    let s = TestServer::start().await;
    let other = s.api_key(&["tessera:issue"]).await;
    for (name, second) in [
        ("same key twice", s.admin_key.clone()),
        ("two valid keys", other.token.clone()),
        ("valid then garbage", "garbage".to_string()),
    ] {
        let mut req = authed(access_spec("alice"), &s.admin_key);
        req.metadata_mut().append(
            "authorization",
            MetadataValue::try_from(format!("Bearer {second}")).unwrap(),
        );
        let e = s.tokens().await.issue(req).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{name}: {e:?}");
    }
    // One header still works.
    s.issue(access_spec("alice")).await.unwrap();
}

#[tokio::test]
async fn a_grpc_message_over_the_limit_is_resource_exhausted() {
    let s = TestServer::start().await;
    let limit = tessera::config::Config::default().max_request_bytes;
    let mut tk = s.tokens().await;
    for size in [limit + 1, 1024 * 1024, 8 * 1024 * 1024] {
        let req = IntrospectRequest {
            token: "a".repeat(size),
            token_type_hint: String::new(),
        };
        let e = tk.introspect(authed(req, &s.admin_key)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{size} bytes: {e:?}");
    }
    // Just under the limit the message is decoded and judged on its content.
    let req = IntrospectRequest {
        token: "a".repeat(limit - 16),
        token_type_hint: String::new(),
    };
    let e = tk.introspect(authed(req, &s.admin_key)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // The same channel keeps working.
    let t = s.access_token("k").await;
    let req = IntrospectRequest {
        token: t.token,
        token_type_hint: String::new(),
    };
    assert!(
        tk.introspect(authed(req, &s.admin_key))
            .await
            .unwrap()
            .into_inner()
            .active
    );
}

/// An access token (client_credentials) and a refresh family bound to `client`.
async fn client_tokens(s: &TestServer, client: &IssueResponse) -> (String, IssueResponse) {
    let (code, _, body) = s
        .http_post(
            "/oauth2/token",
            &[("Authorization", &basic(&client.token_id, &client.token))],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let at = json(&body)["access_token"].as_str().unwrap().to_string();
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "alice".into(),
            audience: vec!["payments-api".into()],
            client_id: client.token_id.clone(),
            refresh_token: true,
            ..AccessTokenSpec::default()
        })),
    };
    let family = s.issue(req).await.unwrap();
    (at, family)
}

#[tokio::test]
async fn a_client_revokes_its_own_tokens_without_the_revoke_scope() {
    let s = TestServer::start().await;
    let client = s.api_key(&["read:things"]).await;
    let auth = basic(&client.token_id, &client.token);
    let (at, family) = client_tokens(&s, &client).await;
    assert!(s.introspect(&at).await.unwrap().active);

    // Basic auth, an access token issued to this client.
    let (code, head, body) = s
        .http_post(
            "/oauth2/revoke",
            &[("Authorization", &auth)],
            &format!("token={at}"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    assert!(!s.introspect(&at).await.unwrap().active);

    // client_secret_post, a refresh token of a family bound to this client: the family
    // and its access tokens go.
    let form = format!(
        "token={}&token_type_hint=refresh_token&client_id={}&client_secret={}",
        family.refresh_token, client.token_id, client.token
    );
    let (code, _, body) = s.http_post("/oauth2/revoke", &[], &form).await;
    assert_eq!(code, 200, "{body}");
    assert!(!s.introspect(&family.refresh_token).await.unwrap().active);
    assert!(!s.introspect(&family.token).await.unwrap().active);

    // RFC 7009 §2.2: an invalid or unknown token, or one already revoked, is a success.
    for token in [
        "garbage",
        "tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        at.as_str(),
    ] {
        let (code, _, body) = s
            .http_post(
                "/oauth2/revoke",
                &[("Authorization", &auth)],
                &format!("token={token}"),
            )
            .await;
        assert_eq!(code, 200, "{token}: {body}");
    }
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_tokens() {
    let s = TestServer::start().await;
    let owner = s.api_key(&["read:things"]).await;
    let other = s.api_key(&["read:things"]).await;
    let other_auth = basic(&other.token_id, &other.token);
    let (at, family) = client_tokens(&s, &owner).await;

    for (name, token) in [
        ("access token", at.as_str()),
        ("refresh token", family.refresh_token.as_str()),
        ("access token of the family", family.token.as_str()),
    ] {
        let (code, head, body) = s
            .http_post(
                "/oauth2/revoke",
                &[("Authorization", &other_auth)],
                &format!("token={token}"),
            )
            .await;
        assert_eq!(code, 400, "{name}: {body}");
        assert_eq!(json(&body)["error"], "unauthorized_client", "{name}");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{name}"
        );
        assert!(
            s.introspect(token).await.unwrap().active,
            "{name} stays live"
        );
    }

    // API keys are not revoked at this endpoint, whoever asks and whatever the key:
    // the answer depends on the shape alone.
    let operator = s.api_key(&["tessera:revoke"]).await;
    for (name, auth, token) in [
        ("client, other key", other_auth.clone(), owner.token.clone()),
        ("client, own key", other_auth.clone(), other.token.clone()),
        (
            "operator",
            basic(&operator.token_id, &operator.token),
            owner.token.clone(),
        ),
        (
            "client, garbage key",
            other_auth.clone(),
            "tsk_x".to_string(),
        ),
    ] {
        let (code, _, body) = s
            .http_post(
                "/oauth2/revoke",
                &[("Authorization", &auth)],
                &format!("token={token}"),
            )
            .await;
        assert_eq!(code, 400, "{name}: {body}");
        assert_eq!(json(&body)["error"], "unsupported_token_type", "{name}");
        assert!(
            !body.contains(&owner.token) && !body.contains(&other.token),
            "{name}: key echoed"
        );
    }
    assert!(key_live(&s, &owner.token, &s.admin_key).await);
    assert!(key_live(&s, &other.token, &s.admin_key).await);

    // The other RFC 7009 / RFC 6749 errors.
    let (code, _, body) = s
        .http_post(
            "/oauth2/revoke",
            &[("Authorization", &other_auth)],
            "token=",
        )
        .await;
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (code, head, body) = s
        .http_post("/oauth2/revoke", &[], &format!("token={at}"))
        .await;
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic")
    );
    // An operator still revokes any client's token.
    let (code, _, body) = s
        .http_post(
            "/oauth2/revoke",
            &[("Authorization", &basic(&operator.token_id, &operator.token))],
            &format!("token={at}"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(!s.introspect(&at).await.unwrap().active);
}

#[tokio::test]
async fn one_client_authentication_method_per_request() {
    let s = TestServer::start().await;
    let client = s
        .api_key(&["tessera:introspect", "tessera:revoke", "read:things"])
        .await;
    let auth = basic(&client.token_id, &client.token);
    let t = s.access_token("alice").await;
    let both = |rest: &str| {
        format!(
            "{rest}&client_id={}&client_secret={}",
            client.token_id, client.token
        )
    };
    let bearer = format!("Bearer {}", client.token);
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            "token: Basic + client_secret",
            "/oauth2/token",
            vec![("Authorization", &auth)],
            both("grant_type=client_credentials"),
        ),
        (
            "token: Bearer + client_secret",
            "/oauth2/token",
            vec![("Authorization", &bearer)],
            both("grant_type=client_credentials"),
        ),
        (
            "token: empty client_secret beside Basic",
            "/oauth2/token",
            vec![("Authorization", &auth)],
            "grant_type=client_credentials&client_secret=".into(),
        ),
        (
            "token: two Authorization headers",
            "/oauth2/token",
            vec![("Authorization", &auth), ("Authorization", &auth)],
            "grant_type=client_credentials".into(),
        ),
        (
            "introspect: Basic + client_secret",
            "/oauth2/introspect",
            vec![("Authorization", &auth)],
            both(&format!("token={}", t.token)),
        ),
        (
            "revoke: Basic + client_secret",
            "/oauth2/revoke",
            vec![("Authorization", &auth)],
            both(&format!("token={}", t.token)),
        ),
        (
            "revoke: two Authorization headers",
            "/oauth2/revoke",
            vec![("Authorization", &auth), ("Authorization", &auth)],
            format!("token={}", t.token),
        ),
    ];
    for (name, path, headers, form) in cases {
        let (code, head, body) = s.http_post(path, &headers, &form).await;
        assert_eq!(code, 400, "{name}: {body}");
        assert_eq!(json(&body)["error"], "invalid_request", "{name}");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{name}"
        );
        assert!(!body.contains(&client.token), "{name}: secret echoed");
    }
    assert!(
        s.introspect(&t.token).await.unwrap().active,
        "a refused revocation revoked nothing"
    );
    // Each method alone still works.
    let (code, _, body) = s
        .http_post(
            "/oauth2/token",
            &[("Authorization", &auth)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = s
        .http_post("/oauth2/token", &[], &both("grant_type=client_credentials"))
        .await;
    assert_eq!(code, 200, "{body}");
}
