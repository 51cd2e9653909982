//! `WatchRevocations` through the real server: snapshot then deltas, exact resume,
//! snapshot again after compaction, a stalled subscriber cut off without slowing
//! revocations, and the scope check.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, authed, test_config};
use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::revocation_event::Event;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    BumpTokenVersionRequest, RevocationEvent, RevokeRequest, RotateSigningKeyRequest,
    WatchRevocationsRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

fn config(dir: &Path) -> Config {
    Config {
        watch_heartbeat: Duration::from_millis(200),
        ..test_config(dir)
    }
}

async fn start(cfg: impl FnOnce(&Path) -> Config) -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(cfg(tmp.path()), Clock::system()).await;
    (s, tmp)
}

async fn watch(s: &TestServer, key: &str, after: u64) -> Streaming<RevocationEvent> {
    s.tokens()
        .await
        .watch_revocations(authed(
            WatchRevocationsRequest {
                after_sequence: after,
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The next event that is not a heartbeat.
async fn next(st: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, st.message())
            .await
            .expect("an event within 10 s")
            .expect("stream ok")
            .expect("stream open");
        if !matches!(ev.event, Some(Event::Heartbeat(_))) {
            return ev;
        }
    }
}

/// Reads through `snapshot_done`; returns the snapshot's events and the done marker.
async fn snapshot(st: &mut Streaming<RevocationEvent>) -> (Vec<RevocationEvent>, u64) {
    let mut items = Vec::new();
    loop {
        let ev = next(st).await;
        if matches!(ev.event, Some(Event::SnapshotDone(_))) {
            return (items, ev.sequence);
        }
        items.push(ev);
    }
}

fn revoked_jti(ev: &RevocationEvent) -> Option<&str> {
    match &ev.event {
        Some(Event::RevokedTokenId(r)) => Some(r.jti.as_str()),
        _ => None,
    }
}

async fn revoke(tk: &mut TokenServiceClient<Channel>, key: &str, token: &str) {
    tk.revoke(authed(
        RevokeRequest {
            token: token.into(),
            token_id: String::new(),
            ..Default::default()
        },
        key,
    ))
    .await
    .unwrap();
}

fn strictly_increasing(evs: &[RevocationEvent]) -> bool {
    evs.windows(2).all(|w| w[0].sequence < w[1].sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_holds_the_whole_state_then_deltas_follow_in_order() {
    let (s, _tmp) = start(config).await;
    let mut tk = s.tokens().await;
    let admin = s.admin_key.clone();
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let early = s.access_token("alice").await;
    revoke(&mut tk, &admin, &early.token).await;
    tk.bump_token_version(authed(
        BumpTokenVersionRequest {
            subject: "bob".into(),
            reason: "test".into(),
        },
        &admin,
    ))
    .await
    .unwrap();
    let doomed = s.api_key(&["tessera:introspect"]).await;
    revoke(&mut tk, &admin, &doomed.token).await;

    let mut st = watch(&s, &watcher, 0).await;
    let (items, done) = snapshot(&mut st).await;
    let mut all = items.clone();
    assert!(strictly_increasing(&items), "snapshot numbered in order");
    assert!(items.iter().all(|e| e.sequence < done));
    assert!(
        items
            .iter()
            .any(|e| revoked_jti(e) == Some(&early.token_id))
    );
    assert!(items.iter().any(|e| matches!(&e.event,
        Some(Event::TokenVersion(v)) if v.subject == "bob" && v.version == 1)));
    assert!(items.iter().any(|e| matches!(&e.event,
        Some(Event::RevokedApiKeyId(id)) if *id == doomed.token_id)));
    assert!(items.iter().any(|e| matches!(&e.event,
        Some(Event::SigningKey(k)) if k.state == "active")));

    // Deltas: a revocation, a bump, a rotation (new active, old retired).
    let later = s.access_token("carol").await;
    revoke(&mut tk, &admin, &later.token).await;
    let ev = next(&mut st).await;
    assert_eq!(revoked_jti(&ev), Some(later.token_id.as_str()));
    assert!(ev.sequence > done);
    let expires = match &ev.event {
        Some(Event::RevokedTokenId(r)) => r.expires_at.unwrap().seconds,
        _ => unreachable!(),
    };
    assert_eq!(expires, later.expires_at.unwrap().seconds);
    all.push(ev);
    tk.bump_token_version(authed(
        BumpTokenVersionRequest {
            subject: "bob".into(),
            reason: "again".into(),
        },
        &admin,
    ))
    .await
    .unwrap();
    let ev = next(&mut st).await;
    assert!(
        matches!(&ev.event, Some(Event::TokenVersion(v)) if v.subject == "bob" && v.version == 2)
    );
    all.push(ev);
    s.keys()
        .await
        .rotate_signing_key(authed(RotateSigningKeyRequest { rotate_now: true }, &admin))
        .await
        .unwrap();
    let mut states = Vec::new();
    for _ in 0..2 {
        let ev = next(&mut st).await;
        match &ev.event {
            Some(Event::SigningKey(k)) => states.push(k.state.clone()),
            other => panic!("expected a signing-key event, got {other:?}"),
        }
        all.push(ev);
    }
    states.sort();
    assert_eq!(states, vec!["active", "retired"]);
    assert!(strictly_increasing(&all));

    // Idle: heartbeats repeat the last sequence.
    let hb = tokio::time::timeout(Duration::from_secs(5), st.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(hb.event, Some(Event::Heartbeat(_))));
    assert_eq!(hb.sequence, all.last().unwrap().sequence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascaded_revocation_streams_every_token_it_reaches() {
    let (s, _tmp) = start(config).await;
    let admin = s.admin_key.clone();
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let mut st = watch(&s, &watcher, 0).await;
    snapshot(&mut st).await;
    // A refresh family's revocation blocks every access token it minted.
    let mut tk = s.tokens().await;
    let mut req = common::access_spec("dora");
    if let Some(tessera::proto::issue_request::Credential::AccessToken(a)) = &mut req.credential {
        a.refresh_token = true;
    }
    let issued = tk.issue(authed(req, &admin)).await.unwrap().into_inner();
    revoke(&mut tk, &admin, &issued.refresh_token).await;
    let ev = next(&mut st).await;
    assert_eq!(revoked_jti(&ev), Some(issued.token_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_exactly_what_was_missed() {
    let (s, _tmp) = start(config).await;
    let mut tk = s.tokens().await;
    let admin = s.admin_key.clone();
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let mut st = watch(&s, &watcher, 0).await;
    let (_, done) = snapshot(&mut st).await;
    let mut seen = Vec::new();
    for i in 0..3 {
        let t = s.access_token(&format!("u{i}")).await;
        revoke(&mut tk, &admin, &t.token).await;
        seen.push(next(&mut st).await);
    }
    drop(st);
    let resume_at = seen.last().unwrap().sequence;

    // Missed while away, and more while the resumed stream hands over to live.
    let mut missed = Vec::new();
    for i in 0..5 {
        let t = s.access_token(&format!("m{i}")).await;
        revoke(&mut tk, &admin, &t.token).await;
        missed.push(t.token_id);
    }
    let mut st = watch(&s, &watcher, resume_at).await;
    let mut live = Vec::new();
    let racer = {
        let s_admin = admin.clone();
        let mut tk2 = s.tokens().await;
        let tokens: Vec<_> = {
            let mut v = Vec::new();
            for i in 0..20 {
                v.push(s.access_token(&format!("l{i}")).await);
            }
            v
        };
        live.extend(tokens.iter().map(|t| t.token_id.clone()));
        tokio::spawn(async move {
            for t in tokens {
                revoke(&mut tk2, &s_admin, &t.token).await;
            }
        })
    };
    let mut got = Vec::new();
    for _ in 0..(missed.len() + live.len()) {
        got.push(next(&mut st).await);
    }
    racer.await.unwrap();
    assert!(
        !got.iter()
            .any(|e| matches!(e.event, Some(Event::SnapshotDone(_)))),
        "a retained resume point replays, it does not snapshot"
    );
    assert!(got[0].sequence > resume_at && got[0].sequence > done);
    assert!(strictly_increasing(&got), "no duplicate, no reordering");
    let jtis: Vec<String> = got
        .iter()
        .map(|e| revoked_jti(e).unwrap().to_string())
        .collect();
    let mut want = missed.clone();
    want.extend(live.clone());
    assert_eq!(jtis, want, "exactly the missed ones, then the live ones");
    // Nothing more than that.
    let extra = tokio::time::timeout(Duration::from_millis(600), next(&mut st)).await;
    assert!(
        extra.is_err(),
        "no duplicate after the hand-over: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_the_retained_log_gets_a_fresh_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let s = TestServer::start_with(config(tmp.path()), clock.clone()).await;
    let mut tk = s.tokens().await;
    let admin = s.admin_key.clone();
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let old = s.access_token("erin").await;
    revoke(&mut tk, &admin, &old.token).await;
    let mut st = watch(&s, &watcher, 0).await;
    let (items, done) = snapshot(&mut st).await;
    drop(st);
    // A snapshot item's number is no resume point either: it gets a snapshot.
    let mut st = watch(&s, &watcher, items.last().unwrap().sequence).await;
    let (_, again) = snapshot(&mut st).await;
    assert_eq!(again, done);
    drop(st);
    // A change the subscriber misses; its log row is compacted below.
    let missed = s.access_token("gina").await;
    revoke(&mut tk, &admin, &missed.token).await;

    // Past the retention (max access-token TTL + 1 h), housekeeping compacts the log;
    // the final pass of a graceful stop runs it.
    clock.advance(2 * 3600 + 60);
    let fresh = s.access_token("fred").await;
    let s = s.restart().await;
    let mut tk = s.tokens().await;
    revoke(&mut tk, &admin, &fresh.token).await;
    let mut st = watch(&s, &watcher, done).await;
    let (items, done2) = snapshot(&mut st).await;
    assert!(done2 > done);
    assert!(
        items
            .iter()
            .any(|e| revoked_jti(e) == Some(fresh.token_id.as_str())),
        "the snapshot holds what the compacted log no longer does"
    );
    assert!(
        !items
            .iter()
            .any(|e| revoked_jti(e) == Some(old.token_id.as_str())),
        "an expired token's entry is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_off_and_never_slows_revocation() {
    const BUFFER: usize = 16;
    let (s, _tmp) = start(|d| Config {
        watch_buffer: BUFFER,
        ..config(d)
    })
    .await;
    let admin = s.admin_key.clone();
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let mut tk = s.tokens().await;
    let tokens: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..600 {
            v.push(s.access_token(&format!("s{i}")).await.token);
        }
        v
    };
    let time = |tk: TokenServiceClient<Channel>, batch: Vec<String>| {
        let admin = admin.clone();
        async move {
            let mut tk = tk;
            let mut worst = Duration::ZERO;
            let t0 = Instant::now();
            for t in batch {
                let one = Instant::now();
                revoke(&mut tk, &admin, &t).await;
                worst = worst.max(one.elapsed());
            }
            (t0.elapsed(), worst)
        }
    };
    // Baseline without a subscriber.
    let (base, _) = time(tk.clone(), tokens[..100].to_vec()).await;

    // A subscriber with a tiny HTTP/2 window that never reads.
    let ch = Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut stalled = TokenServiceClient::new(ch)
        .watch_revocations(authed(
            WatchRevocationsRequest { after_sequence: 0 },
            &watcher,
        ))
        .await
        .unwrap()
        .into_inner();
    let (with_stalled, worst) = time(tk.clone(), tokens[100..600].to_vec()).await;
    let per_base = base / 100;
    let per_stalled = with_stalled / 500;
    assert!(
        per_stalled < per_base * 3 + Duration::from_millis(5),
        "revocations slowed down: {per_base:?} each before, {per_stalled:?} with a stalled subscriber"
    );
    assert!(worst < Duration::from_secs(1), "one revoke took {worst:?}");

    // When it finally reads: what was queued, then RESOURCE_EXHAUSTED — not all 500.
    let mut events = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.message()).await {
            Ok(Ok(Some(_))) => events += 1,
            Ok(Ok(None)) => panic!("stream ended without an error after {events} events"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("no end to the stalled stream"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(events < 500, "{events} events: it was never cut off");

    // The service is unaffected: a new subscriber is served.
    let mut st = watch(&s, &watcher, 0).await;
    let (items, _) = snapshot(&mut st).await;
    assert!(items.iter().filter(|e| revoked_jti(e).is_some()).count() >= 600);
    tk.revoke(authed(
        RevokeRequest {
            token: s.access_token("after").await.token,
            token_id: String::new(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    assert!(revoked_jti(&next(&mut st).await).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_introspect_caller_may_watch() {
    let (s, _tmp) = start(config).await;
    let issuer = s.api_key(&["tessera:issue", "tessera:revoke"]).await.token;
    let err = s
        .tokens()
        .await
        .watch_revocations(authed(WatchRevocationsRequest::default(), &issuer))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = s
        .tokens()
        .await
        .watch_revocations(tonic::Request::new(WatchRevocationsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_per_call_deadline_and_keeps_beating() {
    let (s, _tmp) = start(|d| Config {
        request_timeout: Duration::from_millis(500),
        ..config(d)
    })
    .await;
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let mut st = watch(&s, &watcher, 0).await;
    let (_, done) = snapshot(&mut st).await;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut beats = 0;
    while Instant::now() < until {
        let ev = st.message().await.expect("stream ok").expect("stream open");
        assert!(matches!(ev.event, Some(Event::Heartbeat(_))));
        assert_eq!(ev.sequence, done);
        beats += 1;
    }
    assert!(
        beats >= 5,
        "{beats} heartbeats in 1.5 s at a 200 ms interval"
    );
}

/// Revoke acknowledged → seen on every one of 100 streams: the contract's propagation
/// bound (p99 < 50 ms), measured here on a debug build on whatever the machine shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_a_hundred_subscribers_within_50_ms_p99() {
    const SUBSCRIBERS: usize = 100;
    const REVOCATIONS: usize = 50;
    let (s, _tmp) = start(config).await;
    let admin = s.admin_key.clone();
    let watcher = s.api_key(&["tessera:introspect"]).await.token;
    let mut tokens = Vec::new();
    for i in 0..REVOCATIONS {
        tokens.push(s.access_token(&format!("p{i}")).await);
    }
    // Each subscriber reports (jti, when it arrived).
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let ch = s.channel().await;
    for _ in 0..SUBSCRIBERS {
        let mut st = TokenServiceClient::new(ch.clone())
            .watch_revocations(authed(
                WatchRevocationsRequest { after_sequence: 0 },
                &watcher,
            ))
            .await
            .unwrap()
            .into_inner();
        snapshot(&mut st).await;
        let tx = seen_tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(ev)) = st.message().await {
                if let Some(j) = revoked_jti(&ev) {
                    let _ = tx.send((j.to_string(), Instant::now()));
                }
            }
        });
    }
    drop(seen_tx);
    let mut tk = s.tokens().await;
    let mut lags = Vec::new();
    for t in &tokens {
        revoke(&mut tk, &admin, &t.token).await;
        let acked = Instant::now();
        let mut got = 0;
        while got < SUBSCRIBERS {
            let (jti, at) = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
                .await
                .expect("every subscriber sees the revocation")
                .unwrap();
            assert_eq!(jti, t.token_id);
            lags.push(at.saturating_duration_since(acked));
            got += 1;
        }
    }
    lags.sort();
    let p50 = lags[lags.len() / 2];
    let p99 = lags[lags.len() * 99 / 100];
    eprintln!("propagation to {SUBSCRIBERS} subscribers: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(50), "p50 {p50:?}, p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_key_revocation_streams_revoked_then_the_new_active_key() {
    let (s, _tmp) = start(config).await;
    let jwks: serde_json::Value = serde_json::from_str(
        &s.keys()
            .await
            .get_jwks(tonic::Request::new(Default::default()))
            .await
            .unwrap()
            .into_inner()
            .jwks_json,
    )
    .unwrap();
    let old_kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let mut st = watch(&s, &s.admin_key, 0).await;
    let (snap, _) = snapshot(&mut st).await;
    assert!(snap.iter().any(|e| matches!(&e.event,
        Some(Event::SigningKey(k)) if k.kid == old_kid && k.state == "active")));

    let revoked = s
        .keys()
        .await
        .revoke_signing_key(authed(
            tessera::proto::RevokeSigningKeyRequest {
                kid: old_kid.clone(),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(k, st): &(String, String)| k == &old_kid && st == "revoked")
    {
        if let Some(Event::SigningKey(k)) = next(&mut st).await.event {
            seen.push((k.kid, k.state));
        }
    }
    // The successor was made active in the same transaction.
    assert!(
        seen.iter()
            .any(|(k, st)| k == &revoked.active_kid && st == "active"),
        "{seen:?}"
    );

    // A fresh subscriber learns of the revoked key from the snapshot alone.
    let mut fresh = watch(&s, &s.admin_key, 0).await;
    let (snap, _) = snapshot(&mut fresh).await;
    assert!(
        snap.iter().any(|e| matches!(&e.event,
            Some(Event::SigningKey(k)) if k.kid == old_kid && k.state == "revoked")),
        "the snapshot names the revoked key"
    );
}
