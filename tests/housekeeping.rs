//! Housekeeping deletes what can no longer matter — dead refresh families, old audit
//! records — and nothing that still can. Time is moved with the test clock; the final
//! housekeeping pass of a graceful stop runs the same `Authority::maintain` as the
//! 30-second schedule, and the database is then read directly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, access_spec, test_config};
use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    ExchangeRequest, ExchangeResponse, IssueRequest, IssueResponse, RefreshTokenGrant,
    RevokeRequest,
};
use tessera::test_support::params;
use tonic::{Code, Request, Status};

const MIN: i64 = 60;

fn config(dir: &Path) -> Config {
    Config {
        refresh_family_ttl: Duration::from_secs(2 * 3600),
        refresh_token_ttl: Duration::from_secs(2 * 3600),
        audit_retention: Duration::from_secs(86_400),
        ..test_config(dir)
    }
}

async fn with_refresh(s: &TestServer, subject: &str) -> IssueResponse {
    let mut req: IssueRequest = access_spec(subject);
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    s.issue(req).await.unwrap()
}

async fn refresh(s: &TestServer, rt: &str) -> Result<ExchangeResponse, Status> {
    let req = ExchangeRequest {
        grant: Some(Grant::RefreshToken(RefreshTokenGrant {
            refresh_token: rt.into(),
            scopes: vec![],
        })),
    };
    s.tokens()
        .await
        .exchange(Request::new(req))
        .await
        .map(|r| r.into_inner())
}

/// Row counts of one subject's families: (families, refresh tokens, minted access tokens).
fn rows(dir: &Path, subject: &str) -> (i64, i64, i64) {
    let subject = subject.to_string();
    common::with_database(dir, move |db| {
        let count = |sql: &str| db.query_row(sql, params![subject], |r| r.get::<i64>(0));
        Ok((
            count("SELECT count(*) FROM refresh_families WHERE subject = ?1")?,
            count(
                "SELECT count(*) FROM refresh_tokens WHERE family_id IN
                   (SELECT id FROM refresh_families WHERE subject = ?1)",
            )?,
            count(
                "SELECT count(*) FROM family_access_tokens WHERE family_id IN
                   (SELECT id FROM refresh_families WHERE subject = ?1)",
            )?,
        ))
    })
}

fn orphans(dir: &Path) -> i64 {
    common::with_database(dir, |db| {
        Ok(db.query_row(
            "SELECT (SELECT count(*) FROM refresh_tokens WHERE family_id NOT IN (SELECT id FROM refresh_families))
                  + (SELECT count(*) FROM family_access_tokens WHERE family_id NOT IN (SELECT id FROM refresh_families))",
            params![],
            |r| r.get::<i64>(0),
        )?)
    })
}

fn blocklisted(dir: &Path, jti: &str) -> bool {
    let jti = jti.to_string();
    common::with_database(dir, move |db| {
        Ok(db.query_row(
            "SELECT count(*) FROM jti_blocklist WHERE jti = ?1",
            params![jti],
            |r| r.get::<i64>(0),
        )?)
    }) == 1
}

#[tokio::test]
async fn dead_refresh_families_are_purged_once_nothing_in_them_matters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = Clock::system();
    let s = TestServer::start_with(config(dir), clock.clone()).await;

    // t0: a family that will reach its absolute expiry (2 h).
    let old = with_refresh(&s, "old").await;
    clock.advance(90 * MIN);
    // t0+90m: a live family, rotated once (its used token is evidence for reuse
    // detection), and a family rotated once and then revoked.
    let live = with_refresh(&s, "live").await;
    let live2 = refresh(&s, &live.refresh_token).await.unwrap();
    let gone = with_refresh(&s, "revoked").await;
    let gone2 = refresh(&s, &gone.refresh_token).await.unwrap();
    let revoke = RevokeRequest {
        token: gone2.refresh_token.clone(),
        ..RevokeRequest::default()
    };
    s.revoke(revoke).await.unwrap();
    assert!(!s.introspect(&gone.token).await.unwrap().active);

    // t0+95m: the revoked family's access tokens still live (until t0+105m), so it is
    // kept, and they stay on the blocklist.
    clock.advance(5 * MIN);
    let mut s = s;
    s.stop().await;
    assert_eq!(
        rows(dir, "revoked"),
        (1, 2, 2),
        "kept while its access tokens live"
    );
    assert!(blocklisted(dir, &gone.token_id));
    let s = TestServer::start_with(config(dir), clock.clone()).await;
    assert!(!s.introspect(&gone.token).await.unwrap().active);

    // t0+3h05m: the old family expired at t0+2h and the revoked one died at t0+90m;
    // every access token either minted lived at most 1 h. Both go, with all their rows.
    clock.advance(90 * MIN);
    let mut s = s;
    s.stop().await;
    assert_eq!(rows(dir, "old"), (0, 0, 0), "past its absolute expiry");
    assert_eq!(rows(dir, "revoked"), (0, 0, 0), "revoked");
    assert_eq!(orphans(dir), 0);
    // The live family keeps both refresh-token rows; its expired access-token rows go.
    assert_eq!(
        rows(dir, "live"),
        (1, 2, 0),
        "a live family keeps its tokens"
    );

    // The live family still rotates, and reuse detection still sees its used token.
    let s = TestServer::start_with(config(dir), clock.clone()).await;
    let live3 = refresh(&s, &live2.refresh_token).await.unwrap();
    assert!(s.introspect(&live3.access_token).await.unwrap().active);
    let e = refresh(&s, &live.refresh_token).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "reuse: {e:?}");
    assert!(
        !s.introspect(&live3.refresh_token).await.unwrap().active,
        "the reuse revoked the family"
    );
    // Purged families' tokens are simply unknown.
    for rt in [&old.refresh_token, &gone2.refresh_token] {
        assert!(!s.introspect(rt).await.unwrap().active);
    }
}

#[tokio::test]
async fn audit_records_older_than_the_retention_are_purged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = Clock::system();
    let s = TestServer::start_with(config(dir), clock.clone()).await;
    for i in 0..5 {
        s.access_token(&format!("user{i}")).await;
    }
    // A day and an hour later, with retention 1 d: the older records go, a new one stays.
    clock.advance(25 * 3600);
    let t = s.access_token("recent").await;
    s.flush_audit().await;
    let cutoff = clock.now() - 86_400;
    let old_records = |dir: &Path| -> i64 {
        common::with_database(dir, move |db| {
            Ok(db.query_row(
                "SELECT count(*) FROM audit_log WHERE at < ?1",
                params![cutoff],
                |r| r.get::<i64>(0),
            )?)
        })
    };
    assert!(
        old_records(dir) >= 6,
        "bootstrap and five issues are on record"
    );
    let mut s = s;
    s.stop().await;
    assert_eq!(old_records(dir), 0, "records past the retention are gone");
    let token_id = t.token_id.clone();
    let recent = common::with_database(dir, move |db| {
        Ok(db.query_row(
            "SELECT count(*) FROM audit_log WHERE token_id = ?1",
            params![token_id],
            |r| r.get::<i64>(0),
        )?)
    });
    assert_eq!(recent, 1, "a record inside the retention stays");
}
