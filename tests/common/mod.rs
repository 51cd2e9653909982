//! Test harness: starts the real server in-process on ephemeral ports with a temp
//! data dir, and hands out generated tonic clients.
//!
//! The backend is the one parameter: by default each server has its SQLite file in
//! its data dir; with `TESSERA_TEST_BACKEND=postgres` each has a schema of its own in
//! a database this test process creates on the machine's PostgreSQL
//! (`TESSERA_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`).

#![allow(dead_code, unreachable_pub)]

pub mod child;
pub mod grants;
pub mod mint;
pub mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::key_service_client::KeyServiceClient;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{
    AccessTokenSpec, ApiKeySpec, BumpTokenVersionRequest, BumpTokenVersionResponse,
    IntrospectRequest, IntrospectResponse, IssueRequest, IssueResponse, ListApiKeysRequest,
    ListApiKeysResponse, ListAuditEventsRequest, ListAuditEventsResponse, RevokeRequest,
    RevokeResponse, issue_request::Credential,
};
use tessera::server::{self, Listeners};
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A running server.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_key: String,
    pub clock: Clock,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Put in `Config::issuer` to have the issuer be this server's own HTTP base URL.
pub const ISSUER_FROM_HTTP: &str = "issuer-from-http";

pub fn test_config(data_dir: &Path) -> Config {
    Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        issuer: "https://tessera.test".into(),
        shutdown_grace: Duration::from_secs(5),
        // In-process tests stop servers often; nothing balances load in front of them.
        drain_delay: Duration::ZERO,
        // Hostile-input tables send many bad keys from 127.0.0.1; tests of the
        // failed-authentication throttle set their own limits.
        auth_failure_limit: 0,
        database_url: pg::backend_for(data_dir),
        ..Config::default()
    }
}

/// Runs `f` on a connection of its own to the database of the server on `data_dir`
/// (its SQLite file, or its PostgreSQL schema), beside the running server.
pub fn with_database<R, F>(data_dir: &Path, f: F) -> R
where
    R: Send + 'static,
    F: FnOnce(&tessera::test_support::Db<'_>) -> tessera::test_support::Result<R> + Send + 'static,
{
    use tessera::config::DatabaseUrl;
    use tessera::test_support::{Location, inspect};
    match pg::backend_for(data_dir) {
        Some(DatabaseUrl::Postgres(url)) => inspect(Location::Postgres(&url), f),
        _ => inspect(Location::Sqlite(&data_dir.join("tessera.db")), f),
    }
    .expect("inspect the server's database")
}

/// Whether this run uses PostgreSQL (tests of SQLite's own files skip themselves).
pub fn on_postgres() -> bool {
    pg::enabled()
}

impl TestServer {
    /// A fresh server on a fresh temp dir.
    pub async fn start() -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = test_config(tmp.path());
        let mut s = Self::start_with(cfg, Clock::system()).await;
        s._tmp = Some(tmp);
        s
    }

    /// A server with this config (its data dir is not cleaned up by the harness).
    pub async fn start_with(mut config: Config, clock: Clock) -> TestServer {
        // `RUST_LOG=…` shows the servers' logs with the failing test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let data_dir = config.data_dir.clone();
        let listeners = Listeners::bind(&config).await.unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let metrics = listeners.metrics.local_addr().unwrap();
        if config.issuer == ISSUER_FROM_HTTP {
            config.issuer = format!("http://{http}");
        }
        let (tx, rx) = oneshot::channel::<()>();
        let c = clock.clone();
        let task = tokio::spawn(async move {
            server::run(config, c, listeners, async move {
                let _ = rx.await;
            })
            .await
        });
        // The sockets are bound before `run` starts, so wait for the health service.
        let mut up = false;
        for _ in 0..500 {
            if let Ok(ch) = Channel::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect()
                .await
            {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                let req = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                if h.check(req).await.is_ok() {
                    up = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(up, "server did not come up");
        let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))
            .map(|k| k.trim().to_string())
            .unwrap_or_default();
        TestServer {
            grpc,
            http,
            metrics,
            data_dir,
            admin_key,
            clock,
            stop: Some(tx),
            task: Some(task),
            _tmp: None,
        }
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Stops, then starts again on the same data dir (and keeps the temp dir alive).
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let tmp = self._tmp.take();
        let admin = self.admin_key.clone();
        let mut s = Self::start_with(test_config(&self.data_dir), self.clock.clone()).await;
        s._tmp = tmp;
        s.admin_key = admin;
        s
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    pub async fn keys(&self) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel().await)
    }

    /// `Issue` with the admin key.
    pub async fn issue(&self, req: IssueRequest) -> Result<IssueResponse, Status> {
        let req = authed(req, &self.admin_key);
        self.tokens().await.issue(req).await.map(|r| r.into_inner())
    }

    /// `Revoke` with the admin key.
    pub async fn revoke(&self, req: RevokeRequest) -> Result<RevokeResponse, Status> {
        let req = authed(req, &self.admin_key);
        self.tokens()
            .await
            .revoke(req)
            .await
            .map(|r| r.into_inner())
    }

    /// `BumpTokenVersion` with the admin key.
    pub async fn bump(
        &self,
        req: BumpTokenVersionRequest,
    ) -> Result<BumpTokenVersionResponse, Status> {
        let req = authed(req, &self.admin_key);
        let mut tokens = self.tokens().await;
        tokens.bump_token_version(req).await.map(|r| r.into_inner())
    }

    /// `ListAuditEvents` with the admin key.
    pub async fn list_audit_events(
        &self,
        req: ListAuditEventsRequest,
    ) -> Result<ListAuditEventsResponse, Status> {
        let req = authed(req, &self.admin_key);
        let mut tokens = self.tokens().await;
        tokens.list_audit_events(req).await.map(|r| r.into_inner())
    }

    /// `ListApiKeys` with the admin key.
    pub async fn list_api_keys(
        &self,
        req: ListApiKeysRequest,
    ) -> Result<ListApiKeysResponse, Status> {
        let req = authed(req, &self.admin_key);
        let mut tokens = self.tokens().await;
        tokens.list_api_keys(req).await.map(|r| r.into_inner())
    }

    /// Issues an API key with `scopes` using the admin key.
    pub async fn api_key(&self, scopes: &[&str]) -> IssueResponse {
        let req = IssueRequest {
            credential: Some(Credential::ApiKey(ApiKeySpec {
                owner: "team-test".into(),
                name: "svc".into(),
                environment: "test".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..ApiKeySpec::default()
            })),
        };
        self.issue(req).await.unwrap()
    }

    /// Issues an API key for the service `name` that may exchange tokens issued to it
    /// (by key id or by `name`) for `exchange_audiences`.
    pub async fn exchanger(&self, name: &str, exchange_audiences: &[&str]) -> IssueResponse {
        self.api_key_with(ApiKeySpec {
            name: name.into(),
            exchange_audiences: exchange_audiences.iter().map(|s| s.to_string()).collect(),
            ..ApiKeySpec::default()
        })
        .await
    }

    /// Issues an API key from `spec` with the admin key; owner and environment default
    /// to `team-test` / `test`.
    pub async fn api_key_with(&self, mut spec: ApiKeySpec) -> IssueResponse {
        if spec.owner.is_empty() {
            spec.owner = "team-test".into();
        }
        if spec.environment.is_empty() {
            spec.environment = "test".into();
        }
        let req = IssueRequest {
            credential: Some(Credential::ApiKey(spec)),
        };
        self.issue(req).await.unwrap()
    }

    /// Issues a plain access token for `subject` with the admin key.
    pub async fn access_token(&self, subject: &str) -> IssueResponse {
        self.issue(access_spec(subject)).await.unwrap()
    }

    /// Introspects with the admin key.
    /// Returns once every answered call's audit record is on disk. Issuance records
    /// are group-committed behind their answers; `ListAuditEvents` flushes them before
    /// it reads, so tests that open the database themselves call this first.
    pub async fn flush_audit(&self) {
        let req = tessera::proto::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        };
        self.list_audit_events(req).await.expect("ListAuditEvents");
    }

    pub async fn introspect(&self, token: &str) -> Result<IntrospectResponse, Status> {
        let req = IntrospectRequest {
            token: token.into(),
            token_type_hint: String::new(),
        };
        self.tokens()
            .await
            .introspect(authed(req, &self.admin_key))
            .await
            .map(|r| r.into_inner())
    }

    /// POST a form over plain HTTP/1.1 with extra header lines: (status, headers, body).
    pub async fn http_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        form: &str,
    ) -> (u16, String, String) {
        let mut extra = String::new();
        for (k, v) in headers {
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra}\r\n{form}",
            form.len()
        );
        self.http_raw(&req).await
    }

    /// Sends a raw HTTP/1.1 request: (status, headers, body).
    pub async fn http_raw(&self, req: &str) -> (u16, String, String) {
        raw_http(self.http, req).await
    }

    /// GET from the metrics listener: (status, headers, body).
    pub async fn metrics_get(&self, path: &str) -> (u16, String, String) {
        raw_http(
            self.metrics,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    /// GET over plain HTTP/1.1: (status, headers, body).
    pub async fn http_get(&self, path: &str) -> (u16, String, String) {
        self.http_raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await
    }
}

/// Sends a raw HTTP/1.1 request to `addr` and reads to EOF: (status, headers, body).
pub async fn raw_http(addr: SocketAddr, req: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// An access-token spec with an audience and two scopes.
pub fn access_spec(subject: &str) -> IssueRequest {
    IssueRequest {
        credential: Some(Credential::AccessToken(AccessTokenSpec {
            subject: subject.into(),
            audience: vec!["payments-api".into()],
            scopes: vec!["read:payments".into(), "write:payments".into()],
            ..AccessTokenSpec::default()
        })),
    }
}

/// An access token's custom claims, each `(name, value)` a string claim.
pub fn string_claims(claims: &[(&str, &str)]) -> prost_types::Struct {
    let string = |v: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(v.into())),
    };
    prost_types::Struct {
        fields: claims.iter().map(|&(k, v)| (k.into(), string(v))).collect(),
    }
}

/// Wraps `msg` with `authorization: Bearer <key>`.
pub fn authed<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {key}")).unwrap(),
    );
    r
}

/// Holds the write lock of the server's database on a connection of its own until the
/// returned sender is used (or dropped), so every write the server tries waits for it:
/// on SQLite until its busy timeout runs out, then fails as in a storage outage; on
/// PostgreSQL indefinitely, unless `cancel_waiters`, when each statement left waiting
/// on it is cancelled, as a statement timeout would, and fails the same way.
/// Resolves once the lock is held.
pub async fn hold_write_lock(
    data_dir: &Path,
    cancel_waiters: bool,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    const CANCEL_WAITERS: &str = "SELECT pg_cancel_backend(l.pid) FROM pg_locks l
         JOIN pg_class c ON c.oid = l.relation
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT l.granted AND n.nspname = current_schema()
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let dir = data_dir.to_path_buf();
    let holder = std::thread::spawn(move || {
        with_database(&dir, move |db| {
            if db.is_postgres() {
                // Reads go on; every write waits.
                let tables = db.query_map(
                    "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()",
                    tessera::test_support::params![],
                    |r| r.get::<String>(0),
                )?;
                db.execute_batch(&format!(
                    "BEGIN; LOCK TABLE {} IN EXCLUSIVE MODE",
                    tables.join(", ")
                ))?;
            } else {
                db.execute_batch("BEGIN IMMEDIATE")?;
            }
            held_tx.send(()).unwrap();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                release_rx.recv_timeout(Duration::from_millis(20))
            {
                if cancel_waiters && db.is_postgres() {
                    db.query_map(CANCEL_WAITERS, tessera::test_support::params![], |r| {
                        r.get::<bool>(0)
                    })?;
                }
            }
            db.execute_batch("ROLLBACK")?;
            Ok(())
        })
    });
    held_rx.await.expect("the write lock is held");
    (release_tx, holder)
}
