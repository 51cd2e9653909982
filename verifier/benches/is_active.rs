//! `Verifier::is_active` against a real in-process Tessera: hot (a token seen
//! before: one SHA-256, cache and map lookups) and cold (a token never seen: the full
//! strict verification), next to raw *ring* verifying the same signature.
//!
//! Run with `cargo bench -p tessera-verifier`; figures in BENCHMARKS.md.

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::TestServer;
use common::mint::Minter;
use criterion::{BatchSize, Criterion};
use ring::signature::{ED25519, UnparsedPublicKey};
use tessera_verifier::{Verifier, VerifierConfig};

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (server, verifier, token) = rt.block_on(async {
        let s = TestServer::start().await;
        let key = s.api_key(&["tessera:introspect"]).await.token;
        let cfg = VerifierConfig::new(
            format!("http://{}", s.grpc),
            format!("http://{}/.well-known/jwks.json", s.http),
            key,
            "https://tessera.test",
        );
        let v = Verifier::start(cfg).await.expect("verifier");
        assert!(v.ready(Duration::from_secs(10)).await, "no snapshot");
        let t = s.access_token("alice").await.token;
        (s, v, t)
    });
    let minter = Minter::active(&server);
    assert!(verifier.is_active(&token).is_ok());

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));

    c.bench_function("is_active/hot", |b| {
        b.iter(|| black_box(verifier.is_active(black_box(&token))).is_ok())
    });

    // Cold: each iteration a token never seen (fresh jti, signed with the real key).
    let fresh = || {
        minter.tweak(&token, |_, p| {
            let mut jti = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
                .expect("random");
            p["jti"] = B64.encode(jti).into();
        })
    };
    c.bench_function("is_active/cold", |b| {
        b.iter_batched(
            fresh,
            |t| assert!(verifier.is_active(&t).is_ok()),
            BatchSize::SmallInput,
        )
    });

    let public = minter.public_key();
    let (input, sig64) = token.rsplit_once('.').expect("a JWS");
    let sig = B64.decode(sig64).expect("base64url");
    c.bench_function("raw_ring_verify", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(black_box(input.as_bytes()), black_box(&sig))
                .is_ok()
        })
    });
    c.final_summary();
    drop(verifier);
    drop(server);
}
