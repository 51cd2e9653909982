//! Revocation propagation: how long after `Revoke` is acknowledged every
//! `WatchRevocations` subscriber has the event. Drives a running Tessera.
//!
//! ```text
//! cargo run --release --example propagation -- --addr http://127.0.0.1:50051 \
//!     --key-file tessera-data/admin.key --subscribers 100 --revocations 1000
//! ```
//!
//! Opens `--subscribers` streams (each on its own HTTP/2 connection unless
//! `--shared-connection`, as separate services would), waits for every snapshot to end,
//! then revokes `--revocations` freshly issued access tokens, `--in-flight` at a time.
//! Each stream notes when each revoked jti arrives; every (revocation, subscriber)
//! pair is one sample of *arrival − acknowledgement*. An event can arrive before the
//! revoker reads its answer (the store broadcasts a commit before answering): those
//! samples count as 0 and their share is printed. Exits non-zero if any subscriber
//! misses any revocation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tessera::proto::issue_request::Credential;
use tessera::proto::revocation_event::Event;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, IssueRequest, RevocationEvent, RevokeRequest,
    WatchRevocationsRequest,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Streaming};

#[derive(Parser)]
#[command(about = "Measure Revoke-acknowledged → seen by every WatchRevocations subscriber")]
struct Args {
    /// gRPC address of the server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// File holding an admin API key (the bootstrap `<data dir>/admin.key`).
    #[arg(long, default_value = "tessera-data/admin.key")]
    key_file: PathBuf,
    /// Streams watching revocations.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Access tokens revoked while measuring.
    #[arg(long, default_value_t = 1000)]
    revocations: usize,
    /// Revoke calls in flight at once (1: each waits for the previous answer).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Put every stream on one HTTP/2 connection instead of one connection each.
    #[arg(long)]
    shared_connection: bool,
    /// The target, for the verdict line (milliseconds, p99).
    #[arg(long, default_value_t = 50.0)]
    target_p99_ms: f64,
}

fn bearer(key: &str) -> anyhow::Result<AsciiMetadataValue> {
    Ok(format!("Bearer {key}").parse()?)
}

fn authed<T>(msg: T, key: &AsciiMetadataValue) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", key.clone());
    r
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Issues `n` access tokens, 16 calls in flight: (token, jti) in order.
async fn issue_tokens(
    ch: &Channel,
    admin: &AsciiMetadataValue,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (mut client, admin, next) = (
            TokenServiceClient::new(ch.clone()),
            admin.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, tonic::Status>(out);
                }
                let spec = AccessTokenSpec {
                    subject: format!("propagation-{i}"),
                    audience: vec!["orders-api".into()],
                    scopes: vec!["read:orders".into()],
                    ..AccessTokenSpec::default()
                };
                let r = client
                    .issue(authed(
                        IssueRequest {
                            credential: Some(Credential::AccessToken(spec)),
                        },
                        &admin,
                    ))
                    .await?
                    .into_inner();
                out.push((i, r.token, r.token_id));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _, _)| *i);
    Ok(all.into_iter().map(|(_, t, j)| (t, j)).collect())
}

/// Reads a fresh stream up to its `snapshot_done`.
async fn through_snapshot(st: &mut Streaming<RevocationEvent>) -> anyhow::Result<()> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), st.message())
            .await
            .map_err(|_| anyhow::anyhow!("no snapshot_done within 30 s"))??
            .ok_or_else(|| anyhow::anyhow!("stream ended during the snapshot"))?;
        if matches!(ev.event, Some(Event::SnapshotDone(_))) {
            return Ok(());
        }
    }
}

/// Follows one stream until it has seen every revoked jti; returns, per revocation
/// (by index), when it arrived here.
async fn follow(
    mut st: Streaming<RevocationEvent>,
    index: Arc<HashMap<String, usize>>,
) -> Vec<Option<Instant>> {
    let mut seen = vec![None; index.len()];
    let mut left = index.len();
    while left > 0 {
        let Ok(Some(ev)) = st.message().await else {
            break;
        };
        // The clock is read first, before any bookkeeping of this process.
        let at = Instant::now();
        if let Some(Event::RevokedTokenId(r)) = &ev.event
            && let Some(&i) = index.get(&r.jti)
            && seen[i].is_none()
        {
            seen[i] = Some(at);
            left -= 1;
        }
    }
    seen
}

/// Value at quantile `q` of sorted microseconds.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn line(what: &str, sorted: &[u64]) -> String {
    format!(
        "{what}: p50 {}  p90 {}  p99 {}  max {}",
        ms(quantile(sorted, 0.50)),
        ms(quantile(sorted, 0.90)),
        ms(quantile(sorted, 0.99)),
        ms(*sorted.last().unwrap_or(&0)),
    )
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.subscribers > 0 && args.revocations > 0 && args.in_flight > 0,
        "--subscribers, --revocations and --in-flight must be at least 1"
    );
    let admin = std::fs::read_to_string(&args.key_file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.key_file.display()))?;
    let admin = bearer(admin.trim())?;
    let ch = connect(&args.addr).await?;

    let watcher = TokenServiceClient::new(ch.clone())
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::ApiKey(ApiKeySpec {
                    owner: "bench".into(),
                    name: "propagation".into(),
                    environment: "bench".into(),
                    scopes: vec!["tessera:introspect".into()],
                    ..ApiKeySpec::default()
                })),
            },
            &admin,
        ))
        .await?
        .into_inner()
        .token;
    let watcher = bearer(&watcher)?;
    let tokens = issue_tokens(&ch, &admin, args.revocations).await?;
    let index: Arc<HashMap<String, usize>> = Arc::new(
        tokens
            .iter()
            .enumerate()
            .map(|(i, (_, jti))| (jti.clone(), i))
            .collect(),
    );
    anyhow::ensure!(index.len() == tokens.len(), "two tokens share a jti");

    let mut followers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let sub = if args.shared_connection {
            ch.clone()
        } else {
            connect(&args.addr).await?
        };
        let mut st = TokenServiceClient::new(sub)
            .watch_revocations(authed(
                WatchRevocationsRequest { after_sequence: 0 },
                &watcher,
            ))
            .await?
            .into_inner();
        through_snapshot(&mut st).await?;
        followers.push(tokio::spawn(follow(st, index.clone())));
    }
    eprintln!(
        "propagation: {} subscribers past their snapshot ({}); revoking {} tokens, {} in flight",
        args.subscribers,
        if args.shared_connection {
            "one connection"
        } else {
            "one connection each"
        },
        args.revocations,
        args.in_flight
    );

    // (sent, acknowledged) per revocation.
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let mut revokers = Vec::new();
    for _ in 0..args.in_flight {
        let (mut client, admin, tokens, next) = (
            TokenServiceClient::new(ch.clone()),
            admin.clone(),
            tokens.clone(),
            next.clone(),
        );
        revokers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((token, _)) = tokens.get(i) else {
                    return Ok::<_, tonic::Status>(out);
                };
                let req = RevokeRequest {
                    token: token.clone(),
                    ..RevokeRequest::default()
                };
                let sent = Instant::now();
                client.revoke(authed(req, &admin)).await?;
                out.push((i, sent, Instant::now()));
            }
        }));
    }
    let mut calls = vec![None; tokens.len()];
    for r in revokers {
        for (i, sent, acked) in r.await?? {
            calls[i] = Some((sent, acked));
        }
    }

    let mut after_ack = Vec::with_capacity(tokens.len() * args.subscribers);
    let mut after_send = Vec::with_capacity(after_ack.capacity());
    let (mut before_ack, mut missing) = (0usize, 0usize);
    // Everything was acknowledged already: what is not here within 30 s is lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for f in followers {
        let seen = match tokio::time::timeout_at(deadline, f).await {
            Ok(seen) => seen?,
            Err(_) => {
                missing += tokens.len();
                continue;
            }
        };
        for (i, at) in seen.into_iter().enumerate() {
            let (Some(at), Some((sent, acked))) = (at, calls[i]) else {
                missing += 1;
                continue;
            };
            if at < acked {
                before_ack += 1;
            }
            after_ack.push(at.saturating_duration_since(acked).as_micros() as u64);
            after_send.push(at.saturating_duration_since(sent).as_micros() as u64);
        }
    }
    let mut round_trip: Vec<u64> = calls
        .iter()
        .flatten()
        .map(|(s, a)| a.duration_since(*s).as_micros() as u64)
        .collect();
    after_ack.sort_unstable();
    after_send.sort_unstable();
    round_trip.sort_unstable();

    let samples = after_ack.len();
    println!(
        "{} revocations x {} subscribers = {samples} samples, {missing} missing",
        tokens.len(),
        args.subscribers
    );
    if samples == 0 {
        return Ok(false);
    }
    println!("{}", line("acknowledged -> seen", &after_ack));
    println!(
        "  seen before the acknowledgement reached the revoker (counted as 0): {:.1} %",
        100.0 * before_ack as f64 / samples as f64
    );
    println!("{}", line("sent -> seen        ", &after_send));
    println!("{}", line("Revoke round trip   ", &round_trip));
    let p99 = quantile(&after_ack, 0.99);
    let met = missing == 0 && (p99 as f64) < args.target_p99_ms * 1000.0;
    println!(
        "target p99 < {} ms: {}",
        args.target_p99_ms,
        if met { "met" } else { "NOT met" }
    );
    // One line for scripts.
    println!(
        "RESULT subscribers={} revocations={} in_flight={} samples={samples} missing={missing} p50_us={} p90_us={} p99_us={} max_us={} before_ack={before_ack} send_p99_us={} revoke_p50_us={} revoke_p99_us={}",
        args.subscribers,
        tokens.len(),
        args.in_flight,
        quantile(&after_ack, 0.50),
        quantile(&after_ack, 0.90),
        p99,
        after_ack.last().unwrap_or(&0),
        quantile(&after_send, 0.99),
        quantile(&round_trip, 0.50),
        quantile(&round_trip, 0.99),
    );
    Ok(missing == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("propagation: {e:#}");
            ExitCode::FAILURE
        }
    }
}
