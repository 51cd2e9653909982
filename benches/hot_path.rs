//! The hot path, in-process: signing and verifying through the ring provider next to
//! raw *ring* on the same key and message, then what Tessera adds on top — issuing an
//! access token, introspecting it cold (never seen) and hot (cached), checking an API
//! key, and a blocklist lookup at 0 and 1 M entries.
//!
//! Run with `cargo bench`; see BENCHMARKS.md for how the figures are read.
//!
//! Times are the benchmark thread's own CPU time, not wall time: on a small shared
//! machine, wall time also counts whoever else got the core, and the ratios between
//! the rows (what the targets are about) would drift with the neighbours' load.

use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use tessera::clock::Clock;
use tessera::config::{Config, SigningAlg};
use tessera::keys::provider;
use tessera::revocation::Revocations;
use tessera::test_support;
use tessera::test_support::ApiKeyRow;
use tessera::test_support::RateLimit;
use tessera::test_support::{ADMIN_KEY_FILE, Authority};
use tessera::test_support::{AccessTokenRequest, Introspection};
use tessera::test_support::{Caller, Principal, SCOPE_ADMIN};

/// Signs with raw *ring*.
type RawSign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A key pair in the four forms the benchmarks need.
struct Keys {
    alg: Algorithm,
    raw_sign: RawSign,
    scheme: &'static dyn sig::VerificationAlgorithm,
    public: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

fn ed25519() -> Keys {
    let doc = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
    let pair = sig::Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("parse");
    let public = pair.public_key().as_ref().to_vec();
    Keys {
        alg: Algorithm::EdDSA,
        raw_sign: Box::new(move |m| pair.sign(m).as_ref().to_vec()),
        scheme: &sig::ED25519,
        encoding: EncodingKey::from_ed_der(doc.as_ref()),
        decoding: DecodingKey::from_ed_der(&public),
        public,
    }
}

fn p256() -> Keys {
    let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
    let rng = SystemRandom::new();
    let doc = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate");
    let pair = sig::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).expect("parse");
    let public = pair.public_key().as_ref().to_vec();
    Keys {
        alg: Algorithm::ES256,
        // Like the provider, a fresh handle on the system RNG for every nonce.
        raw_sign: Box::new(move |m| {
            pair.sign(&SystemRandom::new(), m)
                .expect("sign")
                .as_ref()
                .to_vec()
        }),
        scheme: &sig::ECDSA_P256_SHA256_FIXED,
        encoding: EncodingKey::from_ec_der(doc.as_ref()),
        decoding: DecodingKey::from_ec_der(&public),
        public,
    }
}

/// An `Authority` on a temporary data dir, and an admin caller.
struct Service {
    authority: Authority,
    caller: Caller,
    admin_key: String,
    _dir: tempfile::TempDir,
}

fn service(alg: SigningAlg) -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        signing_alg: alg,
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let authority = rt
        .block_on(Authority::open(Arc::new(config), Clock::system()))
        .expect("open authority");
    let admin_key = std::fs::read_to_string(dir.path().join(ADMIN_KEY_FILE))
        .expect("admin key")
        .trim()
        .to_string();
    let caller = Caller {
        principal: Some(Arc::new(Principal {
            key_id: "bench".into(),
            owner: "bench".into(),
            scopes: vec![SCOPE_ADMIN.to_string()].into(),
        })),
        request_id: "bench".into(),
    };
    Service {
        authority,
        caller,
        admin_key,
        _dir: dir,
    }
}

/// What the Issue RPC asks for: an access token with two scopes and one audience.
fn token_request() -> (AccessTokenRequest, Vec<String>) {
    let req = AccessTokenRequest {
        subject: "alice".into(),
        audience: vec!["payments-api".into()],
        scopes: vec!["read:payments".into(), "write:payments".into()],
        client_id: "0a1b2c3d4e5f6a7b".into(),
        ..AccessTokenRequest::default()
    };
    let scopes = req.scopes.clone();
    (req, scopes)
}

impl Service {
    fn mint(&self) -> String {
        let (req, scopes) = token_request();
        let now = test_support::clock(&self.authority).now();
        self.authority
            .mint(&req, &scopes, 900, None, now)
            .expect("mint")
            .0
    }

    fn introspect(&self, token: &str) -> bool {
        matches!(
            ready(self.authority.introspect(&self.caller, token)),
            Ok(Introspection::AccessToken(_))
        )
    }
}

/// The `header.payload` part of a compact JWS.
fn signing_input(token: &str) -> Vec<u8> {
    let (input, _) = token.rsplit_once('.').expect("a compact JWS");
    input.as_bytes().to_vec()
}

/// Introspecting an access token never waits on I/O: one poll finishes it, so the
/// benchmark measures the work and not an executor.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("introspection of an access token waited"),
    }
}

/// CPU time of the measuring thread (everything measured here runs on it).
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }
    fn end(&self, started: ThreadTime) -> Duration {
        started.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

/// Formats nanoseconds the way criterion formats wall time.
struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            t if t < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let n = match throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
            _ => 1,
        };
        values.iter_mut().for_each(|v| *v = n as f64 * 1e9 / *v);
        "/s"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn sign_and_verify(c: &mut Criterion<ThreadCpu>) {
    provider::install();
    for (keys, alg) in [(ed25519(), SigningAlg::EdDSA), (p256(), SigningAlg::ES256)] {
        let name = format!("{:?}", keys.alg);
        let svc = service(alg);
        // What ring signs and verifies is exactly what an issued token carries.
        let message = signing_input(&svc.mint());
        let message = message.as_slice();

        let mut g = c.benchmark_group(format!("sign/{name}"));
        g.bench_function("ring", |b| b.iter(|| (keys.raw_sign)(black_box(message))));
        g.bench_function("provider", |b| {
            b.iter(|| jsonwebtoken::crypto::sign(black_box(message), &keys.encoding, keys.alg))
        });
        // A whole access token: claims, jti, header, JSON, base64url and the signature.
        g.bench_function("issue", |b| b.iter(|| svc.mint()));
        g.finish();

        let signature = (keys.raw_sign)(message);
        let signature_b64 = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&signature)
        };
        let mut g = c.benchmark_group(format!("verify/{name}"));
        g.bench_function("ring", |b| {
            b.iter(|| {
                sig::UnparsedPublicKey::new(keys.scheme, &keys.public)
                    .verify(black_box(message), black_box(&signature))
                    .expect("verifies")
            })
        });
        g.bench_function("provider", |b| {
            b.iter(|| {
                jsonwebtoken::crypto::verify(
                    black_box(&signature_b64),
                    black_box(message),
                    &keys.decoding,
                    keys.alg,
                )
            })
        });
        // Never seen before: full verification, then into the cache.
        g.bench_function("introspect_cold", |b| {
            b.iter_batched(
                || svc.mint(),
                |token| assert!(svc.introspect(&token)),
                BatchSize::SmallInput,
            )
        });
        // Seen before: hash, cache hit, then the key, clock, blocklist and version checks.
        let token = svc.mint();
        assert!(svc.introspect(&token));
        g.bench_function("introspect_hot", |b| {
            b.iter(|| assert!(svc.introspect(black_box(&token))))
        });
        g.finish();
    }
}

/// A live key with a rate limit it never reaches here (10⁹/s, a burst of 2³²−1): every
/// call takes the limiter's accept path. Made in memory only, as `authenticate` reads
/// nothing else.
fn limited_key(svc: &Service) -> String {
    let (id, key) = tessera::apikeys::generate("bench");
    let now = test_support::clock(&svc.authority).now();
    test_support::make_live_in_memory(
        &svc.authority,
        ApiKeyRow {
            id,
            secret_hash: tessera::apikeys::hash(key.expose()),
            owner: "bench".into(),
            name: "limited".into(),
            environment: "bench".into(),
            scopes: vec![SCOPE_ADMIN.to_string()],
            exchange_audiences: Vec::new(),
            created_at: now,
            expires_at: now + 3600,
            revoked_at: None,
            rate_limit: Some(RateLimit {
                per_second: 1_000_000_000,
                burst: u32::MAX,
            }),
        },
    );
    key.expose().to_string()
}

const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

fn api_key(c: &mut Criterion<ThreadCpu>) {
    let svc = service(SigningAlg::EdDSA);
    let now = test_support::clock(&svc.authority).now();
    c.bench_function("api_key/check", |b| {
        b.iter(|| {
            assert!(test_support::api_key_is_live(
                &svc.authority,
                black_box(&svc.admin_key),
                now
            ))
        })
    });
    // What the interceptor runs: address throttle, key check, rate limit.
    c.bench_function("api_key/authenticate", |b| {
        b.iter(|| {
            assert!(
                svc.authority
                    .authenticate_api_key(black_box(&svc.admin_key), PEER)
                    .is_ok()
            )
        })
    });
    let limited = limited_key(&svc);
    c.bench_function("api_key/authenticate_limited", |b| {
        b.iter(|| {
            assert!(
                svc.authority
                    .authenticate_api_key(black_box(&limited), PEER)
                    .is_ok()
            )
        })
    });
}

/// SplitMix64: cheap, well-spread 128-bit ids without a random-number crate.
fn ids(seed: u64, n: usize) -> Vec<u128> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

fn blocklist(c: &mut Criterion<ThreadCpu>) {
    const ENTRIES: usize = 1_000_000;
    let blocked = ids(1, ENTRIES);
    let absent = ids(2, 4096);
    let present: Vec<u128> = blocked.iter().step_by(ENTRIES / 4096).copied().collect();

    let mut g = c.benchmark_group("blocklist");
    for n in [0, ENTRIES] {
        let r = Revocations::with_capacity(n);
        for jti in &blocked[..n] {
            r.block(*jti, i64::MAX);
        }
        let mut i = 0;
        g.bench_function(format!("miss/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % absent.len();
                assert!(!r.is_blocked(black_box(absent[i])));
            })
        });
        if n > 0 {
            g.bench_function(format!("hit/{n}"), |b| {
                b.iter(|| {
                    i = (i + 1) % present.len();
                    assert!(r.is_blocked(black_box(present[i])));
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion<ThreadCpu> {
    // Enough samples for stable medians while a full run stays around two minutes.
    Criterion::default()
        .with_measurement(ThreadCpu)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

/// Times `a` and `b` over the same inputs in 200 interleaved rounds of 25 calls each;
/// returns (a's median time per call, b's, the median of the per-round ratios b ÷ a).
/// Neighbours on a shared machine slow both sides of a round alike, so the ratio
/// stays steady even when absolute times drift. Every input is built before any
/// timing starts, so that work never sits between timed calls.
fn paired<I>(
    prepare: impl FnOnce(usize) -> Vec<I>,
    mut a: impl FnMut(&I),
    mut b: impl FnMut(&I),
) -> (f64, f64, f64) {
    const ROUNDS: usize = 200;
    const PER_ROUND: usize = 25;
    let all = prepare(ROUNDS * PER_ROUND);
    let time = |f: &mut dyn FnMut(&I), inputs: &[I]| {
        let t = ThreadTime::now();
        inputs.iter().for_each(&mut *f);
        t.elapsed().as_nanos() as f64 / inputs.len() as f64
    };
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for (round, inputs) in all.chunks(PER_ROUND).enumerate() {
        // Alternate which side goes first, so neither always runs on a warm cache.
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut a, inputs);
            (x, time(&mut b, inputs))
        } else {
            let y = time(&mut b, inputs);
            (time(&mut a, inputs), y)
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

/// A minted token, and its signing input and signature decoded for raw *ring*.
struct Minted {
    token: String,
    input: Vec<u8>,
    signature: Vec<u8>,
}

impl Service {
    fn minted(&self, n: usize) -> Vec<Minted> {
        use base64::Engine;
        (0..n)
            .map(|_| {
                let token = self.mint();
                let (input, sig) = token.rsplit_once('.').expect("a compact JWS");
                let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(sig)
                    .expect("base64url");
                Minted {
                    input: input.as_bytes().to_vec(),
                    signature,
                    token,
                }
            })
            .collect()
    }

    /// The active key's public half, as ring takes it.
    fn public_key(&self) -> Vec<u8> {
        let set = test_support::key_set(&self.authority);
        match set.verifying[&set.active.kid].decoding.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => bytes.clone(),
            DecodingKeyKind::RsaModulusExponent { .. } => unreachable!("EdDSA or ES256"),
        }
    }
}

/// The targets are ratios to raw ring; they are measured here as paired
/// rounds over the very same tokens rather than read off two criterion rows (ring's
/// verification time varies with the signature, and a shared machine's load drifts).
fn ratio_line(what: &str, (a, b, r): (f64, f64, f64), target: &str) {
    println!(
        "  {what:<42} {:>8.2} µs / {:>8.2} µs = {r:.3}   {target}",
        b / 1e3,
        a / 1e3
    );
}

/// What a rate limit costs a call that stays under it, and what the authentication
/// path (throttle check included) costs over the bare key check.
fn api_key_ratios() {
    let svc = service(SigningAlg::EdDSA);
    let now = test_support::clock(&svc.authority).now();
    let limited = limited_key(&svc);
    let unlimited = |_: &()| {
        assert!(
            svc.authority
                .authenticate_api_key(black_box(&svc.admin_key), PEER)
                .is_ok()
        );
    };
    ratio_line(
        "authenticate: limited key / unlimited key",
        paired(
            |n| vec![(); n],
            unlimited,
            |_| {
                assert!(
                    svc.authority
                        .authenticate_api_key(black_box(&limited), PEER)
                        .is_ok()
                )
            },
        ),
        "(target < 1.03)",
    );
    ratio_line(
        "authenticate (unlimited) / key check",
        paired(
            |n| vec![(); n],
            |_| {
                assert!(test_support::api_key_is_live(
                    &svc.authority,
                    black_box(&svc.admin_key),
                    now
                ))
            },
            unlimited,
        ),
        "(the throttle check: about 1.0)",
    );
}

fn paired_ratios() {
    provider::install();
    println!("\npaired ratios (median of 200 interleaved rounds, thread CPU time):");
    api_key_ratios();
    let line = ratio_line;
    for (keys, alg) in [(ed25519(), SigningAlg::EdDSA), (p256(), SigningAlg::ES256)] {
        let name = format!("{:?}", keys.alg);
        let svc = service(alg);
        let public = svc.public_key();
        let ring_sign = |m: &Minted| {
            black_box((keys.raw_sign)(black_box(&m.input)));
        };
        let ring_verify = |m: &Minted| {
            sig::UnparsedPublicKey::new(keys.scheme, &public)
                .verify(black_box(&m.input), black_box(&m.signature))
                .expect("verifies");
        };
        line(
            &format!("{name} sign: provider / ring"),
            paired(
                |n| svc.minted(n),
                ring_sign,
                |m| {
                    black_box(
                        jsonwebtoken::crypto::sign(black_box(&m.input), &keys.encoding, keys.alg)
                            .expect("signs"),
                    );
                },
            ),
            "(keys parsed once: about 1.0)",
        );
        line(
            &format!("{name} issue (access token) / ring sign"),
            paired(
                |n| svc.minted(n),
                ring_sign,
                |_| {
                    black_box(svc.mint());
                },
            ),
            "(target ≤ 1.10)",
        );
        let set = test_support::key_set(&svc.authority);
        let decoding = &set.verifying[&set.active.kid].decoding;
        line(
            &format!("{name} verify: provider / ring"),
            paired(
                |n| svc.minted(n),
                ring_verify,
                |m| {
                    let (input, sig) = m.token.rsplit_once('.').expect("a compact JWS");
                    assert_eq!(
                        jsonwebtoken::crypto::verify(
                            sig,
                            black_box(input.as_bytes()),
                            decoding,
                            keys.alg
                        ),
                        Ok(true)
                    );
                },
            ),
            "",
        );
        line(
            &format!("{name} introspect cold / ring verify"),
            paired(
                |n| svc.minted(n),
                ring_verify,
                |m| assert!(svc.introspect(&m.token)),
            ),
            "(target ≤ 1.15)",
        );
        line(
            &format!("{name} introspect hot / ring verify"),
            paired(
                |n| {
                    let warm = svc.minted(n);
                    warm.iter().for_each(|m| assert!(svc.introspect(&m.token)));
                    warm
                },
                ring_verify,
                |m| assert!(svc.introspect(black_box(&m.token))),
            ),
            "",
        );
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = sign_and_verify, api_key, blocklist
}

fn main() {
    // `cargo bench -- <filter>` picks criterion benchmarks; the paired ratios run
    // when no filter is given or the filter names them.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listing = args.iter().any(|a| a == "--list" || a == "--test");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if filters.len() == 1 && filters[0] == "api_key_ratios" {
        println!("\npaired ratios (median of 200 interleaved rounds, thread CPU time):");
        api_key_ratios();
        return;
    }
    let only_ratios =
        !filters.is_empty() && filters.iter().all(|f| *f == "ratios" || *f == "ratio");
    if !only_ratios {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if !listing && (filters.is_empty() || only_ratios) {
        paired_ratios();
    }
}
