//! Prepares what `scripts/bench-mesh` drives h2load and Envoy with, against a running
//! Tessera: an API key holding `tessera:introspect` (the caller of `Introspect`, and
//! Envoy's own key for `Check`), one access token, and the two requests about that
//! same token as length-prefixed gRPC messages, ready for `h2load -d`.
//!
//! ```text
//! cargo run --release --example mesh_fixture -- --addr http://127.0.0.1:50051 \
//!     --key-file tessera-data/admin.key --out bench-fixture
//! ```
//!
//! Writes into `--out`: `caller.key`, `token`, `introspect.grpc`, `check.grpc`. Before
//! it returns, each request is sent once through tonic and must come back active /
//! allowed: h2load only sees HTTP status 200, never the gRPC status or the decision.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use prost::Message;
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{AccessTokenSpec, ApiKeySpec, IntrospectRequest, IssueRequest};
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Write an API key, a token and gRPC request frames for h2load")]
struct Args {
    /// gRPC address of the server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// File holding an admin API key (the bootstrap `<data dir>/admin.key`).
    #[arg(long, default_value = "tessera-data/admin.key")]
    key_file: PathBuf,
    /// Directory the files are written to (created if missing).
    #[arg(long, default_value = "bench-fixture")]
    out: PathBuf,
}

fn bearer(key: &str) -> anyhow::Result<AsciiMetadataValue> {
    Ok(format!("Bearer {key}").parse()?)
}

fn authed<T>(msg: T, key: &AsciiMetadataValue) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", key.clone());
    r
}

/// gRPC's length-prefixed message: an uncompressed flag, the length, the bytes.
fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let len = u32::try_from(body.len()).expect("a small message");
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// What Envoy's ext_authz filter sends for `GET /orders` carrying the token: the
/// pseudo-headers and the usual request headers Envoy adds, so the header map the
/// service walks (for the credential and the `x-tessera-*` removals) is full-sized.
fn check_request(token: &str) -> CheckRequest {
    let peer = |port: u32| Peer {
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let headers = [
        (":authority", "orders.bench"),
        (":method", "GET"),
        (":path", "/orders"),
        (":scheme", "http"),
        ("authorization", &format!("Bearer {token}")),
        ("user-agent", "wrk"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "8f1d5b1e-1c3a-4f5e-9a57-0c5b1a2d3e4f"),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(40000)),
            destination: Some(peer(10000)),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: "GET".into(),
                    path: "/orders".into(),
                    host: "orders.bench".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admin = std::fs::read_to_string(&args.key_file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.key_file.display()))?;
    let admin = bearer(admin.trim())?;
    let channel = Channel::from_shared(args.addr.clone())?.connect().await?;
    let mut tokens = TokenServiceClient::new(channel.clone());

    let issue = |credential| IssueRequest {
        credential: Some(credential),
    };
    let caller = tokens
        .issue(authed(
            issue(Credential::ApiKey(ApiKeySpec {
                owner: "bench".into(),
                name: "mesh".into(),
                environment: "bench".into(),
                scopes: vec!["tessera:introspect".into()],
                ..ApiKeySpec::default()
            })),
            &admin,
        ))
        .await?
        .into_inner()
        .token;
    let token = tokens
        .issue(authed(
            issue(Credential::AccessToken(AccessTokenSpec {
                subject: "user_1".into(),
                audience: vec!["orders-api".into()],
                scopes: vec!["read:orders".into()],
                ..AccessTokenSpec::default()
            })),
            &admin,
        ))
        .await?
        .into_inner()
        .token;

    let introspect = IntrospectRequest {
        token: token.clone(),
        token_type_hint: String::new(),
    };
    let check = check_request(&token);
    let as_caller = bearer(&caller)?;
    let active = tokens
        .introspect(authed(introspect.clone(), &as_caller))
        .await?
        .into_inner()
        .active;
    anyhow::ensure!(active, "Introspect answered inactive for a fresh token");
    let decision = AuthorizationClient::new(channel)
        .check(authed(check.clone(), &as_caller))
        .await?
        .into_inner();
    anyhow::ensure!(
        decision.status.as_ref().map(|s| s.code) == Some(0),
        "Check denied a fresh token: {:?}",
        decision.status
    );

    std::fs::create_dir_all(&args.out)?;
    let write = |name: &str, bytes: &[u8]| std::fs::write(args.out.join(name), bytes);
    write("caller.key", caller.as_bytes())?;
    write("token", token.as_bytes())?;
    write("introspect.grpc", &frame(&introspect))?;
    write("check.grpc", &frame(&check))?;
    println!(
        "wrote {}: Introspect {} bytes, Check {} bytes (token {} bytes)",
        args.out.display(),
        introspect.encoded_len(),
        check.encoded_len(),
        token.len()
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh_fixture: {e:#}");
            ExitCode::FAILURE
        }
    }
}
