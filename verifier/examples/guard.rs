//! A Rust gRPC service guarded by the local verifier: every call needs a live Tessera
//! access token in `authorization: Bearer …`, checked with no call to Tessera.
//!
//! ```text
//! TESSERA_API_KEY=$(cat tessera-data/admin.key) \
//! cargo run -p tessera-verifier --example guard
//! grpcurl -plaintext -H "authorization: Bearer $ACCESS_TOKEN" \
//!   127.0.0.1:50061 grpc.health.v1.Health/Check
//! ```
//!
//! Settings (environment): `TESSERA_GRPC` (default `http://127.0.0.1:50051`),
//! `TESSERA_JWKS_URL` (default `http://127.0.0.1:8080/.well-known/jwks.json`),
//! `TESSERA_API_KEY` (a key with `tessera:introspect`; required), `TESSERA_ISSUER`
//! (default `http://127.0.0.1:8080`), `GUARD_ADDR` (default `127.0.0.1:50061`).

use std::time::Duration;

use tessera_verifier::{Verifier, VerifierConfig};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let api_key = std::env::var("TESSERA_API_KEY")
        .map_err(|_| anyhow::anyhow!("set TESSERA_API_KEY to a key with tessera:introspect"))?;
    let cfg = VerifierConfig::new(
        env_or("TESSERA_GRPC", "http://127.0.0.1:50051"),
        env_or(
            "TESSERA_JWKS_URL",
            "http://127.0.0.1:8080/.well-known/jwks.json",
        ),
        api_key,
        env_or("TESSERA_ISSUER", "http://127.0.0.1:8080"),
    );
    let verifier = Verifier::start(cfg).await?;
    if !verifier.ready(Duration::from_secs(10)).await {
        eprintln!("no revocation snapshot yet: calls are refused until it arrives");
    }

    // The protected service: here the standard health service, as a stand-in for yours.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let addr = env_or("GUARD_ADDR", "127.0.0.1:50061").parse()?;
    eprintln!("guarded service on {addr}");
    tonic::transport::Server::builder()
        .layer(verifier.layer())
        .add_service(health)
        .serve(addr)
        .await?;
    Ok(())
}
