//! Hostile input for `Introspect` (and `Revoke`), as tables run against the real
//! server. Row names carry the case ids of Tessera's security catalog: A1–A13 are
//! attacks on Introspect, B the official RFC vectors and RFC 7662/7009 semantics.
//!
//! One row per attack, its name in every failure. Unless a row is a positive control,
//! the only acceptable answer is `OK` with exactly the default response (`active:
//! false` and nothing else), or `INVALID_ARGUMENT` for empty or oversize input (or
//! tonic's message-size limit) — never `active: true`, never `INTERNAL`, never a hang. After every
//! row the base token T0 is introspected again (jwt_tool's persistence check); after
//! every table the health service must still serve.
//!
//! K0 rows need no key. K1 rows re-sign with the server's real key through
//! `common::mint`, so the one property a row changes is the only thing wrong with it;
//! each K1 table carries positive controls proving that re-signing alone keeps a token
//! active.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use common::mint::{Minter, decode};
use common::{TestServer, access_spec, authed, test_config};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use serde_json::{Value, json};
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    BumpTokenVersionRequest, IntrospectRequest, IntrospectResponse, IssueRequest, IssueResponse,
    RevokeRequest, RotateSigningKeyRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

// ---------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------

/// What a row must get back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `OK` with exactly `IntrospectResponse::default()`.
    Inactive,
    /// Inactive, or `INVALID_ARGUMENT` (empty or over-long input, A0).
    InactiveOrInvalid,
    /// Refused before decoding: `INVALID_ARGUMENT`, or tonic's message-size limit.
    Refused,
    /// Over tonic's 64 KiB message limit: `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED`.
    TooLarge,
    /// Positive control: a genuine, live token is active.
    Active,
}
use Expect::*;

/// One attack.
struct Row {
    name: String,
    token: String,
    hint: String,
    expect: Expect,
}

fn row(name: impl Into<String>, token: impl Into<String>) -> Row {
    Row {
        name: name.into(),
        token: token.into(),
        hint: String::new(),
        expect: Inactive,
    }
}

impl Row {
    fn expect(mut self, e: Expect) -> Row {
        self.expect = e;
        self
    }
    fn hint(mut self, h: &str) -> Row {
        self.hint = h.into();
        self
    }
}

/// Every row must answer within this, whatever the input (A0, A4.7).
const ROW_LATENCY_CAP: Duration = Duration::from_secs(2);
/// p99 over a table (A13.5); generous, for debug builds on a busy machine.
const P99_BUDGET: Duration = Duration::from_millis(200);

fn judge(expect: Expect, got: &Result<IntrospectResponse, Status>, token: &str) -> Option<String> {
    if let Err(st) = got
        && token.len() >= 8
        && st.message().contains(token)
    {
        return Some(format!("error message echoes the token: {st:?}"));
    }
    let ok = match (expect, got) {
        (Active, Ok(r)) => r.active,
        (Inactive | InactiveOrInvalid, Ok(r)) => *r == IntrospectResponse::default(),
        (InactiveOrInvalid | Refused, Err(s)) if s.code() == Code::InvalidArgument => true,
        (Refused | TooLarge, Err(s)) => {
            matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted)
        }
        _ => false,
    };
    (!ok).then(|| match got {
        Ok(r) if r.active => format!("expected {expect:?}, got ACTIVE: {r:?}"),
        Ok(r) => format!("expected {expect:?}, got {r:?}"),
        Err(s) => format!("expected {expect:?}, got {:?}: {}", s.code(), s.message()),
    })
}

// ---------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------

fn b64(b: impl AsRef<[u8]>) -> String {
    B64.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).expect("base64url")
}

fn b64_json(v: &Value) -> String {
    b64(v.to_string())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).unwrap();
    b
}

/// A compact JWS split into its segments.
#[derive(Clone)]
struct Jwt {
    token: String,
    h: String,
    p: String,
    s: String,
}

impl Jwt {
    fn new(token: &str) -> Jwt {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "not a compact JWS");
        Jwt {
            token: token.into(),
            h: parts[0].into(),
            p: parts[1].into(),
            s: parts[2].into(),
        }
    }
    fn sig(&self) -> Vec<u8> {
        unb64(&self.s)
    }
    fn with_sig(&self, s64: &str) -> String {
        format!("{}.{}.{s64}", self.h, self.p)
    }
    fn with_sig_bytes(&self, sig: &[u8]) -> String {
        self.with_sig(&b64(sig))
    }
    fn with_header(&self, h64: &str) -> String {
        format!("{h64}.{}.{}", self.p, self.s)
    }
    fn with_payload(&self, p64: &str) -> String {
        format!("{}.{p64}.{}", self.h, self.s)
    }
    fn header(&self) -> Value {
        decode(&self.token).0
    }
    fn payload(&self) -> Value {
        decode(&self.token).1
    }
}

/// HMAC-signs `h64.p64` (the HS-confusion forgeries of A2 and A4).
fn hmac_token(alg: &str, key: &[u8], h64: &str, p64: &str) -> String {
    let a = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        other => panic!("{other}"),
    };
    let input = format!("{h64}.{p64}");
    let tag = hmac::sign(&hmac::Key::new(a, key), input.as_bytes());
    format!("{input}.{}", b64(tag))
}

/// `{...}` with one more raw member at the end.
fn splice(obj: &str, member: &str) -> String {
    assert!(obj.starts_with('{') && obj.ends_with('}'));
    if obj == "{}" {
        return format!("{{{member}}}");
    }
    format!("{},{member}}}", &obj[..obj.len() - 1])
}

/// `{...}` with one more raw member at the front.
fn splice_front(obj: &str, member: &str) -> String {
    format!("{{{member},{}", &obj[1..])
}

/// A fresh Ed25519 key pair nobody trusts.
fn attacker_ed25519() -> Ed25519KeyPair {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
}

fn attacker_sign(pair: &Ed25519KeyPair, header: &Value, p64: &str) -> String {
    let input = format!("{}.{p64}", b64_json(header));
    format!("{input}.{}", b64(pair.sign(input.as_bytes())))
}

/// An OpenSSH public-key line's base64 blob: length-prefixed strings.
fn ssh_blob(parts: &[&[u8]]) -> String {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    STANDARD.encode(out)
}

fn pem(der: &[u8], eol: &str, trailing: bool) -> Vec<u8> {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut s = format!("-----BEGIN PUBLIC KEY-----{eol}");
    for l in lines {
        s.push_str(l);
        s.push_str(eol);
    }
    s.push_str("-----END PUBLIC KEY-----");
    if trailing {
        s.push_str(eol);
    }
    s.into_bytes()
}

/// Ed25519 group order L, little-endian (RFC 8032 §5.1).
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// An Ed25519 signature with `S := S + k·L` (little-endian add; fits for k ≤ 3).
fn ed25519_s_plus_l(sig: &[u8], k: u32) -> Vec<u8> {
    let mut out = sig.to_vec();
    for _ in 0..k {
        let mut carry = 0u16;
        for i in 0..32 {
            let v = out[32 + i] as u16 + ED25519_L[i] as u16 + carry;
            out[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
    }
    out
}

/// P-256 group order n, big-endian.
const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

/// `n − s` for 32-byte big-endian numbers.
fn p256_neg(s: &[u8]) -> Vec<u8> {
    let n = hex(P256_N);
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut v = n[i] as i16 - s[i] as i16 - borrow;
        borrow = 0;
        if v < 0 {
            v += 256;
            borrow = 1;
        }
        out[i] = v as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` of a fixed-width `r‖s`.
fn der_signature(rs: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().take_while(|&&x| x == 0).count().min(b.len() - 1)..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = rs.split_at(rs.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// The same text with its last base64url character changed only in its
/// `unused_bits` low bits: a lenient decoder yields the same bytes.
fn trailing_bit_variants(s: &str, unused_bits: u32) -> Vec<String> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *s.as_bytes().last().unwrap();
    let v = ALPHA.iter().position(|&c| c == last).unwrap();
    assert_eq!(
        v & ((1 << unused_bits) - 1),
        0,
        "canonical encoding expected"
    );
    (1..(1usize << unused_bits))
        .map(|low| {
            let mut t = s[..s.len() - 1].to_string();
            t.push(ALPHA[v | low] as char);
            t
        })
        .collect()
}

/// The forging helpers reproduce the derived vectors published with the catalog
/// (B12.1, B12.3, B12.4, B12.5), so the rows built with them are the intended bytes.
#[test]
fn forging_helpers_reproduce_published_vectors() {
    let rfc8037_a4 = unb64(
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
    );
    assert_eq!(
        b64(ed25519_s_plus_l(&rfc8037_a4, 1)),
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg"
    );
    let rfc7515_a3 = unb64(
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    );
    assert_eq!(b64(der_signature(&rfc7515_a3)), RFC7515_A3_DER);
    let (r, s) = rfc7515_a3.split_at(32);
    assert_eq!(
        b64([r, &p256_neg(s)[..]].concat()),
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA"
    );
    let variants = trailing_bit_variants("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", 2);
    for v in [
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXm",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXn",
    ] {
        assert!(variants.iter().any(|x| x == v), "{v}");
    }
}

// ---------------------------------------------------------------------------------
// The fixture: a server, a base token T0, the mint hook, one client
// ---------------------------------------------------------------------------------

struct Fixture {
    s: TestServer,
    client: TokenServiceClient<Channel>,
    /// The base token: a freshly issued access token for `alice`.
    t0: Jwt,
    mint: Minter,
}

const ISSUER: &str = "https://tessera.test";

impl Fixture {
    async fn start() -> Fixture {
        Self::on(TestServer::start().await).await
    }

    async fn on(s: TestServer) -> Fixture {
        let client = s.tokens().await;
        let t0 = Jwt::new(&s.access_token("alice").await.token);
        let mint = Minter::active(&s);
        Fixture {
            client,
            t0,
            mint,
            s,
        }
    }

    fn now(&self) -> i64 {
        self.s.clock.now()
    }

    /// K1: T0 with `change` applied to its decoded header and payload, re-signed.
    fn k1(&self, change: impl FnOnce(&mut Value, &mut Value)) -> String {
        self.mint.tweak(&self.t0.token, change)
    }

    /// K1: T0 with one claim set to `value` (removed for `None`).
    fn k1_claim(&self, name: &str, value: Option<Value>) -> String {
        self.k1(|_, p| set(p, name, value))
    }

    /// K1: T0 with one header member set to `value` (removed for `None`).
    fn k1_header(&self, name: &str, value: Option<Value>) -> String {
        self.k1(|h, _| set(h, name, value))
    }

    /// K1: T0's header bytes over arbitrary payload bytes.
    fn k1_payload_bytes(&self, payload: &[u8]) -> String {
        self.mint
            .sign_input(&format!("{}.{}", self.t0.h, b64(payload)))
    }

    /// K1: T0's payload over arbitrary header bytes.
    fn k1_header_bytes(&self, header: &[u8]) -> String {
        self.mint
            .sign_input(&format!("{}.{}", b64(header), self.t0.p))
    }

    /// K1: T0 with claim `name` replaced by raw JSON text (numbers serde cannot hold).
    fn k1_raw_claim(&self, name: &str, raw: &str) -> String {
        let mut p = self.t0.payload();
        p.as_object_mut().unwrap().remove(name);
        self.k1_payload_bytes(splice(&p.to_string(), &format!("\"{name}\":{raw}")).as_bytes())
    }

    /// T0's header as compact JSON text with one member replaced by raw JSON text.
    fn header_text_with(&self, name: &str, raw: &str) -> String {
        let mut h = self.t0.header();
        h.as_object_mut().unwrap().remove(name);
        splice(&h.to_string(), &format!("\"{name}\":{raw}"))
    }

    async fn introspect(
        &self,
        token: &str,
        hint: &str,
        key: &str,
    ) -> Result<IntrospectResponse, Status> {
        let req = IntrospectRequest {
            token: token.into(),
            token_type_hint: hint.into(),
        };
        self.client
            .clone()
            .introspect(authed(req, key))
            .await
            .map(|r| r.into_inner())
    }

    async fn active(&self, token: &str) -> bool {
        self.introspect(token, "", &self.s.admin_key)
            .await
            .unwrap()
            .active
    }

    async fn issue(&self, req: IssueRequest) -> IssueResponse {
        self.client
            .clone()
            .issue(authed(req, &self.s.admin_key))
            .await
            .unwrap()
            .into_inner()
    }

    /// An access token (and refresh token) for `subject`.
    async fn issue_with_refresh(&self, subject: &str) -> IssueResponse {
        let mut req = access_spec(subject);
        if let Some(Credential::AccessToken(spec)) = &mut req.credential {
            spec.refresh_token = true;
        }
        self.issue(req).await
    }

    /// Issues access tokens for `alice` until one satisfies `pred` (bounded).
    async fn issue_until(&self, pred: impl Fn(&Jwt) -> bool) -> Jwt {
        for _ in 0..64 {
            let t = Jwt::new(&self.s.access_token("alice").await.token);
            if pred(&t) {
                return t;
            }
        }
        panic!("no token with the wanted shape in 64 tries");
    }

    async fn revoke_as(&self, token: &str, hint: &str, key: &str) -> Result<(), Status> {
        let req = RevokeRequest {
            token: token.into(),
            token_type_hint: hint.into(),
            ..RevokeRequest::default()
        };
        self.client
            .clone()
            .revoke(authed(req, key))
            .await
            .map(|_| ())
    }

    async fn revoke(&self, token: &str) {
        self.revoke_as(token, "", &self.s.admin_key).await.unwrap();
    }

    /// The published Ed25519/P-256 JWK of T0's key, fetched over HTTP.
    async fn published_jwk(&self) -> (Value, String) {
        let (status, _, body) = self.s.http_get("/.well-known/jwks.json").await;
        assert_eq!(status, 200);
        let jwks: Value = serde_json::from_str(&body).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == self.mint.kid.as_str())
            .expect("T0's key in the JWKS")
            .clone();
        (jwk, body)
    }

    async fn assert_healthy(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut h = tonic_health::pb::health_client::HealthClient::new(self.s.channel().await);
        for service in ["", "tessera.v1.TokenService"] {
            let st = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("grpc.health.v1 still serves")
                .into_inner();
            assert_eq!(
                st.status,
                ServingStatus::Serving as i32,
                "health of {service:?}"
            );
        }
    }

    /// Runs a table: each row, then the persistence check; then health and latency.
    async fn run(&self, table: &str, rows: Vec<Row>) {
        assert!(!rows.is_empty());
        let n = rows.len();
        let mut failures = Vec::new();
        let mut latencies = Vec::with_capacity(n);
        for r in rows {
            let start = Instant::now();
            let got = self.introspect(&r.token, &r.hint, &self.s.admin_key).await;
            let mut took = start.elapsed();
            // A slow answer is timed again: scheduler noise on a busy machine goes
            // away, an input that is really slow to handle stays slow.
            for _ in 0..2 {
                if took <= P99_BUDGET {
                    break;
                }
                let again = Instant::now();
                let _ = self.introspect(&r.token, &r.hint, &self.s.admin_key).await;
                took = took.min(again.elapsed());
            }
            latencies.push((took, r.name.clone()));
            if let Some(why) = judge(r.expect, &got, &r.token) {
                failures.push(format!("{}: {why}", r.name));
            }
            if took > ROW_LATENCY_CAP {
                failures.push(format!("{}: took {took:?}", r.name));
            }
            // Persistence check: the attack must not have disturbed T0.
            match self.introspect(&self.t0.token, "", &self.s.admin_key).await {
                Ok(t) if t.active => {}
                other => failures.push(format!(
                    "{}: persistence check: T0 is now {:?}",
                    r.name,
                    other.map(|r| r.active)
                )),
            }
        }
        assert!(
            failures.is_empty(),
            "{table}: {} of {n} rows failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
        self.assert_healthy().await;
        latencies.sort();
        let (p99, slowest) = &latencies[(n * 99).div_ceil(100) - 1];
        assert!(
            p99 < &P99_BUDGET,
            "{table}: p99 latency {p99:?} ({slowest})"
        );
        eprintln!("{table}: {n} rows, p99 {p99:?}");
    }
}

fn set(obj: &mut Value, name: &str, value: Option<Value>) {
    let m = obj.as_object_mut().expect("JSON object");
    match value {
        Some(v) => {
            m.insert(name.into(), v);
        }
        None => {
            m.remove(name);
        }
    }
}

/// Checks that a catalog vector decodes to the JSON its row name claims.
fn check_vector(b64_text: &str, json_text: &str) {
    assert_eq!(
        String::from_utf8(unb64(b64_text)).unwrap(),
        json_text,
        "catalog vector {b64_text}"
    );
}

// ---------------------------------------------------------------------------------
// A1. alg=none / unsecured JWS
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a1_alg_none() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let mut rows = Vec::new();

    let vectors = [
        ("A1.1", "eyJhbGciOiJub25lIn0", r#"{"alg":"none"}"#),
        ("A1.2", "eyJhbGciOiJOb25lIn0", r#"{"alg":"None"}"#),
        ("A1.3", "eyJhbGciOiJOT05FIn0", r#"{"alg":"NONE"}"#),
        ("A1.4", "eyJhbGciOiJuT25FIn0", r#"{"alg":"nOnE"}"#),
        (
            "A1.4",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            r#"{"alg":"none","typ":"JWT"}"#,
        ),
        (
            "A1.4",
            "eyJhbGciOiJOb25lIiwidHlwIjoiSldUIn0",
            r#"{"alg":"None","typ":"JWT"}"#,
        ),
        (
            "A1.4",
            "eyJhbGciOiJOT05FIiwidHlwIjoiSldUIn0",
            r#"{"alg":"NONE","typ":"JWT"}"#,
        ),
        (
            "A1.4",
            "eyJhbGciOiJuT25FIiwidHlwIjoiSldUIn0",
            r#"{"alg":"nOnE","typ":"JWT"}"#,
        ),
    ];
    for (id, h, text) in vectors {
        check_vector(h, text);
        rows.push(row(
            format!("{id} {text}, empty signature"),
            format!("{h}.{}.", t0.p),
        ));
        rows.push(row(
            format!("A1.5 {text}, T0's signature kept"),
            t0.with_header(h),
        ));
        rows.push(
            row(
                format!("A1.6 {text}, no trailing dot"),
                format!("{h}.{}", t0.p),
            )
            .expect(InactiveOrInvalid),
        );
    }
    // Sharper: T0's own header with only `alg` changed.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64_json(&json!({"alg": alg, "kid": kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A1.1 T0 header with alg {alg}, empty signature"),
            format!("{h}.{}.", t0.p),
        ));
        rows.push(row(
            format!("A1.5 T0 header with alg {alg}, T0's signature"),
            t0.with_header(&h),
        ));
        rows.push(row(
            format!("A1.5 T0 header with alg {alg}, signed by the real key (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // A1.7 degenerate alg values.
    for (h, text) in [
        ("eyJhbGciOiIifQ", r#"{"alg":""}"#),
        ("eyJhbGciOm51bGx9", r#"{"alg":null}"#),
        ("eyJ0eXAiOiJKV1QifQ", r#"{"typ":"JWT"}"#),
    ] {
        check_vector(h, text);
        rows.push(row(
            format!("A1.7 {text}, empty signature"),
            format!("{h}.{}.", t0.p),
        ));
        rows.push(row(
            format!("A1.7 {text}, T0's signature"),
            t0.with_header(h),
        ));
    }
    for v in [
        json!(""),
        json!(null),
        json!(123),
        json!(["EdDSA"]),
        json!({}),
        json!({"alg": "EdDSA"}),
        json!(true),
    ] {
        rows.push(row(
            format!("A1.7 T0 header with alg {v}, T0's signature"),
            t0.with_header(&b64_json(&json!({"alg": v, "kid": kid, "typ": "at+jwt"}))),
        ));
        rows.push(row(
            format!("A1.7 T0 header with alg {v}, K1"),
            f.k1_header("alg", Some(v.clone())),
        ));
    }
    rows.push(row(
        "A1.7 T0 header without alg, K1",
        f.k1_header("alg", None),
    ));
    // A1.8 escaped member name.
    check_vector("eyJcdTAwNjFsZyI6Im5vbmUifQ", r#"{"\u0061lg":"none"}"#);
    rows.push(row(
        r#"A1.8 {"\u0061lg":"none"}, empty signature"#,
        format!("eyJcdTAwNjFsZyI6Im5vbmUifQ.{}.", t0.p),
    ));
    rows.push(row(
        r#"A1.8 {"\u0061lg":"none"}, T0's signature"#,
        t0.with_header("eyJcdTAwNjFsZyI6Im5vbmUifQ"),
    ));
    let escaped_none = format!(r#"{{"\u0061lg":"none","kid":"{kid}","typ":"at+jwt"}}"#);
    rows.push(row(
        r#"A1.8 T0 header as "\u0061lg":"none", K1"#,
        f.k1_header_bytes(escaped_none.as_bytes()),
    ));
    // The escape really is decoded: the same spelling of EdDSA is the genuine header.
    let escaped_eddsa = format!(r#"{{"\u0061lg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#);
    rows.push(
        row(
            r#"A1.8 control: "\u0061lg":"EdDSA" is alg EdDSA, K1"#,
            f.k1_header_bytes(escaped_eddsa.as_bytes()),
        )
        .expect(Active),
    );
    rows.push(row(
        "B5 RFC 7515 A.5 unsecured JWS",
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    ));
    f.run("A1", rows).await;
}

// ---------------------------------------------------------------------------------
// A2. Algorithm and key confusion
// ---------------------------------------------------------------------------------

/// Every form in which the public key might be (mis)used as an HMAC secret.
fn hmac_key_forms(
    jwk: &Value,
    jwks_text: &str,
    raw: &[u8],
) -> Vec<(&'static str, String, Vec<u8>)> {
    let mut forms: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let ed = raw.len() == 32;
    let spki_prefix = if ed {
        hex("302a300506032b6570032100")
    } else {
        hex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
    };
    let der = [spki_prefix, raw.to_vec()].concat();
    forms.push((
        "A2.1",
        "PEM SPKI with trailing \\n".into(),
        pem(&der, "\n", true),
    ));
    forms.push((
        "A2.2",
        "PEM SPKI without trailing \\n".into(),
        pem(&der, "\n", false),
    ));
    forms.push(("A2.2", "PEM SPKI with CRLF".into(), pem(&der, "\r\n", true)));
    forms.push(("A2.3", "DER SPKI".into(), der));
    if ed {
        forms.push(("A2.4", "raw 32-byte x".into(), raw.to_vec()));
    } else {
        forms.push(("A2.4", "65-byte uncompressed point".into(), raw.to_vec()));
        let mut compressed = vec![2 + (raw[64] & 1)];
        compressed.extend_from_slice(&raw[1..33]);
        forms.push(("A2.4", "33-byte compressed point".into(), compressed));
        forms.push(("A2.4", "raw x‖y".into(), raw[1..].to_vec()));
    }
    forms.push(("A2.5", "JWK JSON text".into(), jwk.to_string().into_bytes()));
    let canonical = if ed {
        tessera::keys::jwk::canonical_ed25519(raw)
    } else {
        tessera::keys::jwk::canonical_ec_p256(&raw[1..33], &raw[33..65])
    };
    forms.push((
        "A2.5",
        "RFC 7638 canonical JWK".into(),
        canonical.into_bytes(),
    ));
    forms.push((
        "A2.5",
        "JWKS document text".into(),
        jwks_text.as_bytes().to_vec(),
    ));
    forms.push((
        "A2.5",
        "base64url text of x".into(),
        jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ));
    let ssh = if ed {
        format!("ssh-ed25519 {}", ssh_blob(&[b"ssh-ed25519", raw]))
    } else {
        format!(
            "ecdsa-sha2-nistp256 {}",
            ssh_blob(&[b"ecdsa-sha2-nistp256", b"nistp256", raw])
        )
    };
    forms.push((
        "A2.6",
        "OpenSSH public-key line".into(),
        ssh.clone().into_bytes(),
    ));
    forms.push((
        "A2.6",
        "OpenSSH line with comment and \\n".into(),
        format!("{ssh} ops@tessera\n").into_bytes(),
    ));
    forms
}

/// A2.1–A2.7 for the fixture's key: HS256/384/512 keyed with every public-key form,
/// under the bare `{"alg":"HSxxx"}` header and under T0's header with only `alg` changed.
async fn hs_confusion_rows(f: &Fixture) -> Vec<Row> {
    let (jwk, jwks_text) = f.published_jwk().await;
    let raw = f.mint.public_key();
    let mut rows = Vec::new();
    for alg in ["HS256", "HS384", "HS512"] {
        let prefix = if alg == "HS256" { "" } else { "A2.7/" };
        let bare = b64(format!(r#"{{"alg":"{alg}"}}"#));
        let t0_like = b64_json(&json!({"alg": alg, "kid": f.mint.kid, "typ": "at+jwt"}));
        for (id, what, key) in hmac_key_forms(&jwk, &jwks_text, &raw) {
            for (hname, h) in [("bare header", &bare), ("T0 header", &t0_like)] {
                rows.push(row(
                    format!("{prefix}{id} {alg} keyed with {what} ({hname})"),
                    hmac_token(alg, &key, h, &f.t0.p),
                ));
            }
        }
    }
    rows
}

#[tokio::test]
async fn a2_algorithm_confusion() {
    let f = Fixture::start().await;
    let (jwk, _) = f.published_jwk().await;
    assert_eq!(unb64(jwk["x"].as_str().unwrap()), f.mint.public_key());
    let mut rows = hs_confusion_rows(&f).await;
    // A2.8: T0's signature under another algorithm's name; and the real key's
    // signature under another name (the algorithm is bound to the kid, not the header).
    for alg in [
        "ES256", "ES384", "ES512", "RS256", "PS256", "HS256", "Ed25519", "Ed448", "EdDSA ",
    ] {
        let h = b64_json(&json!({"alg": alg, "kid": f.mint.kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A2.8 alg {alg:?}, T0's signature"),
            f.t0.with_header(&h),
        ));
        rows.push(row(
            format!("A2.8 alg {alg:?}, signed by the real key (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // A2.9: HS256 with guessable secrets (the provider refuses HMAC outright, so the
    // whole of jwt_tool's jwt-common.txt would fare the same; these are its classics).
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("64 zero bytes".into(), vec![0; 64]),
    ];
    for s in [
        "secret",
        "your-256-bit-secret",
        "password",
        "123456",
        "changeme",
        "jwt",
        "key",
        "test",
        "admin",
        "secretkey",
        "s3cr3t",
        "tessera",
        "supersecret",
        "default",
        "1",
    ] {
        secrets.push((format!("{s:?}"), s.as_bytes().to_vec()));
    }
    let t0_like = b64_json(&json!({"alg": "HS256", "kid": f.mint.kid, "typ": "at+jwt"}));
    for (name, key) in secrets {
        rows.push(row(
            format!("A2.9 HS256 with secret {name} (T0 header)"),
            hmac_token("HS256", &key, &t0_like, &f.t0.p),
        ));
        rows.push(row(
            format!("A2.9 HS256 with secret {name} (bare header)"),
            hmac_token("HS256", &key, "eyJhbGciOiJIUzI1NiJ9", &f.t0.p),
        ));
    }
    f.run("A2", rows).await;
}

// ---------------------------------------------------------------------------------
// A3. Signature tampering, psychic signatures, encodings
// ---------------------------------------------------------------------------------

const PSYCHIC_DER: &str = "MAYCAQACAQA";
const P256_R_S_N: &str =
    "_____wAAAAD__________7zm-q2nF56E87nKwvxjJVH_____AAAAAP__________vOb6racXnoTzucrC_GMlUQ";
const RFC7515_A3_DER: &str = "MEUCIA7RIVN5Y2xIPC9_FVgH1AKjsigDOvl8fheBmsMWnqZlAiEAxQoH04w8cOXY8S2vCEpUgKZlkMXyk1Cajz9_ioOjVNU";

/// Psychic and DER signature rows for T0 under its own header and ES* headers.
fn psychic_rows(f: &Fixture) -> Vec<Row> {
    let t0 = &f.t0;
    let mut rows = Vec::new();
    let own = f.mint.alg.clone();
    let mut algs = vec![(own.as_str(), 86)];
    for (alg, zeros) in [("ES256", 86), ("ES384", 128), ("ES512", 176)] {
        if alg != own {
            algs.push((alg, zeros));
        }
    }
    for (alg, zeros) in algs {
        let h = b64_json(&json!({"alg": alg, "kid": f.mint.kid, "typ": "at+jwt"}));
        let input = format!("{h}.{}", t0.p);
        rows.push(row(
            format!("A3.9 alg {alg}, all-zero P1363 signature ({zeros} x A)"),
            format!("{input}.{}", "A".repeat(zeros)),
        ));
        rows.push(row(
            format!("A3.10 alg {alg}, psychic DER r=s=0 {PSYCHIC_DER}"),
            format!("{input}.{PSYCHIC_DER}"),
        ));
        if alg == "ES256" || alg == own {
            rows.push(row(
                format!("A3.11 alg {alg}, r=s=n (P-256 order)"),
                format!("{input}.{P256_R_S_N}"),
            ));
            rows.push(row(
                format!("A3.12 alg {alg}, RFC 7515 A.3 signature as DER"),
                format!("{input}.{RFC7515_A3_DER}"),
            ));
        }
    }
    rows.push(row(
        "A3.12 T0's own signature re-encoded as DER",
        t0.with_sig_bytes(&der_signature(&t0.sig())),
    ));
    rows
}

#[tokio::test]
async fn a3_signature_tampering() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let sig = t0.sig();
    assert_eq!(sig.len(), 64);
    let mut rows = vec![row("A3.1 empty signature", t0.with_sig(""))];
    for n in [1, 3, 4] {
        rows.push(row(
            format!("A3.2 signature text truncated by {n}"),
            t0.with_sig(&t0.s[..t0.s.len() - n]),
        ));
    }
    rows.push(row(
        "A3.2 signature one byte short",
        t0.with_sig_bytes(&sig[..63]),
    ));
    rows.push(row(
        "A3.2 signature one byte long",
        t0.with_sig_bytes(&[&sig[..], &[0u8][..]].concat()),
    ));
    rows.push(row(
        "A3.2 signature doubled",
        t0.with_sig_bytes(&[&sig[..], &sig[..]].concat()),
    ));
    for (byte, bit) in [(32, 3), (0, 0), (31, 7), (33, 0), (63, 7), (63, 4)] {
        let mut s = sig.clone();
        s[byte] ^= 1 << bit;
        rows.push(row(
            format!("A3.3 bit {bit} of signature byte {byte} flipped"),
            t0.with_sig_bytes(&s),
        ));
    }
    let other = attacker_ed25519();
    let input = format!("{}.{}", t0.h, t0.p);
    rows.push(row(
        "A3.4 T0 signed by another Ed25519 key, T0's kid kept",
        t0.with_sig_bytes(other.sign(input.as_bytes()).as_ref()),
    ));
    // A3.6 one claim changed, original signature.
    let changes: Vec<(&str, Value)> = vec![
        ("sub", json!("admin")),
        ("scope", json!("read:payments write:payments admin")),
        ("aud", json!(["admin-api"])),
        ("exp", json!(t0.payload()["exp"].as_i64().unwrap() + 3600)),
        ("jti", json!("AAAAAAAAAAAAAAAAAAAAAA")),
        ("ver", json!(1)),
        ("client_id", json!("someone-else")),
    ];
    for (claim, v) in changes {
        let mut p = t0.payload();
        p[claim] = v.clone();
        rows.push(row(
            format!("A3.6 {claim} changed to {v}, T0's signature"),
            t0.with_payload(&b64_json(&p)),
        ));
    }
    let reserialized = b64(serde_json::to_string_pretty(&t0.payload()).unwrap());
    rows.push(row(
        "A3.6 same claims re-serialized (other bytes), T0's signature",
        t0.with_payload(&reserialized),
    ));
    // A3.7 the signature covers the protected header.
    let mut h = t0.header();
    h["x"] = json!(1);
    rows.push(row(
        "A3.7 header member x:1 added, T0's signature",
        t0.with_header(&b64_json(&h)),
    ));
    rows.push(row(
        "A3.7 header re-serialized with sorted members, T0's signature",
        t0.with_header(&b64_json(&t0.header())),
    ));
    // A3.8 signatures swapped between two valid tokens.
    let t1 = Jwt::new(&f.s.access_token("bob").await.token);
    rows.push(row("A3.8 T0 with T1's signature", t0.with_sig(&t1.s)));
    rows.push(row("A3.8 T1 with T0's signature", t1.with_sig(&t0.s)));
    rows.push(row(
        "A3.8 T0's header and signature, T1's payload",
        format!("{}.{}.{}", t0.h, t1.p, t0.s),
    ));
    rows.extend(psychic_rows(&f));
    // A3.13 non-canonical S (RFC 8032 §5.1.7: S >= L must be rejected).
    for k in [1, 2, 3] {
        rows.push(row(
            format!("A3.13 S + {k}L"),
            t0.with_sig_bytes(&ed25519_s_plus_l(&sig, k)),
        ));
    }
    let mut s_is_l = sig.clone();
    s_is_l[32..].copy_from_slice(&ED25519_L);
    rows.push(row("A3.13 S = L", t0.with_sig_bytes(&s_is_l)));
    let mut s_ff = sig.clone();
    s_ff[32..].fill(0xff);
    rows.push(row("A3.13 S = 2^256 - 1", t0.with_sig_bytes(&s_ff)));
    let mut r_zero = sig.clone();
    r_zero[..32].fill(0);
    rows.push(row("A3.13 R = 0", t0.with_sig_bytes(&r_zero)));
    // A3.14 RSA-shaped signatures (no RSA key is ever configured here).
    for len in [255, 256, 257] {
        let h = b64_json(&json!({"alg": "RS256", "kid": f.mint.kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A3.14 alg RS256 with a {len}-byte signature"),
            format!("{h}.{}.{}", t0.p, b64(random_bytes(len))),
        ));
    }
    // A3.15 non-canonical base64url of a valid signature (4 unused bits in 86 chars).
    for v in trailing_bit_variants(&t0.s, 4) {
        rows.push(row(
            format!(
                "A3.15 signature ends in {:?} (trailing-bit variant)",
                &v[v.len() - 1..]
            ),
            t0.with_sig(&v),
        ));
    }
    rows.push(row(
        "A3.15 signature with = padding",
        t0.with_sig(&format!("{}==", t0.s)),
    ));
    rows.push(row(
        "A3.15 signature with one =",
        t0.with_sig(&format!("{}=", t0.s)),
    ));
    let alpha = f.issue_until(|j| j.s.contains(['-', '_'])).await;
    rows.push(row(
        "A3.15 signature in the standard alphabet (+ /)",
        alpha.with_sig(&alpha.s.replace('-', "+").replace('_', "/")),
    ));
    rows.push(row(
        "A3.15 signature in standard base64 with padding",
        alpha.with_sig(&STANDARD.encode(alpha.sig())),
    ));
    rows.push(row(
        "A3.15 signature as hex",
        t0.with_sig(&sig.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    ));
    rows.push(row("A3.8 control: T1 itself", t1.token.clone()).expect(Active));
    f.run("A3", rows).await;
}

// ---------------------------------------------------------------------------------
// A4. kid attacks
// ---------------------------------------------------------------------------------

fn sqlite_schema(s: &TestServer) -> (String, i64) {
    let db = rusqlite::Connection::open_with_flags(
        s.data_dir.join("tessera.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let schema: String = db
        .query_row(
            "SELECT group_concat(type || ':' || name, ',') FROM (SELECT type, name FROM sqlite_master ORDER BY name)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let keys: i64 = db
        .query_row("SELECT count(*) FROM signing_keys", [], |r| r.get(0))
        .unwrap();
    (schema, keys)
}

/// Replaces the first Latin letter that has a Cyrillic twin.
fn homoglyph(s: &str) -> String {
    let twins = [
        ('a', 'а'),
        ('c', 'с'),
        ('e', 'е'),
        ('o', 'о'),
        ('p', 'р'),
        ('x', 'х'),
        ('y', 'у'),
        ('A', 'А'),
        ('B', 'В'),
        ('C', 'С'),
        ('E', 'Е'),
        ('H', 'Н'),
        ('K', 'К'),
        ('M', 'М'),
        ('O', 'О'),
        ('P', 'Р'),
        ('T', 'Т'),
        ('X', 'Х'),
    ];
    let i = s
        .char_indices()
        .find(|(_, c)| twins.iter().any(|(l, _)| l == c))
        .map(|(i, _)| i)
        .expect("a letter with a Cyrillic twin");
    let c = s[i..].chars().next().unwrap();
    let twin = twins.iter().find(|(l, _)| *l == c).unwrap().1;
    format!("{}{twin}{}", &s[..i], &s[i + c.len_utf8()..])
}

#[tokio::test]
async fn a4_kid_attacks() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let before = sqlite_schema(&f.s);
    let mut rows = Vec::new();

    // A4.1 an unknown kid with a correct signature by the unknown key.
    let other = attacker_ed25519();
    let other_kid = tessera::keys::jwk::thumbprint_ed25519(other.public_key().as_ref());
    rows.push(row(
        "A4.1 unknown kid (another key's thumbprint), signed by that key",
        attacker_sign(
            &other,
            &json!({"alg": "EdDSA", "kid": other_kid, "typ": "at+jwt"}),
            &t0.p,
        ),
    ));
    rows.push(row(
        "A4.1 random kid, signed by the real key (K1)",
        f.k1_header("kid", Some(json!(b64(random_bytes(32))))),
    ));
    // A4.2 no kid: no falling back to trying every key.
    let mut h = t0.header();
    set(&mut h, "kid", None);
    rows.push(row(
        "A4.2 kid removed, T0's signature",
        t0.with_header(&b64_json(&h)),
    ));
    rows.push(row(
        "A4.2 kid removed, signed by the real key (K1)",
        f.k1_header("kid", None),
    ));
    // A4.3–A4.7 injected kids: HS256 with jwt_tool's keys, and the real key's signature.
    let injected = [
        ("A4.3", "", ""),
        ("A4.4", "../../../../../../dev/null", ""),
        ("A4.5", "/dev/null", ""),
        ("A4.5", "/invalid_path", ""),
        ("A4.6", "x' UNION SELECT '1';--", "1"),
        ("A4.6", "' OR '1'='1", ""),
        ("A4.6", "1; DROP TABLE keys;--", ""),
        ("A4.6", "1'; DROP TABLE signing_keys;--", ""),
        ("A4.6", "%", ""),
        ("A4.6", "_", ""),
        ("A4.6", "*", ""),
        ("A4.7", "|sleep 10", ""),
        ("A4.7", "$(sleep 10)", ""),
        ("A4.7", "`sleep 10`", ""),
        ("A4.7", "; sleep 10 #", ""),
        ("A4.7", "| curl http://127.0.0.1:9/", ""),
    ];
    for (id, k, key) in injected {
        let h = b64_json(&json!({"alg": "HS256", "kid": k, "typ": "at+jwt"}));
        rows.push(row(
            format!("{id} kid {k:?}, HS256 keyed with {key:?}"),
            hmac_token("HS256", key.as_bytes(), &h, &t0.p),
        ));
        rows.push(row(
            format!("{id} kid {k:?}, signed by the real key (K1)"),
            f.k1_header("kid", Some(json!(k))),
        ));
    }
    // A4.10 kid of the wrong type, oversized, NUL, homoglyph, near-misses.
    for v in [
        json!(1),
        json!([]),
        json!({}),
        json!(null),
        json!(true),
        json!([kid]),
        json!({"kid": kid}),
    ] {
        rows.push(row(
            format!("A4.10 kid {v}, K1"),
            f.k1_header("kid", Some(v.clone())),
        ));
    }
    let near: Vec<(&str, String)> = vec![
        ("NUL appended", format!("{kid}\u{0}")),
        ("a lone NUL", "\u{0}".into()),
        ("Cyrillic homoglyph", homoglyph(&kid)),
        ("upper-cased", kid.to_uppercase()),
        ("trailing space", format!("{kid} ")),
        ("leading space", format!(" {kid}")),
        ("= padded", format!("{kid}=")),
        (
            "standard alphabet",
            kid.replace('-', "+").replace('_', "/") + "x",
        ),
        ("truncated", kid[..kid.len() - 1].to_string()),
        ("5000 characters", "k".repeat(5000)),
    ];
    for (what, v) in near {
        rows.push(row(
            format!("A4.10 kid {what}, K1"),
            f.k1_header("kid", Some(json!(v))),
        ));
    }
    rows.push(
        row(
            "A4.10 kid of 64 KiB, K1",
            f.k1_header("kid", Some(json!("k".repeat(64 * 1024)))),
        )
        .expect(Refused),
    );
    rows.push(row("A4 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active));
    f.run("A4", rows).await;
    assert_eq!(
        sqlite_schema(&f.s),
        before,
        "A4.6: schema or key table changed"
    );
}

// ---------------------------------------------------------------------------------
// A5. Embedded and remote key headers
// ---------------------------------------------------------------------------------

/// A loopback listener that counts connections (the SSRF probe of A5.3/A5.4/A13.5).
async fn canary() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

#[tokio::test]
async fn a5_embedded_and_remote_keys() {
    let f = Fixture::start().await;
    let (url, hits) = canary().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let other = attacker_ed25519();
    let x = b64(other.public_key().as_ref());
    let other_kid = tessera::keys::jwk::thumbprint_ed25519(other.public_key().as_ref());
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
    let jwk_d = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": b64(random_bytes(32))});
    let fake_cert = STANDARD.encode(random_bytes(300));
    let mut rows = Vec::new();
    let attacker_headers: Vec<(&str, Value)> = vec![
        (
            "A5.1 jwk = attacker key, attacker kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "jwk": jwk}),
        ),
        (
            "A5.1 jwk = attacker key, T0's kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jwk": jwk}),
        ),
        (
            "A5.1 jwk = attacker key, no kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": jwk}),
        ),
        (
            "A5.2 jwk with private member d",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "jwk": jwk_d}),
        ),
        (
            "A5.3 jku = loopback JWKS, attacker kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "jku": format!("{url}/jwks.json")}),
        ),
        (
            "A5.3 jku = loopback JWKS, T0's kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": format!("{url}/jwks.json")}),
        ),
        (
            "A5.4 x5u = loopback",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5u": format!("{url}/cert.pem")}),
        ),
        (
            "A5.5 x5c = attacker chain",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5c": [fake_cert]}),
        ),
        (
            "A5.6 x5t",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5t": b64(random_bytes(20))}),
        ),
        (
            "A5.6 x5t#S256",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": other_kid, "x5t#S256": b64(random_bytes(32))}),
        ),
        (
            "A13.5 kid = loopback URL",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": format!("{url}/key")}),
        ),
        (
            "A5.3 jku and kid = loopback URL",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": format!("{url}/key"), "jku": url}),
        ),
    ];
    for (name, h) in attacker_headers {
        rows.push(row(
            format!("{name}, attacker-signed"),
            attacker_sign(&other, &h, &t0.p),
        ));
    }
    // The same members on T0's own header with the real key's signature: the service
    // refuses every key-carrying member rather than ignoring it.
    let members: Vec<(&str, Value)> = vec![
        ("jwk", jwk.clone()),
        ("jku", json!(format!("{url}/jwks.json"))),
        ("x5u", json!(format!("{url}/cert.pem"))),
        ("x5c", json!([STANDARD.encode(random_bytes(300))])),
        ("x5t", json!(b64(random_bytes(20)))),
        ("x5t#S256", json!(b64(random_bytes(32)))),
    ];
    for (m, v) in members {
        rows.push(row(
            format!("A5 T0 header plus {m}, signed by the real key (K1)"),
            f.k1_header(m, Some(v)),
        ));
    }
    f.run("A5", rows).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "A5.3/A13.5: outbound connection made"
    );
}

// ---------------------------------------------------------------------------------
// A6. Header semantics
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a6_header_semantics() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let mut rows = Vec::new();
    let mut add = |name: &str, change: Vec<(&str, Value)>| {
        let tok = f.k1(|h, _| {
            for (k, v) in change {
                h[k] = v;
            }
        });
        rows.push(row(format!("{name} (K1)"), tok));
    };
    add(
        "A6.1 crit [x-custom-policy] with x-custom-policy: require-mfa",
        vec![
            ("crit", json!(["x-custom-policy"])),
            ("x-custom-policy", json!("require-mfa")),
        ],
    );
    add("A6.2 crit []", vec![("crit", json!([]))]);
    add(
        "A6.3 crit \"b64\" (not a list)",
        vec![("crit", json!("b64"))],
    );
    add("A6.3 crit [null]", vec![("crit", json!([null]))]);
    add("A6.3 crit [1]", vec![("crit", json!([1]))]);
    add(
        "A6.4 crit [foo], foo absent",
        vec![("crit", json!(["foo"]))],
    );
    add(
        "A6.5 b64:false, crit [b64]",
        vec![("b64", json!(false)), ("crit", json!(["b64"]))],
    );
    add("A6.6 b64:false without crit", vec![("b64", json!(false))]);
    add("A6.6 b64:true", vec![("b64", json!(true))]);
    add("A6.8 cty JWT", vec![("cty", json!("JWT"))]);
    add("A6.8 zip DEF", vec![("zip", json!("DEF"))]);
    add(
        "A6.9 enc A256GCM on a signed token",
        vec![("enc", json!("A256GCM"))],
    );
    add("A6 unknown member x:1", vec![("x", json!(1))]);
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("rt+jwt"),
        json!("id_token+jwt"),
        json!("secevent+jwt"),
        json!("dpop+jwt"),
        json!("application/jwt"),
        json!("AT+JWT"),
        json!("application/AT+JWT"),
        json!("at+jwt "),
        json!(" at+jwt"),
        json!("at+jwt\u{0}"),
        json!("at jwt"),
        json!("application/at+jwt; charset=utf-8"),
        json!(null),
        json!(1),
        json!(["at+jwt"]),
    ] {
        add(&format!("A6.7 typ {typ}"), vec![("typ", typ)]);
    }
    rows.push(row("A6.7 typ missing (K1)", f.k1_header("typ", None)));
    // A6.5 with an unencoded payload in the signing input (RFC 7797 style).
    let h = b64_json(
        &json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "at+jwt", "b64": false, "crit": ["b64"]}),
    );
    let raw_payload = String::from_utf8(unb64(&t0.p)).unwrap();
    let detached = f.mint.signature(format!("{h}.{raw_payload}").as_bytes());
    rows.push(row(
        "A6.5 b64:false with the raw payload signed, detached (K1)",
        format!("{h}..{}", b64(&detached)),
    ));
    rows.push(row(
        "A6.5 b64:false with the raw payload signed, inline (K1)",
        format!("{h}.{raw_payload}.{}", b64(&detached)),
    ));
    // A6.9 JWE-shaped headers on a three-segment token.
    for h in [
        json!({"alg": "dir", "enc": "A256GCM"}),
        json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": f.mint.kid}),
        json!({"alg": "ECDH-ES", "enc": "A128CBC-HS256", "kid": f.mint.kid, "typ": "at+jwt"}),
    ] {
        rows.push(row(
            format!("A6.9 JWE header {h}, T0's signature"),
            t0.with_header(&b64_json(&h)),
        ));
        rows.push(row(
            format!("A6.9 JWE header {h}, K1"),
            f.mint.sign_input(&format!("{}.{}", b64_json(&h), t0.p)),
        ));
    }
    // Positive controls: both RFC 9068 spellings, otherwise-valid, are active.
    rows.push(
        row(
            "A6.7 control: typ at+jwt (K1)",
            f.k1_header("typ", Some(json!("at+jwt"))),
        )
        .expect(Active),
    );
    rows.push(
        row(
            "A6.7 control: typ application/at+jwt (K1)",
            f.k1_header("typ", Some(json!("application/at+jwt"))),
        )
        .expect(Active),
    );
    f.run("A6", rows).await;
}

// ---------------------------------------------------------------------------------
// A7. Time claims (system clock; the exact boundaries are in `a7_boundaries_...`)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a7_time_claims() {
    let f = Fixture::start().await;
    let now = f.now();
    let iat = f.t0.payload()["iat"].as_i64().unwrap();
    let times = |i: i64, n: i64, e: i64| {
        f.k1(|_, p| {
            p["iat"] = json!(i);
            p["nbf"] = json!(n);
            p["exp"] = json!(e);
        })
    };
    let mut rows = vec![
        row("A7 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active),
        row(
            "A7.1 exp = now - 1",
            f.k1_claim("exp", Some(json!(now - 1))),
        ),
        row(
            "A7.1 exp = now - 1, iat/nbf an hour before",
            times(now - 3599, now - 3599, now - 1),
        ),
        row("A7.2 exp absent", f.k1_claim("exp", None)),
        row(
            "A7.3 nbf = now + 60",
            f.k1_claim("nbf", Some(json!(now + 60))),
        ),
        row("A7.3 nbf absent", f.k1_claim("nbf", None)),
        row(
            "A7.4 iat = now + 1 day",
            f.k1_claim("iat", Some(json!(now + 86_400))),
        ),
        row("A7.4 iat absent", f.k1_claim("iat", None)),
        row(
            "A7.5 exp - iat = 3601 s (max lifetime 1 h)",
            times(iat, iat, iat + 3601),
        ),
        row(
            "A7.5 iat 2 h ago, exp in 1 min",
            times(now - 7200, now - 7200, now + 60),
        ),
        row(
            "A7.5 iat 1 h ago, exp in 1 min",
            times(now - 3600, now - 3600, now + 60),
        ),
        row(
            "A7.6 exp \"9999999999\" (string)",
            f.k1_claim("exp", Some(json!("9999999999"))),
        ),
        row(
            "A7.6 exp as string of a valid time",
            f.k1_claim("exp", Some(json!((now + 600).to_string()))),
        ),
        row(
            "A7.7 nbf \"99999999999\" (string)",
            f.k1_claim("nbf", Some(json!("99999999999"))),
        ),
        row(
            "A7.7 nbf as string of a valid time",
            f.k1_claim("nbf", Some(json!(iat.to_string()))),
        ),
        row(
            "A7.7 iat as string",
            f.k1_claim("iat", Some(json!(iat.to_string()))),
        ),
        row("A7.8 exp 1e400", f.k1_raw_claim("exp", "1e400")),
        row("A7.8 exp NaN (bare)", f.k1_raw_claim("exp", "NaN")),
        row(
            "A7.8 exp Infinity (bare)",
            f.k1_raw_claim("exp", "Infinity"),
        ),
        row("A7.8 exp \"NaN\"", f.k1_claim("exp", Some(json!("NaN")))),
        row(
            "A7.8 exp 100-digit integer",
            f.k1_raw_claim("exp", &"9".repeat(100)),
        ),
        row(
            "A7.8 exp finite float 1893456000.5",
            f.k1_raw_claim("exp", "1893456000.5"),
        ),
        row(
            "A7.8 exp valid time + .5",
            f.k1_raw_claim("exp", &format!("{}.5", now + 600)),
        ),
        row(
            "A7.8 exp valid time written as .0",
            f.k1_raw_claim("exp", &format!("{}.0", now + 600)),
        ),
        row(
            "A7.8 exp valid time in exponent form",
            f.k1_raw_claim("exp", &format!("{}e0", now + 600)),
        ),
        row(
            "A7.8 iat as float",
            f.k1_raw_claim("iat", &format!("{iat}.0")),
        ),
        row(
            "A7.8 nbf as float",
            f.k1_raw_claim("nbf", &format!("{iat}.0")),
        ),
        row("A7.9 exp -1", f.k1_claim("exp", Some(json!(-1)))),
        row("A7.9 exp 0", f.k1_claim("exp", Some(json!(0)))),
        row("A7.9 exp null", f.k1_claim("exp", Some(json!(null)))),
        row("A7.9 exp true", f.k1_claim("exp", Some(json!(true)))),
        row("A7.9 exp []", f.k1_claim("exp", Some(json!([])))),
        row("A7.9 exp {}", f.k1_claim("exp", Some(json!({})))),
        row(
            "A7.9 exp [valid time]",
            f.k1_claim("exp", Some(json!([now + 600]))),
        ),
        row(
            "A7.10 exp 18446744073709551615",
            f.k1_claim("exp", Some(json!(u64::MAX))),
        ),
        row(
            "A7.10 exp 9223372036854775808",
            f.k1_claim("exp", Some(json!(1u64 << 63))),
        ),
        row(
            "A7.10 exp i64::MAX",
            f.k1_claim("exp", Some(json!(i64::MAX))),
        ),
        row(
            "A7.10 exp 253402300800 (year 10000)",
            f.k1_claim("exp", Some(json!(253_402_300_800i64))),
        ),
        row(
            "A7.10 iat = nbf = i64::MIN",
            times(i64::MIN, i64::MIN, now + 60),
        ),
        row(
            "A7.10 iat i64::MIN, nbf now",
            times(i64::MIN, now, now + 60),
        ),
        row(
            "A7.10 exp i64::MIN",
            f.k1_claim("exp", Some(json!(i64::MIN))),
        ),
        row("A7.10 iat -1", times(-1, -1, now + 60)),
        row(
            "A7 nbf before iat (never minted)",
            times(iat, iat - 1, iat + 600),
        ),
        row("A7 exp before iat", times(iat, iat, iat - 1)),
        row("A7 exp == iat", times(iat, iat, iat)),
        row(
            "A7.12 control: exp = now + 30 (K1)",
            f.k1_claim("exp", Some(json!(now + 30))),
        )
        .expect(Active),
        row(
            "A7.12 control: iat = nbf = now - 5 (K1)",
            times(now - 5, now - 5, now + 600),
        )
        .expect(Active),
        row(
            "A7.5 control: exp - iat = exactly 1 h (K1)",
            times(iat, iat, iat + 3600),
        )
        .expect(Active),
    ];
    rows.push(row("A7 control: T0 itself", f.t0.token.clone()).expect(Active));
    f.run("A7", rows).await;
}

/// Runs `check` with the test clock at exactly `t` (Unix seconds), moving it there
/// (backwards too) and retrying if the wall clock ticks during the call, so boundary
/// assertions never race it.
async fn at_instant<F, Fut>(clock: &tessera::clock::Clock, t: i64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..10 {
        clock.advance(t - clock.now());
        let got = check().await;
        if clock.now() == t {
            return got;
        }
    }
    panic!("the clock would not hold still at {t}");
}

/// A7.11, A3.5/A4.9, A12.8 and B9.5: everything that moves the clock.
#[tokio::test]
async fn a7_boundaries_retired_keys_and_blocklist_expiry() {
    let f = Fixture::start().await;
    let clock = f.s.clock.clone();

    // A7.11: no leeway. exp == now is expired; exp == now + 1 is live; nbf == now and
    // iat == now are live; nbf == now + 1 and iat == now + 1 are not yet valid.
    let at = f.now() + 100;
    let mk = |i: i64, n: i64, e: i64| {
        f.k1(|_, p| {
            p["iat"] = json!(i);
            p["nbf"] = json!(n);
            p["exp"] = json!(e);
        })
    };
    let cases = [
        ("A7.11 exp == now", mk(at - 60, at - 60, at), false),
        ("A7.11 exp == now + 1", mk(at - 60, at - 60, at + 1), true),
        ("A7.11 exp == now - 1", mk(at - 60, at - 60, at - 1), false),
        ("A7.11 nbf == now", mk(at - 60, at, at + 60), true),
        ("A7.11 iat == nbf == now", mk(at, at, at + 60), true),
        ("A7.11 nbf == now + 1", mk(at - 60, at + 1, at + 60), false),
        (
            "A7.11 iat == nbf == now + 1",
            mk(at + 1, at + 1, at + 60),
            false,
        ),
    ];
    for (name, token, want) in &cases {
        assert_eq!(
            at_instant(&clock, at, || f.active(token)).await,
            *want,
            "{name}"
        );
    }

    // A12.8: a revoked token stays inactive up to its exp (no leeway: exp − 1), also
    // across a restart, whose final housekeeping purges the blocklist; an unrevoked
    // token of the same age is live at that instant, so the blocklist is what counts.
    let short = |subject: &str| {
        let mut req = access_spec(subject);
        if let Some(Credential::AccessToken(spec)) = &mut req.credential {
            spec.ttl = Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            });
        }
        req
    };
    let revoked = f.issue(short("gc-revoked")).await;
    let exp = revoked.expires_at.unwrap().seconds;
    let live = f.issue(short("gc-live")).await;
    let live_exp = live.expires_at.unwrap().seconds;
    f.revoke(&revoked.token).await;
    clock.advance(exp - 5 - clock.now());
    // Rotate the signing key so that A3.5/A4.9 below has a retired key to use.
    let old = Minter::active(&f.s);
    let new_kid =
        f.s.keys()
            .await
            .rotate_signing_key(authed(RotateSigningKeyRequest {}, &f.s.admin_key))
            .await
            .unwrap()
            .into_inner()
            .kid;
    let t0 = f.t0.clone();
    let s = f.s.restart().await;
    let f = Fixture {
        client: s.tokens().await,
        mint: Minter::for_kid(&s, &new_kid),
        t0,
        s,
    };
    assert!(
        !at_instant(&clock, exp - 1, || f.active(&revoked.token)).await,
        "A12.8 revoked token active after restart, one second before its exp"
    );
    assert!(
        at_instant(&clock, live_exp - 1, || f.active(&live.token)).await,
        "A12.8 control: the unrevoked token is live one second before its exp"
    );

    // A3.5/A4.9: once the retired key is past its window (max lifetime + 60 s), a
    // token it signs is inactive even with claims valid right now; the same claims
    // signed by the active key are active.
    clock.advance(3600 + 61);
    let fresh = |m: &Minter| {
        let n = clock.now();
        m.tweak(&f.t0.token, |h, p| {
            h["kid"] = json!(m.kid);
            p["iat"] = json!(n);
            p["nbf"] = json!(n);
            p["exp"] = json!(n + 600);
            p["jti"] = json!(b64(random_bytes(16)));
        })
    };
    assert!(
        !f.active(&fresh(&old)).await,
        "A3.5/A4.9 token signed by a key past its verification window"
    );
    assert!(f.active(&fresh(&f.mint)).await, "A3.5 control: active key");

    // B9.5: expiry applies to opaque tokens too.
    let key = f
        .issue(IssueRequest {
            credential: Some(Credential::ApiKey(tessera::proto::ApiKeySpec {
                owner: "o".into(),
                environment: "test".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            })),
        })
        .await;
    let rt = f.issue_with_refresh("rt-expiry").await.refresh_token;
    assert!(f.active(&key.token).await && f.active(&rt).await);
    clock.advance(60);
    assert!(!f.active(&key.token).await, "B9.5 expired API key");
    assert!(f.active(&rt).await);
    clock.advance(14 * 86_400);
    assert!(!f.active(&rt).await, "B9.5 expired refresh token");
    f.assert_healthy().await;
}

// ---------------------------------------------------------------------------------
// A8. Issuer, audience, subject, kind and version confusion
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a8_claim_confusion() {
    let f = Fixture::start().await;
    let now = f.now();
    let t0p = f.t0.payload();
    // A8.9 needs a subject whose version moved on.
    let victim = f.s.access_token("victim").await.token;
    f.client
        .clone()
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "victim".into(),
                reason: "test".into(),
            },
            &f.s.admin_key,
        ))
        .await
        .unwrap();
    let iss = |v: Value| f.k1_claim("iss", Some(v));
    let mut rows =
        vec![row("A8 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active)];
    for v in [
        "https://evil.test",
        "https://accounts.google.com",
        "https://tessera",
        "tessera.test",
        "https://tessera.tes",
        "https://tessera.test.evil",
        "https://tessera.testx",
        "https://tessera.test/x",
        "https://Tessera.test",
        "HTTPS://tessera.test",
        "https://tessera.test/",
        "https://tessera.test:443",
        "https://tessera%2Etest",
        "https://%74essera.test",
        "https://ｔessera.test",
        "https://tessera.test\u{0}",
        " https://tessera.test",
        "",
    ] {
        let id = if v.starts_with("https://tessera.test") && v.len() > ISSUER.len() {
            "A8.2/A8.3"
        } else if ISSUER.contains(v) {
            "A8.2"
        } else {
            "A8.1/A8.3"
        };
        rows.push(row(format!("{id} iss {v:?}"), iss(json!(v))));
    }
    rows.push(row("A8.4 iss absent", f.k1_claim("iss", None)));
    rows.push(row("A8.4 iss null", iss(json!(null))));
    rows.push(row("A8.4 iss [issuer]", iss(json!([ISSUER]))));
    rows.push(row("A8.4 iss 1", iss(json!(1))));
    for (what, v) in [
        ("absent", None),
        ("[]", Some(json!([]))),
        ("{}", Some(json!({}))),
        ("123", Some(json!(123))),
        ("a string, not an array", Some(json!("payments-api"))),
        ("[\"\"]", Some(json!([""]))),
        ("[1]", Some(json!([1]))),
        ("[null]", Some(json!([null]))),
        ("[[\"payments-api\"]]", Some(json!([["payments-api"]]))),
        ("null", Some(json!(null))),
    ] {
        rows.push(row(format!("A8.5 aud {what}"), f.k1_claim("aud", v)));
    }
    // Policy: Tessera does not know which audience is "ours" — any non-empty list of
    // non-empty strings is accepted and reported; the resource server checks itself.
    rows.push(
        row(
            "A8.5 policy: aud [\"other\", \"payments-api\"] is active (K1)",
            f.k1_claim("aud", Some(json!(["other", "payments-api"]))),
        )
        .expect(Active),
    );
    for (what, v) in [
        ("absent", None),
        ("\"\"", Some(json!(""))),
        ("1", Some(json!(1))),
        ("null", Some(json!(null))),
        ("[\"alice\"]", Some(json!(["alice"]))),
        ("{}", Some(json!({}))),
        ("true", Some(json!(true))),
    ] {
        rows.push(row(format!("A8.6 sub {what}"), f.k1_claim("sub", v)));
    }
    let jti = t0p["jti"].as_str().unwrap().to_string();
    for (what, v) in [
        ("absent", None),
        ("1", Some(json!(1))),
        ("null", Some(json!(null))),
        ("\"\"", Some(json!(""))),
        ("short", Some(json!("short"))),
        ("23 characters", Some(json!(format!("{jti}A")))),
        ("21 characters", Some(json!(jti[..21].to_string()))),
        ("padded", Some(json!(format!("{jti}==")))),
        ("with +/", Some(json!("+/+/+/+/+/+/+/+/+/+/+A"))),
        ("as a number", Some(json!(u64::MAX))),
    ] {
        rows.push(row(format!("A8.7 jti {what}"), f.k1_claim("jti", v)));
    }
    for v in trailing_bit_variants(&jti, 2) {
        rows.push(row(
            format!("A8.7 jti trailing-bit variant {v}"),
            f.k1_claim("jti", Some(json!(v))),
        ));
    }
    // A8.8 token-kind confusion: shapes of other kinds of JWT, signed by our key.
    let kinds: Vec<(&str, Value, Value)> = vec![
        (
            "ID token",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "JWT"}),
            json!({"iss": ISSUER, "sub": "alice", "aud": "payments-api", "exp": now + 600, "iat": now, "nonce": "n-0S6_WzA2Mj", "auth_time": now}),
        ),
        (
            "ID token with at+jwt typ",
            f.t0.header(),
            json!({"iss": ISSUER, "sub": "alice", "aud": ["payments-api"], "exp": now + 600, "iat": now, "nbf": now, "nonce": "n", "auth_time": now, "jti": b64(random_bytes(16)), "client_id": "c", "ver": 0}),
        ),
        (
            "client assertion",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "JWT"}),
            json!({"iss": "client-1", "sub": "client-1", "aud": format!("{ISSUER}/token"), "jti": b64(random_bytes(16)), "exp": now + 60, "iat": now}),
        ),
        (
            "refresh JWT (typ rt+jwt)",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "rt+jwt"}),
            t0p.clone(),
        ),
        (
            "security event token",
            json!({"alg": f.mint.alg, "kid": f.mint.kid, "typ": "secevent+jwt"}),
            json!({"iss": ISSUER, "jti": b64(random_bytes(16)), "iat": now, "aud": ["payments-api"], "events": {"urn:x": {}}}),
        ),
    ];
    for (what, h, p) in kinds {
        rows.push(row(format!("A8.8 {what} (K1)"), f.mint.sign_json(&h, &p)));
    }
    for (claim, v) in [
        ("typ", json!("refresh")),
        ("azp", json!("client-1")),
        ("nonce", json!("n")),
        ("auth_time", json!(now)),
        ("may_act", json!({"sub": "svc"})),
        ("cnf", json!({"jkt": "x"})),
    ] {
        let mut p = t0p.clone();
        p[claim] = v;
        if claim == "nonce" {
            // Not registered with Tessera: an ordinary extra claim, kept as such.
            rows.push(
                row(
                    format!("A8.8 extra claim {claim} is only a claim (K1)"),
                    f.mint.sign_json(&f.t0.header(), &p),
                )
                .expect(Active),
            );
        } else {
            rows.push(row(
                format!("A8.8 registered claim {claim} smuggled in (K1)"),
                f.mint.sign_json(&f.t0.header(), &p),
            ));
        }
    }
    rows.push(row(
        "A8.8 act that is not an object",
        f.k1_claim("act", Some(json!("svc"))),
    ));
    // A8.9 versions.
    rows.push(row(
        "A8.9 ver below the subject's version (K0: issued, then bumped)",
        victim.clone(),
    ));
    rows.push(row(
        "A8.9 ver below the subject's version (K1 re-sign)",
        f.mint.tweak(&victim, |_, _| {}),
    ));
    rows.push(
        row(
            "A8.9 control: ver = the subject's current version (K1)",
            f.mint.tweak(&victim, |_, p| p["ver"] = json!(1)),
        )
        .expect(Active),
    );
    for (what, v) in [
        ("absent", None),
        ("\"0\"", Some(json!("0"))),
        ("-1", Some(json!(-1))),
        ("null", Some(json!(null))),
        ("[]", Some(json!([]))),
    ] {
        rows.push(row(format!("A8.9 ver {what}"), f.k1_claim("ver", v)));
    }
    rows.push(row("A8.9 ver 0.0", f.k1_raw_claim("ver", "0.0")));
    rows.push(row("A8.9 client_id absent", f.k1_claim("client_id", None)));
    rows.push(row(
        "A8.9 client_id 1",
        f.k1_claim("client_id", Some(json!(1))),
    ));
    rows.push(row(
        "A8 scope not a string",
        f.k1_claim("scope", Some(json!(["read:payments"]))),
    ));
    f.run("A8", rows).await;

    // A8.10 policy: the caller's own audience is not consulted. An introspector whose
    // key is not in the token's `aud` sees it active, with its audience to check.
    let rs = f.s.api_key(&["tessera:introspect"]).await.token;
    let r = f.introspect(&f.t0.token, "", &rs).await.unwrap();
    assert!(r.active, "A8.10 policy: any introspector sees a live token");
    assert_eq!(r.audience, vec!["payments-api"]);
}

// ---------------------------------------------------------------------------------
// A9. Structure, base64url, size
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a9_structure_and_size() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let (h, p, s) = (t0.h.as_str(), t0.p.as_str(), t0.s.as_str());
    let tok = t0.token.as_str();
    let mut rows = vec![
        row("A9.1 empty string", "").expect(InactiveOrInvalid),
        row("A9.1 a space", " "),
        row("A9.1 a newline", "\n"),
        row("A9.1 CRLF", "\r\n"),
        row("A9.1 a tab", "\t"),
        row("A9.2 one segment", "abc"),
        row("A9.2 T0 without dots", tok.replace('.', "")),
        row("A9.2 .", "."),
        row("A9.2 ..", ".."),
        row("A9.3 H.P", format!("{h}.{p}")),
        row("A9.3 H..S", format!("{h}..{s}")),
        row("A9.3 .P.S", format!(".{p}.{s}")),
        row("A9.3 H.P.", format!("{h}.{p}.")),
        row("A9.4 H.P.S.X", format!("{tok}.{s}")),
        row("A9.4 X.H.P.S", format!("{h}.{tok}")),
        row("A9.4 H.P.S.", format!("{tok}.")),
        row("A9.4 .H.P.S", format!(".{tok}")),
        row("A9.4 H.P.P.S", format!("{h}.{p}.{p}.{s}")),
        row("A9.5 five segments", format!("{tok}.{s}.{s}")),
        row(
            "A9.5 JWE-shaped, five segments",
            format!(
                "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..{}.{p}.{}",
                b64(random_bytes(12)),
                b64(random_bytes(16))
            ),
        ),
        row("A9.6 .....", "....."),
        row("A9.6 ...", "..."),
        row("A9.x T0 twice", format!("{tok}{tok}")),
        row("A9.x T0 upper-cased", tok.to_uppercase()),
        row("A9.x T0 lower-cased", tok.to_lowercase()),
        row("A9.x T0 reversed", tok.chars().rev().collect::<String>()),
    ];
    let segs = [("header", 0usize), ("payload", 1), ("signature", 2)];
    let with = |i: usize, new: &str| {
        let mut parts = [h.to_string(), p.to_string(), s.to_string()];
        parts[i] = new.to_string();
        parts.join(".")
    };
    for (name, i) in segs {
        let seg = [h, p, s][i];
        let mid = seg.len() / 2;
        let ins = |x: &str| format!("{}{x}{}", &seg[..mid], &seg[mid..]);
        rows.push(row(
            format!("A9.7 {name} with = appended"),
            with(i, &format!("{seg}=")),
        ));
        rows.push(row(
            format!("A9.7 {name} with == appended"),
            with(i, &format!("{seg}==")),
        ));
        rows.push(row(
            format!("A9.7 {name} with = inside"),
            with(i, &ins("=")),
        ));
        rows.push(row(
            format!("A9.7 {name} with a stray leading a"),
            with(i, &format!("a{seg}")),
        ));
        for bad in ["!", "*", "%2E", " ", "é", "．", "~", "\\", "\"", "+", "/"] {
            rows.push(row(
                format!("A9.9 {name} with {bad:?} inside"),
                with(i, &ins(bad)),
            ));
        }
        for ws in ["\r", "\n", "\t", "\r\n", "\u{b}", "\u{c}", "\u{a0}"] {
            rows.push(row(
                format!("A9.10 {name} with {ws:?} inside"),
                with(i, &ins(ws)),
            ));
        }
        rows.push(row(
            format!("A9.12 {name} with NUL inside"),
            with(i, &ins("\0")),
        ));
        let pad = (1 + 4 - seg.len() % 4) % 4;
        let pad = if pad == 0 { 4 } else { pad };
        let odd = format!("{seg}{}", "A".repeat(pad));
        assert_eq!(odd.len() % 4, 1);
        rows.push(row(format!("A9.13 {name} length = 1 mod 4"), with(i, &odd)));
        let std_seg = seg.replace('-', "+").replace('_', "/");
        if std_seg != seg {
            rows.push(row(
                format!("A9.8 {name} in the standard alphabet"),
                with(i, &std_seg),
            ));
        }
    }
    // A9.8: JSON text only yields `-`/`_` in base64url around `>`, `?`, `~`; a claim
    // holding them gives a genuine token whose payload has both alphabets' characters.
    let alpha = Jwt::new(&f.k1_claim("note", Some(json!("???>>>~~~"))));
    assert!(alpha.p.contains(['-', '_']));
    rows.push(
        row(
            "A9.8 control: K1 token with - and _ in its payload",
            alpha.token.clone(),
        )
        .expect(Active),
    );
    rows.push(row(
        "A9.8 that payload in the standard alphabet",
        format!(
            "{}.{}.{}",
            alpha.h,
            alpha.p.replace('-', "+").replace('_', "/"),
            alpha.s
        ),
    ));
    for (what, t) in [
        ("leading space", format!(" {tok}")),
        ("trailing space", format!("{tok} ")),
        ("trailing newline", format!("{tok}\n")),
        ("leading tab", format!("\t{tok}")),
        ("Bearer prefix", format!("Bearer {tok}")),
        ("bearer prefix", format!("bearer {tok}")),
        ("quoted", format!("\"{tok}\"")),
        ("BOM prefix", format!("\u{feff}{tok}")),
        ("zero-width space suffix", format!("{tok}\u{200b}")),
    ] {
        rows.push(row(format!("A9.11 {what}"), t));
    }
    rows.push(row("A9.12 NUL after T0", format!("{tok}\0")));
    rows.push(row("A9.12 NUL before T0", format!("\0{tok}")));
    rows.push(row("A9.12 NUL between segments", format!("{h}.\0{p}.{s}")));
    rows.push(row("A9.9 full-width dots", format!("{h}．{p}．{s}")));
    rows.push(row("A9.9 %2E for dots", format!("{h}%2E{p}%2E{s}")));
    // A9.14 sizes: up to the 8 KiB cap decoded and refused; over it refused before
    // decoding; over tonic's 64 KiB message limit refused by the transport.
    let seg = |n: usize| "A".repeat(n);
    rows.push(row(
        "A9.14 exactly 8 KiB, three segments",
        format!("{}.{}.{}", seg(2730), seg(2730), seg(2730)),
    ));
    rows.push(
        row(
            "A9.14 8 KiB + 1",
            format!("{}.{}.{}", seg(2731), seg(2730), seg(2730)),
        )
        .expect(InactiveOrInvalid),
    );
    rows.push(
        row(
            "A9.14 T0 padded to 8 KiB + 1",
            format!("{tok}{}", seg(8193 - tok.len())),
        )
        .expect(InactiveOrInvalid),
    );
    rows.push(
        row(
            "A9.14 64 KiB",
            format!("{}.{}.{}", seg(21_845), seg(21_845), seg(21_844)),
        )
        .expect(Refused),
    );
    rows.push(
        row(
            "A9.14 1 MiB",
            format!("{}.{}.{}", seg(349_525), seg(349_525), seg(349_524)),
        )
        .expect(TooLarge),
    );
    rows.push(
        row(
            "A9.14 4 MiB",
            format!("{}.{}.{}", seg(1 << 21), seg(1 << 20), seg(1 << 20)),
        )
        .expect(TooLarge),
    );
    rows.push(row("A9.14 8 KiB of dots", ".".repeat(8192)));
    // A9.15 JWS JSON serializations.
    rows.push(row(
        "A9.15 flattened JWS JSON",
        json!({"protected": h, "payload": p, "signature": s}).to_string(),
    ));
    rows.push(row(
        "A9.15 general JWS JSON",
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string(),
    ));
    rows.push(row(
        "A9.x header and payload in JSON, not base64",
        format!("{}.{}.{s}", t0.header(), t0.payload()),
    ));
    rows.push(row("A9 control: T0", tok).expect(Active));
    for r in &rows {
        assert!(
            r.expect == Active || r.token != tok,
            "{}: identical to T0",
            r.name
        );
    }
    f.run("A9", rows).await;
}

/// A request whose `token` is not UTF-8 is not a protobuf `string`: tonic refuses the
/// message before Tessera sees it. It must not be answered active, and the server
/// must carry on.
#[tokio::test]
async fn a9_token_field_not_utf8_is_refused_by_the_transport() {
    use prost::bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Passes pre-encoded protobuf bytes through unchanged.
    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let f = Fixture::start().await;
    for (name, bytes) in [
        ("lone 0xFF", vec![0xff]),
        ("overlong C0 AF", vec![0xc0, 0xaf]),
        (
            "T0 then a truncated multibyte",
            [f.t0.token.as_bytes(), &[0xe2u8, 0x82][..]].concat(),
        ),
    ] {
        let mut msg = vec![0x0a, bytes.len() as u8];
        if bytes.len() > 127 {
            msg = vec![0x0a, (bytes.len() as u8) | 0x80, (bytes.len() >> 7) as u8];
        }
        msg.extend_from_slice(&bytes);
        let mut grpc = tonic::client::Grpc::new(f.s.channel().await);
        grpc.ready().await.unwrap();
        let got = grpc
            .unary(
                authed(msg, &f.s.admin_key),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/tessera.v1.TokenService/Introspect",
                ),
                Raw,
            )
            .await;
        let st = got.expect_err(name);
        // The service codec answers a message that does not decode as the caller's
        // fault, never INTERNAL.
        assert_eq!(st.code(), Code::InvalidArgument, "{name}: {st:?}");
        assert!(f.active(&f.t0.token).await, "{name}: persistence check");
    }
    f.assert_healthy().await;
}

// ---------------------------------------------------------------------------------
// A10. JSON semantics and Unicode
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a10_json_semantics() {
    let f = Fixture::start().await;
    let t0 = &f.t0;
    let kid = f.mint.kid.clone();
    let ptext = t0.payload().to_string();
    let htext = t0.header().to_string();
    let without = |name: &str| {
        let mut p = t0.payload();
        set(&mut p, name, None);
        p.to_string()
    };
    let pay = |bytes: &[u8]| f.k1_payload_bytes(bytes);
    let mut rows = vec![
        row("A10 control: T0 re-signed unchanged (K1)", f.k1(|_, _| {})).expect(Active),
        row("A10.1 header {", f.k1_header_bytes(b"{")),
        row("A10.1 payload {", pay(b"{")),
        row(
            "A10.1 payload with trailing garbage",
            pay(format!("{ptext}x").as_bytes()),
        ),
        row(
            "A10.1 payload with a second object",
            pay(format!("{ptext}{{}}").as_bytes()),
        ),
        row(
            "A10.1 payload with a trailing comma",
            pay(format!("{},}}", &ptext[..ptext.len() - 1]).as_bytes()),
        ),
        row(
            "A10.1 payload with a comment",
            pay(splice_front(&ptext, "/*x*/\"a\":1").as_bytes()),
        ),
        row(
            "A10.1 payload single-quoted",
            pay(ptext.replace('"', "'").as_bytes()),
        ),
        row("A10.1 payload empty", pay(b"")),
    ];
    let in_array = format!("[{ptext}]");
    let as_string = format!("{ptext:?}");
    for v in [
        "0",
        "1",
        "-1",
        "true",
        "false",
        "null",
        "[]",
        "\"\"",
        "\"x\"",
        "{}",
        in_array.as_str(),
        as_string.as_str(),
    ] {
        rows.push(row(
            format!("A10.2 payload {}", v.chars().take(12).collect::<String>()),
            pay(v.as_bytes()),
        ));
    }
    for v in ["[]", "\"x\"", "null", "{}", "1"] {
        rows.push(row(
            format!("A10.3 header {v}, T0's signature"),
            t0.with_header(&b64(v)),
        ));
        rows.push(row(
            format!("A10.3 header {v} (K1)"),
            f.k1_header_bytes(v.as_bytes()),
        ));
    }
    // A10.4–A10.6 duplicates.
    rows.push(row(
        "A10.4 duplicate sub, admin first",
        pay(splice_front(&ptext, r#""sub":"admin""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate sub, admin last",
        pay(splice(&ptext, r#""sub":"admin""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate sub, same value",
        pay(splice(&ptext, r#""sub":"alice""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate sub via escape \\u0073ub",
        pay(splice(&ptext, r#""\u0073ub":"admin""#).as_bytes()),
    ));
    rows.push(row(
        "A10.4 duplicate inside an extra claim",
        pay(splice(&ptext, r#""role":{"a":1,"a":2}"#).as_bytes()),
    ));
    for (b, text) in [
        (
            "eyJhbGciOiJFZERTQSIsImFsZyI6Im5vbmUifQ",
            r#"{"alg":"EdDSA","alg":"none"}"#,
        ),
        (
            "eyJhbGciOiJub25lIiwiYWxnIjoiRWREU0EifQ",
            r#"{"alg":"none","alg":"EdDSA"}"#,
        ),
    ] {
        check_vector(b, text);
        rows.push(row(
            format!("A10.5 header {text}, T0's signature"),
            t0.with_header(b),
        ));
        rows.push(row(
            format!("A10.5 header {text}, K1"),
            f.k1_header_bytes(text.as_bytes()),
        ));
    }
    for extra in [
        r#""alg":"none""#,
        r#""alg":"EdDSA""#,
        r#""kid":"x""#,
        r#""typ":"JWT""#,
    ] {
        rows.push(row(
            format!("A10.5 T0 header plus duplicate {extra} (K1)"),
            f.k1_header_bytes(splice(&htext, extra).as_bytes()),
        ));
        rows.push(row(
            format!("A10.5 duplicate {extra} first (K1)"),
            f.k1_header_bytes(splice_front(&htext, extra).as_bytes()),
        ));
    }
    let no_exp = without("exp");
    let exp = t0.payload()["exp"].as_i64().unwrap();
    rows.push(row(
        "A10.6 exp 1 then exp 9999999999",
        pay(splice(&splice_front(&no_exp, r#""exp":1"#), r#""exp":9999999999"#).as_bytes()),
    ));
    rows.push(row(
        "A10.6 exp 9999999999 then exp 1",
        pay(splice(&splice_front(&no_exp, r#""exp":9999999999"#), r#""exp":1"#).as_bytes()),
    ));
    rows.push(row(
        "A10.6 exp twice, same value",
        pay(splice(&ptext, &format!(r#""exp":{exp}"#)).as_bytes()),
    ));
    // A10.7 invalid UTF-8, A10.8 BOM and UTF-16.
    let no_sub = without("sub");
    let with_sub_bytes = |bytes: &[u8]| {
        let head = &no_sub[..no_sub.len() - 1];
        [head.as_bytes(), b",\"sub\":\"", bytes, b"\"}"].concat()
    };
    for (what, bad) in [
        ("overlong C0 AF", &[0xc0u8, 0xaf][..]),
        ("lone FF", &[0xff][..]),
        ("truncated multibyte E2 82", &[0xe2, 0x82][..]),
        ("lone continuation 80", &[0x80][..]),
        ("CESU-8 surrogate ED A0 80", &[0xed, 0xa0, 0x80][..]),
        ("admin then FE", &[b'a', b'd', b'm', b'i', b'n', 0xfe][..]),
    ] {
        rows.push(row(
            format!("A10.7 sub with {what}"),
            pay(&with_sub_bytes(bad)),
        ));
    }
    let bad_kid = [
        &br#"{"alg":"EdDSA","typ":"at+jwt","kid":""#[..],
        kid.as_bytes(),
        &[0xffu8][..],
        &b"\"}"[..],
    ]
    .concat();
    rows.push(row(
        "A10.7 kid with a trailing FF (K1)",
        f.k1_header_bytes(&bad_kid),
    ));
    rows.push(row(
        "A10.8 UTF-8 BOM before the payload",
        pay(&[&b"\xef\xbb\xbf"[..], ptext.as_bytes()].concat()),
    ));
    rows.push(row(
        "A10.8 UTF-8 BOM before the header",
        f.k1_header_bytes(&[&b"\xef\xbb\xbf"[..], htext.as_bytes()].concat()),
    ));
    let utf16: Vec<u8> = ptext.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    rows.push(row("A10.8 payload in UTF-16LE", pay(&utf16)));
    rows.push(row(
        "A10.8 payload in UTF-16LE with BOM",
        pay(&[&[0xffu8, 0xfe][..], utf16.as_slice()].concat()),
    ));
    let utf16be: Vec<u8> = ptext.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    rows.push(row("A10.8 payload in UTF-16BE", pay(&utf16be)));
    // A10.9 lone surrogates.
    for esc in [r"\ud800", r"\udc00", r"admin\ud800", r"\ud800\u0041"] {
        rows.push(row(
            format!("A10.9 sub \"{esc}\""),
            pay(splice(&no_sub, &format!(r#""sub":"{esc}""#)).as_bytes()),
        ));
    }
    rows.push(row(
        "A10.9 lone surrogate in an extra claim",
        pay(splice(&ptext, r#""role":"\udfff""#).as_bytes()),
    ));
    // A10.10 depth: the deepest nesting that fits under the 8 KiB cap reaches the
    // parser; 10,000 levels are refused by the size cap first.
    let deep = |n: usize| {
        splice(
            &ptext,
            &format!(r#""x":{}{}"#, "[".repeat(n), "]".repeat(n)),
        )
    };
    rows.push(row(
        "A10.10 2,800-deep array in an extra claim",
        pay(deep(2800).as_bytes()),
    ));
    rows.push(row(
        "A10.10 129-deep array (serde_json's limit is 128)",
        pay(deep(129).as_bytes()),
    ));
    let deep_obj = format!(r#""x":{}1{}"#, r#"{"a":"#.repeat(900), "}".repeat(900));
    rows.push(row(
        "A10.10 900-deep object in an extra claim",
        pay(splice(&ptext, &deep_obj).as_bytes()),
    ));
    rows.push(row("A10.10 10,000-deep array", pay(deep(10_000).as_bytes())).expect(Refused));
    let deep_h = splice(
        &htext,
        &format!(r#""x":{}{}"#, "[".repeat(2000), "]".repeat(2000)),
    );
    rows.push(row(
        "A10.10 2,000-deep array in the header (K1)",
        f.k1_header_bytes(deep_h.as_bytes()),
    ));
    // A10.11 numbers.
    rows.push(row(
        "A10.11 1e400 in an extra claim",
        pay(splice(&ptext, r#""n":1e400"#).as_bytes()),
    ));
    rows.push(row(
        "A10.11 -1e400 in an extra claim",
        pay(splice(&ptext, r#""n":-1e400"#).as_bytes()),
    ));
    rows.push(row(
        "A10.11 1,000-digit integer in an extra claim",
        pay(splice(&ptext, &format!(r#""n":{}"#, "9".repeat(1000))).as_bytes()),
    ));
    rows.push(row(
        "A10.11 1,000-digit integer as exp",
        f.k1_raw_claim("exp", &"9".repeat(1000)),
    ));
    rows.push(row("A10.11 -0 as exp", f.k1_raw_claim("exp", "-0")));
    rows.push(row("A10.11 -0 as ver", f.k1_raw_claim("ver", "-0")));
    rows.push(row(
        "A10.11 leading zero 0123 in an extra claim",
        pay(splice(&ptext, r#""n":0123"#).as_bytes()),
    ));
    rows.push(row(
        "A10.11 hex 0x10 in an extra claim",
        pay(splice(&ptext, r#""n":0x10"#).as_bytes()),
    ));
    // Policy: an extra claim holding an ordinary finite number is just a claim.
    rows.push(
        row(
            "A10.11 policy: -0 in an extra claim is kept (K1)",
            pay(splice(&ptext, r#""n":-0"#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            "A10.11 policy: 1e300 in an extra claim is kept (K1)",
            pay(splice(&ptext, r#""n":1e300"#).as_bytes()),
        )
        .expect(Active),
    );
    // A10.12 confusables.
    let cyrillic_exp = splice(&no_exp, &format!(r#""ехр":{exp}"#));
    rows.push(row(
        "A10.12 exp spelled in Cyrillic (ехр)",
        pay(cyrillic_exp.as_bytes()),
    ));
    rows.push(row(
        "A10.12 exp with a zero-width space in its name",
        pay(splice(&no_exp, &format!("\"exp\u{200b}\":{exp}")).as_bytes()),
    ));
    for (what, sub) in [
        ("admin + zero-width space", "admin\u{200b}"),
        ("admin + NUL", "admin\u{0}"),
        ("RTL override", "\u{202e}nimda"),
        ("admin + BOM", "admin\u{feff}"),
        ("admin + LRI", "\u{2066}admin"),
        ("admin + soft hyphen", "ad\u{ad}min"),
        ("control character", "admin\u{7}"),
        ("admin + newline", "admin\n"),
    ] {
        rows.push(row(
            format!("A10.12 sub {what}"),
            f.k1_claim("sub", Some(json!(sub))),
        ));
    }
    for alg in [
        "EdDSA\u{0}",
        " EdDSA",
        "EdDSA ",
        "EDDSA",
        "eddsa",
        "ＥｄＤＳＡ",
        "EdDSA\u{200b}",
        "ЕdDSA",
    ] {
        rows.push(row(
            format!("A10.12 alg {alg:?} (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // Positive controls: a JSON escape is the character it names.
    rows.push(
        row(
            r#"A10.12 control: alg "\u0045dDSA" is EdDSA (K1)"#,
            f.k1_header_bytes(f.header_text_with("alg", r#""\u0045dDSA""#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            r#"A10.12 control: typ "at\u002bjwt" is at+jwt (K1)"#,
            f.k1_header_bytes(f.header_text_with("typ", r#""at\u002bjwt""#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            r#"A10.12 control: sub "\u0061lice" is alice (K1)"#,
            pay(splice(&no_sub, r#""sub":"\u0061lice""#).as_bytes()),
        )
        .expect(Active),
    );
    rows.push(
        row(
            "A10 control: header with whitespace between tokens (K1)",
            f.k1_header_bytes(
                serde_json::to_string_pretty(&t0.header())
                    .unwrap()
                    .as_bytes(),
            ),
        )
        .expect(Active),
    );
    f.run("A10", rows).await;

    // The verifier refuses such subjects because issuance never mints them.
    for sub in [
        "admin\u{200b}",
        "\u{202e}nimda",
        "admin\u{feff}",
        "admin\u{0}",
    ] {
        let e = f
            .client
            .clone()
            .issue(authed(access_spec(sub), &f.s.admin_key))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "A10.12 Issue with subject {sub:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// A11. Opaque tokens
// ---------------------------------------------------------------------------------

/// `body` plus the API-key checksum (first 4 bytes of SHA-256, base64url).
fn with_checksum(body: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    format!("{body}{}", b64(&d.as_ref()[..4]))
}

fn swap_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The same text with the character at `i` replaced by a different base64url one.
fn change_char(s: &str, i: usize) -> String {
    let c = s.as_bytes()[i];
    let new = if c == b'A' { 'B' } else { 'A' };
    format!("{}{new}{}", &s[..i], &s[i + 1..])
}

#[tokio::test]
async fn a11_opaque_tokens() {
    let f = Fixture::start().await;
    let key = f.s.api_key(&["read:things"]).await.token;
    let with_rt = f.issue_with_refresh("opaque").await;
    let rt = with_rt.refresh_token.clone();
    let revoked_key = f.s.api_key(&["read:things"]).await.token;
    f.revoke(&revoked_key).await;
    let revoked_rt = f.issue_with_refresh("opaque").await.refresh_token;
    f.revoke(&revoked_rt).await;

    // tsk_<env>_<id>_<43-char secret><6-char checksum>
    let parts: Vec<&str> = key.splitn(4, '_').collect();
    let (env, id, tail) = (parts[1], parts[2], parts[3]);
    let (secret, check) = tail.split_at(43);
    let body = |env: &str, id: &str, secret: &str| format!("tsk_{env}_{id}_{secret}");
    let random_id: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
    let mut rows = vec![
        row("A11 control: the API key", key.clone()).expect(Active),
        row("A11 control: the refresh token", rt.clone()).expect(Active),
        row(
            "A11.1 random API key in the exact format",
            with_checksum(&body("test", &random_id, &b64(random_bytes(32)))),
        ),
        row(
            "A11.1 random refresh token in the exact format",
            format!("tsr_{}", b64(random_bytes(32))),
        ),
        row(
            "A11.1 random code in the exact format",
            format!("tsc_{}", b64(random_bytes(32))),
        ),
        row(
            "A11.2 right id, wrong secret, valid checksum",
            with_checksum(&body(env, id, &b64(random_bytes(32)))),
        ),
        row(
            "A11.2 right id, wrong secret, old checksum",
            format!("{}{check}", body(env, id, &b64(random_bytes(32)))),
        ),
        row(
            "A11.2 right id and secret, other environment",
            with_checksum(&body("prod", id, secret)),
        ),
        row(
            "A11.2 right secret, other id",
            with_checksum(&body(env, &random_id, secret)),
        ),
        row(
            "A11.3 API key, one secret character changed (checksum fixed)",
            with_checksum(&body(env, id, &change_char(secret, 20))),
        ),
        row(
            "A11.3 API key, one secret character changed",
            format!("{}{check}", body(env, id, &change_char(secret, 20))),
        ),
        row(
            "A11.3 API key, checksum character changed",
            change_char(&key, key.len() - 1),
        ),
        row("A11.3 API key truncated by one", &key[..key.len() - 1]),
        row("A11.3 API key extended by one", format!("{key}A")),
        row(
            "A11.3 API key with secret extended (checksum fixed)",
            with_checksum(&body(env, id, &format!("{secret}A"))),
        ),
        row("A11.4 API key case-flipped", swap_case(&key)),
        row(
            "A11.4 API key, secret case-flipped (checksum fixed)",
            with_checksum(&body(env, id, &swap_case(secret))),
        ),
        row("A11.4 API key upper-cased", key.to_uppercase()),
        row(
            "A11.3 refresh token, one character changed",
            change_char(&rt, 20),
        ),
        row("A11.3 refresh token truncated by one", &rt[..rt.len() - 1]),
        row("A11.3 refresh token extended by one", format!("{rt}A")),
        row("A11.4 refresh token case-flipped", swap_case(&rt)),
        row(
            "A11.4 refresh token with prefix TSR_",
            format!("TSR_{}", &rt[4..]),
        ),
        row(
            "A11 refresh token presented as a code (tsc_)",
            format!("tsc_{}", &rt[4..]),
        ),
        row("A11 refresh token without its prefix", &rt[4..]),
        row("A11 API key with = padding", format!("{key}=")),
        row("A11 prefix only: tsk_", "tsk_"),
        row("A11 prefix only: tsr_", "tsr_"),
        row("A11.6 revoked API key", revoked_key.clone()),
        row("A11.6 revoked refresh token", revoked_rt.clone()),
    ];
    for v in trailing_bit_variants(secret, 2) {
        rows.push(row(
            format!(
                "A11.3 API key secret trailing-bit variant {:?}",
                &v[v.len() - 1..]
            ),
            with_checksum(&body(env, id, &v)),
        ));
    }
    for v in trailing_bit_variants(&rt, 2) {
        rows.push(row(
            format!(
                "A11.3 refresh token trailing-bit variant {:?}",
                &v[v.len() - 1..]
            ),
            v,
        ));
    }
    for meta in [
        "' OR '1'='1",
        "x'--",
        "%",
        "_",
        "*",
        "\\",
        "\"",
        "' OR 1=1--",
        "tsk_' OR '1'='1",
        "tsr_' OR '1'='1'--",
        "tsr_%",
        "tsk_test_%_%",
        "1; DROP TABLE api_keys;--",
        "tsr_\0",
    ] {
        rows.push(row(format!("A11.5 SQL metacharacters {meta:?}"), meta));
    }
    // A11.7 the hint never changes the answer.
    for hint in [
        "access_token",
        "refresh_token",
        "api_key",
        "bogus",
        "ACCESS_TOKEN",
        "' OR '1'='1",
    ] {
        rows.push(
            row(
                format!("A11.7 refresh token with hint {hint:?}"),
                rt.clone(),
            )
            .hint(hint)
            .expect(Active),
        );
        rows.push(
            row(format!("A11.7 API key with hint {hint:?}"), key.clone())
                .hint(hint)
                .expect(Active),
        );
        rows.push(
            row(format!("A11.7 T0 with hint {hint:?}"), f.t0.token.clone())
                .hint(hint)
                .expect(Active),
        );
        rows.push(
            row(
                format!("A11.7 revoked refresh token with hint {hint:?}"),
                revoked_rt.clone(),
            )
            .hint(hint),
        );
        rows.push(
            row(
                format!("A11.7 revoked API key with hint {hint:?}"),
                revoked_key.clone(),
            )
            .hint(hint),
        );
    }
    rows.push(
        row("A11.7 T0 with a 10 KiB hint", f.t0.token.clone())
            .hint(&"h".repeat(10 * 1024))
            .expect(Active),
    );
    f.run("A11", rows).await;
}

/// A11.8: valid-id-wrong-secret and random API keys cost the same (coarsely: the
/// medians of interleaved samples within a few milliseconds; the compare itself is
/// `subtle`'s constant-time one).
#[tokio::test]
async fn a11_8_no_timing_oracle_for_api_keys() {
    let f = Fixture::start().await;
    let key = f.s.api_key(&["read:things"]).await.token;
    let parts: Vec<&str> = key.splitn(4, '_').collect();
    let right_id = || {
        with_checksum(&format!(
            "tsk_{}_{}_{}",
            parts[1],
            parts[2],
            b64(random_bytes(32))
        ))
    };
    let random = || {
        let id: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
        with_checksum(&format!("tsk_{}_{id}_{}", parts[1], b64(random_bytes(32))))
    };
    // Interleaved, so load from neighbouring tests falls on both samples alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..150 {
        for (samples, token) in [(&mut a, right_id()), (&mut b, random())] {
            let start = Instant::now();
            let r = f.introspect(&token, "", &f.s.admin_key).await.unwrap();
            samples.push(start.elapsed());
            assert_eq!(r, IntrospectResponse::default());
        }
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[a.len() / 2], b[b.len() / 2]);
    let diff = ma.abs_diff(mb);
    assert!(
        diff < Duration::from_millis(5),
        "A11.8 medians {ma:?} (right id) vs {mb:?} (random)"
    );
}

// ---------------------------------------------------------------------------------
// A12. Revocation
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a12_revocation() {
    let f = Fixture::start().await;
    let t0 = f.t0.clone();
    let now = f.now();

    // A12.2 (B10.1): Revoke of garbage, forgeries and unknown tokens succeeds and
    // changes nothing — in particular a forgery carrying T0's jti does not revoke T0.
    let forged_same_jti: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        (
            "alg none with T0's payload",
            format!("eyJhbGciOiJub25lIn0.{}.", t0.p),
        ),
        (
            "T0 with S + L",
            t0.with_sig_bytes(&ed25519_s_plus_l(&t0.sig(), 1)),
        ),
        ("T0 with sub changed, T0's signature", {
            let mut p = t0.payload();
            p["sub"] = json!("mallory");
            t0.with_payload(&b64_json(&p))
        }),
        (
            "expired K1 token with T0's jti",
            f.k1_claim("exp", Some(json!(now - 1))),
        ),
        (
            "K1 token with T0's jti and a foreign iss",
            f.k1_claim("iss", Some(json!("https://evil.test"))),
        ),
        (
            "HS256 forgery with T0's payload",
            hmac_token("HS256", b"", "eyJhbGciOiJIUzI1NiJ9", &t0.p),
        ),
        (
            "unknown API key",
            with_checksum(&format!(
                "tsk_test_0123456789abcdef_{}",
                b64(random_bytes(32))
            )),
        ),
        (
            "unknown refresh token",
            format!("tsr_{}", b64(random_bytes(32))),
        ),
        ("SQL metacharacters", "' OR '1'='1".into()),
        ("a lone NUL", "\0".into()),
    ];
    let mut failures = Vec::new();
    for (name, token) in &forged_same_jti {
        for hint in ["", "access_token", "bogus"] {
            if let Err(e) = f.revoke_as(token, hint, &f.s.admin_key).await {
                failures.push(format!("A12.2 revoke {name} (hint {hint:?}): {e:?}"));
            }
        }
        if !f.active(&t0.token).await {
            failures.push(format!("A12.2 revoke {name}: T0 was revoked by a forgery"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let e = f.revoke_as("", "", &f.s.admin_key).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "A12.2 empty revoke");
    let e = f
        .revoke_as(&"A".repeat(9000), "", &f.s.admin_key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "A12.2 oversize revoke");

    // A12.9 (EdDSA form): a second, equivalent encoding of T0 — same claims and jti,
    // header re-serialized — is genuinely valid before the revocation...
    let twin = f.k1(|h, _| h["typ"] = json!("application/at+jwt"));
    let twin2 = f.mint.sign_raw(
        serde_json::to_string_pretty(&t0.header())
            .unwrap()
            .as_bytes(),
        serde_json::to_string_pretty(&t0.payload())
            .unwrap()
            .as_bytes(),
    );
    assert!(
        f.active(&twin).await && f.active(&twin2).await,
        "A12.9 control: twins valid"
    );
    // A12.4 policy: a caller without tessera:revoke is refused and changes nothing;
    // any holder of tessera:revoke may revoke any token (Revoke is an operator RPC).
    let introspector = f.s.api_key(&["tessera:introspect"]).await.token;
    let e = f.revoke_as(&t0.token, "", &introspector).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "A12.4/B10.3");
    assert!(
        f.active(&t0.token).await,
        "A12.4 refused revoke changed nothing"
    );
    // A12.1 ... and revocation is immediate, and keyed on the jti.
    let revoker = f.s.api_key(&["tessera:revoke"]).await.token;
    f.revoke_as(&t0.token, "", &revoker).await.unwrap();
    let inactive = |name: &'static str, token: String| (name, token);
    let after: Vec<(&str, String)> = vec![
        inactive("A12.1 T0 right after Revoke", t0.token.clone()),
        inactive(
            "A12.9 re-serialized twin of T0 (typ spelling)",
            twin.clone(),
        ),
        inactive(
            "A12.9 re-serialized twin of T0 (pretty JSON)",
            twin2.clone(),
        ),
        inactive("A12.9 T0 re-signed unchanged", f.k1(|_, _| {})),
        inactive(
            "A12.9 trailing-bit variant of T0's signature",
            t0.with_sig(&trailing_bit_variants(&t0.s, 4)[0]),
        ),
    ];
    for (name, token) in &after {
        assert_eq!(
            f.introspect(token, "", &f.s.admin_key).await.unwrap(),
            IntrospectResponse::default(),
            "{name}"
        );
    }
    // A12.3 a second revoke succeeds.
    f.revoke(&t0.token).await;
    f.revoke(&twin).await;
    // A12.9 the other way round: revoking the twin revokes the original.
    let t1 = f.s.access_token("alice").await.token;
    let t1_twin = f
        .mint
        .tweak(&t1, |h, _| h["typ"] = json!("application/at+jwt"));
    f.revoke(&t1_twin).await;
    assert!(!f.active(&t1).await, "A12.9 revoking the twin revokes T1");

    // A12.5 revoking a refresh token revokes the access tokens of its grant.
    let g = f.issue_with_refresh("grant").await;
    let other = f.s.access_token("grant").await.token;
    f.revoke_as(&g.refresh_token, "access_token", &f.s.admin_key)
        .await
        .unwrap();
    assert!(
        !f.active(&g.refresh_token).await,
        "A12.5/B10.2 hint miss still revokes"
    );
    assert!(!f.active(&g.token).await, "A12.5 access token of the grant");
    assert!(f.active(&other).await, "A12.5 same subject, other grant");
    // B10.5 policy: revoking an access token blocks its jti only; the refresh token
    // of its grant stays usable (RFC 7009 allows, but does not require, revoking it).
    let g2 = f.issue_with_refresh("grant").await;
    f.revoke(&g2.token).await;
    assert!(!f.active(&g2.token).await);
    assert!(f.active(&g2.refresh_token).await, "B10.5 policy");
    // B10.2 a bogus hint is ignored.
    let k = f.s.api_key(&["x"]).await.token;
    f.revoke_as(&k, "refresh_token", &f.s.admin_key)
        .await
        .unwrap();
    assert!(
        !f.active(&k).await,
        "B10.2 API key revoked under a wrong hint"
    );
    let t2 = f.s.access_token("hinted").await.token;
    f.revoke_as(&t2, "bogus", &f.s.admin_key).await.unwrap();
    assert!(
        !f.active(&t2).await,
        "B10.2 access token revoked under a bogus hint"
    );

    // A12.6 log out everywhere.
    let before_bump = f.s.access_token("everywhere").await.token;
    f.client
        .clone()
        .bump_token_version(authed(
            BumpTokenVersionRequest {
                subject: "everywhere".into(),
                reason: String::new(),
            },
            &f.s.admin_key,
        ))
        .await
        .unwrap();
    let after_bump = f.s.access_token("everywhere").await.token;
    assert!(!f.active(&before_bump).await, "A12.6 older token");
    assert!(f.active(&after_bump).await, "A12.6 newer token");

    // A12.7 revocations survive a restart.
    let live = f.s.access_token("alice").await.token;
    let Fixture { s, .. } = f;
    let f = Fixture::on(s.restart().await).await;
    for (name, token) in after.iter().chain([("A12.9 T1", t1.clone())].iter()) {
        assert!(!f.active(token).await, "A12.7 after restart: {name}");
    }
    assert!(!f.active(&g.token).await && !f.active(&before_bump).await);
    assert!(
        f.active(&live).await,
        "A12.7 control: live token survives restart"
    );
    f.assert_healthy().await;
}

// ---------------------------------------------------------------------------------
// A13. Response hygiene
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a13_caller_must_be_authorized() {
    let f = Fixture::start().await;
    let narrow = f.s.api_key(&["read:things"]).await.token;
    let tokens = [
        ("T0", f.t0.token.clone()),
        ("garbage", "garbage".to_string()),
        ("empty", String::new()),
    ];
    for (name, token) in &tokens {
        let req = IntrospectRequest {
            token: token.clone(),
            token_type_hint: String::new(),
        };
        let e = f
            .client
            .clone()
            .introspect(tonic::Request::new(req))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "A13.3 no credential, {name}"
        );
        for (what, key, code) in [
            (
                "bad key",
                "tsk_test_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                Code::Unauthenticated,
            ),
            (
                "an access token as credential",
                f.t0.token.as_str(),
                Code::Unauthenticated,
            ),
            (
                "key without tessera:introspect",
                narrow.as_str(),
                Code::PermissionDenied,
            ),
        ] {
            let e = f.introspect(token, "", key).await.unwrap_err();
            assert_eq!(e.code(), code, "A13.3 {what}, {name}");
            assert!(
                token.is_empty() || !e.message().contains(token.as_str()),
                "A13.3 {what}: token echoed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Section B: official vectors and RFC 7662 / 7009 semantics, through the service
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn b_official_vectors_through_introspect() {
    let f = Fixture::start().await;
    const A1_P: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const A1_H: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
    const ED_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let hs = "eyJhbGciOiJIUzI1NiJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let mut rows = vec![
        row(
            "B1 RFC 7515 A.1 HS256 (valid MAC, expired, HMAC refused)",
            format!("{A1_H}.{A1_P}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        ),
        row(
            "B2 RFC 7515 A.2 RS256",
            format!(
                "eyJhbGciOiJSUzI1NiJ9.{A1_P}.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
            ),
        ),
        row(
            "B3 RFC 7515 A.3 ES256",
            format!(
                "eyJhbGciOiJFUzI1NiJ9.{A1_P}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
            ),
        ),
        row(
            "B4 RFC 7515 A.4 ES512",
            "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn",
        ),
        row(
            "B5 RFC 7515 A.5 unsecured",
            format!("eyJhbGciOiJub25lIn0.{A1_P}."),
        ),
        row(
            "B6 RFC 8037 A.4 EdDSA (foreign key, no kid)",
            format!(
                "{ED_INPUT}.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
            ),
        ),
        row(
            "B12.3 RFC 7515 A.3 with s := n - s",
            format!(
                "eyJhbGciOiJFUzI1NiJ9.{A1_P}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA"
            ),
        ),
        row(
            "B12.4 RFC 8037 A.4 with S + L",
            format!(
                "{ED_INPUT}.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg"
            ),
        ),
        row(
            "B12.5 RFC 7515 A.3 signature as DER",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{RFC7515_A3_DER}"),
        ),
        row(
            "B12.2 psychic DER",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{PSYCHIC_DER}"),
        ),
        row(
            "B12.2 psychic P1363 zeros",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{}", "A".repeat(86)),
        ),
        row(
            "B12.2 psychic r=s=n",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{P256_R_S_N}"),
        ),
        row(
            "B12.7 HS256 keyed with raw x",
            format!("{hs}.QQwDLiq54UNDU3sRHRIjel55pW60FDiRX9Fcr27PK2I"),
        ),
        row(
            "B12.7 HS256 keyed with PEM + \\n",
            format!("{hs}.-KEEupmDOlbn3U_ZNXEeHeuukQSQdg0umzPl_ZmYbZg"),
        ),
        row(
            "B12.7 HS256 keyed with PEM",
            format!("{hs}.WCU3d-Afg4HqExkFGOIiPqLTRoPFHfRVKfS1PkK8qos"),
        ),
        row(
            "B12.7 HS256 keyed with DER SPKI",
            format!("{hs}.IrF8BibZdrJiBLoD6upI6oVytJpliHrO1ViTS387xUg"),
        ),
        row(
            "B12.7 HS256 keyed with the text of x",
            format!("{hs}.9fGCo2KsiFM1MzooGSa647fcFBPqBAvxTIKej_5QaiA"),
        ),
        row(
            "B12.8 HS256 with the empty key",
            format!("{hs}.DmwMbnJABMzFPeP0qUyFKnAc3vyHPqKkShL7uTdls-w"),
        ),
        row(
            "B12.9 HS256 keyed with the A.3 EC PEM",
            format!("eyJhbGciOiJIUzI1NiJ9.{A1_P}.b5WqE1XtY4mvcC8dN0okAZYTHi0BCdK728HRDm4URAg"),
        ),
    ];
    for tail in [
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXm",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXn",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk=",
        "dBjftJeZ4CVP+mB92K27uhbUJU1p1r/wW1gFWFOEjXk=",
    ] {
        rows.push(row(
            format!("B12.1 RFC 7515 A.1, signature {tail}"),
            format!("{A1_H}.{A1_P}.{tail}"),
        ));
    }
    // The RFC vectors again, each under T0's header (its kid), so the verifier gets as
    // far as it can with them.
    for sig in [
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg",
    ] {
        rows.push(row(
            format!(
                "B6/B12.4 RFC 8037 signature {}… with T0's header and payload",
                &sig[..8]
            ),
            f.t0.with_sig(sig),
        ));
    }
    // B9.2 unknown / malformed tokens are an ordinary inactive answer.
    rows.push(row(
        "B9.2 unknown but well-formed jti-shaped text",
        b64(random_bytes(16)),
    ));
    rows.push(row("B9.1 control: T0", f.t0.token.clone()).expect(Active));
    f.run("B", rows).await;
}

// ---------------------------------------------------------------------------------
// ES256 keys, and a key ring holding two key types (A2.4, A3.9–A3.12, A3.16, A4.8)
// ---------------------------------------------------------------------------------

/// An EdDSA server restarted with `signing_alg = ES256` and rotated: the ring holds a
/// retired Ed25519 key (still verifying) and an active P-256 key.
async fn mixed_key_server(tmp: &tempfile::TempDir) -> (TestServer, String, String) {
    let clock = tessera::clock::Clock::system();
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    let ed_token = s.access_token("alice").await.token;
    s.stop().await;
    let mut cfg = test_config(tmp.path());
    cfg.signing_alg = tessera::config::SigningAlg::ES256;
    let s = TestServer::start_with(cfg, clock).await;
    let ec_kid = s
        .keys()
        .await
        .rotate_signing_key(authed(RotateSigningKeyRequest {}, &s.admin_key))
        .await
        .unwrap()
        .into_inner()
        .kid;
    let ed_kid = decode(&ed_token).0["kid"].as_str().unwrap().to_string();
    (s, ed_token, format!("{ed_kid} {ec_kid}"))
}

#[tokio::test]
async fn es256_and_mixed_key_types() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, ed_token, kids) = mixed_key_server(&tmp).await;
    let (ed_kid, ec_kid) = kids.split_once(' ').unwrap();
    let f = Fixture::on(s).await;
    assert_eq!(f.mint.alg, "ES256");
    assert_eq!(f.mint.kid, ec_kid);
    let ed = Minter::for_kid(&f.s, ed_kid);
    let t0 = f.t0.clone();
    let sig = t0.sig();
    assert_eq!(sig.len(), 64);
    let (r, s_) = sig.split_at(32);
    let twin_sig = [r, &p256_neg(s_)].concat();
    let twin = t0.with_sig_bytes(&twin_sig);
    let mut n_plus_1 = hex(P256_N);
    n_plus_1[31] += 1;

    let mut rows = vec![
        row("control: the retired Ed25519 key's token", ed_token.clone()).expect(Active),
        row("control: T0 (ES256) re-signed (K1)", f.k1(|_, _| {})).expect(Active),
        // A3.16: (r, n−s) is itself a valid signature of the same token (same jti).
        row("A3.16 control: T0 with s := n - s verifies", twin.clone()).expect(Active),
        row(
            "A3.12 T0's signature as DER",
            t0.with_sig_bytes(&der_signature(&sig)),
        ),
        row("A3.12 63-byte P1363", t0.with_sig_bytes(&sig[..63])),
        row(
            "A3.12 65-byte P1363 (leading zero)",
            t0.with_sig_bytes(&[&[0u8][..], &sig[..]].concat()),
        ),
        row(
            "A3.12 65-byte P1363 (trailing zero)",
            t0.with_sig_bytes(&[&sig[..], &[0u8][..]].concat()),
        ),
        row(
            "A3.12 r and s swapped",
            t0.with_sig_bytes(&[s_, r].concat()),
        ),
        row(
            "A3.12 r = 0",
            t0.with_sig_bytes(&[&[0u8; 32][..], s_].concat()),
        ),
        row(
            "A3.12 s = 0",
            t0.with_sig_bytes(&[r, &[0u8; 32][..]].concat()),
        ),
        row(
            "A3.12 s = n",
            t0.with_sig_bytes(&[r, &hex(P256_N)[..]].concat()),
        ),
        row(
            "A3.12 s = n + 1",
            t0.with_sig_bytes(&[r, &n_plus_1[..]].concat()),
        ),
    ];
    rows.extend(psychic_rows(&f));
    for v in trailing_bit_variants(&t0.s, 4) {
        rows.push(row(
            "A3.15 ES256 signature trailing-bit variant",
            t0.with_sig(&v),
        ));
    }
    // A3.4 another P-256 key, T0's kid.
    let other_doc =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let other = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        other_doc.as_ref(),
        &SystemRandom::new(),
    )
    .unwrap();
    let other_sig = other
        .sign(
            &SystemRandom::new(),
            format!("{}.{}", t0.h, t0.p).as_bytes(),
        )
        .unwrap();
    rows.push(row(
        "A3.4 T0 signed by another P-256 key",
        t0.with_sig_bytes(other_sig.as_ref()),
    ));
    // A2.4/A2.1–A2.7 with the EC key's forms (points, SPKI, JWK, OpenSSH).
    rows.extend(hs_confusion_rows(&f).await);
    // A2.8 cross-family swaps of T0's signature.
    for alg in [
        "EdDSA", "ES384", "ES512", "RS256", "PS256", "HS256", "ES256K",
    ] {
        let h = b64_json(&json!({"alg": alg, "kid": ec_kid, "typ": "at+jwt"}));
        rows.push(row(
            format!("A2.8 ES256 signature under alg {alg}"),
            t0.with_header(&h),
        ));
        rows.push(row(
            format!("A2.8 alg {alg}, P-256 key signs it (K1)"),
            f.k1_header("alg", Some(json!(alg))),
        ));
    }
    // A4.8 a real kid of the other key type.
    let ed_p = Jwt::new(&ed_token);
    let ed_hdr = |kid: &str, alg: &str| json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    rows.push(row(
        "A4.8 EdDSA header with the P-256 kid, Ed25519 key signs",
        ed.sign_json(&ed_hdr(ec_kid, "EdDSA"), &ed_p.payload()),
    ));
    rows.push(row(
        "A4.8 ES256 header with the Ed25519 kid, P-256 key signs",
        f.mint.sign_json(&ed_hdr(ed_kid, "ES256"), &t0.payload()),
    ));
    rows.push(row(
        "A4.8 EdDSA header with the Ed25519 kid, P-256 key signs",
        f.mint.sign_json(&ed_hdr(ed_kid, "EdDSA"), &t0.payload()),
    ));
    rows.push(row(
        "A4.8 ES256 header with the P-256 kid, Ed25519 key signs",
        ed.sign_json(&ed_hdr(ec_kid, "ES256"), &t0.payload()),
    ));
    rows.push(row(
        "A4.8 Ed25519 token with its kid swapped to the P-256 key",
        ed_p.with_header(&b64_json(&ed_hdr(ec_kid, "EdDSA"))),
    ));
    rows.push(
        row(
            "A4.8 control: Ed25519 key with its own kid (K1)",
            ed.sign_json(&ed_hdr(ed_kid, "EdDSA"), &t0.payload()),
        )
        .expect(Active),
    );
    f.run("ES256 + mixed key types", rows).await;

    // A3.16 / A12.9: revoking T0 revokes its (r, n−s) twin, and the other way round.
    f.revoke(&t0.token).await;
    assert!(!f.active(&t0.token).await, "A12.1 T0");
    assert!(
        !f.active(&twin).await,
        "A3.16/A12.9 twin of a revoked token"
    );
    let t1 = Jwt::new(&f.s.access_token("alice").await.token);
    let sig1 = t1.sig();
    let (r1, s1) = sig1.split_at(32);
    let t1_twin = t1.with_sig_bytes(&[r1, &p256_neg(s1)[..]].concat());
    assert!(f.active(&t1_twin).await);
    f.revoke(&t1_twin).await;
    assert!(
        !f.active(&t1.token).await,
        "A12.9 revoking the twin revokes T1"
    );
    f.assert_healthy().await;
}
