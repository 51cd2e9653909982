//! Rate limits through the real server: a key's `rate_limit` (gRPC RESOURCE_EXHAUSTED
//! with RetryInfo, HTTP 429 with Retry-After) and the per-address throttle on failed
//! authentications.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestServer, authed, test_config};
use tessera::clock::Clock;
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{ApiKeySpec, IntrospectRequest, IssueRequest, ListApiKeysRequest, RateLimit};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const INTROSPECT: &str = "tessera:introspect";

fn limited(per_second: u32, burst: u32) -> ApiKeySpec {
    ApiKeySpec {
        name: "limited".into(),
        scopes: vec![INTROSPECT.into()],
        rate_limit: Some(RateLimit { per_second, burst }),
        ..ApiKeySpec::default()
    }
}

/// One authenticated call: Introspect of a token that is simply inactive.
async fn call(c: &mut TokenServiceClient<Channel>, key: &str) -> Result<(), Status> {
    let req = IntrospectRequest {
        token: "not-a-token".into(),
        token_type_hint: String::new(),
    };
    c.introspect(authed(req, key)).await.map(|_| ())
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_key_gets_its_rate_plus_burst_over_five_seconds() {
    let s = TestServer::start().await;
    let k = s.api_key_with(limited(50, 10)).await;
    let start = Instant::now();
    let end = start + Duration::from_secs(5);
    let mut tasks = Vec::new();
    // Several callers on separate connections: far more than 50 calls a second in all.
    for _ in 0..4 {
        let mut c = s.tokens().await;
        let key = k.token.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            while Instant::now() < end {
                match call(&mut c, &key).await {
                    Ok(()) => ok += 1,
                    Err(e) if e.code() == Code::ResourceExhausted => refused += 1,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
    }
    let expected = 50.0 * 5.0 + 10.0;
    assert!(
        (ok as f64 - expected).abs() <= expected * 0.10,
        "accepted {ok} in 5 s at 50/s burst 10 (expected {expected} ± 10 %), refused {refused}"
    );
    assert!(
        refused > ok,
        "the load must exceed the limit to test it ({refused} refused)"
    );
}

#[tokio::test]
async fn over_the_limit_is_resource_exhausted_with_a_sane_retry_info() {
    let s = TestServer::start().await;
    let k = s.api_key_with(limited(1, 2)).await;
    let mut c = s.tokens().await;
    call(&mut c, &k.token).await.unwrap();
    call(&mut c, &k.token).await.unwrap();
    let e = call(&mut c, &k.token).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        !e.message().contains(&k.token_id),
        "names no key: {}",
        e.message()
    );
    let delay = e
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo detail with a retry_delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "retry_delay {delay:?} at 1/s"
    );
    // Waiting as told is enough.
    tokio::time::sleep(delay + Duration::from_millis(20)).await;
    call(&mut c, &k.token).await.unwrap();
    let (_, _, metrics) = s.metrics_get("/metrics").await;
    assert!(
        metrics.contains("tessera_rate_limited_total{reason=\"key\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn keys_without_a_limit_and_other_keys_are_unaffected() {
    let s = TestServer::start().await;
    let limited_key = s.api_key_with(limited(1, 1)).await;
    let other_limited = s.api_key_with(limited(1, 1)).await;
    let free = s.api_key(&[INTROSPECT]).await;
    let mut c = s.tokens().await;
    call(&mut c, &limited_key.token).await.unwrap();
    assert_eq!(
        call(&mut c, &limited_key.token).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // Each key has its own bucket.
    call(&mut c, &other_limited.token).await.unwrap();
    for i in 0..300 {
        call(&mut c, &free.token)
            .await
            .unwrap_or_else(|e| panic!("call {i} of a key without a limit: {e:?}"));
    }
}

#[tokio::test]
async fn http_over_the_limit_is_429_with_retry_after() {
    let s = TestServer::start().await;
    let k = s.api_key_with(limited(1, 1)).await;
    let auth = basic(&k.token_id, &k.token);
    let hdr = [("Authorization", auth.as_str())];
    let post = || s.http_post("/oauth2/introspect", &hdr, "token=x");
    let (code, _, body) = post().await;
    assert_eq!(code, 200, "{body}");
    let (code, head, body) = post().await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");
    assert_eq!(header(&head, "cache-control"), Some("no-store"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "slow_down", "{body}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("rate limit")
    );
    // The same key over gRPC shares the bucket: still over it.
    let mut c = s.tokens().await;
    assert_eq!(
        call(&mut c, &k.token).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn the_limit_is_listed_kept_across_restart_and_inherited_on_rotation() {
    let s = TestServer::start().await;
    let k = s.api_key_with(limited(1, 5)).await;
    let s = s.restart().await;
    let mut c = s.tokens().await;
    // The limit survived the restart (slow rates: a loaded machine cannot refill the
    // bucket between two calls here).
    for _ in 0..5 {
        call(&mut c, &k.token).await.unwrap();
    }
    assert_eq!(
        call(&mut c, &k.token).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    let rotated = s
        .api_key_with(ApiKeySpec {
            rotate_from: k.token_id.clone(),
            ..ApiKeySpec::default()
        })
        .await;
    let listed = c
        .list_api_keys(authed(ListApiKeysRequest::default(), &s.admin_key))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    let limit_of = |id: &str| listed.iter().find(|x| x.key_id == id).unwrap().rate_limit;
    let want = Some(RateLimit {
        per_second: 1,
        burst: 5,
    });
    assert_eq!(limit_of(&k.token_id), want);
    assert_eq!(
        limit_of(&rotated.token_id),
        want,
        "inherited by the successor"
    );
    // The old key, still inside its overlap, keeps its (spent) bucket: rotating is
    // no way around a limit.
    assert_eq!(
        call(&mut c, &k.token).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // A rotation that names a limit sets it.
    let rerated = s
        .api_key_with(ApiKeySpec {
            rotate_from: rotated.token_id.clone(),
            rate_limit: Some(RateLimit {
                per_second: 1,
                burst: 3,
            }),
            ..ApiKeySpec::default()
        })
        .await;
    for _ in 0..3 {
        call(&mut c, &rerated.token).await.unwrap();
    }
    assert_eq!(
        call(&mut c, &rerated.token).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn an_out_of_range_limit_is_invalid_argument() {
    let s = TestServer::start().await;
    let mut c = s.tokens().await;
    for (name, per_second, burst) in [
        ("zero rate", 0, 5),
        ("rate too high", 1_000_001, 5),
        ("burst too high", 5, 1_000_001),
    ] {
        let mut spec = limited(per_second, burst);
        spec.owner = "team-test".into();
        spec.environment = "test".into();
        let req = IssueRequest {
            credential: Some(Credential::ApiKey(spec)),
        };
        let e = c.issue(authed(req, &s.admin_key)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(
            e.message().contains("rate_limit"),
            "{name}: {}",
            e.message()
        );
    }
}

/// A raw HTTP/1.1 request sent from `source` (another loopback address stands for
/// another client).
async fn http_from(
    source: std::net::IpAddr,
    to: SocketAddr,
    path: &str,
    auth: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source, 0)).unwrap();
    let mut st = sock.connect(to).await.unwrap();
    let form = "token=x";
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    st.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    st.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        head.to_string(),
    )
}

#[tokio::test]
async fn failed_authentications_throttle_the_address_not_the_key_and_release() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path());
    cfg.auth_failure_limit = 5;
    cfg.auth_failure_window = Duration::from_secs(60);
    cfg.auth_failure_block = Duration::from_secs(2);
    let s = TestServer::start_with(cfg, Clock::system()).await;
    let good = s.api_key(&[INTROSPECT]).await;
    let mut c = s.tokens().await;

    // Guesses at the good key's secret from 127.0.0.1: wrong secret, right id.
    let body = format!("tsk_test_{}_{}", good.token_id, "A".repeat(43));
    let check = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(&ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref()[..4]);
    let guess = format!("{body}{check}");
    assert!(
        tessera::apikeys::parse(&guess).is_some(),
        "a well-formed guess"
    );
    for i in 0..5 {
        let e = call(&mut c, &guess).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "guess {i}: {e:?}");
    }
    // Now 127.0.0.1 is refused before any key is checked, the good one included.
    let e = call(&mut c, &good.token).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("failed authentications"),
        "{}",
        e.message()
    );
    let delay = e.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    let auth = basic(&good.token_id, &good.token);
    let (code, head) = http_from([127, 0, 0, 1].into(), s.http, "/oauth2/introspect", &auth).await;
    assert_eq!(code, 429, "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");

    // The key itself is not locked out: its owner calling from another address
    // (127.0.0.2 is loopback too) is served meanwhile.
    let (code, head) = http_from([127, 0, 0, 2].into(), s.http, "/oauth2/introspect", &auth).await;
    assert_eq!(code, 200, "{head}");

    // And the block ends: the good key works again from 127.0.0.1.
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    call(&mut c, &good.token).await.unwrap();
    // A good call does not count against the address; a new failure starts a new count.
    let e = call(&mut c, &guess).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    call(&mut c, &good.token).await.unwrap();

    let (_, _, metrics) = s.metrics_get("/metrics").await;
    assert!(
        metrics.contains("tessera_rate_limited_total{reason=\"address\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_the_throttle_off_failures_are_only_unauthenticated() {
    // The harness turns the throttle off; many bad keys stay UNAUTHENTICATED.
    let s = TestServer::start().await;
    let good = s.api_key(&[INTROSPECT]).await;
    let mut c = s.tokens().await;
    for _ in 0..50 {
        let e = call(&mut c, "tsk_test_nope").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    call(&mut c, &good.token).await.unwrap();
}
