//! The admin surface through the real server: the List RPCs (filters, paging, no
//! secrets), refusal of unknown service scopes, emergency signing-key revocation and
//! API-key rotation with overlap.

mod common;

use base64::Engine;
use common::{TestServer, access_spec, authed};
use prost_types::{Duration, Timestamp};
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    ApiKeySpec, ClientSpec, IssueRequest, ListApiKeysRequest, ListAuditEventsRequest,
    ListClientsRequest, ListSigningKeysRequest, RevokeSigningKeyRequest, RotateSigningKeyRequest,
};
use tonic::Code;

fn key_spec(owner: &str, env: &str, scopes: &[&str]) -> ApiKeySpec {
    ApiKeySpec {
        owner: owner.into(),
        name: "svc".into(),
        environment: env.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..ApiKeySpec::default()
    }
}

async fn issue(
    s: &TestServer,
    spec: ApiKeySpec,
) -> Result<tessera::proto::IssueResponse, tonic::Status> {
    let req = IssueRequest {
        credential: Some(Credential::ApiKey(spec)),
    };
    s.issue(req).await
}

#[tokio::test]
async fn list_api_keys_filters_pages_newest_first_and_refuses_forged_page_tokens() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            issue(&s, key_spec("team-a", "prod", &["read"]))
                .await
                .unwrap()
                .token_id,
        );
        if i == 2 {
            // Keys created in the same second are ordered by id; move on a second so
            // "newest first" is observable by creation time too.
            s.clock.advance(1);
        }
    }
    let other = issue(&s, key_spec("team-b", "test", &["read"]))
        .await
        .unwrap();

    // Paging: 2 + 2 + 1, newest first, no repeats.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = s
            .list_api_keys(ListApiKeysRequest {
                owner: "team-a".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.api_keys.len() <= 2);
        seen.extend(page.api_keys.iter().map(|k| k.key_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 5);
    let created: Vec<_> = ids.clone();
    // The last two were created a second later, so they come first.
    assert!(
        seen[..2].iter().all(|id| created[3..].contains(id)),
        "{seen:?}"
    );
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 5);

    // Environment filter.
    let test_env = s
        .list_api_keys(ListApiKeysRequest {
            environment: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(test_env.api_keys.len(), 1);
    assert_eq!(test_env.api_keys[0].key_id, other.token_id);
    assert_eq!(test_env.api_keys[0].owner, "team-b");
    assert_eq!(test_env.api_keys[0].scopes, vec!["read"]);

    // Revoked keys only with include_revoked, and marked.
    let mut tokens = s.tokens().await;
    tokens
        .revoke(authed(
            tessera::proto::RevokeRequest {
                token_id: other.token_id.clone(),
                ..Default::default()
            },
            &s.admin_key,
        ))
        .await
        .unwrap();
    let without = s
        .list_api_keys(ListApiKeysRequest {
            owner: "team-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(without.api_keys.is_empty());
    let with = s
        .list_api_keys(ListApiKeysRequest {
            owner: "team-b".into(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with.api_keys.len(), 1);
    assert!(with.api_keys[0].revoked);

    // A page token that was tampered with, is garbage, or belongs to other filters.
    let first = s
        .list_api_keys(ListApiKeysRequest {
            owner: "team-a".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let good = first.next_page_token.clone();
    let (cursor, tag) = good.split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged_cursor = b64.encode(format!("{}:ffffffffffffffff", i64::MAX - 1));
    let cases = [
        ("garbage", "not-a-token".to_string(), "team-a"),
        ("forged cursor", format!("{forged_cursor}.{tag}"), "team-a"),
        (
            "truncated tag",
            format!("{cursor}.{}", &tag[..tag.len() - 2]),
            "team-a",
        ),
        ("other filters", good.clone(), "team-b"),
    ];
    for (name, page_token, owner) in cases {
        let err = s
            .list_api_keys(ListApiKeysRequest {
                owner: owner.into(),
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}");
    }
    // Over the maximum page size is clamped, not refused.
    let big = s
        .list_api_keys(ListApiKeysRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        big.api_keys.len(),
        6,
        "5 of team-a and the bootstrap admin key"
    );
    assert!(big.next_page_token.is_empty());
}

#[tokio::test]
async fn list_rpcs_need_the_admin_scope() {
    let s = TestServer::start().await;
    let k = s
        .api_key(&["tessera:issue", "tessera:introspect", "tessera:revoke"])
        .await
        .token;
    let mut t = s.tokens().await;
    let mut keys = s.keys().await;
    let codes = [
        t.list_api_keys(authed(ListApiKeysRequest::default(), &k))
            .await
            .unwrap_err()
            .code(),
        t.list_clients(authed(ListClientsRequest::default(), &k))
            .await
            .unwrap_err()
            .code(),
        t.list_audit_events(authed(ListAuditEventsRequest::default(), &k))
            .await
            .unwrap_err()
            .code(),
        keys.list_signing_keys(authed(ListSigningKeysRequest {}, &k))
            .await
            .unwrap_err()
            .code(),
        keys.revoke_signing_key(authed(RevokeSigningKeyRequest { kid: "x".into() }, &k))
            .await
            .unwrap_err()
            .code(),
    ];
    assert_eq!(codes, [Code::PermissionDenied; 5]);
    let anon = t
        .list_api_keys(tonic::Request::new(ListApiKeysRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn list_clients_pages_newest_first() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let req = IssueRequest {
            credential: Some(Credential::Client(ClientSpec {
                name: format!("app-{i}"),
                public: i % 2 == 0,
                redirect_uris: vec![format!("https://app{i}.example/cb")],
                scopes: vec!["read".into()],
                ..Default::default()
            })),
        };
        let r = s.issue(req).await.unwrap();
        ids.push(r.token_id);
        s.clock.advance(1);
    }
    let mut t = s.tokens().await;
    let p1 = t
        .list_clients(authed(
            ListClientsRequest {
                page_size: 2,
                page_token: String::new(),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p1.clients
            .iter()
            .map(|c| c.client_id.clone())
            .collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone()]
    );
    assert_eq!(p1.clients[0].name, "app-2");
    assert!(p1.clients[0].public);
    assert_eq!(p1.clients[0].redirect_uris, vec!["https://app2.example/cb"]);
    let p2 = t
        .list_clients(authed(
            ListClientsRequest {
                page_size: 2,
                page_token: p1.next_page_token,
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.clients.len(), 1);
    assert_eq!(p2.clients[0].client_id, ids[0]);
    assert!(p2.next_page_token.is_empty());
}

#[tokio::test]
async fn list_audit_events_filters_by_subject_caller_kind_and_time() {
    let s = TestServer::start().await;
    let issuer = s.api_key(&["tessera:issue"]).await;
    let t0 = s.clock.now();
    s.clock.advance(10);
    let mut t = s.tokens().await;
    for sub in ["alice", "bob", "alice"] {
        t.issue(authed(access_spec(sub), &issuer.token))
            .await
            .unwrap();
    }
    s.clock.advance(10);
    let t1 = s.clock.now();
    t.issue(authed(access_spec("alice"), &issuer.token))
        .await
        .unwrap();

    let all_alice = s
        .list_audit_events(ListAuditEventsRequest {
            subject: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all_alice.events.len(), 3);
    assert!(
        all_alice.events.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    for e in &all_alice.events {
        assert_eq!(e.kind, "token.issued");
        assert_eq!(e.caller_key_id, issuer.token_id);
        assert!(!e.token_id.is_empty());
        let d = e.detail.as_ref().unwrap();
        assert!(d.fields.contains_key("scopes"), "{d:?}");
    }
    let by_time = s
        .list_audit_events(ListAuditEventsRequest {
            subject: "alice".into(),
            since: Some(Timestamp {
                seconds: t0 + 5,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: t1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_time.events.len(), 2);
    let by_caller = s
        .list_audit_events(ListAuditEventsRequest {
            key_id: issuer.token_id.clone(),
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_caller.events.len(), 3);
    let rest = s
        .list_audit_events(ListAuditEventsRequest {
            key_id: issuer.token_id.clone(),
            page_size: 3,
            page_token: by_caller.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.events.len(), 1);
    assert!(rest.next_page_token.is_empty());
    assert!(rest.events[0].id < by_caller.events[2].id);
    let issued_keys = s
        .list_audit_events(ListAuditEventsRequest {
            kind: "api_key.issued".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(issued_keys.events.len(), 2, "bootstrap and the issuer key");
    assert_eq!(issued_keys.events[0].token_id, issuer.token_id);
    let typo = s
        .list_audit_events(ListAuditEventsRequest {
            kind: "token.isued".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(typo.code(), Code::InvalidArgument);
    assert!(
        typo.message().contains("token.issued"),
        "{}",
        typo.message()
    );
    let other_filter = s
        .list_audit_events(ListAuditEventsRequest {
            kind: "token.issued".into(),
            page_token: by_caller.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other_filter.code(), Code::InvalidArgument);
}

/// Every string a List RPC returns, scanned for every secret issued and its hash.
#[tokio::test]
async fn list_rpcs_never_return_a_secret_or_a_hash() {
    let s = TestServer::start().await;
    let key = issue(&s, key_spec("team-a", "prod", &["tessera:issue", "read"]))
        .await
        .unwrap();
    let rotated = issue(
        &s,
        ApiKeySpec {
            rotate_from: key.token_id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut t = s.tokens().await;
    let mut spec = access_spec("alice");
    if let Some(Credential::AccessToken(a)) = &mut spec.credential {
        a.refresh_token = true;
    }
    let at = t
        .issue(authed(spec, &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    let client = t
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::Client(ClientSpec {
                    name: "web".into(),
                    public: false,
                    redirect_uris: vec!["https://web.example/cb".into()],
                    scopes: vec!["read".into()],
                    ..Default::default()
                })),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let code = t
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::AuthorizationCode(
                    tessera::proto::AuthorizationCodeSpec {
                        client_id: client.token_id.clone(),
                        redirect_uri: "https://web.example/cb".into(),
                        subject: "alice".into(),
                        scopes: vec!["read".into()],
                        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
                        code_challenge_method: "S256".into(),
                    },
                )),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut secrets = vec![
        s.admin_key.clone(),
        key.token.clone(),
        rotated.token.clone(),
        client.token.clone(),
        at.token.clone(),
        at.refresh_token.clone(),
        code.token.clone(),
    ];
    let std64 = base64::engine::general_purpose::STANDARD;
    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for k in [&s.admin_key, &key.token, &rotated.token, &client.token] {
        let h = tessera::apikeys::hash(k);
        secrets.push(hex(&h));
        secrets.push(std64.encode(h));
        secrets.push(url64.encode(h));
    }
    for o in [&at.refresh_token, &code.token] {
        let h = tessera::tokens::opaque::hash(o);
        secrets.push(hex(&h));
        secrets.push(std64.encode(h));
        secrets.push(url64.encode(h));
    }
    // The secret half of each API key on its own, too: `tsk_<env>_<id>_<secret+check>`,
    // where the secret's base64url may itself hold `_`.
    for k in [&s.admin_key, &key.token, &rotated.token, &client.token] {
        let secret = k.splitn(4, '_').nth(3).unwrap();
        assert!(secret.len() >= 43, "{secret:?} is not the whole secret");
        secrets.push(secret.to_string());
    }
    let keys = s
        .list_api_keys(ListApiKeysRequest {
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let clients = t
        .list_clients(authed(ListClientsRequest::default(), &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    let events = s
        .list_audit_events(ListAuditEventsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    let signing = s
        .keys()
        .await
        .list_signing_keys(authed(ListSigningKeysRequest {}, &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    assert!(keys.api_keys.len() >= 4 && !clients.clients.is_empty() && events.events.len() >= 6);
    // Debug output of a prost message prints every field, nested Structs included.
    for (what, text) in [
        ("ListApiKeys", format!("{keys:?}")),
        ("ListClients", format!("{clients:?}")),
        ("ListAuditEvents", format!("{events:?}")),
        ("ListSigningKeys", format!("{signing:?}")),
    ] {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} returned a secret or hash"
            );
            assert!(
                !text.to_lowercase().contains(&secret.to_lowercase()),
                "{what}"
            );
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn unknown_service_scopes_are_refused_on_new_keys() {
    let s = TestServer::start().await;
    let err = issue(&s, key_spec("team-a", "prod", &["tessera:isue", "read"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for known in [
        "tessera:issue",
        "tessera:introspect",
        "tessera:revoke",
        "tessera:admin",
    ] {
        assert!(err.message().contains(known), "{}", err.message());
    }
    // Application scopes that merely look alike are the caller's business.
    issue(
        &s,
        key_spec("team-a", "prod", &["tessera-ish:read", "read"]),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn last_used_at_is_listed_once_flushed() {
    let s = TestServer::start().await;
    let k = s.api_key(&["tessera:introspect"]).await;
    let before = s
        .list_api_keys(ListApiKeysRequest {
            owner: "team-test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(before.api_keys[0].last_used_at.is_none());
    let mut t = s.tokens().await;
    t.introspect(authed(
        tessera::proto::IntrospectRequest {
            token: "x".into(),
            token_type_hint: String::new(),
        },
        &k.token,
    ))
    .await
    .unwrap();
    // A graceful stop flushes use times.
    let s = s.restart().await;
    let after = s
        .list_api_keys(ListApiKeysRequest {
            owner: "team-test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(after.api_keys[0].last_used_at.is_some());
}

fn kid_of(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    v["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn revoking_the_active_signing_key_kills_its_tokens_and_signing_goes_on() {
    let s = TestServer::start().await;
    let before = s.access_token("alice").await.token;
    let old = kid_of(&before);
    // Warm the verified-token cache: a revoked key must not live on in it.
    assert!(s.introspect(&before).await.unwrap().active);
    let mut keys = s.keys().await;
    let active = keys
        .revoke_signing_key(authed(
            RevokeSigningKeyRequest { kid: old.clone() },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .active_kid;
    assert_ne!(active, old);
    assert!(!s.introspect(&before).await.unwrap().active);
    let (_, _, jwks) = s.http_get("/.well-known/jwks.json").await;
    assert!(!jwks.contains(&old) && jwks.contains(&active), "{jwks}");
    let after = s.access_token("alice").await.token;
    assert_eq!(kid_of(&after), active);
    assert!(s.introspect(&after).await.unwrap().active);

    // Idempotent; an unknown kid is NOT_FOUND.
    let again = keys
        .revoke_signing_key(authed(
            RevokeSigningKeyRequest { kid: old.clone() },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.active_kid, active);
    let unknown = keys
        .revoke_signing_key(authed(
            RevokeSigningKeyRequest { kid: "nope".into() },
            &s.admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let list = keys
        .list_signing_keys(authed(ListSigningKeysRequest {}, &s.admin_key))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(list.len(), 2);
    let state = |kid: &str| list.iter().find(|k| k.kid == kid).unwrap().state.clone();
    assert_eq!(state(&old), "revoked");
    assert_eq!(state(&active), "active");
    assert!(
        list.iter()
            .all(|k| k.alg == "EdDSA" && k.created_at.is_some())
    );

    let events = s
        .list_audit_events(ListAuditEventsRequest {
            kind: "key.revoked".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(
        events.len(),
        1,
        "a repeated revocation changes nothing and is not recorded"
    );
    assert_eq!(events[0].token_id, old);

    // Survives a restart.
    let s = s.restart().await;
    assert!(!s.introspect(&before).await.unwrap().active);
    assert!(s.introspect(&after).await.unwrap().active);
    let (_, _, jwks) = s.http_get("/.well-known/jwks.json").await;
    assert!(!jwks.contains(&old));
}

#[tokio::test]
async fn revoking_a_retired_signing_key_leaves_the_active_one() {
    let s = TestServer::start().await;
    let before = s.access_token("alice").await.token;
    let old = kid_of(&before);
    let mut keys = s.keys().await;
    let new = keys
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: true },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .kid;
    let listed = keys
        .list_signing_keys(authed(ListSigningKeysRequest {}, &s.admin_key))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed[0].kid, new, "newest first");
    assert_eq!(listed[0].state, "active");
    assert_eq!(listed[1].state, "retired");
    assert!(listed[1].retires_at.is_some());
    assert!(
        s.introspect(&before).await.unwrap().active,
        "retired keys verify"
    );
    let active = keys
        .revoke_signing_key(authed(RevokeSigningKeyRequest { kid: old }, &s.admin_key))
        .await
        .unwrap()
        .into_inner()
        .active_kid;
    assert_eq!(active, new);
    assert!(!s.introspect(&before).await.unwrap().active);
}

#[tokio::test]
async fn a_rotated_api_key_works_through_the_overlap_then_only_its_successor() {
    let s = TestServer::start().await;
    let old = issue(
        &s,
        ApiKeySpec {
            exchange_audiences: vec!["ledger".into()],
            ..key_spec("team-a", "prod", &["tessera:introspect", "read"])
        },
    )
    .await
    .unwrap();
    // Introspected now, the old key's answer is made and kept; the rotation must not
    // leave it stale.
    let before = s.introspect(&old.token).await.unwrap();
    assert!(before.active);
    let new = issue(
        &s,
        ApiKeySpec {
            rotate_from: old.token_id.clone(),
            overlap: Some(Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(new.token_id, old.token_id);
    assert!(new.token.starts_with("tsk_prod_"), "environment inherited");
    assert_eq!(new.scopes, vec!["read", "tessera:introspect"]);
    let listed = s
        .list_api_keys(ListApiKeysRequest {
            owner: "team-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .api_keys;
    let info = |id: &str| listed.iter().find(|k| k.key_id == id).unwrap().clone();
    assert_eq!(info(&old.token_id).rotated_to, new.token_id);
    assert_eq!(info(&new.token_id).name, "svc");
    assert_eq!(info(&new.token_id).exchange_audiences, vec!["ledger"]);
    let old_exp = info(&old.token_id).expires_at.unwrap().seconds;
    assert!(
        (old_exp - s.clock.now() - 3600).abs() <= 2,
        "old key ends with the overlap"
    );
    let after = s.introspect(&old.token).await.unwrap();
    assert_eq!(
        after.expires_at.unwrap().seconds,
        old_exp,
        "answer follows the rotation"
    );
    assert_ne!(before.expires_at, after.expires_at);

    let works = |key: String| {
        let s = &s;
        async move {
            let mut t = s.tokens().await;
            t.introspect(authed(
                tessera::proto::IntrospectRequest {
                    token: "x".into(),
                    token_type_hint: String::new(),
                },
                &key,
            ))
            .await
            .map(|_| ())
            .map_err(|e| e.code())
        }
    };
    s.clock.advance(3500);
    assert_eq!(works(old.token.clone()).await, Ok(()));
    assert_eq!(works(new.token.clone()).await, Ok(()));
    s.clock.advance(200);
    assert_eq!(works(old.token.clone()).await, Err(Code::Unauthenticated));
    assert_eq!(works(new.token.clone()).await, Ok(()));
    assert!(!s.introspect(&old.token).await.unwrap().active);

    let events = s
        .list_audit_events(ListAuditEventsRequest {
            kind: "api_key.rotated".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(events[0].token_id, new.token_id);
    let d = events[0].detail.as_ref().unwrap();
    assert!(format!("{d:?}").contains(&old.token_id));
}

#[tokio::test]
async fn api_key_rotation_refuses_bad_requests() {
    let s = TestServer::start().await;
    let k = issue(&s, key_spec("team-a", "prod", &["read"]))
        .await
        .unwrap();
    let rot = |from: &str, overlap: Option<i64>| ApiKeySpec {
        rotate_from: from.into(),
        overlap: overlap.map(|seconds| Duration { seconds, nanos: 0 }),
        ..Default::default()
    };
    let code = |r: Result<tessera::proto::IssueResponse, tonic::Status>| {
        r.map(|_| ()).map_err(|e| e.code())
    };
    assert_eq!(
        code(issue(&s, rot(&k.token_id, Some(31 * 86400))).await),
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        code(issue(&s, rot(&k.token_id, Some(-1))).await),
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        code(issue(&s, rot("0123456789abcdef", None)).await),
        Err(Code::NotFound)
    );
    assert_eq!(
        code(
            issue(
                &s,
                ApiKeySpec {
                    overlap: Some(Duration {
                        seconds: 5,
                        nanos: 0
                    }),
                    ..key_spec("o", "prod", &[])
                }
            )
            .await
        ),
        Err(Code::InvalidArgument),
        "overlap without rotate_from"
    );
    // Rotated once: rotate the successor, not the old key again.
    let next = issue(&s, rot(&k.token_id, None)).await.unwrap();
    assert_eq!(
        code(issue(&s, rot(&k.token_id, None)).await),
        Err(Code::FailedPrecondition)
    );
    // Default overlap: 24 h.
    s.clock.advance(24 * 3600 - 10);
    assert!(s.introspect(&k.token).await.unwrap().active);
    s.clock.advance(20);
    assert!(!s.introspect(&k.token).await.unwrap().active);
    // A revoked key cannot be rotated.
    s.revoke(tessera::proto::RevokeRequest {
        token_id: next.token_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        code(issue(&s, rot(&next.token_id, None)).await),
        Err(Code::FailedPrecondition)
    );
    // Only an admin may rotate.
    let issuer = s.api_key(&["tessera:issue"]).await;
    let other = issue(&s, key_spec("team-a", "prod", &["read"]))
        .await
        .unwrap();
    let err = s
        .tokens()
        .await
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::ApiKey(rot(&other.token_id, None))),
            },
            &issuer.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_last_admin_key_cannot_be_rotated_into_a_non_admin_key() {
    let s = TestServer::start().await;
    let admin_id = s.admin_key.split('_').nth(2).unwrap().to_string();
    let err = issue(
        &s,
        ApiKeySpec {
            rotate_from: admin_id.clone(),
            scopes: vec!["read".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Keeping tessera:admin is fine (inherited).
    let next = issue(
        &s,
        ApiKeySpec {
            rotate_from: admin_id,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(next.scopes, vec!["tessera:admin"]);
}
