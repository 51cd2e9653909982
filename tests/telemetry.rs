//! Telemetry as an operator sees it: `/metrics` read by the reference Prometheus
//! parser (the official Python client's), counters that move after real calls, spans
//! received by a real OTLP endpoint, the request id echoed, and the failed-auth log
//! line of the real binary.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, access_spec, authed, raw_http};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    ApiKeySpec, ExchangeRequest, IntrospectRequest, IssueRequest, RefreshTokenGrant, RevokeRequest,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TESSERA_INTEROP_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the telemetry test needs Python with tests/interop/requirements.txt: run scripts/test \
         (or set TESSERA_INTEROP_PYTHON)"
    );
    venv
}

/// A metric family as `prometheus_client.parser` reads it. Counter names lose their
/// `_total` there; the samples keep it.
#[derive(Debug, serde::Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    help: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Scrapes `/metrics` and parses it with the reference parser.
async fn scrape(s: &TestServer) -> Vec<Family> {
    let (status, head, body) = s.metrics_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/parse_metrics.py");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map_or(0.0, |(_, _, v)| *v)
}

fn with_refresh() -> IssueRequest {
    let mut req = access_spec("telemetry-user");
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
        spec.client_id = "web-app".into();
    }
    req
}

fn introspect_req(token: &str) -> IntrospectRequest {
    IntrospectRequest {
        token: token.into(),
        token_type_hint: String::new(),
    }
}

fn refresh(rt: &str) -> ExchangeRequest {
    ExchangeRequest {
        grant: Some(Grant::RefreshToken(RefreshTokenGrant {
            refresh_token: rt.into(),
            scopes: vec![],
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_after_real_calls() {
    let s = TestServer::start().await;
    let before = scrape(&s).await;
    let mut tk = s.tokens().await;

    // OK calls, a refresh, then the same refresh token again: a reuse.
    let t = tk
        .issue(authed(with_refresh(), &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    tk.exchange(Request::new(refresh(&t.refresh_token)))
        .await
        .unwrap();
    let e = tk
        .exchange(Request::new(refresh(&t.refresh_token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // Refused callers: no credential, a malformed one, one without the scope.
    let e = tk
        .introspect(Request::new(introspect_req(&t.token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = tk
        .introspect(authed(introspect_req(&t.token), "garbage"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let weak = s.api_key(&["tessera:introspect"]).await.token;
    let e = tk.issue(authed(access_spec("x"), &weak)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Envoy's ext_authz call is a method of its own, not `other`.
    let mut authz =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            s.channel().await,
        );
    let checked = authz
        .check(authed(
            envoy_types::pb::envoy::service::auth::v3::CheckRequest::default(),
            &weak,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        checked.status.unwrap_or_default().code,
        16,
        "no credential: denied"
    );
    // HTTP: a JWKS fetch and a token request with bad client credentials.
    assert_eq!(s.http_get("/.well-known/jwks.json").await.0, 200);
    let (status, _, _) = s
        .http_post(
            "/oauth2/token",
            &[],
            "grant_type=client_credentials&client_id=nope&client_secret=nope",
        )
        .await;
    assert_eq!(status, 401);

    let after = scrape(&s).await;

    // Every family has HELP and the expected type.
    for f in &after {
        assert!(!f.help.is_empty(), "{} has no HELP", f.name);
    }
    for (name, kind) in [
        ("tessera_grpc_requests", "counter"),
        ("tessera_grpc_request_duration_seconds", "histogram"),
        ("tessera_http_requests", "counter"),
        ("tessera_http_request_duration_seconds", "histogram"),
        ("tessera_introspect", "counter"),
        ("tessera_auth_failures", "counter"),
        ("tessera_reuse_detections", "counter"),
        ("tessera_store_batch_size", "histogram"),
        ("tessera_store_errors", "counter"),
        ("tessera_blocklist_entries", "gauge"),
        ("tessera_signing_key_age_seconds", "gauge"),
        ("tessera_verified_cache", "counter"),
        ("tessera_connections_open", "gauge"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        let f = after
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"));
        assert_eq!(f.kind, kind, "type of {name}");
        assert!(!f.samples.is_empty(), "{name} has no sample");
    }
    // One label set per family (a histogram's buckets add `le`).
    for f in &after {
        let keys = |l: &BTreeMap<String, String>| {
            l.keys().filter(|k| *k != "le").cloned().collect::<Vec<_>>()
        };
        let first = keys(&f.samples[0].1);
        for (n, l, _) in &f.samples {
            assert_eq!(keys(l), first, "{}: {n} has other labels", f.name);
        }
    }

    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let issue = ("method", "tessera.v1.TokenService/Issue");
    let introspect = ("method", "tessera.v1.TokenService/Introspect");
    let exchange = ("method", "tessera.v1.TokenService/Exchange");
    let grpc = "tessera_grpc_requests_total";
    assert!(delta(grpc, &[issue, ("code", "OK")]) >= 2.0);
    assert_eq!(delta(grpc, &[issue, ("code", "PERMISSION_DENIED")]), 1.0);
    assert_eq!(delta(grpc, &[introspect, ("code", "UNAUTHENTICATED")]), 2.0);
    assert_eq!(delta(grpc, &[exchange, ("code", "OK")]), 1.0);
    assert_eq!(delta(grpc, &[exchange, ("code", "UNAUTHENTICATED")]), 1.0);
    let check = ("method", "envoy.service.auth.v3.Authorization/Check");
    assert_eq!(delta(grpc, &[check, ("code", "OK")]), 1.0);
    let hist = "tessera_grpc_request_duration_seconds";
    let count = value(
        &after,
        &format!("{hist}_count"),
        &[introspect, ("code", "UNAUTHENTICATED")],
    );
    assert_eq!(count, 2.0);
    assert_eq!(
        value(
            &after,
            &format!("{hist}_bucket"),
            &[introspect, ("code", "UNAUTHENTICATED"), ("le", "+Inf")]
        ),
        count
    );
    let auth = "tessera_auth_failures_total";
    assert_eq!(delta(auth, &[("reason", "missing")]), 1.0, "missing");
    assert_eq!(delta(auth, &[("reason", "malformed")]), 1.0, "malformed");
    assert_eq!(delta(auth, &[("reason", "permission_denied")]), 1.0);
    assert_eq!(
        delta(
            "tessera_reuse_detections_total",
            &[("kind", "refresh_token")]
        ),
        1.0
    );
    let http = "tessera_http_requests_total";
    assert_eq!(
        delta(
            http,
            &[("route", "/.well-known/jwks.json"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        delta(http, &[("route", "/oauth2/token"), ("status", "401")]),
        1.0
    );
    assert!(
        value(
            &after,
            "tessera_http_request_duration_seconds_count",
            &[("route", "/oauth2/token"), ("status", "401")]
        ) >= 1.0
    );
    assert!(
        delta("tessera_store_batch_size_count", &[]) >= 3.0,
        "issue, refresh, reuse revocation, API key"
    );
    assert!(value(&after, "tessera_signing_key_age_seconds", &[]) >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&after, "process_start_time_seconds", &[]);
    assert!(
        started > now - 3600.0 && started <= now + 1.0,
        "start time {started}"
    );
    assert!(value(&after, "process_open_fds", &[]) > 0.0);
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 0.0);
}

#[tokio::test]
async fn the_request_id_is_echoed_in_grpc_metadata_and_http_headers() {
    let s = TestServer::start().await;
    let mut tk = s.tokens().await;
    let rid = |md: &tonic::metadata::MetadataMap| {
        md.get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string())
    };

    let mut req = authed(access_spec("alice"), &s.admin_key);
    req.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("req-echo-1"));
    let ok = tk.issue(req).await.unwrap();
    assert_eq!(rid(ok.metadata()).as_deref(), Some("req-echo-1"));

    // Generated when absent, and on failures too.
    let ok = tk
        .issue(authed(access_spec("alice"), &s.admin_key))
        .await
        .unwrap();
    let generated = rid(ok.metadata()).expect("a generated request id");
    assert!(!generated.is_empty());
    let e = tk
        .introspect(authed(introspect_req("x"), "garbage"))
        .await
        .unwrap_err();
    assert!(rid(e.metadata()).is_some_and(|v| !v.is_empty()), "{e:?}");
    // An unusable id (too long) is replaced, not echoed.
    let mut req = authed(access_spec("alice"), &s.admin_key);
    let long = "r".repeat(200);
    req.metadata_mut().insert(
        "x-request-id",
        MetadataValue::try_from(long.as_str()).unwrap(),
    );
    let ok = tk.issue(req).await.unwrap();
    let replaced = rid(ok.metadata()).unwrap();
    assert!(replaced != long && !replaced.is_empty());

    let (_, head, _) = s
        .http_raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-http-1\r\nConnection: close\r\n\r\n")
        .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: req-http-1"),
        "{head}"
    );
    let (status, head, _) = s.http_post("/oauth2/introspect", &[], "token=x").await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase().contains("x-request-id: "),
        "{head}"
    );
}

// ---------------------------------------------------------------------------------
// The real binary: spans to an OTLP endpoint, and its log lines.

struct Proc {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    grpc: SocketAddr,
    http: SocketAddr,
}

fn addr_after(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Proc {
    fn spawn(dir: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--issuer",
            "https://tessera.test",
        ])
        .arg("--data-dir")
        .arg(dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("TESSERA_") || k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tessera");
        let output = Arc::new(Mutex::new(Vec::new()));
        for from in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let into = output.clone();
            std::thread::spawn(move || {
                let mut from = from;
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
            if let Some(line) = log.lines().find(|l| l.contains("tessera serving"))
                && let (Some(grpc), Some(http)) =
                    (addr_after(line, "grpc="), addr_after(line, "http="))
            {
                return Proc {
                    child,
                    output,
                    grpc,
                    http,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tessera exited before serving ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "tessera did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// SIGTERM, wait (bounded), and the whole output.
    async fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "tessera did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let the reader threads drain the pipes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let out = String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned();
        assert!(status.success(), "exit after SIGTERM: {status}\n{out}");
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake OTLP collector (the real OTLP gRPC service): keeps every exported span.
#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                self.0.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const SPAN_KIND_SERVER: i32 = 2;
const STATUS_ERROR: i32 = 2;

fn with_trace<T>(mut req: Request<T>) -> Request<T> {
    req.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent()).unwrap(),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_server_spans_with_rpc_and_http_attributes_under_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{addr}");
    // The OpenTelemetry SDK's standard variable, not Tessera's own.
    let p = Proc::spawn(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("TESSERA_LOG", "info"),
        ],
    );
    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let admin = admin.trim();
    let ch = p.channel().await;
    let mut tk = TokenServiceClient::new(ch.clone());

    tk.issue(with_trace(authed(access_spec("otel"), admin)))
        .await
        .unwrap();
    let e = tk
        .introspect(authed(introspect_req("x"), "garbage"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Probes and reflection: not traced.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        let mut refl = ServerReflectionClient::new(ch.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = refl
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        assert!(stream.message().await.unwrap().is_some());
    }
    let req = format!(
        "POST /oauth2/introspect HTTP/1.1\r\nHost: x\r\nConnection: close\r\ntraceparent: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntoken=x",
        traceparent()
    );
    assert_eq!(raw_http(p.http, &req).await.0, 401);
    drop((tk, health, ch));
    p.terminate().await;

    let spans = collector.0.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {names:?}"))
    };

    let issue = find("tessera.v1.TokenService/Issue");
    assert_eq!(issue.kind, SPAN_KIND_SERVER);
    assert_eq!(attr(issue, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(issue, "rpc.service").as_deref(),
        Some("tessera.v1.TokenService")
    );
    assert_eq!(attr(issue, "rpc.method").as_deref(), Some("Issue"));
    assert_eq!(attr(issue, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(
        hex(&issue.trace_id),
        TRACE_ID,
        "child of the caller's trace"
    );
    assert_eq!(hex(&issue.parent_span_id), PARENT_SPAN_ID);
    assert_ne!(issue.status.as_ref().map_or(0, |s| s.code), STATUS_ERROR);

    let failed = find("tessera.v1.TokenService/Introspect");
    assert_eq!(failed.kind, SPAN_KIND_SERVER);
    assert_eq!(attr(failed, "rpc.grpc.status_code").as_deref(), Some("16"));
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR),
        "UNAUTHENTICATED is an error"
    );
    assert_ne!(
        hex(&failed.trace_id),
        TRACE_ID,
        "no traceparent: a trace of its own"
    );
    assert!(failed.parent_span_id.is_empty());

    let http = find("POST /oauth2/introspect");
    assert_eq!(http.kind, SPAN_KIND_SERVER);
    assert_eq!(attr(http, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(http, "http.route").as_deref(),
        Some("/oauth2/introspect")
    );
    assert_eq!(
        attr(http, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(hex(&http.trace_id), TRACE_ID);

    for n in &names {
        assert!(
            !n.contains("Health") && !n.to_ascii_lowercase().contains("reflection"),
            "{n} was traced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_authentication_is_logged_with_request_and_trace_id_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::spawn(dir.path(), &[("TESSERA_LOG", "info")]);
    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let admin = admin.trim();
    let mut tk = TokenServiceClient::new(p.channel().await);
    // A well-formed key that no longer exists: its id is loggable, its text never.
    let key = tk
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::ApiKey(ApiKeySpec {
                    owner: "team-test".into(),
                    environment: "test".into(),
                    scopes: vec!["tessera:introspect".into()],
                    ..ApiKeySpec::default()
                })),
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut revoke = authed(
        RevokeRequest {
            token: key.token.clone(),
            ..RevokeRequest::default()
        },
        admin,
    );
    revoke
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("req-log-0"));
    tk.revoke(revoke).await.unwrap();
    let mut req = with_trace(authed(introspect_req("x"), &key.token));
    req.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("req-log-1"));
    let e = tk.introspect(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        e.metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("req-log-1")
    );
    drop(tk);
    let log = p.terminate().await;

    let line = log
        .lines()
        .find(|l| l.contains("authentication failed") && l.contains("req-log-1"))
        .unwrap_or_else(|| panic!("no failed-auth line with the request id:\n{log}"));
    assert!(line.contains(&format!("key_id={}", key.token_id)), "{line}");
    assert!(line.contains("reason=unknown_key"), "{line}");
    assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    // A line the handler logs after waiting for the store carries its call too.
    let revoked = log
        .lines()
        .find(|l| l.contains("API key revoked"))
        .unwrap_or_else(|| panic!("no revocation line:\n{log}"));
    assert!(
        revoked.contains(
            "grpc{method=tessera.v1.TokenService/Revoke request_id=req-log-0}: API key revoked"
        ),
        "{revoked}"
    );
    let secret = key.token.splitn(4, '_').nth(3).unwrap();
    assert!(
        !log.contains(&key.token) && !log.contains(secret),
        "the key is in the log"
    );
}
