//! The shared database going away and coming back (PostgreSQL): the server talks to it
//! through a TCP relay this test can cut. While it is cut, writes answer UNAVAILABLE,
//! health says NOT_SERVING, and introspection answers from memory for at most
//! `max_staleness`, then fails closed; once it is back, everything recovers by itself.
//! A replica started against a database it cannot reach exits non-zero, naming it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, test_config};
use tessera::clock::Clock;
use tessera::config::DatabaseUrl;
use tessera::proto::RevokeRequest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::Code;

/// Relays TCP connections to PostgreSQL until cut; while cut, drops every open
/// connection and every new one.
struct Relay {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn serving(s: &TestServer) -> bool {
    let Ok(ch) = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let req = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    h.check(req).await.is_ok_and(|r| r.into_inner().status == 1)
}

async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `tessera serve` against `url` on a fresh data dir until it exits (these
/// tests expect it to refuse to start).
fn serve_against(url: &str) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--data-dir"])
        .arg(tmp.path())
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("TESSERA_DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_static_then_closed_while_the_database_is_away_and_recovery_after() {
    // The relay stands between the server and the test PostgreSQL, wherever that is.
    let pg = common::pg::server_addr();
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&pg)
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(upstream).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = common::pg::fresh_schema("outage");
    let url = url.replacen(&pg, &relay.addr.to_string(), 1);
    assert!(
        url.contains(&relay.addr.to_string()),
        "the server goes through the relay"
    );
    let mut cfg = test_config(tmp.path());
    cfg.database_url = Some(DatabaseUrl::Postgres(url));
    cfg.max_staleness = Duration::from_secs(3);
    let s = TestServer::start_with(cfg, Clock::system()).await;
    let token = s.access_token("alice").await.token;
    let other = s.access_token("bob").await.token;
    assert!(s.introspect(&token).await.unwrap().active);

    relay.set(false);
    let cut_at = Instant::now();
    // Fail-static: memory still answers, and still honours what it knew.
    assert!(s.introspect(&token).await.unwrap().active);
    // Writes cannot be acknowledged.
    let revoked = s
        .revoke(RevokeRequest {
            token: other.clone(),
            ..RevokeRequest::default()
        })
        .await;
    assert_eq!(revoked.unwrap_err().code(), Code::Unavailable);
    eventually(Duration::from_secs(10), "NOT_SERVING", async || {
        !serving(&s).await
    })
    .await;
    // Then closed: past max_staleness nothing is vouched for from memory.
    let stale = Duration::from_secs(3) + Duration::from_millis(500);
    tokio::time::sleep(stale.saturating_sub(cut_at.elapsed())).await;
    let err = s.introspect(&token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!err.message().contains("postgres"), "{err:?}");

    relay.set(true);
    eventually(Duration::from_secs(20), "SERVING again", async || {
        serving(&s).await
    })
    .await;
    eventually(Duration::from_secs(5), "introspection again", async || {
        s.introspect(&token).await.is_ok_and(|r| r.active)
    })
    .await;
    s.revoke(RevokeRequest {
        token: other.clone(),
        ..RevokeRequest::default()
    })
    .await
    .expect("writes work again");
    assert!(!s.introspect(&other).await.unwrap().active);
}

#[tokio::test]
async fn a_replica_started_against_an_unreachable_database_exits_naming_it() {
    // Nothing listens on port 1; the password must not be echoed.
    let out = serve_against("postgres://tessera:hunter2@127.0.0.1:1/tessera");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1/tessera"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_release_is_refused() {
    let url = common::pg::fresh_schema("newer");
    let bump = url.clone();
    tokio::task::spawn_blocking(move || {
        tessera::test_support::inspect(tessera::test_support::Location::Postgres(&bump), |db| {
            db.execute(
                "UPDATE schema_version SET version = 99",
                tessera::test_support::params![],
            )?;
            Ok(())
        })
    })
    .await
    .unwrap()
    .unwrap();
    let out = serve_against(&url);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer than this binary"), "{stderr}");
}
