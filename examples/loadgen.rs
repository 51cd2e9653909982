//! Load generator: drives a running Tessera over gRPC and reports requests/s,
//! latency percentiles, errors, and the server's CPU per request and peak RSS (read
//! from its `/metrics`).
//!
//! ```text
//! cargo run --release --example loadgen -- --scenario all --rounds 3
//! cargo run --release --example loadgen -- --scenario health,introspect-hot
//! cargo run --release --example loadgen -- --addr http://127.0.0.1:50051 \
//!     --key-file tessera-data/admin.key --scenario introspect-hot --concurrency 64 --duration 10s
//! ```
//!
//! `health` (`grpc.health.v1.Health/Check`) is the empty-RPC baseline: `--scenario all`
//! runs it first and reports every other scenario as a ratio of it. The key must hold
//! `tessera:admin` (the bootstrap key in `<data dir>/admin.key` does). Every scenario
//! exits non-zero on any error; a server without `Exchange` answers UNIMPLEMENTED for
//! `client-credentials` and `refresh`, and that is said plainly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, ClientCredentialsGrant, ExchangeRequest, IntrospectRequest,
    IssueRequest, RateLimit, RefreshTokenGrant, RevokeRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Parser, Debug)]
#[command(about = "Drive a running Tessera with gRPC load and report throughput and latency")]
struct Args {
    /// gRPC address of the server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Metrics address of the server (`metrics_addr`, for /metrics).
    #[arg(long, alias = "http", default_value = "http://127.0.0.1:9464")]
    metrics: String,
    /// File holding an admin API key; `TESSERA_API_KEY` is used instead when set.
    #[arg(long, default_value = "tessera-data/admin.key")]
    key_file: PathBuf,
    /// What to send: one scenario, a comma-separated list, or `all`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Scenario>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured time per scenario (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before each measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Cap on total requests/s (for soak runs); unlimited when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Tokens issued up front for `introspect-cold`; the run stops early when used up.
    #[arg(long, default_value_t = 60_000)]
    cold_pool: usize,
    /// Run the scenarios this many times (health first in each round). Ratios to
    /// health are taken within a round and the median round is reported, so load
    /// from neighbours on a shared machine drifts out of the comparison.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// grpc.health.v1.Health/Check: the empty-RPC baseline.
    Health,
    /// Introspect access tokens already seen (served from the verified-token cache).
    IntrospectHot,
    /// Introspect access tokens never seen before (full signature verification).
    IntrospectCold,
    /// Introspect an API key.
    IntrospectApikey,
    /// `introspect-apikey`, but by a caller key holding only `tessera:introspect`
    /// and no rate limit: the baseline of `introspect-apikey-limited`.
    IntrospectApikeyUnlimited,
    /// `introspect-apikey-unlimited`, but the caller's key has a rate limit far above
    /// the load (1,000,000/s, burst 1,000,000): what a limit costs when it is not hit.
    IntrospectApikeyLimited,
    /// Envoy ext_authz `Authorization/Check` of access tokens already seen (the
    /// same hot path as introspect-hot, behind Envoy's request shape).
    CheckHot,
    /// Issue an access token (signed, audited durably).
    Issue,
    /// Exchange: client-credentials grant.
    ClientCredentials,
    /// Exchange: refresh-token grant, following each rotation.
    Refresh,
    /// Revoke a jti (a durable blocklist write).
    Revoke,
    /// Every scenario above, health first, in one table.
    All,
}

const EVERY: [Scenario; 11] = [
    Scenario::Health,
    Scenario::IntrospectHot,
    Scenario::CheckHot,
    Scenario::IntrospectCold,
    Scenario::IntrospectApikey,
    Scenario::IntrospectApikeyUnlimited,
    Scenario::IntrospectApikeyLimited,
    Scenario::Issue,
    Scenario::ClientCredentials,
    Scenario::Refresh,
    Scenario::Revoke,
];

impl Scenario {
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration {s:?} (use ms, s, m or h)")),
    }
}

/// One worker's view of the scenario: what to send next.
enum Work {
    Health(HealthClient<Channel>),
    Introspect(TokenServiceClient<Channel>, String),
    /// Introspect as another caller than the admin key: (client, token, bearer).
    IntrospectAs(TokenServiceClient<Channel>, String, AsciiMetadataValue),
    Check(AuthorizationClient<Channel>, Box<CheckRequest>),
    Cold(
        TokenServiceClient<Channel>,
        Arc<Vec<String>>,
        Arc<AtomicUsize>,
    ),
    Issue(TokenServiceClient<Channel>),
    ClientCredentials(TokenServiceClient<Channel>, AsciiMetadataValue),
    Refresh(TokenServiceClient<Channel>, String),
    Revoke(TokenServiceClient<Channel>, u64),
}

/// What one scenario measured.
struct Outcome {
    scenario: Scenario,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    first_error: Option<Status>,
    server_cpu: Option<f64>,
    server: Option<ServerMemory>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Copy)]
struct ServerMemory {
    rss: u64,
    peak: u64,
}

struct Ctx {
    args: Args,
    key: AsciiMetadataValue,
    channels: Vec<Channel>,
}

impl Ctx {
    fn authed<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", self.key.clone());
        r
    }

    fn tokens(&self, i: usize) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channels[i % self.channels.len()].clone())
    }
}

/// A fresh API key holding `read:payments`, issued with the admin key.
async fn bench_api_key(ctx: &Ctx, name: &str) -> Result<String, Status> {
    api_key_with(ctx, name, "read:payments", None).await
}

/// A fresh API key holding `scope`, with `rate_limit` if given.
async fn api_key_with(
    ctx: &Ctx,
    name: &str,
    scope: &str,
    rate_limit: Option<RateLimit>,
) -> Result<String, Status> {
    let req = IssueRequest {
        credential: Some(Credential::ApiKey(ApiKeySpec {
            owner: "loadgen".into(),
            name: name.into(),
            environment: "bench".into(),
            scopes: vec![scope.into()],
            rate_limit,
            ..ApiKeySpec::default()
        })),
    };
    Ok(ctx
        .tokens(0)
        .issue(ctx.authed(req))
        .await?
        .into_inner()
        .token)
}

fn access_spec(refresh: bool) -> IssueRequest {
    IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: "loadgen-user".into(),
            audience: vec!["payments-api".into()],
            scopes: vec!["read:payments".into(), "write:payments".into()],
            refresh_token: refresh,
            ..AccessTokenSpec::default()
        })),
    }
}

async fn issue_token(ctx: &Ctx, i: usize, refresh: bool) -> Result<(String, String), Status> {
    let r = ctx
        .tokens(i)
        .issue(ctx.authed(access_spec(refresh)))
        .await?
        .into_inner();
    Ok((r.token, r.refresh_token))
}

/// Issues `n` access tokens with `concurrency` calls in flight (not measured).
async fn issue_many(ctx: &Arc<Ctx>, n: usize) -> Result<Vec<String>, Status> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..ctx.args.concurrency.max(1) {
        let (ctx, next) = (ctx.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                out.push(issue_token(&ctx, w, false).await?.0);
            }
            Ok::<_, Status>(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.map_err(|e| Status::internal(e.to_string()))??);
    }
    Ok(all)
}

/// Builds each worker's state; fails with the server's answer to the first call.
async fn prepare(ctx: &Arc<Ctx>, scenario: Scenario) -> Result<Vec<Work>, Status> {
    let n = ctx.args.concurrency.max(1);
    let mut work = Vec::with_capacity(n);
    match scenario {
        Scenario::Health => {
            for i in 0..n {
                let ch = ctx.channels[i % ctx.channels.len()].clone();
                work.push(Work::Health(HealthClient::new(ch)));
            }
        }
        Scenario::IntrospectHot => {
            let tokens = issue_many(ctx, n).await?;
            for (i, t) in tokens.into_iter().enumerate() {
                work.push(Work::Introspect(ctx.tokens(i), t));
            }
        }
        Scenario::CheckHot => {
            let tokens = issue_many(ctx, n).await?;
            for (i, t) in tokens.into_iter().enumerate() {
                let ch = ctx.channels[i % ctx.channels.len()].clone();
                work.push(Work::Check(AuthorizationClient::new(ch), check_request(&t)));
            }
        }
        Scenario::IntrospectCold => {
            eprintln!(
                "  issuing {} fresh tokens for the cold run (not measured)...",
                ctx.args.cold_pool
            );
            let pool = Arc::new(issue_many(ctx, ctx.args.cold_pool).await?);
            let next = Arc::new(AtomicUsize::new(0));
            for i in 0..n {
                work.push(Work::Cold(ctx.tokens(i), pool.clone(), next.clone()));
            }
        }
        Scenario::IntrospectApikey => {
            let key = bench_api_key(ctx, "introspected").await?;
            for i in 0..n {
                work.push(Work::Introspect(ctx.tokens(i), key.clone()));
            }
        }
        Scenario::IntrospectApikeyUnlimited | Scenario::IntrospectApikeyLimited => {
            let key = bench_api_key(ctx, "introspected").await?;
            // The highest limit a key may have: the load never comes near it, so every
            // call takes the limiter's accept path. The two callers differ in nothing else.
            let limit = (scenario == Scenario::IntrospectApikeyLimited).then_some(RateLimit {
                per_second: 1_000_000,
                burst: 1_000_000,
            });
            let caller = api_key_with(ctx, "caller", "tessera:introspect", limit).await?;
            let bearer: AsciiMetadataValue = format!("Bearer {caller}")
                .parse()
                .map_err(|_| Status::internal("unprintable key"))?;
            for i in 0..n {
                work.push(Work::IntrospectAs(
                    ctx.tokens(i),
                    key.clone(),
                    bearer.clone(),
                ));
            }
        }
        Scenario::Issue => {
            for i in 0..n {
                work.push(Work::Issue(ctx.tokens(i)));
            }
        }
        Scenario::ClientCredentials => {
            // The grant's credential is an API key holding the scope asked for.
            let key = bench_api_key(ctx, "client-credentials").await?;
            let bearer: AsciiMetadataValue = format!("Bearer {key}")
                .parse()
                .map_err(|_| Status::internal("unprintable key"))?;
            // One probe call, so a server without the grant is reported plainly.
            let mut probe = Work::ClientCredentials(ctx.tokens(0), bearer.clone());
            call(ctx, &mut probe).await?;
            for i in 0..n {
                work.push(Work::ClientCredentials(ctx.tokens(i), bearer.clone()));
            }
        }
        Scenario::Refresh => {
            for i in 0..n {
                let (_, rt) = issue_token(ctx, i, true).await?;
                let mut w = Work::Refresh(ctx.tokens(i), rt);
                if i == 0 {
                    call(ctx, &mut w).await?;
                }
                work.push(w);
            }
        }
        Scenario::Revoke => {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            for i in 0..n {
                work.push(Work::Revoke(ctx.tokens(i), seed ^ ((i as u64) << 48)));
            }
        }
        Scenario::All => unreachable!("expanded by the caller"),
    }
    Ok(work)
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random jti in its text form (16 bytes, base64url).
fn random_jti(s: &mut u64) -> String {
    use base64::Engine;
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&splitmix(s).to_be_bytes());
    b[8..].copy_from_slice(&splitmix(s).to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What Envoy sends for `GET /` with `authorization: Bearer <token>`.
fn check_request(token: &str) -> Box<CheckRequest> {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    let http = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        host: "bench".into(),
        headers: [("authorization".to_string(), format!("Bearer {token}"))].into(),
        ..Default::default()
    };
    Box::new(CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

/// Sends one request. `Ok(false)` means the pool of cold tokens is used up.
async fn call(ctx: &Ctx, w: &mut Work) -> Result<bool, Status> {
    let inactive = || Status::failed_precondition("introspection answered inactive");
    match w {
        Work::Health(c) => {
            c.check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        }
        Work::Introspect(c, token) => {
            let req = IntrospectRequest {
                token: token.clone(),
                token_type_hint: String::new(),
            };
            if !c.introspect(ctx.authed(req)).await?.into_inner().active {
                return Err(inactive());
            }
        }
        Work::IntrospectAs(c, token, bearer) => {
            let mut req = Request::new(IntrospectRequest {
                token: token.clone(),
                token_type_hint: String::new(),
            });
            req.metadata_mut().insert("authorization", bearer.clone());
            if !c.introspect(req).await?.into_inner().active {
                return Err(inactive());
            }
        }
        Work::Check(c, req) => {
            let resp = c.check(ctx.authed((**req).clone())).await?.into_inner();
            if resp.status.map(|s| s.code) != Some(0) {
                return Err(Status::failed_precondition("ext_authz denied a live token"));
            }
        }
        Work::Cold(c, pool, next) => {
            let Some(token) = pool.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(false);
            };
            let req = IntrospectRequest {
                token: token.clone(),
                token_type_hint: String::new(),
            };
            if !c.introspect(ctx.authed(req)).await?.into_inner().active {
                return Err(inactive());
            }
        }
        Work::Issue(c) => {
            c.issue(ctx.authed(access_spec(false))).await?;
        }
        Work::ClientCredentials(c, bearer) => {
            let req = ExchangeRequest {
                grant: Some(Grant::ClientCredentials(ClientCredentialsGrant {
                    scopes: vec!["read:payments".into()],
                    audience: vec!["payments-api".into()],
                })),
            };
            let mut r = Request::new(req);
            r.metadata_mut().insert("authorization", bearer.clone());
            c.exchange(r).await?;
        }
        Work::Refresh(c, rt) => {
            let req = ExchangeRequest {
                grant: Some(Grant::RefreshToken(RefreshTokenGrant {
                    refresh_token: rt.clone(),
                    scopes: Vec::new(),
                })),
            };
            let r = c.exchange(ctx.authed(req)).await?.into_inner();
            if r.refresh_token.is_empty() {
                return Err(Status::failed_precondition("no rotated refresh token"));
            }
            *rt = r.refresh_token;
        }
        Work::Revoke(c, seed) => {
            let req = RevokeRequest {
                token_id: random_jti(seed),
                ..RevokeRequest::default()
            };
            c.revoke(ctx.authed(req)).await?;
        }
    }
    Ok(true)
}

struct WorkerResult {
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<Status>,
    last_done: Instant,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

async fn worker(
    ctx: Arc<Ctx>,
    mut w: Work,
    measure_from: Instant,
    until: Instant,
    pace: Option<Duration>,
) -> WorkerResult {
    let mut out = WorkerResult {
        latency: histogram(),
        requests: 0,
        errors: 0,
        first_error: None,
        last_done: measure_from,
    };
    let mut ticker = pace.map(|p| {
        let mut t = tokio::time::interval(p);
        // Late ticks fire at once, so the average rate holds the cap however the
        // answers bunch up.
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let start = Instant::now();
        if start >= until {
            break;
        }
        let result = call(&ctx, &mut w).await;
        let done = Instant::now();
        if start < measure_from {
            if let Ok(false) = result {
                break;
            }
            continue;
        }
        match result {
            Ok(true) => {
                let us = done.duration_since(start).as_micros() as u64;
                let _ = out.latency.record(us.max(1));
                out.requests += 1;
            }
            Ok(false) => break,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
        out.last_done = done;
    }
    out
}

/// Reads the server's `/metrics`: (resident, peak resident, CPU seconds).
async fn server_metrics(http: &str) -> Option<(ServerMemory, f64)> {
    let host = http
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = tokio::net::TcpStream::connect(&host).await.ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let memory = ServerMemory {
        rss: value("process_resident_memory_bytes")? as u64,
        peak: value("tessera_process_peak_resident_bytes")? as u64,
    };
    Some((memory, value("process_cpu_seconds_total").unwrap_or(0.0)))
}

async fn run(ctx: &Arc<Ctx>, scenario: Scenario) -> Result<Outcome, Status> {
    let work = prepare(ctx, scenario).await?;
    let pace = ctx
        .args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(work.len() as f64 / r));
    // A cold token is only cold once: the cold pool is spent on measurement alone
    // (the connections are already warm from issuing it).
    let warmup = if scenario == Scenario::IntrospectCold {
        Duration::ZERO
    } else {
        ctx.args.warmup
    };
    let measure_from = Instant::now() + warmup;
    let until = measure_from + ctx.args.duration;
    let tasks: Vec<_> = work
        .into_iter()
        .map(|w| tokio::spawn(worker(ctx.clone(), w, measure_from, until, pace)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let before = server_metrics(&ctx.args.metrics).await;

    let mut latency = histogram();
    let (mut requests, mut errors, mut first_error) = (0, 0, None);
    let mut last_done = measure_from;
    for t in tasks {
        let r = t.await.map_err(|e| Status::internal(e.to_string()))?;
        latency
            .add(&r.latency)
            .map_err(|e| Status::internal(e.to_string()))?;
        requests += r.requests;
        errors += r.errors;
        last_done = last_done.max(r.last_done);
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let after = server_metrics(&ctx.args.metrics).await;
    let server_cpu = match (before, after) {
        (Some((_, c0)), Some((_, c1))) if requests > 0 => Some((c1 - c0) / requests as f64),
        _ => None,
    };
    Ok(Outcome {
        scenario,
        requests,
        errors,
        // The cold pool can run out before the deadline: rate over the time used.
        elapsed: last_done.min(until).duration_since(measure_from),
        latency,
        first_error,
        server_cpu,
        server: after.map(|(m, _)| m),
    })
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0))
}

fn report(o: &Outcome) {
    let h = &o.latency;
    let cpu = o
        .server_cpu
        .map_or("-".to_string(), |s| format!("{:.1}", s * 1e6));
    let (rss, peak) = o
        .server
        .map_or(("-".into(), "-".into()), |m| (mib(m.rss), mib(m.peak)));
    println!(
        "{}: {:.0} req/s over {:.1} s, {} requests, {} errors\n  latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}\n  server: {} us CPU/request, RSS {} MiB, peak RSS {} MiB",
        o.scenario.name(),
        o.rps(),
        o.elapsed.as_secs_f64(),
        o.requests,
        o.errors,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        cpu,
        rss,
        peak,
    );
    if let Some(e) = &o.first_error {
        println!("  first error: {:?}: {}", e.code(), e.message());
    }
    // One line per scenario for scripts (scripts/soak.sh reads it).
    println!(
        "RESULT scenario={} rps={:.0} requests={} errors={} p50_us={} p99_us={} p999_us={} rss_bytes={} peak_rss_bytes={}",
        o.scenario.name(),
        o.rps(),
        o.requests,
        o.errors,
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        o.server.map_or(0, |m| m.rss),
        o.server.map_or(0, |m| m.peak),
    );
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// One row per scenario: its median round by requests/s, and the median over rounds
/// of its ratio to the same round's health run.
fn table(outcomes: &[(usize, Outcome)], skipped: &[(Scenario, String)]) {
    let health = |round: usize| {
        outcomes
            .iter()
            .find(|(r, o)| *r == round && o.scenario == Scenario::Health)
            .map(|(_, o)| o)
    };
    println!(
        "\n| scenario | req/s | vs health | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | server CPU µs/req | health CPU ÷ this | server RSS after, MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in EVERY {
        let mut runs: Vec<&(usize, Outcome)> =
            outcomes.iter().filter(|(_, o)| o.scenario == s).collect();
        if runs.is_empty() {
            continue;
        }
        runs.sort_by(|(_, a), (_, b)| a.rps().total_cmp(&b.rps()));
        let o = &runs[runs.len() / 2].1;
        let ratio = median(
            runs.iter()
                .filter_map(|(r, o)| Some(o.rps() / health(*r)?.rps()))
                .collect(),
        );
        let cpu_ratio = median(
            runs.iter()
                .filter_map(|(r, o)| Some(health(*r)?.server_cpu? / o.server_cpu?))
                .collect(),
        );
        let h = &o.latency;
        let errors: u64 = runs.iter().map(|(_, o)| o.errors).sum();
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name(),
            o.rps(),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            errors,
            o.server_cpu
                .map_or("-".into(), |s| format!("{:.1}", s * 1e6)),
            cpu_ratio.map_or("-".into(), |r| format!("{r:.2}")),
            o.server.map_or("-".into(), |m| mib(m.rss)),
        );
    }
    for (s, why) in skipped {
        println!(
            "| {} | - | - | - | - | - | - | - | - | - | {why} |",
            s.name()
        );
    }
    rate_limit_cost(outcomes);
}

/// What a rate limit that is not hit costs: `introspect-apikey-limited` against
/// `introspect-apikey-unlimited` of the same round (run back to back), median over
/// rounds.
fn rate_limit_cost(outcomes: &[(usize, Outcome)]) {
    let run = |round: usize, s: Scenario| {
        outcomes
            .iter()
            .find(|(r, o)| *r == round && o.scenario == s)
            .map(|(_, o)| o)
    };
    let pairs: Vec<(&Outcome, &Outcome)> = outcomes
        .iter()
        .filter(|(_, o)| o.scenario == Scenario::IntrospectApikeyUnlimited)
        .filter_map(|(r, plain)| Some((plain, run(*r, Scenario::IntrospectApikeyLimited)?)))
        .collect();
    if pairs.is_empty() {
        return;
    }
    let rps: Vec<f64> = pairs.iter().map(|(p, l)| l.rps() / p.rps()).collect();
    let cpu: Vec<f64> = pairs
        .iter()
        .filter_map(|(p, l)| Some(l.server_cpu? / p.server_cpu?))
        .collect();
    let each = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "\nrate limit not hit: introspect-apikey-limited ÷ introspect-apikey-unlimited, per round: req/s {} \
         (median {}), server CPU per request {} (median {})",
        each(&rps),
        median(rps.clone()).map_or("-".into(), |r| format!("{r:.3}")),
        each(&cpu),
        median(cpu.clone()).map_or("-".into(), |r| format!("{r:.3}")),
    );
}

/// The scenarios of round `round`: in the table's order, except that the limited and
/// unlimited API-key introspections swap places every other round, so that neither
/// always runs first (on a shared machine, a slow spell would otherwise land on one
/// side).
fn in_round(scenarios: &[Scenario], round: usize) -> Vec<Scenario> {
    let mut order = scenarios.to_vec();
    let at = |s| order.iter().position(|x| *x == s);
    if round.is_multiple_of(2)
        && let (Some(a), Some(b)) = (
            at(Scenario::IntrospectApikeyUnlimited),
            at(Scenario::IntrospectApikeyLimited),
        )
    {
        order.swap(a, b);
    }
    order
}

fn read_key(args: &Args) -> Result<String, String> {
    if let Ok(k) = std::env::var("TESSERA_API_KEY") {
        return Ok(k.trim().to_string());
    }
    std::fs::read_to_string(&args.key_file)
        .map(|k| k.trim().to_string())
        .map_err(|e| format!("reading {}: {e}", args.key_file.display()))
}

async fn connect(args: &Args) -> Result<Vec<Channel>, String> {
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|e| format!("bad --addr: {e}"))?
        .tcp_nodelay(true);
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        // Each `connect` opens its own HTTP/2 connection.
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| format!("connecting to {}: {e}", args.addr))?,
        );
    }
    Ok(channels)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let key = match read_key(&args).and_then(|k| {
        MetadataValue::try_from(format!("Bearer {k}")).map_err(|_| "key is not ASCII".into())
    }) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(64);
        }
    };
    let channels = match connect(&args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scenarios: Vec<Scenario> = if args.scenario.contains(&Scenario::All) {
        EVERY.to_vec()
    } else {
        // In the table's order, health first.
        EVERY
            .into_iter()
            .filter(|s| args.scenario.contains(s))
            .collect()
    };
    let ctx = Arc::new(Ctx {
        args,
        key,
        channels,
    });
    eprintln!(
        "loadgen: {} concurrent, {} connections, {:?} warm-up + {:?} per scenario{}",
        ctx.args.concurrency,
        ctx.args.connections,
        ctx.args.warmup,
        ctx.args.duration,
        ctx.args
            .rate
            .map_or(String::new(), |r| format!(", capped at {r} req/s")),
    );
    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    let mut skipped: Vec<(Scenario, String)> = Vec::new();
    let mut failed = false;
    let rounds = ctx.args.rounds.max(1);
    for (round, s) in
        (1..=rounds).flat_map(|r| in_round(&scenarios, r).into_iter().map(move |s| (r, s)))
    {
        if skipped.iter().any(|(k, _)| *k == s) {
            continue;
        }
        eprintln!("- {} (round {round} of {rounds})", s.name());
        match run(&ctx, s).await {
            Ok(o) => {
                report(&o);
                failed |= o.errors > 0 || o.requests == 0;
                outcomes.push((round, o));
            }
            Err(e) if e.code() == Code::Unimplemented => {
                println!(
                    "{}: UNIMPLEMENTED — this server does not offer it yet ({})",
                    s.name(),
                    e.message()
                );
                skipped.push((s, "UNIMPLEMENTED by the server".to_string()));
                failed = true;
            }
            Err(e) => {
                println!(
                    "{}: could not start: {:?}: {}",
                    s.name(),
                    e.code(),
                    e.message()
                );
                skipped.push((s, format!("failed to start: {:?}", e.code())));
                failed = true;
            }
        }
    }
    if outcomes.len() + skipped.len() > 1 || rounds > 1 {
        table(&outcomes, &skipped);
        if let Some((memory, _)) = server_metrics(&ctx.args.metrics).await {
            println!(
                "\nserver peak RSS over the whole run: {} MiB",
                mib(memory.peak)
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
