//! Plain-data configuration: the `Config` every part of the service is handed, its
//! defaults, and the small types it is made of. Sources are layered (defaults < TOML
//! file < `TESSERA_*` env < command-line flags) in [`Layer`]; [`Config::load`] parses
//! and checks the result.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod database_url;
mod layer;
mod load;
#[cfg(test)]
mod tests;

pub use database_url::DatabaseUrl;
pub use layer::{Layer, parse_scope_ttl, parse_spiffe_callers};
pub(crate) use load::parse_duration;

/// Signing algorithm for newly generated keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    /// Ed25519 (RFC 8037). The default: small, fast, deterministic.
    EdDSA,
    /// ECDSA P-256 with SHA-256, for verifiers without Ed25519.
    ES256,
}

impl std::str::FromStr for SigningAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "EdDSA" => Ok(SigningAlg::EdDSA),
            "ES256" => Ok(SigningAlg::ES256),
            other => Err(format!(
                "unsupported signing algorithm {other:?} (EdDSA or ES256)"
            )),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Everything the service needs to start. Built once, passed down.
#[derive(Clone, Debug)]
pub struct Config {
    /// gRPC listener. Defaults to `127.0.0.1:50051`.
    pub grpc_addr: SocketAddr,
    /// HTTP listener (JWKS, health, OAuth endpoints). Defaults to `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Prometheus `/metrics` listener, kept off the public port. Defaults to `127.0.0.1:9464`.
    pub metrics_addr: SocketAddr,
    /// Time a client has to send a complete HTTP request head (counted from accept, and
    /// from the end of the previous response on a kept-alive connection), and to send
    /// the HTTP/2 preface on the gRPC port. Defaults to 5 s.
    pub header_timeout: Duration,
    /// Time an HTTP request may take from its complete head to its response, body
    /// upload included. Defaults to 10 s.
    pub http_request_timeout: Duration,
    /// An HTTP connection on which no byte moves in either direction for this long is
    /// closed (a client that stops reading its response). Keep it above
    /// `http_request_timeout`. Defaults to 60 s.
    pub idle_timeout: Duration,
    /// Most open connections per listener; more are accepted and closed at once.
    /// Defaults to 512.
    pub max_connections: usize,
    /// State directory (SQLite `tessera.db`, bootstrap `admin.key`). Defaults to `./tessera-data`.
    pub data_dir: PathBuf,
    /// Where the state lives: `sqlite://PATH` (the SQLite database file) or a
    /// `postgres://` URL. Defaults to none: `data_dir`/`tessera.db` (see
    /// `Config::database`).
    pub database_url: Option<DatabaseUrl>,
    /// With PostgreSQL, how long introspection keeps answering from memory while the
    /// database cannot be reached, before it fails closed. Defaults to 30 s; at most 1 h.
    pub max_staleness: Duration,
    /// `iss` of every token, compared octet for octet. Defaults to `http://127.0.0.1:8080`.
    pub issuer: String,
    /// URL of the login front end that asks Tessera for authorization codes, published
    /// as `authorization_endpoint` in the RFC 8414 metadata. Tessera has no
    /// authorization endpoint of its own; without this, the metadata does not
    /// advertise the authorization-code grant. Defaults to none.
    pub authorization_endpoint: Option<String>,
    /// Algorithm of generated signing keys. Defaults to EdDSA.
    pub signing_alg: SigningAlg,
    /// Access-token lifetime when the request gives none. Defaults to 15 min.
    pub access_token_ttl: Duration,
    /// Upper bound on any access-token lifetime. Defaults to 1 h.
    pub max_access_token_ttl: Duration,
    /// Per-scope lifetime caps: a token lives no longer than the smallest cap of its scopes.
    pub scope_ttl: BTreeMap<String, Duration>,
    /// API-key lifetime when the request gives none. Defaults to 90 days.
    pub api_key_ttl: Duration,
    /// Upper bound on any API-key lifetime. Defaults to 365 days.
    pub max_api_key_ttl: Duration,
    /// Refresh-token lifetime (idle: each rotation restarts it). Defaults to 14 days.
    pub refresh_token_ttl: Duration,
    /// Absolute lifetime of a refresh family, however often it rotates. Defaults to 90 days.
    pub refresh_family_ttl: Duration,
    /// How long after its first use a refresh token may be presented again by the same
    /// client and get the same successor pair instead of a family revocation (a retry
    /// after a lost response). Defaults to 0 (no grace); at most 5 min.
    pub refresh_reuse_grace: Duration,
    /// How long audit records are kept before housekeeping deletes them. Defaults to
    /// 365 days; at least 1 day.
    pub audit_retention: Duration,
    /// How long a new signing key is in the JWKS before it signs. Defaults to the JWKS
    /// `max-age` (60 s) + 60 s, so a verifier caching the JWKS has it before its first
    /// token. At most 7 days.
    pub key_publish_lead: Duration,
    /// Rotate the signing key on this schedule: the successor is published
    /// `key_publish_lead` before the signing key has signed for this long. Defaults to
    /// off; when set, longer than `key_publish_lead`.
    pub signing_key_rotation_period: Option<Duration>,
    /// Path of a file holding the master key (base64url, 32 bytes). Defaults to none.
    pub master_key_file: Option<PathBuf>,
    /// Master key given directly (`TESSERA_MASTER_KEY`, env only). Defaults to none.
    pub master_key: Option<Secret>,
    /// An API key to install as admin on an empty store (`TESSERA_BOOTSTRAP_ADMIN_KEY`, env only).
    pub bootstrap_admin_key: Option<Secret>,
    /// Largest gRPC message accepted, in bytes. Defaults to 64 KiB.
    pub max_request_bytes: usize,
    /// Deadline for one call. Defaults to 10 s.
    pub request_timeout: Duration,
    /// On SIGTERM, how long the service keeps serving everything after `/readyz` and
    /// gRPC health turn NOT_SERVING, so load balancers and probes see it and send no
    /// more before the drain begins. Defaults to 5 s; 0 drains at once.
    pub drain_delay: Duration,
    /// Time given to in-flight calls once the drain begins; the HTTP listener (probes
    /// included) stays up until they are done or this runs out. Defaults to 10 s.
    pub shutdown_grace: Duration,
    /// Log format. Defaults to text.
    pub log_format: LogFormat,
    /// `tracing` filter directive. Defaults to `info`.
    pub log_filter: String,
    /// OTLP/gRPC collector for traces (e.g. `http://otel-collector:4317`). Defaults to
    /// none: no spans leave the process.
    pub otlp_endpoint: Option<String>,
    /// `WatchRevocations`: heartbeat interval while a stream is idle. Defaults to 10 s.
    pub watch_heartbeat: Duration,
    /// `WatchRevocations`: events a subscriber may have queued; one more and it is
    /// disconnected (`RESOURCE_EXHAUSTED`). Defaults to 4096.
    pub watch_buffer: usize,
    /// PEM certificate chain (leaf first) for the gRPC and HTTP listeners. With
    /// `tls_key_file`, both listeners speak TLS only; the files are read again when they
    /// change. Defaults to none: plaintext.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`. Defaults to none.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, both listeners require a client certificate that
    /// chains to one of them (mTLS). Read at start. Defaults to none.
    pub tls_client_ca_file: Option<PathBuf>,
    /// SPIFFE id → scopes: a gRPC caller whose client certificate carries that SPIFFE
    /// id (its one URI SAN) and no API key gets these scopes. Needs
    /// `tls_client_ca_file`. Defaults to empty.
    pub spiffe_callers: BTreeMap<String, Vec<String>>,
    /// Failed authentications from one source address (IPv6: one /64) within
    /// `auth_failure_window` after which that address is refused for
    /// `auth_failure_block`, before any key it sends is checked. Defaults to 20; 0
    /// turns the throttle off.
    pub auth_failure_limit: u32,
    /// Window over which failed authentications are counted. Defaults to 60 s.
    pub auth_failure_window: Duration,
    /// How long a throttled address is refused. Defaults to 60 s.
    pub auth_failure_block: Duration,
}

/// A secret string from configuration (the one secret type, re-exported here).
pub use crate::secret::Secret;

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            metrics_addr: ([127, 0, 0, 1], 9464).into(),
            header_timeout: Duration::from_secs(5),
            http_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            data_dir: PathBuf::from("tessera-data"),
            database_url: None,
            max_staleness: Duration::from_secs(30),
            issuer: "http://127.0.0.1:8080".into(),
            authorization_endpoint: None,
            signing_alg: SigningAlg::EdDSA,
            access_token_ttl: Duration::from_secs(15 * 60),
            max_access_token_ttl: Duration::from_secs(60 * 60),
            scope_ttl: BTreeMap::new(),
            api_key_ttl: Duration::from_secs(90 * 86_400),
            max_api_key_ttl: Duration::from_secs(365 * 86_400),
            refresh_token_ttl: Duration::from_secs(14 * 86_400),
            refresh_family_ttl: Duration::from_secs(90 * 86_400),
            refresh_reuse_grace: Duration::ZERO,
            audit_retention: Duration::from_secs(365 * 86_400),
            key_publish_lead: Duration::from_secs(crate::keys::JWKS_MAX_AGE_SECS + 60),
            signing_key_rotation_period: None,
            master_key_file: None,
            master_key: None,
            bootstrap_admin_key: None,
            max_request_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            drain_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            otlp_endpoint: None,
            watch_heartbeat: crate::watch::DEFAULT_HEARTBEAT,
            watch_buffer: crate::watch::DEFAULT_BUFFER,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            spiffe_callers: BTreeMap::new(),
            auth_failure_limit: 20,
            auth_failure_window: Duration::from_secs(60),
            auth_failure_block: Duration::from_secs(60),
        }
    }
}

/// The longest `refresh_reuse_grace` accepted.
pub(crate) const MAX_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(5 * 60);

impl Config {
    /// The database in effect: `database_url`, else the SQLite file `tessera.db` in
    /// `data_dir`.
    pub(crate) fn database(&self) -> DatabaseUrl {
        self.database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite(self.data_dir.join("tessera.db")))
    }

    /// The failed-authentication throttle's numbers.
    pub(crate) fn auth_throttle(&self) -> crate::ratelimit::ThrottleConfig {
        crate::ratelimit::ThrottleConfig {
            max_failures: self.auth_failure_limit,
            window: self.auth_failure_window,
            block: self.auth_failure_block,
        }
    }

    /// The lifetime cap that applies to a token carrying `scopes`.
    pub(crate) fn scope_cap(&self, scopes: &[String]) -> Duration {
        scopes
            .iter()
            .filter_map(|s| self.scope_ttl.get(s))
            .copied()
            .fold(self.max_access_token_ttl, Duration::min)
    }
}
