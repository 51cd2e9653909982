//! Tests that need the real `tessera` binary as a child process: what it writes to its
//! logs (A13.6: no token, key or secret, even at debug level) and what survives a
//! `kill -9` (A12.7).

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::child::Proc;
use common::{access_spec, authed};
use tessera::proto::issue_request::Credential;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    ApiKeySpec, IntrospectRequest, IntrospectResponse, IssueRequest, IssueResponse, RevokeRequest,
};
use tonic::Code;
use tonic::transport::Channel;

async fn issue(
    tk: &mut TokenServiceClient<Channel>,
    req: IssueRequest,
    key: &str,
) -> IssueResponse {
    tk.issue(authed(req, key)).await.unwrap().into_inner()
}

async fn introspect(
    tk: &mut TokenServiceClient<Channel>,
    token: &str,
    key: &str,
) -> Result<IntrospectResponse, tonic::Status> {
    let req = IntrospectRequest {
        token: token.into(),
        token_type_hint: String::new(),
    };
    tk.introspect(authed(req, key))
        .await
        .map(|r| r.into_inner())
}

async fn revoke(tk: &mut TokenServiceClient<Channel>, token: &str, key: &str) {
    let req = RevokeRequest {
        token: token.into(),
        ..RevokeRequest::default()
    };
    tk.revoke(authed(req, key)).await.unwrap();
}

fn with_refresh(subject: &str) -> IssueRequest {
    let mut req = access_spec(subject);
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
    }
    req
}

/// A13.6: at debug level, through issue, introspection (live, revoked and hostile
/// tokens, a bad credential) and revocation, the logs name ids only — never a token,
/// a key or a secret. SIGTERM then drains and exits 0.
#[tokio::test]
async fn a13_6_logs_hold_no_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(tmp.path());
    let admin = std::fs::read_to_string(tmp.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let master = std::fs::read_to_string(tmp.path().join("master.key"))
        .unwrap()
        .trim()
        .to_string();
    let mut tk = p.tokens().await;

    let t = issue(&mut tk, with_refresh("alice"), &admin).await;
    let key = issue(
        &mut tk,
        IssueRequest {
            credential: Some(Credential::ApiKey(ApiKeySpec {
                owner: "team-test".into(),
                environment: "test".into(),
                scopes: vec!["tessera:introspect".into()],
                ..ApiKeySpec::default()
            })),
        },
        &admin,
    )
    .await
    .token;
    let parts: Vec<&str> = t.token.split('.').collect();
    let (h, pl, sig) = (parts[0], parts[1], parts[2]);
    let mut forged_claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(pl).unwrap()).unwrap();
    forged_claims["sub"] = "admin".into();
    let forged = format!("{h}.{}.{sig}", B64.encode(forged_claims.to_string()));
    let hostile = [
        forged.clone(),
        format!("eyJhbGciOiJub25lIn0.{pl}."),
        format!("{}x", t.token),
        format!("{}A", t.refresh_token),
        format!("{key}A"),
        "garbage".to_string(),
    ];

    for live in [&t.token, &t.refresh_token, &key] {
        assert!(introspect(&mut tk, live, &admin).await.unwrap().active);
    }
    assert!(introspect(&mut tk, &t.token, &key).await.unwrap().active);
    for bad in &hostile {
        assert!(!introspect(&mut tk, bad, &admin).await.unwrap().active);
    }
    let e = introspect(&mut tk, &"A".repeat(9000), &admin)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Tokens presented as the caller's credential are refused without being logged.
    for cred in [t.token.as_str(), t.refresh_token.as_str(), forged.as_str()] {
        let e = introspect(&mut tk, "x", cred).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    revoke(&mut tk, &t.token, &admin).await;
    revoke(&mut tk, &t.refresh_token, &admin).await;
    revoke(&mut tk, &key, &admin).await;
    revoke(&mut tk, &forged, &admin).await;
    assert!(!introspect(&mut tk, &t.token, &admin).await.unwrap().active);
    drop(tk);

    let (status, log) = p.terminate().await;
    assert!(status.success(), "SIGTERM: exit status {status}\n{log}");
    assert!(
        !log.contains("grace period over"),
        "SIGTERM did not drain:\n{log}"
    );
    // The logs really were at debug level and saw these calls.
    for expected in [
        "tessera serving",
        "introspect: inactive access token",
        "access token revoked",
        "refresh family revoked",
        "API key revoked",
        "shutdown requested",
        "stopped",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    let secret_of = |api_key: &str| api_key.splitn(4, '_').nth(3).unwrap().to_string();
    let secrets = [
        ("the admin key", admin.clone()),
        ("the admin key's secret", secret_of(&admin)),
        ("the API key", key.clone()),
        ("the API key's secret", secret_of(&key)),
        ("the access token", t.token.clone()),
        ("the access token's signature", sig.to_string()),
        ("the access token's payload segment", pl.to_string()),
        ("the refresh token", t.refresh_token.clone()),
        (
            "the refresh token's secret part",
            t.refresh_token[4..].to_string(),
        ),
        (
            "the forged token's payload",
            forged.split('.').nth(1).unwrap().into(),
        ),
        ("the master key", master),
    ];
    for (what, secret) in secrets {
        assert!(!log.contains(&secret), "A13.6: {what} is in the log");
    }
}

/// A12.7: an acknowledged revocation survives `kill -9` (no drain, no housekeeping).
#[tokio::test]
async fn a12_7_revocation_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(tmp.path());
    let admin = std::fs::read_to_string(tmp.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let mut tk = p.tokens().await;
    let revoked = issue(&mut tk, access_spec("alice"), &admin).await;
    let live = issue(&mut tk, access_spec("alice"), &admin).await.token;
    let by_family = issue(&mut tk, with_refresh("bob"), &admin).await;
    revoke(&mut tk, &revoked.token, &admin).await;
    revoke(&mut tk, &by_family.refresh_token, &admin).await;
    drop(tk);
    let (status, _) = p.kill_9().await;
    assert!(!status.success());

    let p = Proc::spawn(tmp.path());
    let mut tk = p.tokens().await;
    for (name, token) in [
        ("revoked access token", &revoked.token),
        ("revoked refresh token", &by_family.refresh_token),
        ("access token of the revoked family", &by_family.token),
    ] {
        let r = introspect(&mut tk, token, &admin).await.unwrap();
        assert_eq!(
            r,
            IntrospectResponse::default(),
            "A12.7 after kill -9: {name}"
        );
    }
    assert!(introspect(&mut tk, &live, &admin).await.unwrap().active);
    drop(tk);
    let (status, log) = p.terminate().await;
    assert!(status.success(), "SIGTERM: exit status {status}\n{log}");
}

/// A fake OTLP collector: keeps every exported span's name and attribute strings.
#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<(String, String)>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        req: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        for rs in req.into_inner().resource_spans {
            let resource = format!("{:?}", rs.resource);
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = format!("{resource} {:?}", span.attributes);
                    self.0.lock().unwrap().push((span.name, attrs));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_and_are_flushed_on_sigterm() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{addr}");
    let p = Proc::spawn_env(dir.path(), &[("TESSERA_OTLP_ENDPOINT", &endpoint)]);
    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let admin = admin.trim();
    let mut tk = p.tokens().await;
    let t = issue(&mut tk, access_spec("otel-user"), admin).await;
    assert!(introspect(&mut tk, &t.token, admin).await.unwrap().active);
    drop(tk);
    let (status, log) = p.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");

    let spans = collector.0.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"tessera.v1.TokenService/Introspect"),
        "spans: {names:?}"
    );
    assert!(
        names.contains(&"tessera.v1.TokenService/Issue"),
        "spans: {names:?}"
    );
    assert!(
        spans.iter().any(|(_, a)| a.contains("tessera")),
        "service.name resource"
    );
    let sig = t.token.rsplit('.').next().unwrap();
    assert!(
        spans
            .iter()
            .all(|(n, a)| !n.contains(sig) && !a.contains(sig) && !a.contains(admin)),
        "a secret reached a span"
    );
}

/// Issuance audit records are committed behind the answers (group-committed in the
/// background), so a SIGTERM right after the last answer must still flush every one.
#[tokio::test]
async fn issuance_audit_records_answered_before_sigterm_are_all_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn_env(tmp.path(), &[("TESSERA_DRAIN_DELAY", "0s")]);
    let admin = std::fs::read_to_string(tmp.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut tk = p.tokens().await;
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let spec = access_spec(&format!("user-{t}-{i}"));
                ids.push(issue(&mut tk, spec, &admin).await.token_id);
            }
            ids
        }));
    }
    let mut issued = std::collections::HashSet::new();
    for t in tasks {
        issued.extend(t.await.unwrap());
    }
    let (status, log) = p.terminate().await;
    assert!(status.success(), "SIGTERM: exit status {status}\n{log}");

    let filter = tessera::test_support::audit::AuditFilter {
        kind: "token.issued".into(),
        ..Default::default()
    };
    let rows = common::with_database(tmp.path(), move |db| {
        tessera::test_support::audit::list(db, &filter, None, 10_000)
    });
    let on_disk: std::collections::HashSet<_> = rows.into_iter().map(|e| e.token_id).collect();
    assert_eq!(issued.len(), 400);
    let missing = issued.difference(&on_disk).count();
    assert_eq!(
        missing, 0,
        "{missing} answered issuances have no audit record"
    );
}
