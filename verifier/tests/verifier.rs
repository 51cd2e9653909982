//! The verifier against the real server: tokens Tessera issued, hostile tokens made
//! with its real signing key, revocations pushed over the real `WatchRevocations`
//! stream, and a severed connection (a TCP relay the test cuts).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::mint::{Minter, decode};
use common::{TestServer, authed};
use ring::signature::Ed25519KeyPair;
use serde_json::{Value, json};
use tessera::proto::{BumpTokenVersionRequest, RevokeRequest, RotateSigningKeyRequest};
use tessera_verifier::{Reason, RejectReason, VerifiedClaims, Verifier, VerifierConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;

const ISSUER: &str = "https://tessera.test";

/// A real server whose revocation stream heartbeats every 200 ms, so a resumed
/// follower with nothing to replay hears from it quickly.
async fn server() -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(tmp.path());
    cfg.watch_heartbeat = Duration::from_millis(200);
    (
        TestServer::start_with(cfg, tessera::clock::Clock::system()).await,
        tmp,
    )
}

/// A verifier following `s` through `grpc` (the server itself, or a relay to it).
async fn verifier_via(
    s: &TestServer,
    grpc: SocketAddr,
    tune: impl FnOnce(&mut VerifierConfig),
) -> Verifier {
    let key = s.api_key(&["tessera:introspect"]).await.token;
    let mut cfg = VerifierConfig::new(
        format!("http://{grpc}"),
        format!("http://{}/.well-known/jwks.json", s.http),
        key,
        ISSUER,
    );
    cfg.jwks_min_interval = Duration::from_millis(200);
    cfg.reconnect_min = Duration::from_millis(20);
    cfg.reconnect_max = Duration::from_millis(200);
    cfg.clock = s.clock.clone();
    tune(&mut cfg);
    let v = Verifier::start(cfg).await.expect("verifier starts");
    assert!(v.ready(Duration::from_secs(10)).await, "no snapshot");
    v
}

async fn verifier(s: &TestServer) -> Verifier {
    verifier_via(s, s.grpc, |_| {}).await
}

/// Polls `f` until it holds or `within` passes.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

async fn revoke(s: &TestServer, token: &str) {
    s.tokens()
        .await
        .revoke(authed(
            RevokeRequest {
                token: token.into(),
                ..RevokeRequest::default()
            },
            &s.admin_key,
        ))
        .await
        .expect("revoked");
}

#[tokio::test]
async fn accepts_what_introspect_accepts_with_the_same_claims() {
    let (s, _tmp) = server().await;
    let v = verifier(&s).await;
    let issued = s.access_token("alice").await;
    let seen = s.introspect(&issued.token).await.expect("introspect");
    assert!(seen.active);
    let claims = v.is_active(&issued.token).expect("active");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.jti, issued.token_id);
    assert_eq!(claims.jti, seen.token_id);
    assert_eq!(claims.aud, seen.audience);
    assert!(claims.has_scope("read:payments"));
    // The second answer comes from the cache and is the same.
    assert_eq!(
        v.is_active(&issued.token).expect("cached").jti,
        issued.token_id
    );
}

#[tokio::test]
async fn honours_a_revocation_pushed_after_the_token_was_accepted() {
    let (s, _tmp) = server().await;
    let v = verifier(&s).await;
    let t = s.access_token("alice").await.token;
    let other = s.access_token("alice").await.token;
    assert!(v.is_active(&t).is_ok());
    assert!(v.is_active(&other).is_ok());

    revoke(&s, &t).await;
    assert!(
        eventually(Duration::from_secs(2), || v.is_active(&t).err()
            == Some(Reason::Inactive(RejectReason::Revoked)))
        .await,
        "revocation not seen: {:?}",
        v.is_active(&t)
    );
    assert!(v.is_active(&other).is_ok(), "only the revoked token goes");
}

#[tokio::test]
async fn honours_a_token_version_bump() {
    let (s, _tmp) = server().await;
    let v = verifier(&s).await;
    let t = s.access_token("bob").await.token;
    let carol = s.access_token("carol").await.token;
    assert!(v.is_active(&t).is_ok());
    s.tokens()
        .await
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "bob".into(),
                reason: "log out everywhere".into(),
            },
            &s.admin_key,
        ))
        .await
        .expect("bumped");
    assert!(
        eventually(Duration::from_secs(2), || v.is_active(&t).err()
            == Some(Reason::Inactive(RejectReason::OldVersion)))
        .await
    );
    assert!(v.is_active(&carol).is_ok());
    // A token issued after the bump carries the new version and is live.
    let fresh = s.access_token("bob").await.token;
    assert!(v.is_active(&fresh).is_ok());
}

/// A TCP relay to `upstream` that the test can cut (every connection dropped, new
/// ones refused) and restore.
struct Relay {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, rx) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    continue; // dropped: the connection is refused
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test]
async fn fails_closed_when_the_stream_is_gone_past_max_staleness() {
    let (s, _tmp) = server().await;
    let relay = Relay::start(s.grpc).await;
    let v = verifier_via(&s, relay.addr, |c| {
        c.max_staleness = Duration::from_millis(1500)
    })
    .await;
    let t = s.access_token("alice").await.token;
    assert!(v.is_active(&t).is_ok());

    relay.cut();
    // Once the last heartbeat is older than max_staleness, nothing is accepted ...
    assert!(
        eventually(Duration::from_secs(5), || v.is_active(&t).err()
            == Some(Reason::Stale))
        .await,
        "still accepting with the stream gone"
    );
    // ... not even a token that was live, and it stays that way while cut off.
    assert!(!v.is_fresh());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v.is_active(&t).err(), Some(Reason::Stale));

    // Back online: fresh again once the follower has reconnected.
    relay.restore();
    assert!(eventually(Duration::from_secs(5), || v.is_active(&t).is_ok()).await);
}

#[tokio::test]
async fn fails_closed_when_tessera_stops() {
    let (mut s, _tmp) = server().await;
    let v = verifier_via(&s, s.grpc, |c| {
        c.max_staleness = Duration::from_millis(1500)
    })
    .await;
    let t = s.access_token("alice").await.token;
    assert!(v.is_active(&t).is_ok());
    s.stop().await;
    assert!(
        eventually(Duration::from_secs(5), || v.is_active(&t).err()
            == Some(Reason::Stale))
        .await
    );
}

#[tokio::test]
async fn resumes_after_a_disconnect_and_sees_what_was_revoked_meanwhile() {
    let (s, _tmp) = server().await;
    let relay = Relay::start(s.grpc).await;
    let v = verifier_via(&s, relay.addr, |_| {}).await;
    let t = s.access_token("alice").await.token;
    let kept = s.access_token("alice").await.token;
    assert!(v.is_active(&t).is_ok());
    let before = v.last_sequence();

    relay.cut();
    revoke(&s, &t).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Cut off, the verifier has not heard yet (its view is still within max_staleness).
    assert!(v.is_active(&t).is_ok());

    relay.restore();
    assert!(
        eventually(Duration::from_secs(5), || v.is_active(&t).err()
            == Some(Reason::Inactive(RejectReason::Revoked)))
        .await,
        "missed revocation not replayed"
    );
    assert!(v.last_sequence() > before);
    assert!(v.is_active(&kept).is_ok());
}

#[tokio::test]
async fn picks_up_a_rotated_key_on_its_first_unknown_kid() {
    let (s, _tmp) = server().await;
    // A long timer: only the unknown kid can trigger the refetch.
    let v = verifier_via(&s, s.grpc, |c| c.jwks_refresh = Duration::from_secs(3600)).await;
    let fetches = v.jwks_fetches();
    s.keys()
        .await
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: true },
            &s.admin_key,
        ))
        .await
        .expect("rotated");
    let t = s.access_token("alice").await.token;
    assert!(s.introspect(&t).await.unwrap().active);
    assert!(
        eventually(Duration::from_secs(3), || v.is_active(&t).is_ok()).await,
        "{:?}",
        v.is_active(&t)
    );
    assert!(v.jwks_fetches() > fetches);

    // A flood of unknown kids costs at most one fetch per jwks_min_interval.
    let before = v.jwks_fetches();
    let bogus = Minter::active(&s).tweak(&t, |h, _| h["kid"] = "nope".into());
    for _ in 0..200 {
        assert!(v.is_active(&bogus).is_err());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        v.jwks_fetches() - before <= 3,
        "{}",
        v.jwks_fetches() - before
    );
}

#[tokio::test]
async fn interceptor_guards_a_tonic_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (s, _tmp) = server().await;
    let v = verifier(&s).await;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Behind the layer, the handler side finds the claims in the extensions.
    let guarded =
        tonic::service::interceptor::InterceptedService::new(health, |req: tonic::Request<()>| {
            match req.extensions().get::<VerifiedClaims>() {
                Some(c) if c.0.sub == "alice" => Ok(req),
                _ => Err(tonic::Status::internal("claims missing behind the layer")),
            }
        });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(v.layer())
            .add_service(guarded)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = HealthClient::new(ch);
    let req = || HealthCheckRequest {
        service: String::new(),
    };

    let none = c.check(req()).await.expect_err("no token");
    assert_eq!(none.code(), Code::Unauthenticated);
    let t = s.access_token("alice").await.token;
    c.check(authed(req(), &t)).await.expect("live token passes");
    let junk = c
        .check(authed(req(), "not.a.token"))
        .await
        .expect_err("junk");
    assert_eq!(junk.code(), Code::Unauthenticated);
    assert!(!junk.message().contains("not.a.token"));

    revoke(&s, &t).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked = c.check(authed(req(), &t)).await.expect_err("revoked");
    assert_eq!(revoked.code(), Code::Unauthenticated);
}

// ---------------------------------------------------------------------------------
// The hostile table: the verifier must never accept what Introspect rejects.
// ---------------------------------------------------------------------------------

fn b64(b: impl AsRef<[u8]>) -> String {
    B64.encode(b)
}

fn set(obj: &mut Value, name: &str, value: Option<Value>) {
    let o = obj.as_object_mut().unwrap();
    match value {
        Some(v) => {
            o.insert(name.into(), v);
        }
        None => {
            o.remove(name);
        }
    }
}

/// Rows made from a genuine token `t0` of alice: (name, token).
fn hostile_rows(s: &TestServer, t0: &str) -> Vec<(String, String)> {
    let m = Minter::active(s);
    let now = s.clock.now();
    let (h0, p0) = decode(t0);
    let parts: Vec<&str> = t0.split('.').collect();
    let (h64, p64, s64) = (parts[0], parts[1], parts[2]);
    let claim = |name: &str, v: Option<Value>| m.tweak(t0, |_, p| set(p, name, v));
    let header = |name: &str, v: Option<Value>| m.tweak(t0, |h, _| set(h, name, v));

    // An attacker's own Ed25519 key, using the real kid.
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let attacker = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let input = format!("{h64}.{p64}");
    let forged = format!("{input}.{}", b64(attacker.sign(input.as_bytes())));

    let mut flipped_sig = s64.to_string();
    let last = flipped_sig.pop().unwrap();
    flipped_sig.push(if last == 'A' { 'Q' } else { 'A' });

    let mut p_other = p0.clone();
    p_other["sub"] = "mallory".into();

    let mut rows: Vec<(&str, String)> = vec![
        ("genuine token (baseline)", t0.to_string()),
        ("A1 alg none, empty signature", {
            let mut h = h0.clone();
            h["alg"] = "none".into();
            format!("{}.{p64}.", b64(h.to_string()))
        }),
        ("A1 alg none, signature kept", {
            let mut h = h0.clone();
            h["alg"] = "none".into();
            format!("{}.{p64}.{s64}", b64(h.to_string()))
        }),
        (
            "A2 alg HS256 with the real key's signature",
            header("alg", Some("HS256".into())),
        ),
        (
            "A2 alg ES256 on an Ed25519 key",
            header("alg", Some("ES256".into())),
        ),
        ("A3 attacker's key, real kid", forged),
        (
            "A3 tampered signature",
            format!("{h64}.{p64}.{flipped_sig}"),
        ),
        (
            "A3 payload swapped, signature kept",
            format!("{h64}.{}.{s64}", b64(p_other.to_string())),
        ),
        (
            "A3 truncated signature",
            format!("{h64}.{p64}.{}", &s64[..s64.len() / 2]),
        ),
        ("A4 unknown kid", header("kid", Some("no-such-kid".into()))),
        (
            "A4 kid path traversal",
            header("kid", Some("../../etc/passwd".into())),
        ),
        (
            "A5 embedded jwk",
            header(
                "jwk",
                Some(json!({"kty": "OKP", "crv": "Ed25519", "x": b64([0u8; 32])})),
            ),
        ),
        (
            "A5 jku",
            header("jku", Some("http://evil.example/jwks".into())),
        ),
        ("A6 crit", header("crit", Some(json!(["exp"])))),
        ("A6 typ JWT", header("typ", Some("JWT".into()))),
        ("A6 no typ", header("typ", None)),
        ("A7 expired", claim("exp", Some((now - 10).into()))),
        ("A7 exp is now", claim("exp", Some(now.into()))),
        (
            "A7 nbf in the future",
            claim("nbf", Some((now + 600).into())),
        ),
        (
            "A7 iat in the future",
            claim("iat", Some((now + 600).into())),
        ),
        (
            "A7 exp as a string",
            claim("exp", Some(json!((now + 600).to_string()))),
        ),
        ("A7 no exp", claim("exp", None)),
        (
            "A7 lifetime beyond any minted",
            claim("exp", Some((now + 30 * 86_400).into())),
        ),
        (
            "A8 wrong issuer",
            claim("iss", Some("https://evil.example".into())),
        ),
        (
            "A8 issuer with trailing slash",
            claim("iss", Some(format!("{ISSUER}/").into())),
        ),
        ("A8 no jti", claim("jti", None)),
        (
            "A8 subject with a zero-width space",
            claim("sub", Some("alice\u{200b}".into())),
        ),
        ("A9 four segments", format!("{t0}.AAAA")),
        ("A9 two segments", format!("{h64}.{p64}")),
        ("A9 padding on the signature", format!("{t0}==")),
        ("A9 non-ASCII", format!("{t0}é")),
        ("A9 whitespace inside", format!("{h64}. {p64}.{s64}")),
        ("A9 oversize", format!("{h64}.{}.{s64}", "A".repeat(9000))),
        ("A10 duplicate sub in the payload", {
            let text = p0.to_string();
            let dup = format!("{{\"sub\":\"mallory\",{}", &text[1..]);
            m.sign_raw(h0.to_string().as_bytes(), dup.as_bytes())
        }),
        (
            "A10 payload not an object",
            m.sign_raw(h0.to_string().as_bytes(), b"[1,2]"),
        ),
        ("A10 header with a BOM", {
            let mut bytes = "\u{feff}".as_bytes().to_vec();
            bytes.extend_from_slice(h0.to_string().as_bytes());
            m.sign_raw(&bytes, p0.to_string().as_bytes())
        }),
        ("A11 an opaque string", "hello".to_string()),
        ("A11 three empty segments", "..".to_string()),
    ];
    rows.retain(|(_, t)| !t.is_empty());
    rows.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

#[tokio::test]
async fn hostile_tokens_get_the_same_answer_from_the_verifier_and_introspect() {
    let (s, _tmp) = server().await;
    let v = verifier(&s).await;
    let t0 = s.access_token("alice").await.token;
    let rows = hostile_rows(&s, &t0);
    assert!(rows.len() >= 15);
    let mut failures = Vec::new();
    let mut accepted = 0;
    for (name, token) in &rows {
        let introspect = matches!(s.introspect(token).await, Ok(r) if r.active);
        let verifier = v.is_active(token).is_ok();
        if introspect != verifier {
            failures.push(format!(
                "{name}: introspect active={introspect}, verifier active={verifier} ({:?})",
                v.is_active(token).err()
            ));
        }
        accepted += usize::from(verifier);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(accepted, 1, "only the baseline is live");

    // And once revoked, the baseline is inactive on both sides too.
    revoke(&s, &t0).await;
    assert!(eventually(Duration::from_secs(2), || v.is_active(&t0).is_err()).await);
    assert!(!s.introspect(&t0).await.unwrap().active);
}
