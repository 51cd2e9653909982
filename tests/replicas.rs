//! Many replicas on one PostgreSQL database: three `tessera serve` processes, each with
//! its own data dir, sharing one schema (and one master key and bootstrap admin key).
//! What one replica makes or revokes, the others honour within a second; a refresh
//! token redeemed on all three at once has one winner; a replica killed mid-burst
//! loses no acknowledged revocation.

mod common;

use std::time::{Duration, Instant};

use common::authed;
use common::child::Proc;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::key_service_client::KeyServiceClient;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, BumpTokenVersionRequest, ExchangeRequest, IntrospectRequest,
    IssueRequest, RefreshTokenGrant, RevokeRequest, RotateSigningKeyRequest,
};
use tonic::transport::Channel;

/// A fresh schema on the test database, its URL, and a shared master key and admin key.
struct Cluster {
    url: String,
    master: String,
    admin: String,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let url = common::pg::fresh_schema(&format!("replicas_{name}"));
        use base64::Engine;
        let master = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring_random::<32>());
        let (_, admin) = tessera::apikeys::generate("admin");
        Cluster {
            url,
            master,
            admin: admin.expose().to_string(),
            dirs: Vec::new(),
        }
    }

    /// Starts a replica on a data dir of its own (or on `dir` again).
    fn replica(&mut self, dir: Option<usize>) -> (Proc, usize) {
        let i = match dir {
            Some(i) => i,
            None => {
                self.dirs.push(tempfile::tempdir().unwrap());
                self.dirs.len() - 1
            }
        };
        let p = Proc::spawn_env(
            self.dirs[i].path(),
            &[
                ("TESSERA_DATABASE_URL", &self.url),
                ("TESSERA_MASTER_KEY", &self.master),
                ("TESSERA_BOOTSTRAP_ADMIN_KEY", &self.admin),
                ("TESSERA_LOG", "info"),
            ],
        );
        (p, i)
    }
}

fn ring_random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

async fn channel(p: &Proc) -> Channel {
    Channel::from_shared(format!("http://{}", p.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Whether `token` is active according to this replica (an error counts as no).
async fn active(tk: &mut TokenServiceClient<Channel>, token: &str, key: &str) -> bool {
    let req = IntrospectRequest {
        token: token.into(),
        token_type_hint: String::new(),
    };
    tk.introspect(authed(req, key))
        .await
        .is_ok_and(|r| r.into_inner().active)
}

/// Waits up to `limit` for `active(token) == want` on `tk`; returns how long it took.
async fn until(
    tk: &mut TokenServiceClient<Channel>,
    token: &str,
    key: &str,
    want: bool,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if active(tk, token, key).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not {} within {limit:?}",
            if want { "active" } else { "inactive" }
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn access(subject: &str, refresh: bool) -> IssueRequest {
    IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: subject.into(),
            audience: vec!["api".into()],
            scopes: vec!["read".into()],
            refresh_token: refresh,
            ..AccessTokenSpec::default()
        })),
    }
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    json["kid"].as_str().unwrap().to_string()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_makes_or_revokes_the_others_honour_within_a_second() {
    let mut cluster = Cluster::new("honour");
    let (a, _) = cluster.replica(None);
    let (b, _) = cluster.replica(None);
    let (c, _) = cluster.replica(None);
    let admin = cluster.admin.clone();
    let (mut ta, mut tb, mut tc) = (
        TokenServiceClient::new(channel(&a).await),
        TokenServiceClient::new(channel(&b).await),
        TokenServiceClient::new(channel(&c).await),
    );

    // The bootstrap admin key works everywhere, and was written once.
    let key = ta
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::ApiKey(ApiKeySpec {
                    owner: "team".into(),
                    name: "svc".into(),
                    environment: "test".into(),
                    scopes: vec!["tessera:issue".into(), "tessera:introspect".into()],
                    ..ApiKeySpec::default()
                })),
            },
            &admin,
        ))
        .await
        .expect("API key on A")
        .into_inner()
        .token;
    // An API key made on A works on B and C.
    for tk in [&mut tb, &mut tc] {
        until(tk, &key, &admin, true, SECOND).await;
        let t = tk.issue(authed(access("with-key", false), &key)).await;
        assert!(t.is_ok(), "A's key authenticates on another replica: {t:?}");
    }

    // A revocation acknowledged by A is honoured by B and C within 1 s.
    let t = ta
        .issue(authed(access("alice", false), &admin))
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(active(&mut tb, &t, &admin).await && active(&mut tc, &t, &admin).await);
    ta.revoke(authed(
        RevokeRequest {
            token: t.clone(),
            ..RevokeRequest::default()
        },
        &admin,
    ))
    .await
    .expect("revoke on A");
    until(&mut tb, &t, &admin, false, SECOND).await;
    until(&mut tc, &t, &admin, false, SECOND).await;

    // A version bump on B ends the subject's tokens on A and C.
    let t = tc
        .issue(authed(access("bob", false), &admin))
        .await
        .unwrap()
        .into_inner()
        .token;
    tb.bump_token_version(authed(
        BumpTokenVersionRequest {
            subject: "bob".into(),
            reason: "test".into(),
        },
        &admin,
    ))
    .await
    .expect("bump on B");
    until(&mut ta, &t, &admin, false, SECOND).await;
    until(&mut tc, &t, &admin, false, SECOND).await;

    // A signing-key rotation on C: A signs with the new key, and B verifies it.
    let old_kid = kid_of(&t);
    KeyServiceClient::new(channel(&c).await)
        .rotate_signing_key(authed(RotateSigningKeyRequest { rotate_now: true }, &admin))
        .await
        .expect("rotate on C");
    let deadline = Instant::now() + SECOND;
    loop {
        let t = ta
            .issue(authed(access("carol", false), &admin))
            .await
            .unwrap()
            .into_inner()
            .token;
        // A signs with the new key once it has heard of the rotation, and B verifies it.
        if kid_of(&t) != old_kid && active(&mut tb, &t, &admin).await {
            break;
        }
        assert!(Instant::now() < deadline, "rotation did not propagate");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in [a, b, c] {
        p.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_concurrent_redemptions_of_one_refresh_token_yield_one_winner() {
    let mut cluster = Cluster::new("redeem");
    let procs: Vec<Proc> = (0..3).map(|_| cluster.replica(None).0).collect();
    let admin = cluster.admin.clone();
    let mut clients = Vec::new();
    for p in &procs {
        clients.push(TokenServiceClient::new(channel(p).await));
    }
    let issued = clients[0]
        .issue(authed(access("dave", true), &admin))
        .await
        .unwrap()
        .into_inner();
    let refresh = issued.refresh_token.clone();
    assert!(!refresh.is_empty());
    let mut tasks = Vec::new();
    for i in 0..9 {
        let mut tk = clients[i % 3].clone();
        let (rt, key) = (refresh.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            let grant = Grant::RefreshToken(RefreshTokenGrant {
                refresh_token: rt,
                scopes: Vec::new(),
            });
            tk.exchange(authed(ExchangeRequest { grant: Some(grant) }, &key))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await.unwrap() {
            winners.push(r);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redemption wins");
    // The losers were replays: the family is revoked, on every replica.
    let won = &winners[0];
    for tk in clients.iter_mut() {
        until(tk, &won.refresh_token, &admin, false, SECOND).await;
        until(tk, &won.access_token, &admin, false, SECOND).await;
        until(tk, &issued.token, &admin, false, SECOND).await;
    }
    for p in procs {
        p.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_loses_no_acknowledged_revocation() {
    let mut cluster = Cluster::new("kill");
    let (a, a_dir) = cluster.replica(None);
    let (b, _) = cluster.replica(None);
    let admin = cluster.admin.clone();
    let mut ta = TokenServiceClient::new(channel(&a).await);
    let mut tokens = Vec::new();
    for i in 0..60 {
        let t = ta
            .issue(authed(access(&format!("user-{i}"), false), &admin))
            .await
            .unwrap()
            .into_inner()
            .token;
        tokens.push(t);
    }
    // Revoke concurrently on A and kill it part-way through.
    let mut tasks = Vec::new();
    for t in tokens.clone() {
        let mut tk = ta.clone();
        let key = admin.clone();
        tasks.push(tokio::spawn(async move {
            let req = RevokeRequest {
                token: t.clone(),
                ..RevokeRequest::default()
            };
            tk.revoke(authed(req, &key)).await.ok().map(|_| t)
        }));
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    a.kill_9().await;
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Some(t) = t.await.unwrap() {
            acknowledged.push(t);
        }
    }
    // B honours every acknowledged revocation; A, restarted, catches up too.
    let mut tb = TokenServiceClient::new(channel(&b).await);
    for t in &acknowledged {
        until(&mut tb, t, &admin, false, SECOND).await;
    }
    let (a, _) = cluster.replica(Some(a_dir));
    let mut ta = TokenServiceClient::new(channel(&a).await);
    for t in &acknowledged {
        assert!(!active(&mut ta, t, &admin).await);
    }
    // What was not acknowledged is revoked or live, but the same on both replicas.
    for t in &tokens {
        assert_eq!(
            active(&mut ta, t, &admin).await,
            active(&mut tb, t, &admin).await
        );
    }
    for p in [a, b] {
        p.terminate().await;
    }
}
