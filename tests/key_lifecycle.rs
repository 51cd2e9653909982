//! Signing-key lifecycle through the real server: a successor is published before it
//! signs, activates at `activates_at` exactly, survives a restart mid-lead, rotates on
//! schedule, and a real caching verifier (PyJWT's `PyJWKClient`) never meets an
//! unknown kid across scheduled rotations.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TestServer, authed, test_config};
use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::revocation_event::Event;
use tessera::proto::{
    ListSigningKeysRequest, RevocationEvent, RevokeSigningKeyRequest, RotateSigningKeyRequest,
    RotateSigningKeyResponse, SigningKeyInfo, WatchRevocationsRequest,
};
use tessera::test_support::params;
use tonic::Streaming;

/// The default `key_publish_lead`: the JWKS max-age (60 s) + 60 s.
const LEAD: i64 = 120;

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_string()
}

async fn rotate(s: &TestServer, now: bool) -> RotateSigningKeyResponse {
    s.keys()
        .await
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: now },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn listed(s: &TestServer) -> Vec<SigningKeyInfo> {
    s.keys()
        .await
        .list_signing_keys(authed(ListSigningKeysRequest {}, &s.admin_key))
        .await
        .unwrap()
        .into_inner()
        .keys
}

async fn state_of(s: &TestServer, kid: &str) -> String {
    listed(s)
        .await
        .into_iter()
        .find(|k| k.kid == kid)
        .unwrap_or_else(|| panic!("{kid} not listed"))
        .state
}

async fn jwks_kids(s: &TestServer) -> Vec<String> {
    let (status, _, body) = s.http_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The kid a token issued now is signed with.
async fn signing_kid(s: &TestServer) -> String {
    kid_of(&s.access_token("alice").await.token)
}

/// Polls until `f` holds (the lifecycle tick runs every second).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 5 s: {what}");
}

/// The next signing-key event on the stream (heartbeats and other events skipped).
async fn next_key_event(st: &mut Streaming<RevocationEvent>) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, st.message())
            .await
            .expect("an event within 10 s")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::SigningKey(k)) = ev.event {
            return (k.kid, k.state);
        }
    }
}

async fn watch_after_snapshot(s: &TestServer) -> Streaming<RevocationEvent> {
    let mut st = s
        .tokens()
        .await
        .watch_revocations(authed(WatchRevocationsRequest::default(), &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    loop {
        let ev = st.message().await.unwrap().unwrap();
        if matches!(ev.event, Some(Event::SnapshotDone(_))) {
            return st;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_the_successor_first_and_it_signs_from_activates_at() {
    let s = TestServer::start().await;
    let old = signing_kid(&s).await;
    let old_token = s.access_token("bob").await.token;
    let mut feed = watch_after_snapshot(&s).await;

    let now = s.clock.now();
    let r = rotate(&s, false).await;
    let new = r.kid.clone();
    let at = r.activates_at.unwrap().seconds;
    assert_ne!(new, old);
    assert!((now + LEAD..=now + LEAD + 2).contains(&at), "{at} vs {now}");

    // Published: in the JWKS at once, signing nothing yet.
    let kids = jwks_kids(&s).await;
    assert!(kids.contains(&old) && kids.contains(&new), "{kids:?}");
    assert_eq!(state_of(&s, &new).await, "published");
    assert_eq!(state_of(&s, &old).await, "active");
    assert_eq!(signing_kid(&s).await, old);
    assert_eq!(
        next_key_event(&mut feed).await,
        (new.clone(), "published".into())
    );

    // A second rotation while one waits keeps the waiting successor.
    let again = rotate(&s, false).await;
    assert_eq!(
        (again.kid, again.activates_at.unwrap().seconds),
        (new.clone(), at)
    );

    // One second early: still the old key. At `activates_at`: the new one, at once,
    // without waiting for housekeeping.
    s.clock.advance(at - 1 - s.clock.now());
    assert_eq!(signing_kid(&s).await, old);
    s.clock.advance(1);
    assert_eq!(signing_kid(&s).await, new);
    assert!(
        s.introspect(&old_token).await.unwrap().active,
        "old key still verifies"
    );

    // Housekeeping catches up: states, retirement instant and the change feed.
    eventually("the old key listed as retired", || async {
        state_of(&s, &old).await == "retired"
    })
    .await;
    let keys = listed(&s).await;
    let newest = &keys[0];
    assert_eq!(
        (newest.kid.as_str(), newest.state.as_str()),
        (new.as_str(), "active")
    );
    assert_eq!(newest.activates_at.as_ref().unwrap().seconds, at);
    let retired = keys.iter().find(|k| k.kid == old).unwrap();
    assert_eq!(retired.retires_at.as_ref().unwrap().seconds, at);
    assert_eq!(
        next_key_event(&mut feed).await,
        (new.clone(), "active".into())
    );
    assert_eq!(
        next_key_event(&mut feed).await,
        (old.clone(), "retired".into())
    );
    assert!(
        jwks_kids(&s).await.contains(&old),
        "retired keys stay published"
    );
}

#[tokio::test]
async fn rotate_now_signs_with_the_new_key_at_once() {
    let s = TestServer::start().await;
    let old = signing_kid(&s).await;
    let now = s.clock.now();
    let r = rotate(&s, true).await;
    assert!((now..=now + 1).contains(&r.activates_at.unwrap().seconds));
    assert_eq!(signing_kid(&s).await, r.kid);
    assert_eq!(state_of(&s, &r.kid).await, "active");
    assert_eq!(state_of(&s, &old).await, "retired");
}

#[tokio::test]
async fn rotate_now_while_a_successor_waits_activates_that_successor() {
    let s = TestServer::start().await;
    let waiting = rotate(&s, false).await.kid;
    let now = rotate(&s, true).await;
    assert_eq!(now.kid, waiting, "the key verifiers have had longest");
    assert_eq!(signing_kid(&s).await, waiting);
}

#[tokio::test]
async fn revoking_a_waiting_successor_keeps_the_signing_key() {
    let s = TestServer::start().await;
    let old = signing_kid(&s).await;
    let r = rotate(&s, false).await;
    let active = s
        .keys()
        .await
        .revoke_signing_key(authed(
            RevokeSigningKeyRequest { kid: r.kid.clone() },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .active_kid;
    assert_eq!(active, old);
    assert!(!jwks_kids(&s).await.contains(&r.kid));
    s.clock.advance(LEAD + 5);
    assert_eq!(signing_kid(&s).await, old, "the hand-over was called off");
    assert_eq!(state_of(&s, &old).await, "active");
}

#[tokio::test]
async fn revoking_the_signing_key_while_a_successor_waits_promotes_the_successor() {
    let s = TestServer::start().await;
    let old = signing_kid(&s).await;
    let waiting = rotate(&s, false).await.kid;
    let active = s
        .keys()
        .await
        .revoke_signing_key(authed(
            RevokeSigningKeyRequest { kid: old.clone() },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .active_kid;
    assert_eq!(active, waiting, "already in every cached JWKS");
    assert_eq!(signing_kid(&s).await, waiting);
}

/// The JWKS is public and unauthenticated: answering it must never reach SQLite, not
/// even at the instant a retired key's window ends (when the key must leave the set
/// at once, before housekeeping reloads it). No server here, so no housekeeping reads
/// run alongside and the store's read counter is the JWKS's alone.
#[tokio::test]
async fn two_hundred_jwks_requests_do_no_store_read_even_as_a_window_ends() {
    use tessera::test_support;
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let config = std::sync::Arc::new(test_config(tmp.path()));
    let a = tessera::test_support::Authority::open(config.clone(), clock.clone())
        .await
        .unwrap();
    let old = test_support::key_set(&a).active.kid.clone();
    test_support::rotate_signing_key_now(&a).await.unwrap();
    let new = test_support::key_set(&a).active.kid.clone();
    assert!(a.jwks_json().contains(&old), "retired keys stay published");

    let window = config.max_access_token_ttl.as_secs() as i64 + 60;
    clock.advance(window + 1);
    let reads = test_support::store_reads(&a);
    for i in 0..200 {
        let jwks = a.jwks_json();
        assert!(
            !jwks.contains(&old),
            "request {i}: the old key's window is over"
        );
        assert!(jwks.contains(&new), "request {i}");
    }
    assert_eq!(test_support::store_reads(&a) - reads, 0);
}

fn config_in(dir: &Path, f: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config(dir);
    f(&mut c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_the_lead_keeps_the_schedule_and_logs_each_transition_once() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    let admin = s.admin_key.clone();
    let old = signing_kid(&s).await;
    let r = rotate(&s, false).await;
    let at = r.activates_at.unwrap().seconds;

    s.stop().await;
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    s.admin_key = admin.clone();
    assert_eq!(state_of(&s, &r.kid).await, "published");
    assert_eq!(signing_kid(&s).await, old, "still inside the lead");

    // Down across the activation instant: the next process signs with the successor
    // from its first token, from the stored timestamps alone.
    s.stop().await;
    clock.advance(at - clock.now());
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    s.admin_key = admin.clone();
    assert_eq!(signing_kid(&s).await, r.kid);
    assert_eq!(state_of(&s, &old).await, "retired");
    s.stop().await;
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    s.admin_key = admin;
    assert_eq!(signing_kid(&s).await, r.kid);
    s.stop().await;

    let count = |kid: &str, state: &str| -> i64 {
        let (kid, state) = (kid.to_string(), state.to_string());
        common::with_database(tmp.path(), move |db| {
            Ok(db.query_row(
                "SELECT count(*) FROM change_log WHERE kind = 'signing_key' AND name = ?1 AND state = ?2",
                params![kid, state],
                |row| row.get::<i64>(0),
            )?)
        })
    };
    assert_eq!(count(&r.kid, "published"), 1);
    assert_eq!(count(&r.kid, "active"), 1);
    assert_eq!(count(&old, "retired"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_publishes_a_lead_ahead_and_activates_at_the_period_end() {
    const PERIOD: i64 = 3600;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_in(tmp.path(), |c| {
        c.signing_key_rotation_period = Some(Duration::from_secs(PERIOD as u64));
    });
    let s = TestServer::start_with(cfg, Clock::system()).await;
    let first = listed(&s).await.remove(0);
    let start = first.activates_at.unwrap().seconds;

    // Not yet within the lead of the period's end: nothing happens.
    s.clock.advance(start + PERIOD - LEAD - 10 - s.clock.now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(listed(&s).await.len(), 1);

    s.clock.advance(start + PERIOD - LEAD - s.clock.now());
    eventually("a successor published", || async {
        listed(&s).await.len() == 2
    })
    .await;
    let next = listed(&s).await.remove(0);
    assert_eq!(next.state, "published");
    // The period's end (a real second or two later if the tick came late: the lead
    // is never cut short).
    let at = next.activates_at.as_ref().unwrap().seconds;
    assert!((start + PERIOD..=start + PERIOD + 2).contains(&at), "{at}");
    assert_eq!(signing_kid(&s).await, first.kid);

    s.clock.advance(at - s.clock.now());
    assert_eq!(signing_kid(&s).await, next.kid);

    // And again one period later.
    s.clock.advance(at + PERIOD - LEAD - s.clock.now());
    eventually("a second successor published", || async {
        listed(&s).await.len() == 3
    })
    .await;
    let third = listed(&s).await.remove(0);
    // The period's end, or a full lead after publication if the test's real seconds
    // put the tick past the period's end minus the lead.
    let third_at = third.activates_at.as_ref().unwrap().seconds;
    assert!(
        (at + PERIOD..=at + PERIOD + 3).contains(&third_at),
        "{third_at}"
    );
    assert_eq!(third.state, "published");
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TESSERA_INTEROP_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "this test needs Python with tests/interop/requirements.txt: run scripts/test \
         (or set TESSERA_INTEROP_PYTHON)"
    );
    venv
}

/// The proof the issue asks for, in real time: across two scheduled rotations under
/// continuous issue-and-verify traffic, PyJWT's `PyJWKClient` (caching the JWKS for
/// less than the publish lead) verifies every token, and never even needs its
/// refetch-on-unknown-kid fallback: every kid is already in its cached set, as it
/// would have to be for a verifier without that fallback (Envoy `jwt_authn`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caching_pyjwt_verifier_never_meets_an_unknown_kid_across_scheduled_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_in(tmp.path(), |c| {
        c.key_publish_lead = Duration::from_secs(3);
        c.signing_key_rotation_period = Some(Duration::from_secs(6));
        c.issuer = common::ISSUER_FROM_HTTP.into();
    });
    let s = TestServer::start_with(cfg, Clock::system()).await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/rotation_verifier.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/.well-known/jwks.json", s.http))
        // The JWKS cache lifespan, shorter than the 3 s lead (2 s at whole-second
        // resolution of `activates_at`).
        .arg("1.5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut to_py = child.stdin.take().unwrap();
    let mut from_py = BufReader::new(child.stdout.take().unwrap());

    let started = std::time::Instant::now();
    let mut kids = Vec::<String>::new();
    let (mut verified, mut failures) = (0, Vec::new());
    while started.elapsed() < Duration::from_secs(15) {
        let token = s.access_token("alice").await.token;
        let kid = kid_of(&token);
        if kids.last() != Some(&kid) {
            kids.push(kid);
        }
        writeln!(to_py, "{token}").unwrap();
        to_py.flush().unwrap();
        let mut line = String::new();
        from_py.read_line(&mut line).unwrap();
        match line.trim() {
            "ok" => verified += 1,
            other => failures.push(other.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The documented exception: `rotate_now` signs with a key cached JWKS copies
    // have not seen; only the verifier's refetch-on-unknown-kid saves the token.
    let emergency = rotate(&s, true).await.kid;
    let token = s.access_token("alice").await.token;
    assert_eq!(kid_of(&token), emergency);
    writeln!(to_py, "{token}").unwrap();
    drop(to_py);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut from_py, &mut rest).unwrap();
    let _ = child.wait();
    println!("rotate_now: {}", rest.trim());

    assert!(
        kids.len() >= 3,
        "two scheduled rotations expected in 15 s, saw {kids:?}"
    );
    assert!(verified > 100, "only {verified} tokens verified");
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
}
