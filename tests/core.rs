//! End-to-end tests of the core RPCs against the real server.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TestServer, access_spec, authed, string_claims};
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, BumpTokenVersionRequest, ExchangeRequest, GetJwksRequest,
    IntrospectRequest, IssueRequest, RevokeRequest, RotateSigningKeyRequest,
};
use tonic::{Code, Request};

fn revoke_token(t: &str) -> RevokeRequest {
    RevokeRequest {
        token: t.into(),
        ..RevokeRequest::default()
    }
}

#[tokio::test]
async fn api_key_issue_introspect_revoke() {
    let s = TestServer::start().await;
    let key = s.api_key(&["read:things", "tessera:introspect"]).await;
    assert!(key.token.starts_with("tsk_test_"), "recognisable prefix");
    assert_eq!(key.token_type, "api_key");

    let r = s.introspect(&key.token).await.unwrap();
    assert!(r.active);
    assert_eq!(r.token_kind, "api_key");
    assert_eq!(r.owner, "team-test");
    assert_eq!(r.environment, "test");
    assert_eq!(r.token_id, key.token_id);
    assert_eq!(r.scopes, vec!["read:things", "tessera:introspect"]);
    assert!(r.expires_at.unwrap().seconds > r.issued_at.unwrap().seconds);

    // The key works as a caller credential.
    let req = IntrospectRequest {
        token: key.token.clone(),
        ..Default::default()
    };
    assert!(
        s.tokens()
            .await
            .introspect(authed(req, &key.token))
            .await
            .unwrap()
            .into_inner()
            .active
    );

    s.revoke(revoke_token(&key.token)).await.unwrap();
    let r = s.introspect(&key.token).await.unwrap();
    assert_eq!(r, Default::default(), "inactive carries nothing else");
    // ... and it stops working as a credential at once.
    let req = IntrospectRequest {
        token: "x".into(),
        ..Default::default()
    };
    let e = s
        .tokens()
        .await
        .introspect(authed(req, &key.token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn access_token_carries_every_claim() {
    let s = TestServer::start().await;
    let claims = string_claims(&[("role", "admin")]);
    let req = IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "alice".into(),
            audience: vec!["payments-api".into(), "ledger".into()],
            scopes: vec!["write:payments".into(), "read:payments".into()],
            ttl: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            claims: Some(claims.clone()),
            client_id: "web-app".into(),
            refresh_token: false,
        })),
    };
    let t = s.issue(req).await.unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.token.split('.').count(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&B64.decode(t.token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");

    let r = s.introspect(&t.token).await.unwrap();
    assert!(r.active);
    assert_eq!(r.token_kind, "access_token");
    assert_eq!(r.subject, "alice");
    assert_eq!(r.audience, vec!["payments-api", "ledger"]);
    assert_eq!(r.scopes, vec!["read:payments", "write:payments"]);
    assert_eq!(r.client_id, "web-app");
    assert_eq!(r.issuer, "https://tessera.test");
    assert_eq!(r.token_id, t.token_id);
    assert_eq!(r.token_version, 0);
    assert_eq!(r.claims, Some(claims));
    let iat = r.issued_at.unwrap().seconds;
    assert_eq!(r.not_before.unwrap().seconds, iat);
    assert_eq!(r.expires_at.unwrap().seconds, iat + 120);
    assert_eq!(t.expires_at.unwrap().seconds, iat + 120);
}

#[tokio::test]
async fn revoke_by_token_and_by_jti() {
    let s = TestServer::start().await;
    let a = s.access_token("alice").await;
    let b = s.access_token("alice").await;
    assert!(s.introspect(&a.token).await.unwrap().active);

    s.revoke(revoke_token(&a.token)).await.unwrap();
    assert!(!s.introspect(&a.token).await.unwrap().active);
    assert!(
        s.introspect(&b.token).await.unwrap().active,
        "only the revoked one"
    );

    let by_id = RevokeRequest {
        token_id: b.token_id.clone(),
        ..RevokeRequest::default()
    };
    s.revoke(by_id.clone()).await.unwrap();
    assert!(!s.introspect(&b.token).await.unwrap().active);

    // Idempotent, and unknown tokens succeed (RFC 7009 §2.2).
    s.revoke(by_id).await.unwrap();
    s.revoke(revoke_token(&a.token)).await.unwrap();
    s.revoke(revoke_token("garbage")).await.unwrap();
    let both_empty = RevokeRequest::default();
    let e = s.revoke(both_empty).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bump_token_version_logs_out_everywhere() {
    let s = TestServer::start().await;
    let old = s.access_token("bob").await;
    let other = s.access_token("carol").await;
    let bump = BumpTokenVersionRequest {
        subject: "bob".into(),
        reason: "password changed".into(),
    };
    let v = s.bump(bump).await.unwrap();
    assert_eq!(v.token_version, 1);
    assert!(
        !s.introspect(&old.token).await.unwrap().active,
        "older token inactive"
    );
    assert!(
        s.introspect(&other.token).await.unwrap().active,
        "other subjects untouched"
    );
    let new = s.access_token("bob").await;
    let r = s.introspect(&new.token).await.unwrap();
    assert!(r.active, "newer token active");
    assert_eq!(r.token_version, 1);
}

#[tokio::test]
async fn refresh_token_issue_introspect_revoke_kills_family() {
    let s = TestServer::start().await;
    let mut req = access_spec("dana");
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    let t = s.issue(req).await.unwrap();
    assert!(t.refresh_token.starts_with("tsr_"));
    assert!(t.refresh_expires_at.unwrap().seconds > t.expires_at.unwrap().seconds);
    let r = s.introspect(&t.refresh_token).await.unwrap();
    assert!(r.active);
    assert_eq!(r.token_kind, "refresh_token");
    assert_eq!(r.subject, "dana");
    assert_eq!(r.audience, vec!["payments-api"]);

    s.revoke(revoke_token(&t.refresh_token)).await.unwrap();
    assert!(!s.introspect(&t.refresh_token).await.unwrap().active);
    assert!(
        !s.introspect(&t.token).await.unwrap().active,
        "access token of the family revoked too"
    );
}

#[tokio::test]
async fn bump_revokes_refresh_families() {
    let s = TestServer::start().await;
    let mut req = access_spec("erin");
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    let t = s.issue(req).await.unwrap();
    let bump = BumpTokenVersionRequest {
        subject: "erin".into(),
        reason: String::new(),
    };
    s.bump(bump).await.unwrap();
    assert!(!s.introspect(&t.refresh_token).await.unwrap().active);
}

/// Verifies a JWT with nothing but the JWKS document and ring — no Tessera code.
fn verify_outside(jwt: &str, jwks: &str) -> bool {
    let jwks: serde_json::Value = serde_json::from_str(jwks).unwrap();
    let mut parts = jwt.split('.');
    let (h, p, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header: serde_json::Value = serde_json::from_slice(&B64.decode(h).unwrap()).unwrap();
    let Some(jwk) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert!(jwk.get("d").is_none(), "no private member in the JWKS");
    let x = B64.decode(jwk["x"].as_str().unwrap()).unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x);
    key.verify(format!("{h}.{p}").as_bytes(), &B64.decode(sig).unwrap())
        .is_ok()
}

#[tokio::test]
async fn token_verifies_outside_with_the_published_jwks() {
    let s = TestServer::start().await;
    let t = s.access_token("frank").await;
    let (status, head, body) = s.http_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: public, max-age=")
    );
    assert!(verify_outside(&t.token, &body));
    // The gRPC JWKS is the same document.
    let grpc = s
        .keys()
        .await
        .get_jwks(Request::new(GetJwksRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.jwks_json, body);
    // A tampered payload does not verify.
    let mut parts: Vec<&str> = t.token.split('.').collect();
    let forged = B64.encode(br#"{"sub":"mallory"}"#);
    parts[1] = &forged;
    assert!(!verify_outside(&parts.join("."), &body));
}

#[tokio::test]
async fn rotation_keeps_old_tokens_verifying() {
    let s = TestServer::start().await;
    let before = s.access_token("gina").await;
    let kid_before = s
        .keys()
        .await
        .get_jwks(Request::new(GetJwksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let rotated = s
        .keys()
        .await
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: true },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let after = s.access_token("gina").await;
    let h = |t: &str| -> serde_json::Value {
        serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(h(&after.token)["kid"], rotated.kid.as_str());
    assert_ne!(h(&before.token)["kid"], h(&after.token)["kid"]);
    assert!(
        s.introspect(&before.token).await.unwrap().active,
        "old key still verifies"
    );
    assert!(s.introspect(&after.token).await.unwrap().active);
    let (_, _, jwks) = s.http_get("/.well-known/jwks.json").await;
    assert!(verify_outside(&before.token, &jwks) && verify_outside(&after.token, &jwks));
    assert!(kid_before.contains(h(&before.token)["kid"].as_str().unwrap()));
    // Past the retire window (max access-token lifetime + margin) the old key is gone.
    s.clock.advance(2 * 3600);
    assert!(!s.introspect(&before.token).await.unwrap().active);
    let (_, _, jwks) = s.http_get("/.well-known/jwks.json").await;
    let old_kid = h(&before.token)["kid"].as_str().unwrap().to_string();
    assert!(!jwks.contains(&old_kid), "retired key left the JWKS");
    assert!(jwks.contains(&rotated.kid));
}

#[tokio::test]
async fn restart_keeps_keys_revocations_versions_and_api_keys() {
    let s = TestServer::start().await;
    let key = s.api_key(&["tessera:introspect"]).await;
    let live = s.access_token("henry").await;
    let revoked = s.access_token("henry").await;
    s.revoke(revoke_token(&revoked.token)).await.unwrap();
    let old_ver = s.access_token("ivy").await;
    let bump = BumpTokenVersionRequest {
        subject: "ivy".into(),
        reason: String::new(),
    };
    s.bump(bump).await.unwrap();
    let revoked_key = s.api_key(&[]).await;
    s.revoke(revoke_token(&revoked_key.token)).await.unwrap();

    let s = s.restart().await;
    assert!(
        s.introspect(&live.token).await.unwrap().active,
        "signing key survived"
    );
    assert!(
        !s.introspect(&revoked.token).await.unwrap().active,
        "blocklist survived"
    );
    assert!(
        !s.introspect(&old_ver.token).await.unwrap().active,
        "version survived"
    );
    assert!(
        s.introspect(&key.token).await.unwrap().active,
        "API key survived"
    );
    assert!(
        !s.introspect(&revoked_key.token).await.unwrap().active,
        "API-key revocation survived"
    );
    let new = s.access_token("ivy").await;
    assert_eq!(s.introspect(&new.token).await.unwrap().token_version, 1);
}

#[tokio::test]
async fn every_rpc_needs_a_credential_and_the_right_scope() {
    let s = TestServer::start().await;
    let narrow = s.api_key(&["read:things"]).await.token;
    let t = s.access_token("jo").await.token;
    let mut tk = s.tokens().await;
    let mut ks = s.keys().await;

    macro_rules! check {
        ($name:literal, $client:ident . $m:ident, $msg:expr) => {{
            let none = $client.clone().$m(Request::new($msg)).await.unwrap_err();
            assert_eq!(
                none.code(),
                Code::Unauthenticated,
                "{} without credential",
                $name
            );
            let bad = $client
                .clone()
                .$m(authed(
                    $msg,
                    "tsk_test_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ))
                .await
                .unwrap_err();
            assert_eq!(
                bad.code(),
                Code::Unauthenticated,
                "{} with a bad key",
                $name
            );
            let garbage = $client
                .clone()
                .$m(authed($msg, "not a key"))
                .await
                .unwrap_err();
            assert_eq!(
                garbage.code(),
                Code::Unauthenticated,
                "{} with garbage",
                $name
            );
            let denied = $client.clone().$m(authed($msg, &narrow)).await.unwrap_err();
            assert_eq!(
                denied.code(),
                Code::PermissionDenied,
                "{} with a narrow key",
                $name
            );
        }};
    }
    check!(
        "Issue(api_key)",
        tk.issue,
        IssueRequest {
            credential: Some(Credential::ApiKey(ApiKeySpec {
                owner: "o".into(),
                environment: "dev".into(),
                ..Default::default()
            }))
        }
    );
    check!("Issue(access_token)", tk.issue, access_spec("x"));
    check!(
        "Introspect",
        tk.introspect,
        IntrospectRequest {
            token: t.clone(),
            ..Default::default()
        }
    );
    check!("Revoke", tk.revoke, revoke_token(&t));
    check!(
        "BumpTokenVersion",
        tk.bump_token_version,
        BumpTokenVersionRequest {
            subject: "x".into(),
            ..Default::default()
        }
    );
    check!(
        "RotateSigningKey",
        ks.rotate_signing_key,
        RotateSigningKeyRequest::default()
    );

    // An issuer may not mint API keys; an introspector may not revoke.
    let issuer = s.api_key(&["tessera:issue"]).await.token;
    let e = tk
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::ApiKey(ApiKeySpec {
                    owner: "o".into(),
                    environment: "dev".into(),
                    ..Default::default()
                })),
            },
            &issuer,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(tk.issue(authed(access_spec("x"), &issuer)).await.is_ok());
    // GetJwks is open.
    assert!(ks.get_jwks(Request::new(GetJwksRequest {})).await.is_ok());
    let _ = ExchangeRequest::default();
}

#[tokio::test]
async fn bad_issue_requests_are_invalid_argument() {
    let s = TestServer::start().await;
    let mut tk = s.tokens().await;
    let spec = |f: &dyn Fn(&mut AccessTokenSpec)| {
        let mut a = AccessTokenSpec {
            subject: "s".into(),
            audience: vec!["a".into()],
            ..Default::default()
        };
        f(&mut a);
        IssueRequest {
            credential: Some(Credential::AccessToken(a)),
        }
    };
    let cases: Vec<(&str, IssueRequest)> = vec![
        ("no credential", IssueRequest { credential: None }),
        ("no subject", spec(&|a| a.subject.clear())),
        ("no audience", spec(&|a| a.audience.clear())),
        (
            "tessera scope",
            spec(&|a| a.scopes = vec!["tessera:admin".into()]),
        ),
        ("bad scope", spec(&|a| a.scopes = vec!["a b".into()])),
        (
            "negative ttl",
            spec(&|a| {
                a.ttl = Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                })
            }),
        ),
        (
            "registered claim",
            spec(&|a| a.claims = Some(string_claims(&[("sub", "root")]))),
        ),
        ("huge subject", spec(&|a| a.subject = "x".repeat(10_000))),
        (
            "bad environment",
            IssueRequest {
                credential: Some(Credential::ApiKey(ApiKeySpec {
                    owner: "o".into(),
                    environment: "Prod_1".into(),
                    ..Default::default()
                })),
            },
        ),
        (
            "api key ttl too long",
            IssueRequest {
                credential: Some(Credential::ApiKey(ApiKeySpec {
                    owner: "o".into(),
                    environment: "dev".into(),
                    ttl: Some(prost_types::Duration {
                        seconds: 10 * 365 * 86400,
                        nanos: 0,
                    }),
                    ..Default::default()
                })),
            },
        ),
    ];
    for (name, req) in cases {
        let e = tk.issue(authed(req, &s.admin_key)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
    }
    // A ttl over the cap is clamped, not refused.
    let t = tk
        .issue(authed(
            spec(&|a| {
                a.ttl = Some(prost_types::Duration {
                    seconds: 86400,
                    nanos: 0,
                })
            }),
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let r = s.introspect(&t.token).await.unwrap();
    assert_eq!(
        r.expires_at.unwrap().seconds - r.issued_at.unwrap().seconds,
        3600
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_survives() {
    let s = TestServer::start().await;
    let huge = "a".repeat(1024 * 1024);
    let e = s.introspect(&huge).await.unwrap_err();
    // A message over the limit is refused from its length prefix, before decoding.
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let e = s.introspect(&"a".repeat(9000)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let t = s.access_token("k").await;
    assert!(s.introspect(&t.token).await.unwrap().active);
}

#[tokio::test]
async fn health_reflection_and_http_probes() {
    let s = TestServer::start().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(s.channel().await);
    let st = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tessera.v1.TokenService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(s.http_get("/healthz").await.0, 200);
    assert_eq!(s.http_get("/readyz").await.0, 200);
    let (code, _, metrics) = s.metrics_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("tessera_introspect_total"));
    assert!(metrics.contains("tessera_connections_open{listener=\"http\"}"));
    // The public port exposes no refusal-reason counters.
    assert_eq!(s.http_get("/metrics").await.0, 404);
}

#[tokio::test]
async fn secrets_are_not_stored_in_clear() {
    let s = TestServer::start().await;
    let key = s.api_key(&["x"]).await;
    let mut req = access_spec("lee");
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    let t = s.issue(req).await.unwrap();
    let mut s = s;
    s.stop().await;
    let mut db = Vec::new();
    if common::on_postgres() {
        // Every text and binary value in its schema, apart so no match spans two.
        let values = common::pg::stored_values(&s.data_dir);
        assert!(
            values
                .iter()
                .any(|(column, _)| column == "api_keys.secret_hash"),
            "the scan reads the keys' table"
        );
        for (_, v) in values {
            db.extend(v);
            db.push(0);
        }
    } else {
        for f in ["tessera.db", "tessera.db-wal"] {
            if let Ok(b) = std::fs::read(s.data_dir.join(f)) {
                db.extend(b);
            }
        }
    }
    let contains = |needle: &str| db.windows(needle.len()).any(|w| w == needle.as_bytes());
    let secret_part = &key.token[key.token.len() - 49..];
    assert!(!contains(secret_part), "API key secret in the database");
    assert!(!contains(&t.refresh_token), "refresh token in the database");
    assert!(!contains(&s.admin_key), "admin key in the database");
    assert!(!contains(&t.token), "access token in the database");
}

#[tokio::test]
async fn concurrent_revocations_are_all_durable() {
    let s = TestServer::start().await;
    let mut tokens = Vec::new();
    for i in 0..64 {
        tokens.push(s.access_token(&format!("user-{i}")).await.token);
    }
    let client = s.tokens().await;
    let mut tasks = Vec::new();
    for t in tokens.clone() {
        let mut c = client.clone();
        let admin = s.admin_key.clone();
        tasks.push(tokio::spawn(async move {
            c.revoke(authed(revoke_token(&t), &admin)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let s = s.restart().await;
    for t in &tokens {
        assert!(!s.introspect(t).await.unwrap().active);
    }
}
