//! The listeners hold against slow and greedy clients: stalled connections are closed
//! within seconds while everyone else keeps being served, the connection cap refuses
//! the excess without touching the other ports, `/metrics` lives on its own listener,
//! and an oversized OAuth body gets an RFC 6749 JSON 413.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestServer, authed, raw_http, test_config};
use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::IntrospectRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(tune: impl FnOnce(&mut Config)) -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path());
    tune(&mut cfg);
    (TestServer::start_with(cfg, Clock::system()).await, tmp)
}

/// A counter or gauge from the metrics listener.
async fn metric(s: &TestServer, line_prefix: &str) -> u64 {
    let (status, _, body) = s.metrics_get("/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .unwrap_or_else(|| panic!("{line_prefix} not in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the server closes `s` (EOF or reset), answering how long that took.
/// Bytes the server sends are read and dropped; none are expected.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One GET through a fresh connection, timed.
async fn timed_get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let (status, _, _) = raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (status, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_stalled_http_clients_are_closed_while_others_are_served() {
    let header_timeout = Duration::from_secs(1);
    let (s, _tmp) = start(|c| c.header_timeout = header_timeout).await;
    let admin = s.admin_key.clone();
    let token = s.access_token("alice").await.token;

    // Half never send a byte; half send a request head one byte every 100 ms and never
    // finish it. Each reports how long the server kept it.
    let mut stalled = Vec::new();
    for i in 0..300 {
        let addr = s.http;
        stalled.push(tokio::spawn(async move {
            let mut sock = TcpStream::connect(addr).await.unwrap();
            let opened = Instant::now();
            if i % 2 == 0 {
                return closed_within(&mut sock, Duration::from_secs(15))
                    .await
                    .map(|_| opened.elapsed());
            }
            sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    r = sock.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Some(opened.elapsed()),
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if sock.write_all(b"a").await.is_err() {
                            return Some(opened.elapsed());
                        }
                    }
                }
                if opened.elapsed() > Duration::from_secs(15) {
                    return None;
                }
            }
        }));
    }

    // Meanwhile, ordinary clients of both ports are served, each call promptly.
    let mut tk = s.tokens().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel().await);
    let mut worst = Duration::ZERO;
    let until = Instant::now() + header_timeout * 2;
    let mut rounds = 0;
    while Instant::now() < until || rounds < 3 {
        rounds += 1;
        for path in ["/.well-known/jwks.json", "/healthz"] {
            let (status, took) = timed_get(s.http, path).await;
            assert_eq!(status, 200, "{path} during the stall");
            worst = worst.max(took);
        }
        let t = Instant::now();
        let r = tk
            .introspect(authed(
                IntrospectRequest {
                    token: token.clone(),
                    token_type_hint: String::new(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(r.active);
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worst < Duration::from_millis(1500),
        "a normal call took {worst:?} during the stall"
    );

    let mut longest = Duration::ZERO;
    for (i, t) in stalled.into_iter().enumerate() {
        let Some(held) = t.await.unwrap() else {
            let (_, _, m) = s.metrics_get("/metrics").await;
            let m: Vec<&str> = m
                .lines()
                .filter(|l| l.contains("listener=\"http\""))
                .collect();
            panic!("stalled client {i} was never closed; rounds {rounds}; {m:#?}");
        };
        longest = longest.max(held);
    }
    assert!(
        longest < header_timeout + Duration::from_secs(3),
        "a stalled client was held {longest:?}"
    );
    let timed_out = metric(
        &s,
        "tessera_connection_timeouts_total{listener=\"http\",reason=\"header\"} ",
    )
    .await;
    assert!(timed_out >= 300, "{timed_out} header timeouts counted");
    assert_eq!(
        metric(&s, "tessera_connections_open{listener=\"http\"} ").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_connection_cap_refuses_the_excess_without_starving_grpc() {
    let (s, _tmp) = start(|c| {
        c.max_connections = 20;
        c.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..20 {
        holders.push(TcpStream::connect(s.http).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&s, "tessera_connections_open{listener=\"http\"} ").await < 20 {
        assert!(Instant::now() < deadline, "holders not all accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Over the cap: accepted and closed at once, without an answer.
    for _ in 0..5 {
        let mut extra = TcpStream::connect(s.http).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let took = closed_within(&mut extra, Duration::from_secs(2)).await;
        assert!(took.is_some(), "a connection over the cap was held");
    }
    assert!(
        metric(&s, "tessera_connections_refused_total{listener=\"http\"} ").await >= 5,
        "refusals counted"
    );
    // The gRPC port is not affected.
    let t = Instant::now();
    let token = s.access_token("bob").await.token;
    assert!(s.introspect(&token).await.unwrap().active);
    assert!(t.elapsed() < Duration::from_secs(1));

    // A slot freed is a slot usable again.
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&s, "tessera_connections_open{listener=\"http\"} ").await > 0 {
        assert!(Instant::now() < deadline, "closed holders still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(timed_get(s.http, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_without_a_preface_are_closed_and_capped() {
    let (s, _tmp) = start(|c| {
        c.max_connections = 5;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    // The harness's own start-up probe connection may still be open: wait it out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&s, "tessera_connections_open{listener=\"grpc\"} ").await > 0 {
        assert!(Instant::now() < deadline, "start-up probe still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(s.grpc).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&s, "tessera_connections_open{listener=\"grpc\"} ").await < 5 {
        assert!(Instant::now() < deadline, "silent clients not all accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = TcpStream::connect(s.grpc).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(900))
            .await
            .is_some(),
        "a gRPC connection over the cap was held"
    );
    // HTTP is not affected while gRPC is full.
    assert_eq!(timed_get(s.http, "/healthz").await.0, 200);

    for sock in &mut silent {
        let held = closed_within(sock, Duration::from_secs(4)).await;
        assert!(
            held.is_some(),
            "a client that never sent the preface was held"
        );
    }
    assert!(
        metric(
            &s,
            "tessera_connection_timeouts_total{listener=\"grpc\",reason=\"preface\"} "
        )
        .await
            >= 5
    );
    // And the port serves again.
    let token = s.access_token("carol").await.token;
    assert!(s.introspect(&token).await.unwrap().active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_never_finishes_gets_408() {
    let (s, _tmp) = start(|c| c.http_request_timeout = Duration::from_secs(1)).await;
    let mut sock = TcpStream::connect(s.http).await.unwrap();
    sock.write_all(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf))
        .await
        .expect("the server gave up on the body")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
    assert_eq!(
        metric(
            &s,
            "tessera_connection_timeouts_total{listener=\"http\",reason=\"request\"} "
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_responses_is_closed_when_idle() {
    let (s, _tmp) = start(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.header_timeout = Duration::from_secs(60);
        c.http_request_timeout = Duration::from_secs(60);
    })
    .await;
    // Pipelined JWKS requests whose answers are never read fill the socket buffers,
    // until the server can write no more.
    let mut sock = TcpStream::connect(s.http).await.unwrap();
    let one = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n";
    let burst = one.repeat(2000);
    let start = Instant::now();
    let sent = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if sock.write_all(&burst).await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(sent.is_ok(), "the server kept the stalled connection open");
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        metric(
            &s,
            "tessera_connection_timeouts_total{listener=\"http\",reason=\"idle\"} "
        )
        .await
            >= 1
    );
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_only() {
    let s = TestServer::start().await;
    assert_ne!(s.metrics, s.http);
    let (status, head, body) = s.metrics_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"));
    assert!(body.contains("tessera_introspect_total{result=\"inactive\",reason=\"signature\"}"));
    assert!(body.contains("tessera_connections_refused_total{listener=\"grpc\"}"));
    let (status, _, body) = s.http_get("/metrics").await;
    assert_eq!(status, 404);
    assert!(!body.contains("tessera_introspect_total"));
    // The metrics port serves nothing else.
    assert_eq!(s.metrics_get("/.well-known/jwks.json").await.0, 404);
}

#[tokio::test]
async fn an_oversized_oauth_body_is_an_rfc6749_json_413_not_cached() {
    let s = TestServer::start().await;
    let big = format!("grant_type=client_credentials&scope={}", "a".repeat(20_000));
    for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
        // With a Content-Length (refused before reading) and chunked (while reading).
        let declared = s.http_post(path, &[], &big).await;
        let chunked = s
            .http_raw(&format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                big.len()
            ))
            .await;
        for (how, (status, head, body)) in [("declared", declared), ("chunked", chunked)] {
            assert_eq!(status, 413, "{path} {how}");
            let head = head.to_ascii_lowercase();
            assert!(
                head.contains("content-type: application/json"),
                "{path} {how}: {head}"
            );
            assert!(
                head.contains("cache-control: no-store"),
                "{path} {how}: {head}"
            );
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"], "invalid_request", "{path} {how}");
            assert!(
                json["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("16384")
            );
        }
    }
}

/// A call the server cannot answer within `request_timeout` (here a revocation whose
/// write waits on a database lock held elsewhere) is answered `DEADLINE_EXCEEDED`, as
/// the README promises, once the limit has passed; calls answered at once are not
/// held to it. (tonic's own timeout answered `CANCELLED`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_unanswered_within_request_timeout_gets_deadline_exceeded() {
    let (s, _tmp) = start(|c| c.request_timeout = Duration::from_millis(300)).await;
    let token = s.access_token("dora").await.token;
    assert!(s.introspect(&token).await.unwrap().active);

    let (release, lock) = common::hold_write_lock(&s.data_dir, false).await;
    let t = Instant::now();
    let revoke = tessera::proto::RevokeRequest {
        token: token.clone(),
        ..Default::default()
    };
    let status = s
        .revoke(revoke)
        .await
        .expect_err("the write cannot commit while the lock is held");
    let took = t.elapsed();
    release.send(()).unwrap();
    lock.join().unwrap();

    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert_eq!(
        metric(
            &s,
            "tessera_grpc_requests_total{method=\"tessera.v1.TokenService/Revoke\",code=\"DEADLINE_EXCEEDED\"} "
        )
        .await,
        1
    );
}
