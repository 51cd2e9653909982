//! The verified-token cache never answers active for a token that has been revoked,
//! bumped, has expired, or whose key has left the verification set — even when the
//! token is served from the cache. Each test first makes sure the token *is* cached
//! (the hit counter in `/metrics` moves), and that the inactive answer was a hit too.

mod common;

use common::{TestServer, authed};
use tessera::proto::{BumpTokenVersionRequest, RevokeRequest, RotateSigningKeyRequest};
use tessera::test_support::params;

/// Default access-token lifetime (15 min) and retire window (1 h max lifetime + 60 s).
const TTL: i64 = 15 * 60;
const RETIRE_WINDOW: i64 = 60 * 60 + 60;

async fn cache_hits(s: &TestServer) -> u64 {
    let (status, _, body) = s.metrics_get("/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("tessera_verified_cache_total{result=\"hit\"} "))
        .expect("hit counter in /metrics")
        .parse()
        .expect("a number")
}

async fn active(s: &TestServer, token: &str) -> bool {
    s.introspect(token).await.expect("introspect").active
}

/// Issues a token for `subject` and introspects it until it is served from the cache.
async fn cached_token(s: &TestServer, subject: &str) -> String {
    let t = s.access_token(subject).await.token;
    let before = cache_hits(s).await;
    assert!(active(s, &t).await);
    assert!(active(s, &t).await);
    assert!(
        cache_hits(s).await > before,
        "second introspection was not a hit"
    );
    t
}

/// Introspects `token`, asserting the answer came through the cache.
async fn active_from_cache(s: &TestServer, token: &str) -> bool {
    let before = cache_hits(s).await;
    let is_active = active(s, token).await;
    assert!(cache_hits(s).await > before, "not served from the cache");
    is_active
}

#[tokio::test]
async fn revoked_cached_token_is_inactive_on_the_next_call() {
    let s = TestServer::start().await;
    let t = cached_token(&s, "alice").await;
    let other = cached_token(&s, "alice").await;
    s.revoke(RevokeRequest {
        token: t.clone(),
        ..RevokeRequest::default()
    })
    .await
    .expect("revoke");
    assert!(!active_from_cache(&s, &t).await);
    assert!(active_from_cache(&s, &other).await, "only that token");
}

#[tokio::test]
async fn bumped_cached_token_is_inactive_on_the_next_call() {
    let s = TestServer::start().await;
    let t = cached_token(&s, "bob").await;
    let bystander = cached_token(&s, "carol").await;
    s.bump(BumpTokenVersionRequest {
        subject: "bob".into(),
        reason: "test".into(),
    })
    .await
    .expect("bump");
    assert!(!active_from_cache(&s, &t).await);
    assert!(active_from_cache(&s, &bystander).await, "only that subject");
    // A token minted after the bump is live.
    assert!(active(&s, &s.access_token("bob").await.token).await);
}

#[tokio::test]
async fn expired_cached_token_is_inactive_on_the_next_call() {
    let s = TestServer::start().await;
    let t = cached_token(&s, "dave").await;
    s.clock.advance(TTL - 30);
    assert!(active_from_cache(&s, &t).await);
    // The cache's own eviction runs on real time; the answer must follow the clock.
    s.clock.advance(30);
    assert!(!active_from_cache(&s, &t).await);
}

async fn rotate(s: &TestServer) {
    s.keys()
        .await
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: true },
            &s.admin_key,
        ))
        .await
        .expect("rotate");
}

#[tokio::test]
async fn cached_token_of_a_retired_key_is_inactive_after_the_window() {
    let s = TestServer::start().await;
    let t = cached_token(&s, "erin").await;
    rotate(&s).await;
    // Retired keys keep verifying the tokens they signed.
    assert!(active_from_cache(&s, &t).await);
    s.clock.advance(RETIRE_WINDOW + 1);
    assert!(!active_from_cache(&s, &t).await);
}

#[tokio::test]
async fn cached_token_is_inactive_once_its_key_leaves_the_set_early() {
    // A key pulled before its window ends (say, after a compromise) must stop
    // vouching for cached tokens that have not expired yet: the key check, not the
    // expiry check, is what makes this one inactive.
    let s = TestServer::start().await;
    let t = cached_token(&s, "frank").await;
    rotate(&s).await;
    // A margin, so wall-clock seconds passing during the test cannot end the window early.
    let until = s.clock.now() + 30;
    let changed = common::with_database(&s.data_dir, move |db| {
        Ok(db.execute(
            "UPDATE signing_keys SET verify_until = ?1 WHERE retired_at IS NOT NULL",
            params![until],
        )?)
    });
    assert_eq!(changed, 1);
    // The next rotation reloads the key set from the store.
    rotate(&s).await;
    assert!(active_from_cache(&s, &t).await);
    s.clock.advance(30);
    assert!(!active_from_cache(&s, &t).await, "token expires in {TTL} s");
}
