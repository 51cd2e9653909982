//! Interop: third-party OAuth and JOSE clients (Python Authlib + requests, PyJWT's
//! PyJWKClient) drive the HTTP endpoints and verify issued JWTs through the JWKS URL.
//! The interpreter comes from `TESSERA_INTEROP_PYTHON` or the venv `scripts/test`
//! creates; a missing interpreter or package fails the test — it never skips.

mod common;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{ISSUER_FROM_HTTP, TestServer, authed, test_config};
use tessera::clock::Clock;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, AuthorizationCodeSpec, ClientSpec, IssueRequest,
};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TESSERA_INTEROP_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the interop test needs Python with tests/interop/requirements.txt: run scripts/test \
         (or set TESSERA_INTEROP_PYTHON)"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_oauth_clients_work_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path());
    cfg.issuer = ISSUER_FROM_HTTP.into();
    cfg.authorization_endpoint = Some("https://login.example/authorize".into());
    let s = TestServer::start_with(cfg, Clock::system()).await;
    let mut tk = s.tokens().await;

    let rs = s.api_key(&["tessera:introspect", "tessera:revoke"]).await;
    let grpc_at = s.access_token("alice").await;
    // The client_credentials service also exchanges tokens issued to it (by name).
    let cc = s
        .api_key_with(ApiKeySpec {
            name: "interop-svc".into(),
            scopes: vec!["read:things".into(), "write:things".into()],
            exchange_audiences: vec!["downstream-api".into()],
            ..Default::default()
        })
        .await;
    let carol_at = tk
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::AccessToken(AccessTokenSpec {
                    subject: "carol".into(),
                    audience: vec!["interop-svc".into()],
                    scopes: vec!["profile".into(), "read:things".into()],
                    ..Default::default()
                })),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();

    let redirect = "http://127.0.0.1:8765/callback";
    let app = tk
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::Client(ClientSpec {
                    name: "interop-app".into(),
                    public: true,
                    redirect_uris: vec![redirect.into()],
                    scopes: vec!["profile".into(), "read:things".into()],
                    ..Default::default()
                })),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let verifier = B64.encode(
        ring::rand::generate::<[u8; 48]>(&ring::rand::SystemRandom::new())
            .unwrap()
            .expose(),
    );
    let challenge = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let code = tk
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::AuthorizationCode(AuthorizationCodeSpec {
                    client_id: app.token_id.clone(),
                    redirect_uri: redirect.into(),
                    subject: "bob".into(),
                    scopes: vec!["profile".into()],
                    code_challenge: challenge.clone(),
                    code_challenge_method: "S256".into(),
                })),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();

    let params = serde_json::json!({
        "http_base": format!("http://{}", s.http),
        "issuer": format!("http://{}", s.http),
        "rs_client_id": rs.token_id, "rs_client_secret": rs.token,
        "grpc_access_token": grpc_at.token, "grpc_audience": "payments-api", "grpc_subject": "alice",
        "cc_client_id": cc.token_id, "cc_client_secret": cc.token, "cc_audience": cc.token_id,
        "app_client_id": app.token_id, "app_redirect_uri": redirect, "app_subject": "bob",
        "app_audience": app.token_id,
        "app_code": code.token, "app_code_verifier": verifier, "app_code_challenge": challenge,
        "exchange_subject_token": carol_at.token, "exchange_subject": "carol",
        "authorization_endpoint": "https://login.example/authorize",
    });
    let file = tmp.path().join("interop.json");
    std::fs::write(&file, params.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oauth_interop.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "interop checks failed:\n{stdout}");
    assert!(
        stdout.contains(" passed, 0 failed"),
        "the interop script did not run its checks"
    );
}
