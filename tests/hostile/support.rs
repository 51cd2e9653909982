//! The table machinery (rows, expectations, the judge) and the fixture every
//! table runs on: a server, a base token T0, the mint hook, one client.

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    IntrospectRequest, IntrospectResponse, IssueRequest, IssueResponse, RevokeRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::mint::Minter;
use crate::common::{TestServer, access_spec, authed};
use crate::forge::*;

// ---------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------

/// What a row must get back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
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
pub(crate) use Expect::*;

/// One attack.
pub(crate) struct Row {
    pub name: String,
    pub token: String,
    pub hint: String,
    pub expect: Expect,
}

pub(crate) fn row(name: impl Into<String>, token: impl Into<String>) -> Row {
    Row {
        name: name.into(),
        token: token.into(),
        hint: String::new(),
        expect: Inactive,
    }
}

impl Row {
    pub(crate) fn expect(mut self, e: Expect) -> Row {
        self.expect = e;
        self
    }
    pub(crate) fn hint(mut self, h: &str) -> Row {
        self.hint = h.into();
        self
    }
}

/// Every row must answer within this, whatever the input (A0, A4.7).
pub(crate) const ROW_LATENCY_CAP: Duration = Duration::from_secs(2);
/// p99 over a table (A13.5); generous, for debug builds on a busy machine.
pub(crate) const P99_BUDGET: Duration = Duration::from_millis(200);

pub(crate) fn judge(
    expect: Expect,
    got: &Result<IntrospectResponse, Status>,
    token: &str,
) -> Option<String> {
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
        (Refused | TooLarge, Err(s)) => s.code() == Code::ResourceExhausted,
        _ => false,
    };
    (!ok).then(|| match got {
        Ok(r) if r.active => format!("expected {expect:?}, got ACTIVE: {r:?}"),
        Ok(r) => format!("expected {expect:?}, got {r:?}"),
        Err(s) => format!("expected {expect:?}, got {:?}: {}", s.code(), s.message()),
    })
}

// ---------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------

pub(crate) struct Fixture {
    pub s: TestServer,
    pub client: TokenServiceClient<Channel>,
    /// The base token: a freshly issued access token for `alice`.
    pub t0: Jwt,
    pub mint: Minter,
}

pub(crate) const ISSUER: &str = "https://tessera.test";

impl Fixture {
    pub(crate) async fn start() -> Fixture {
        Self::on(TestServer::start().await).await
    }

    pub(crate) async fn on(s: TestServer) -> Fixture {
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

    pub(crate) fn now(&self) -> i64 {
        self.s.clock.now()
    }

    /// K1: T0 with `change` applied to its decoded header and payload, re-signed.
    pub(crate) fn k1(&self, change: impl FnOnce(&mut Value, &mut Value)) -> String {
        self.mint.tweak(&self.t0.token, change)
    }

    /// K1: T0 with one claim set to `value` (removed for `None`).
    pub(crate) fn k1_claim(&self, name: &str, value: Option<Value>) -> String {
        self.k1(|_, p| set(p, name, value))
    }

    /// K1: T0 with one header member set to `value` (removed for `None`).
    pub(crate) fn k1_header(&self, name: &str, value: Option<Value>) -> String {
        self.k1(|h, _| set(h, name, value))
    }

    /// K1: T0's header bytes over arbitrary payload bytes.
    pub(crate) fn k1_payload_bytes(&self, payload: &[u8]) -> String {
        self.mint
            .sign_input(&format!("{}.{}", self.t0.h, b64(payload)))
    }

    /// K1: T0's payload over arbitrary header bytes.
    pub(crate) fn k1_header_bytes(&self, header: &[u8]) -> String {
        self.mint
            .sign_input(&format!("{}.{}", b64(header), self.t0.p))
    }

    /// K1: T0 with claim `name` replaced by raw JSON text (numbers serde cannot hold).
    pub(crate) fn k1_raw_claim(&self, name: &str, raw: &str) -> String {
        let mut p = self.t0.payload();
        p.as_object_mut().unwrap().remove(name);
        self.k1_payload_bytes(splice(&p.to_string(), &format!("\"{name}\":{raw}")).as_bytes())
    }

    /// T0's header as compact JSON text with one member replaced by raw JSON text.
    pub(crate) fn header_text_with(&self, name: &str, raw: &str) -> String {
        let mut h = self.t0.header();
        h.as_object_mut().unwrap().remove(name);
        splice(&h.to_string(), &format!("\"{name}\":{raw}"))
    }

    pub(crate) async fn introspect(
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

    pub(crate) async fn active(&self, token: &str) -> bool {
        self.introspect(token, "", &self.s.admin_key)
            .await
            .unwrap()
            .active
    }

    pub(crate) async fn issue(&self, req: IssueRequest) -> IssueResponse {
        self.client
            .clone()
            .issue(authed(req, &self.s.admin_key))
            .await
            .unwrap()
            .into_inner()
    }

    /// An access token (and refresh token) for `subject`.
    pub(crate) async fn issue_with_refresh(&self, subject: &str) -> IssueResponse {
        let mut req = access_spec(subject);
        if let Some(Credential::AccessToken(spec)) = &mut req.credential {
            spec.refresh_token = true;
        }
        self.issue(req).await
    }

    /// Issues access tokens for `alice` until one satisfies `pred` (bounded).
    pub(crate) async fn issue_until(&self, pred: impl Fn(&Jwt) -> bool) -> Jwt {
        for _ in 0..64 {
            let t = Jwt::new(&self.s.access_token("alice").await.token);
            if pred(&t) {
                return t;
            }
        }
        panic!("no token with the wanted shape in 64 tries");
    }

    pub(crate) async fn revoke_as(&self, token: &str, hint: &str, key: &str) -> Result<(), Status> {
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

    pub(crate) async fn revoke(&self, token: &str) {
        self.revoke_as(token, "", &self.s.admin_key).await.unwrap();
    }

    /// The published Ed25519/P-256 JWK of T0's key, fetched over HTTP.
    pub(crate) async fn published_jwk(&self) -> (Value, String) {
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

    pub(crate) async fn assert_healthy(&self) {
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

    /// Does `Authorization/Check` (Envoy ext_authz) let a request bearing `token` through?
    pub(crate) async fn check_allows(&self, token: &str) -> bool {
        use envoy_types::ext_authz::v3::pb::CheckRequest;
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
        use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
        let http = HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            headers: [("authorization".to_string(), format!("Bearer {token}"))].into(),
            ..Default::default()
        };
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let mut c = AuthorizationClient::new(self.s.channel().await);
        match c.check(authed(req, &self.s.admin_key)).await {
            Ok(r) => r.into_inner().status.is_some_and(|s| s.code == 0),
            Err(_) => false,
        }
    }

    /// Runs a table: each row, then the persistence check; then health and latency.
    pub(crate) async fn run(&self, table: &str, rows: Vec<Row>) {
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
            // Envoy's ext_authz Check must agree with Introspect on every row, except
            // that a live refresh token is never a bearer credential.
            let active = matches!(&got, Ok(g) if g.active && g.token_kind != "refresh_token");
            let allowed = self.check_allows(&r.token).await;
            if allowed != active {
                failures.push(format!(
                    "{}: ext_authz Check allowed={allowed}, Introspect active={active}",
                    r.name
                ));
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

pub(crate) fn set(obj: &mut Value, name: &str, value: Option<Value>) {
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
pub(crate) fn check_vector(b64_text: &str, json_text: &str) {
    assert_eq!(
        String::from_utf8(unb64(b64_text)).unwrap(),
        json_text,
        "catalog vector {b64_text}"
    );
}
