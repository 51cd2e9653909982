//! The standard OAuth HTTP endpoints: RFC 7662 introspection, RFC 7009 revocation,
//! RFC 8414 metadata, RFC 6749 client authentication and error format.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestServer;
use serde_json::Value;

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn introspect_and_revoke_over_http() {
    let s = TestServer::start().await;
    let rs = s.api_key(&["tessera:introspect", "tessera:revoke"]).await;
    let auth = basic(&rs.token_id, &rs.token);
    let t = s.access_token("alice").await;

    let (code, head, body) = s
        .http_post(
            "/oauth2/introspect",
            &[("Authorization", &auth)],
            &format!("token={}", t.token),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    let v = json(&body);
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["scope"], "read:payments write:payments");
    assert_eq!(v["aud"][0], "payments-api");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["jti"], t.token_id.as_str());

    // client_secret_post works too, and a token_type_hint is only a hint.
    let form = format!(
        "token={}&token_type_hint=refresh_token&client_id={}&client_secret={}",
        t.token, rs.token_id, rs.token
    );
    let (code, _, body) = s.http_post("/oauth2/introspect", &[], &form).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["active"], true);

    let (code, head, body) = s
        .http_post(
            "/oauth2/revoke",
            &[("Authorization", &auth)],
            &format!("token={}", t.token),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    let (_, _, body) = s
        .http_post(
            "/oauth2/introspect",
            &[("Authorization", &auth)],
            &format!("token={}", t.token),
        )
        .await;
    assert_eq!(
        json(&body),
        serde_json::json!({"active": false}),
        "inactive says nothing else"
    );

    // Revoking garbage succeeds (RFC 7009 §2.2).
    let (code, _, _) = s
        .http_post(
            "/oauth2/revoke",
            &[("Authorization", &auth)],
            "token=garbage",
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn client_authentication_errors_follow_rfc6749() {
    let s = TestServer::start().await;
    let rs = s.api_key(&["tessera:introspect"]).await;
    let narrow = s.api_key(&["read"]).await;
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no credentials",
            vec![],
            "token=x".into(),
            401,
            "invalid_client",
        ),
        (
            "wrong secret",
            vec![("Authorization", basic(&rs.token_id, &narrow.token))],
            "token=x".into(),
            401,
            "invalid_client",
        ),
        (
            "id/secret mismatch",
            vec![("Authorization", basic(&narrow.token_id, &rs.token))],
            "token=x".into(),
            401,
            "invalid_client",
        ),
        (
            "garbage basic",
            vec![("Authorization", "Basic !!!".into())],
            "token=x".into(),
            401,
            "invalid_client",
        ),
        (
            "missing scope",
            vec![("Authorization", basic(&narrow.token_id, &narrow.token))],
            "token=x".into(),
            403,
            "access_denied",
        ),
        (
            "duplicate parameter",
            vec![("Authorization", basic(&rs.token_id, &rs.token))],
            "token=x&token=y".into(),
            400,
            "invalid_request",
        ),
        (
            "empty token",
            vec![("Authorization", basic(&rs.token_id, &rs.token))],
            "token=".into(),
            400,
            "invalid_request",
        ),
    ];
    for (name, headers, form, status, error) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, head, body) = s.http_post("/oauth2/introspect", &h, &form).await;
        assert_eq!(code, status, "{name}: {body}");
        assert_eq!(json(&body)["error"], error, "{name}");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{name}"
        );
        assert!(
            !body.contains(&rs.token) && !body.contains(&narrow.token),
            "{name}: secret echoed"
        );
        if status == 401 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic"),
                "{name}"
            );
        }
    }
    // RFC 6749 §5.2: the challenge is in the scheme the client used; a client that
    // sent a Bearer key is not told to try Basic.
    let unknown = format!(
        "Bearer {}",
        narrow.token.replace(&narrow.token_id, "0123456789abcdef")
    );
    for path in ["/oauth2/introspect", "/oauth2/revoke", "/oauth2/token"] {
        for bad in [unknown.as_str(), "Bearer nonsense", "bearer nonsense"] {
            let form = if path == "/oauth2/token" {
                "grant_type=client_credentials"
            } else {
                "token=x"
            };
            let (code, head, body) = s.http_post(path, &[("Authorization", bad)], form).await;
            assert_eq!(code, 401, "{path} {bad}: {body}");
            assert_eq!(json(&body)["error"], "invalid_client", "{path}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer realm=\"tessera\""),
                "{path} {bad}: {head}"
            );
        }
    }
    // Wrong content type.
    let req = "POST /oauth2/introspect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let (code, _, body) = s.http_raw(req).await;
    assert_eq!(code, 400);
    assert_eq!(json(&body)["error"], "invalid_request");
}

#[tokio::test]
async fn metadata_lists_the_endpoints() {
    let s = TestServer::start().await;
    let (code, _, body) = s.http_get("/.well-known/oauth-authorization-server").await;
    assert_eq!(code, 200);
    let v = json(&body);
    assert_eq!(v["issuer"], "https://tessera.test");
    assert_eq!(v["jwks_uri"], "https://tessera.test/.well-known/jwks.json");
    assert_eq!(
        v["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
}

#[tokio::test]
async fn token_endpoint_grants_and_errors() {
    let s = TestServer::start().await;
    let cc = s.api_key(&["read:things", "write:things"]).await;
    let auth = basic(&cc.token_id, &cc.token);

    let (code, head, body) = s
        .http_post(
            "/oauth2/token",
            &[("Authorization", &auth)],
            "grant_type=client_credentials&scope=read:things",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    let v = json(&body);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "read:things");
    assert!(v["expires_in"].as_i64().unwrap() > 0);
    assert!(
        v.get("refresh_token").is_none(),
        "client_credentials issues no refresh token"
    );
    assert!(
        s.introspect(v["access_token"].as_str().unwrap())
            .await
            .unwrap()
            .active
    );

    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "no grant_type",
            "with-auth",
            "scope=x",
            400,
            "invalid_request",
        ),
        (
            "password grant",
            "with-auth",
            "grant_type=password&username=a&password=b",
            400,
            "unsupported_grant_type",
        ),
        (
            "implicit",
            "with-auth",
            "grant_type=implicit",
            400,
            "unsupported_grant_type",
        ),
        (
            "widening scope",
            "with-auth",
            "grant_type=client_credentials&scope=admin",
            400,
            "invalid_scope",
        ),
        (
            "no client auth",
            "none",
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            "bad refresh token",
            "none",
            "grant_type=refresh_token&refresh_token=tsr_nope",
            400,
            "invalid_grant",
        ),
        (
            "bad code",
            "none",
            "grant_type=authorization_code&code=tsc_x&code_verifier=x&redirect_uri=https://a/cb&client_id=x",
            401,
            "invalid_client",
        ),
        (
            "token exchange by a key without exchange_audiences",
            "with-auth",
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=x.y.z&subject_token_type=urn:ietf:params:oauth:token-type:access_token",
            400,
            "invalid_target",
        ),
        (
            "actor token",
            "with-auth",
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=x&subject_token_type=urn:ietf:params:oauth:token-type:access_token&actor_token=y&actor_token_type=z",
            400,
            "invalid_request",
        ),
        (
            "duplicate parameter",
            "with-auth",
            "grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
        ),
    ];
    for (name, with, form, status, error) in cases {
        let h: Vec<(&str, &str)> = if *with == "none" {
            vec![]
        } else {
            vec![("Authorization", auth.as_str())]
        };
        let (code, head, body) = s.http_post("/oauth2/token", &h, form).await;
        assert_eq!(code, *status, "{name}: {body}");
        assert_eq!(json(&body)["error"], *error, "{name}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{name}"
        );
        assert!(!body.contains(&cc.token), "{name}: secret echoed");
    }
    let (_, _, body) = s.http_get("/.well-known/oauth-authorization-server").await;
    let grants = json(&body)["grant_types_supported"].clone();
    assert!(
        grants
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert!(!grants.as_array().unwrap().iter().any(|g| g == "password"));
    // No login front end configured: no code grant advertised, and the required
    // response_types_supported says "none" rather than being empty.
    let meta = json(&body);
    assert!(
        !grants
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "authorization_code")
    );
    assert!(meta.get("authorization_endpoint").is_none());
    assert_eq!(
        meta["response_types_supported"],
        serde_json::json!(["none"])
    );
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "none")
    );
    for k in [
        "token_endpoint_auth_signing_alg_values_supported",
        "introspection_endpoint_auth_signing_alg_values_supported",
    ] {
        assert!(
            meta.get(k).is_none(),
            "{k}: no JWT client auth, so not published"
        );
    }
}

/// A storage outage is one error, so every endpoint and both ports word it alike:
/// 503 `temporarily_unavailable` over HTTP (RFC 7009 §2.2.1: the token may still be
/// live, retry later), `UNAVAILABLE` over gRPC, and the same message. The token and
/// revocation endpoints once worded it from the grants' table, gRPC from its own.
#[tokio::test]
async fn a_storage_outage_reads_the_same_on_every_endpoint_and_port() {
    let s = TestServer::start().await;
    let k = s.api_key(&["read:things", "tessera:revoke"]).await;
    let auth = basic(&k.token_id, &k.token);
    let t = s.access_token("alice").await;
    let mut grpc = s.tokens().await;
    // A refresh rotation is a durable write; a plain access token's issuance is not
    // (its audit record is committed behind the answer), so it is not the probe here.
    let mut spec = common::access_spec("bob");
    if let Some(tessera::proto::issue_request::Credential::AccessToken(a)) = &mut spec.credential {
        a.refresh_token = true;
    }
    let family = grpc
        .issue(common::authed(spec, &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    let refresh_form = format!(
        "grant_type=refresh_token&refresh_token={}",
        family.refresh_token
    );

    // Another connection holds the write lock: every write the service tries fails.
    let (release, lock) = common::hold_write_lock(&s.data_dir, true).await;
    let bump = tessera::proto::BumpTokenVersionRequest {
        subject: "alice".into(),
        reason: "outage".into(),
    };
    let hdr = [("Authorization", auth.as_str())];
    let revoke_form = format!("token={}", t.token);
    let (token, revoke, status) = tokio::join!(
        s.http_post("/oauth2/token", &[], &refresh_form),
        s.http_post("/oauth2/revoke", &hdr, &revoke_form),
        grpc.bump_token_version(common::authed(bump, &s.admin_key)),
    );
    release.send(()).unwrap();
    lock.join().unwrap();

    let status = status.expect_err("a write during the outage");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    for (name, (code, head, body)) in [("token", token), ("revoke", revoke)] {
        assert_eq!(code, 503, "{name}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{name}"
        );
        let v = json(&body);
        assert_eq!(v["error"], "temporarily_unavailable", "{name}");
        assert_eq!(v["error_description"], status.message(), "{name}");
    }
    assert!(
        s.introspect(&t.token).await.unwrap().active,
        "the revocation did not happen"
    );
}
