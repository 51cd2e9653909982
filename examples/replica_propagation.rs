//! Revocation propagation between replicas: how long after `Revoke` is acknowledged by
//! one replica another one's `Introspect` says inactive. Drives two running replicas
//! of one PostgreSQL database (see `scripts/bench-replicas`).
//!
//! ```text
//! cargo run --release --example replica_propagation -- \
//!     --from http://127.0.0.1:50051 --to http://127.0.0.1:50052 \
//!     --key-file admin.key --revocations 1000
//! ```
//!
//! For each of `--revocations` access tokens issued by `--from`: checks it is active on
//! `--to`, revokes it on `--from`, and from the acknowledgement polls `--to` until it
//! answers inactive. Each poll is one Introspect round trip, so a sample is the delay
//! rounded up to the next answer. Exits non-zero if any revocation is not seen within
//! a second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{AccessTokenSpec, IntrospectRequest, IssueRequest, RevokeRequest};
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Measure Revoke acknowledged by one replica → inactive on another")]
struct Args {
    /// The replica that revokes.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    from: String,
    /// The replica that is asked.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    to: String,
    /// File holding an admin API key valid on both (the shared bootstrap key).
    #[arg(long)]
    key_file: PathBuf,
    /// Revocations measured.
    #[arg(long, default_value_t = 1000)]
    revocations: usize,
    /// The target, for the verdict line (milliseconds, p99).
    #[arg(long, default_value_t = 100.0)]
    target_p99_ms: f64,
}

fn authed<T>(msg: T, key: &AsciiMetadataValue) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", key.clone());
    r
}

async fn active(
    to: &mut TokenServiceClient<Channel>,
    token: &str,
    key: &AsciiMetadataValue,
) -> Result<bool, tonic::Status> {
    let req = IntrospectRequest {
        token: token.into(),
        token_type_hint: String::new(),
    };
    Ok(to.introspect(authed(req, key)).await?.into_inner().active)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let key_text = std::fs::read_to_string(&args.key_file)?;
    let key: AsciiMetadataValue = format!("Bearer {}", key_text.trim()).parse()?;
    let mut from = TokenServiceClient::connect(args.from.clone()).await?;
    let mut to = TokenServiceClient::connect(args.to.clone()).await?;
    let mut samples = Vec::with_capacity(args.revocations);
    for i in 0..args.revocations {
        let req = IssueRequest {
            credential: Some(Credential::AccessToken(AccessTokenSpec {
                subject: format!("propagation-{i}"),
                audience: vec!["api".into()],
                scopes: vec!["read".into()],
                ..AccessTokenSpec::default()
            })),
        };
        let token = from.issue(authed(req, &key)).await?.into_inner().token;
        if !active(&mut to, &token, &key).await? {
            return Err("a fresh token is not active on the other replica".into());
        }
        let req = RevokeRequest {
            token: token.clone(),
            ..RevokeRequest::default()
        };
        from.revoke(authed(req, &key)).await?;
        let acked = Instant::now();
        loop {
            if !active(&mut to, &token, &key).await? {
                samples.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > Duration::from_secs(1) {
                return Err(format!("revocation {i} not seen within 1 s").into());
            }
        }
    }
    samples.sort();
    let q = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    let first_poll = samples.iter().filter(|d| d.as_micros() < 1_000).count();
    println!(
        "revocations={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} under_1ms={:.1}%",
        samples.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        q(1.0),
        100.0 * first_poll as f64 / samples.len() as f64
    );
    let met = q(0.99) < args.target_p99_ms;
    println!(
        "target p99 < {} ms: {}",
        args.target_p99_ms,
        if met { "met" } else { "MISSED" }
    );
    Ok(met)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("replica_propagation: {e}");
            ExitCode::from(2)
        }
    }
}
