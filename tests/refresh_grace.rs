//! The refresh grace period (`refresh_reuse_grace`): a retry of a used refresh token by
//! the same client inside the window gets the same successor pair and revokes nothing;
//! anything else is a reuse that revokes the family. Through the real server, with the
//! test clock moved instead of sleeping and the database read directly.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, access_spec, authed, test_config};
use tessera::clock::Clock;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    ExchangeRequest, ExchangeResponse, IssueRequest, IssueResponse, ListAuditEventsRequest,
    RefreshTokenGrant,
};
use tessera::test_support::params;
use tonic::{Code, Request, Status};

const GRACE: i64 = 60;

/// A server with `grace` seconds of refresh grace on its own temp dir.
async fn server(grace: i64) -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tessera::config::Config {
        refresh_reuse_grace: Duration::from_secs(grace as u64),
        ..test_config(tmp.path())
    };
    (TestServer::start_with(config, Clock::system()).await, tmp)
}

async fn with_refresh(s: &TestServer, subject: &str) -> IssueResponse {
    let mut req: IssueRequest = access_spec(subject);
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
        spec.client_id = "web-app".into();
    }
    s.issue(req).await.unwrap()
}

fn grant(rt: &str) -> ExchangeRequest {
    ExchangeRequest {
        grant: Some(Grant::RefreshToken(RefreshTokenGrant {
            refresh_token: rt.into(),
            scopes: vec![],
        })),
    }
}

/// Refreshes `rt`, as the API key `key` if given, else anonymously.
async fn refresh(s: &TestServer, rt: &str, key: Option<&str>) -> Result<ExchangeResponse, Status> {
    let req = match key {
        Some(k) => authed(grant(rt), k),
        None => Request::new(grant(rt)),
    };
    s.tokens().await.exchange(req).await.map(|r| r.into_inner())
}

async fn active(s: &TestServer, token: &str) -> bool {
    s.introspect(token).await.unwrap().active
}

fn grace_rows(dir: &Path) -> i64 {
    common::with_database(dir, |db| {
        let sql = "SELECT count(*) FROM refresh_grace";
        Ok(db.query_row(sql, params![], |r| r.get::<i64>(0))?)
    })
}

async fn audit_count(s: &TestServer, kind: &str) -> usize {
    let req = ListAuditEventsRequest {
        kind: kind.into(),
        ..Default::default()
    };
    s.list_audit_events(req).await.unwrap().events.len()
}

fn same_pair(a: &ExchangeResponse, b: &ExchangeResponse) {
    assert_eq!(a.access_token, b.access_token, "same access token");
    assert_eq!(a.refresh_token, b.refresh_token, "same refresh token");
    assert_eq!(a.expires_at, b.expires_at);
    assert_eq!(a.scopes, b.scopes);
}

#[tokio::test]
async fn retry_inside_the_window_returns_the_identical_pair_and_revokes_nothing() {
    let (s, _tmp) = server(GRACE).await;
    let first = with_refresh(&s, "alice").await;
    let used = refresh(&s, &first.refresh_token, None).await.unwrap();
    s.clock.advance(GRACE - 1);
    let retried = refresh(&s, &first.refresh_token, None).await.unwrap();
    same_pair(&used, &retried);
    // Nothing was revoked: the pair works, and the successor rotates as usual.
    assert!(active(&s, &used.access_token).await);
    assert!(active(&s, &used.refresh_token).await);
    assert!(active(&s, &first.token).await, "the first access token too");
    assert!(
        !active(&s, &first.refresh_token).await,
        "the used token itself stays used"
    );
    let next = refresh(&s, &used.refresh_token, None).await.unwrap();
    assert_ne!(next.refresh_token, used.refresh_token);
    assert!(active(&s, &next.access_token).await);
    assert_eq!(audit_count(&s, "refresh.grace_retry").await, 1);
    assert_eq!(audit_count(&s, "refresh.reuse_detected").await, 0);
}

#[tokio::test]
async fn retry_after_the_window_is_reuse_and_revokes_the_family() {
    let (s, _tmp) = server(GRACE).await;
    let first = with_refresh(&s, "bob").await;
    let used = refresh(&s, &first.refresh_token, None).await.unwrap();
    s.clock.advance(GRACE + 1);
    let e = refresh(&s, &first.refresh_token, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("already used"), "{}", e.message());
    assert!(!active(&s, &used.refresh_token).await);
    assert!(!active(&s, &used.access_token).await);
    assert_eq!(
        refresh(&s, &used.refresh_token, None)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn retry_by_a_different_client_inside_the_window_is_reuse() {
    let (s, _tmp) = server(GRACE).await;
    let (a, b) = (
        s.api_key(&["tessera:introspect"]).await.token,
        s.api_key(&["tessera:introspect"]).await.token,
    );
    for (name, second) in [("another API key", Some(b.as_str())), ("anonymous", None)] {
        let first = with_refresh(&s, "carol").await;
        let used = refresh(&s, &first.refresh_token, Some(&a)).await.unwrap();
        let e = refresh(&s, &first.refresh_token, second).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{name}");
        assert!(!active(&s, &used.refresh_token).await, "{name}");
        assert!(!active(&s, &used.access_token).await, "{name}");
        // And the family stays dead for the first client too.
        assert_eq!(
            refresh(&s, &first.refresh_token, Some(&a))
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated,
            "{name}"
        );
    }
}

#[tokio::test]
async fn retry_after_the_successor_was_used_is_reuse() {
    let (s, _tmp) = server(GRACE).await;
    let first = with_refresh(&s, "dave").await;
    let used = refresh(&s, &first.refresh_token, None).await.unwrap();
    let next = refresh(&s, &used.refresh_token, None).await.unwrap();
    let e = refresh(&s, &first.refresh_token, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!active(&s, &next.refresh_token).await);
}

#[tokio::test]
async fn grace_zero_keeps_immediate_retry_a_reuse() {
    let (s, tmp) = server(0).await;
    let first = with_refresh(&s, "erin").await;
    let used = refresh(&s, &first.refresh_token, None).await.unwrap();
    assert_eq!(
        grace_rows(tmp.path()),
        0,
        "nothing is kept without a grace period"
    );
    let e = refresh(&s, &first.refresh_token, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!active(&s, &used.refresh_token).await);
    assert!(!active(&s, &used.access_token).await);
}

#[tokio::test]
async fn the_sealed_pair_is_never_in_the_database_in_clear_and_leaves_after_the_window() {
    let (mut s, tmp) = server(GRACE).await;
    let first = with_refresh(&s, "frank").await;
    let used = refresh(&s, &first.refresh_token, None).await.unwrap();
    assert_eq!(grace_rows(tmp.path()), 1, "the pair is kept for the window");
    let signature = used.access_token.rsplit('.').next().unwrap().to_string();
    let secret_part = used.refresh_token["tsr_".len()..].to_string();
    let needles = [
        ("refresh token", secret_part.as_bytes()),
        ("access-token signature", signature.as_bytes()),
    ];
    // `live`: the sealed pair is stored now (on PostgreSQL the scan checks it read it).
    let scan = |when: &str, live: bool| {
        if common::on_postgres() {
            // No file to read: every text and binary value in the server's schema.
            let values = common::pg::stored_values(tmp.path());
            assert_eq!(
                values
                    .iter()
                    .any(|(column, _)| column == "refresh_grace.sealed"),
                live,
                "{when}: the sealed pair in the values scanned"
            );
            for (column, bytes) in &values {
                for (what, needle) in needles {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "{when}: the new {what} is in {column} in clear"
                    );
                }
            }
            return;
        }
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let path = entry.unwrap().path();
            if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tessera.db")
            {
                continue;
            }
            // SQLite's transient files (a rollback journal) may go between listing
            // and reading: one that is gone holds nothing.
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            for (what, needle) in needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{when}: the new {what} is in {} in clear",
                    path.display()
                );
            }
        }
    };
    scan("inside the window", true);
    // Still answerable (so the scan above looked at a live sealed pair).
    let retried = refresh(&s, &first.refresh_token, None).await.unwrap();
    same_pair(&used, &retried);

    // Housekeeping drops it once the window has passed (the final pass of a stop).
    s.clock.advance(GRACE + 1);
    s.stop().await;
    assert_eq!(grace_rows(tmp.path()), 0, "dropped after the window");
    scan("after the window", false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_double_use_with_grace_yields_one_pair() {
    let (s, _tmp) = server(GRACE).await;
    for trial in 0..20 {
        let first = with_refresh(&s, "gina").await;
        let client = s.tokens().await;
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (mut c, b, rt) = (client.clone(), barrier.clone(), first.refresh_token.clone());
                tokio::spawn(async move {
                    let req = Request::new(grant(&rt));
                    b.wait().await;
                    c.exchange(req).await.map(|r| r.into_inner())
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap().unwrap_or_else(|e| {
                panic!("trial {trial}: every concurrent use succeeds, got {e:?}")
            }));
        }
        for g in &got[1..] {
            same_pair(&got[0], g);
        }
        assert!(active(&s, &got[0].access_token).await, "trial {trial}");
        assert!(active(&s, &got[0].refresh_token).await, "trial {trial}");
    }
}
