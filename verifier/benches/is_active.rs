//! `Verifier::is_active` against a real in-process Tessera: hot (a token seen
//! before: one SHA-256, cache and map lookups) and cold (a token never seen: the full
//! strict verification), next to raw *ring* verifying the same signature.
//!
//! Run with `cargo bench -p tessera-verifier` (`-- ratios` for the paired rounds only);
//! figures in BENCHMARKS.md. The targets are measured as paired rounds in the benchmark
//! thread's CPU time, as `benches/hot_path.rs` does for the service: 200 rounds of 25
//! calls of each side on the same tokens, alternating which side goes first, and the
//! median of the per-round figures. Criterion rows (wall time, for magnitude) follow. The verifier's own
//! background tasks (the revocation stream, JWKS refreshes) run on other threads and
//! are not counted.

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::TestServer;
use common::mint::Minter;
use cpu_time::ThreadTime;
use criterion::{BatchSize, Criterion};
use ring::signature::{ED25519, UnparsedPublicKey};
use tessera_verifier::{Verifier, VerifierConfig};

const ROUNDS: usize = 200;
const PER_ROUND: usize = 25;

/// A token never shown to the verifier, and its signing input and signature decoded
/// for raw *ring*.
struct Fresh {
    token: String,
    input: Vec<u8>,
    signature: Vec<u8>,
}

/// A genuine token with a fresh random jti, signed with the server's active key.
fn fresh_token(minter: &Minter, like: &str) -> String {
    minter.tweak(like, |_, p| {
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti).expect("random");
        p["jti"] = B64.encode(jti).into();
    })
}

fn fresh(minter: &Minter, like: &str, n: usize) -> Vec<Fresh> {
    (0..n)
        .map(|_| {
            let token = fresh_token(minter, like);
            let (input, sig) = token.rsplit_once('.').expect("a JWS");
            Fresh {
                input: input.as_bytes().to_vec(),
                signature: B64.decode(sig).expect("base64url"),
                token,
            }
        })
        .collect()
}

/// Times `a` and `b` over the same inputs, `PER_ROUND` at a time, alternating which
/// goes first; returns (a's median ns per call, b's, the median of the ratios b ÷ a).
/// Neighbours on a shared machine slow both sides of a round alike, so the ratio
/// holds steady when absolute times drift.
fn paired<I>(inputs: &[I], mut a: impl FnMut(&I), mut b: impl FnMut(&I)) -> (f64, f64, f64) {
    let time = |f: &mut dyn FnMut(&I), batch: &[I]| {
        let t = ThreadTime::now();
        batch.iter().for_each(&mut *f);
        t.elapsed().as_nanos() as f64 / batch.len() as f64
    };
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for (round, batch) in inputs.chunks(PER_ROUND).enumerate() {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut a, batch);
            (x, time(&mut b, batch))
        } else {
            let y = time(&mut b, batch);
            (time(&mut a, batch), y)
        };
        ta.push(x);
        tb.push(y);
        ratios.push(y / x);
    }
    (median(ta), median(tb), median(ratios))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

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
    let public = minter.public_key();
    let ring_verify = |input: &[u8], sig: &[u8]| {
        UnparsedPublicKey::new(&ED25519, &public)
            .verify(black_box(input), black_box(sig))
            .expect("verifies")
    };

    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let only_ratios = !filters.is_empty() && filters.iter().all(|f| *f == "ratios");
    let listing = args.iter().any(|a| a == "--list" || a == "--test");
    if !listing && (filters.is_empty() || only_ratios) {
        // First, while the cache is nearly empty: criterion's cold row below fills it to
        // its byte bound, and a full cache admits new tokens by frequency, so a later
        // "hot" round would find many of its tokens turned away and verify them again.
        // Every token is minted before any timing starts. The cold rounds show each
        // token to the verifier for the first time; the hot rounds then reuse the
        // same 5,000 tokens, now all cached, so hot lookups land on a cache of that
        // size rather than on one entry kept warm.
        let tokens = fresh(&minter, &token, ROUNDS * PER_ROUND);
        let ring_side = |f: &Fresh| ring_verify(&f.input, &f.signature);
        let is_active = |f: &Fresh| assert!(verifier.is_active(black_box(&f.token)).is_ok());
        println!("\npaired rounds (median of {ROUNDS} interleaved rounds, thread CPU time):");
        let (ring_c, cold, cold_ratio) = paired(&tokens, ring_side, is_active);
        println!(
            "  is_active cold / ring verify   {:>8.2} µs / {:>8.2} µs = {cold_ratio:.3}   (target ≤ 1.10)",
            cold / 1e3,
            ring_c / 1e3
        );
        let (ring_h, hot, hot_ratio) = paired(&tokens, ring_side, is_active);
        println!(
            "  is_active hot  / ring verify   {:>8.2} µs / {:>8.2} µs = {hot_ratio:.3}   (target: hot ≤ 1 µs)",
            hot / 1e3,
            ring_h / 1e3
        );
    }
    if !only_ratios {
        let mut c = Criterion::default()
            .configure_from_args()
            .measurement_time(Duration::from_secs(3));
        c.bench_function("is_active/hot", |b| {
            b.iter(|| black_box(verifier.is_active(black_box(&token))).is_ok())
        });
        // Cold: each iteration a token never seen (fresh jti, signed with the real key).
        c.bench_function("is_active/cold", |b| {
            b.iter_batched(
                || fresh_token(&minter, &token),
                |t| assert!(verifier.is_active(&t).is_ok()),
                BatchSize::SmallInput,
            )
        });
        let (input, sig64) = token.rsplit_once('.').expect("a JWS");
        let sig = B64.decode(sig64).expect("base64url");
        c.bench_function("raw_ring_verify", |b| {
            b.iter(|| ring_verify(input.as_bytes(), &sig))
        });
        c.final_summary();
    }
    drop(verifier);
    drop(server);
}
