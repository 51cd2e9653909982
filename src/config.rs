//! Plain-data configuration: defaults < TOML file < `TESSERA_*` env < command-line flags.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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

/// Where the state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The embedded default: one SQLite file, locked to one process.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by any number of replicas (the URL as given).
    Postgres(String),
}

impl DatabaseUrl {
    /// The URL with any password replaced by `***`: fit for logs and error messages.
    /// A PostgreSQL URL is masked both where RFC 3986 puts the password (the user
    /// info, up to the last `@` before the path) and where the driver reads it (up to
    /// the first `@`, and a `password=` query parameter).
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_postgres_url(url),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;
    /// `sqlite://PATH` (the database file; a relative path is from the working
    /// directory) or `postgres://…` / `postgresql://…`. The value may carry a password,
    /// so errors never repeat it.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs the path of the database file (e.g. sqlite://tessera-data/tessera.db)"
                        .into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(s.to_string()));
        }
        Err("must start with sqlite:// or postgres:// (or postgresql://)".into())
    }
}

/// [`DatabaseUrl::redacted`] for a PostgreSQL URL: every byte range that could hold
/// the password becomes `***`.
fn redact_postgres_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let mut masked: Vec<(usize, usize)> = Vec::new();
    // The user info: up to the last `@` before the path, or, with none there, the first
    // `@` anywhere (the driver takes everything up to the first `@` as `user:password`,
    // so a password with an unescaped `/` ends there).
    let path_start = rest.find('/').unwrap_or(rest.len());
    let driver_creds_end = rest.find('@');
    if let Some(end) = rest[..path_start].rfind('@').or(driver_creds_end)
        && let Some(colon) = rest[..end].find(':')
    {
        masked.push((colon + 1, end));
    }
    // Query parameters, split as the driver splits them: `key` up to `=`, value up to
    // `&`; a (percent-decoded) `password` key's value is masked.
    let after_creds = driver_creds_end.map_or(0, |i| i + 1);
    let query_start = rest[after_creds..].find(['/', '?']).and_then(|i| {
        let i = after_creds + i;
        if rest[i..].starts_with('?') {
            Some(i + 1)
        } else {
            rest[i..].find('?').map(|j| i + j + 1)
        }
    });
    if let Some(mut at) = query_start {
        while let Some(eq) = rest[at..].find('=') {
            let key = &rest[at..at + eq];
            let value_start = at + eq + 1;
            let value_end = rest[value_start..]
                .find('&')
                .map_or(rest.len(), |i| value_start + i);
            if percent_decode(key).eq_ignore_ascii_case(b"password") {
                masked.push((value_start, value_end));
            }
            at = (value_end + 1).min(rest.len());
        }
    }
    masked.sort_unstable();
    let mut out = format!("{scheme}://");
    let mut pos = 0;
    for (start, end) in masked {
        if start >= pos {
            out.push_str(&rest[pos..start]);
            out.push_str("***");
            pos = end;
        } else {
            // Overlaps the range just masked: stretch it.
            pos = pos.max(end);
        }
    }
    out.push_str(&rest[pos..]);
    out
}

/// `%XX` escapes decoded; anything else kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
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
    /// [`Config::database`]).
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

/// A secret string from configuration: never printed.
#[derive(Clone, Deserialize, zeroize::ZeroizeOnDrop)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

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
pub const MAX_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(5 * 60);

/// `TESSERA_*` variables read outside [`Layer::from_env`]: secrets (env only), the config
/// file's path, and the admin client's key.
const ENV_ONLY: &[&str] = &["MASTER_KEY", "BOOTSTRAP_ADMIN_KEY", "CONFIG", "API_KEY"];

/// One source of settings; every field optional so sources can be layered.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub metrics_addr: Option<String>,
    pub header_timeout: Option<String>,
    pub http_request_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub data_dir: Option<String>,
    /// A [`Secret`]: the URL may carry a password.
    pub database_url: Option<Secret>,
    pub max_staleness: Option<String>,
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub signing_alg: Option<String>,
    pub access_token_ttl: Option<String>,
    pub max_access_token_ttl: Option<String>,
    pub scope_ttl: Option<BTreeMap<String, String>>,
    pub api_key_ttl: Option<String>,
    pub max_api_key_ttl: Option<String>,
    pub refresh_token_ttl: Option<String>,
    pub refresh_family_ttl: Option<String>,
    pub refresh_reuse_grace: Option<String>,
    pub audit_retention: Option<String>,
    pub key_publish_lead: Option<String>,
    pub signing_key_rotation_period: Option<String>,
    pub master_key_file: Option<String>,
    pub max_request_bytes: Option<usize>,
    pub request_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub log_format: Option<String>,
    pub log_filter: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub drain_delay: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_client_ca_file: Option<String>,
    pub spiffe_callers: Option<BTreeMap<String, Vec<String>>>,
    pub auth_failure_limit: Option<usize>,
    pub auth_failure_window: Option<String>,
    pub auth_failure_block: Option<String>,
}

impl Layer {
    /// Reads the `TESSERA_*` variables out of an environment map. A value that does not
    /// parse is an error naming the variable, never a silent fallback to the default.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, String> {
        Self::from_env_noting(env, &mut |_| {})
    }

    /// `TESSERA_*` variables in `env` that no part of the service reads (a typo such
    /// as `TESSERA_SHUTDOWN_GRAC`), sorted: worth a warning, since their values are
    /// otherwise ignored.
    pub fn unknown_env(env: &HashMap<String, String>) -> Vec<String> {
        let mut known: Vec<String> = ENV_ONLY.iter().map(|k| format!("TESSERA_{k}")).collect();
        let _ = Self::from_env_noting(env, &mut |k| known.push(format!("TESSERA_{k}")));
        let mut unknown: Vec<String> = env
            .keys()
            .filter(|k| k.starts_with("TESSERA_") && !known.contains(k))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }

    /// [`from_env`](Self::from_env), telling `note` the name of every variable it reads.
    fn from_env_noting(
        env: &HashMap<String, String>,
        note: &mut dyn FnMut(&str),
    ) -> Result<Self, String> {
        let note = std::cell::RefCell::new(note);
        let get = |k: &str| {
            (note.borrow_mut())(k);
            env.get(&format!("TESSERA_{k}")).cloned()
        };
        let number = |k: &str| -> Result<Option<usize>, String> {
            get(k)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        format!("TESSERA_{k}: {v:?} is not a whole number (e.g. 65536)")
                    })
                })
                .transpose()
        };
        Ok(Layer {
            grpc_addr: get("GRPC_ADDR"),
            http_addr: get("HTTP_ADDR"),
            metrics_addr: get("METRICS_ADDR"),
            header_timeout: get("HEADER_TIMEOUT"),
            http_request_timeout: get("HTTP_REQUEST_TIMEOUT"),
            idle_timeout: get("IDLE_TIMEOUT"),
            max_connections: number("MAX_CONNECTIONS")?,
            data_dir: get("DATA_DIR"),
            database_url: get("DATABASE_URL").map(Secret),
            max_staleness: get("MAX_STALENESS"),
            issuer: get("ISSUER"),
            authorization_endpoint: get("AUTHORIZATION_ENDPOINT"),
            signing_alg: get("SIGNING_ALG"),
            access_token_ttl: get("ACCESS_TOKEN_TTL"),
            max_access_token_ttl: get("MAX_ACCESS_TOKEN_TTL"),
            scope_ttl: get("SCOPE_TTL").map(|s| parse_scope_ttl(&s)).transpose()?,
            api_key_ttl: get("API_KEY_TTL"),
            max_api_key_ttl: get("MAX_API_KEY_TTL"),
            refresh_token_ttl: get("REFRESH_TOKEN_TTL"),
            refresh_family_ttl: get("REFRESH_FAMILY_TTL"),
            refresh_reuse_grace: get("REFRESH_REUSE_GRACE"),
            audit_retention: get("AUDIT_RETENTION"),
            key_publish_lead: get("KEY_PUBLISH_LEAD"),
            signing_key_rotation_period: get("SIGNING_KEY_ROTATION_PERIOD"),
            master_key_file: get("MASTER_KEY_FILE"),
            max_request_bytes: number("MAX_REQUEST_BYTES")?,
            request_timeout: get("REQUEST_TIMEOUT"),
            shutdown_grace: get("SHUTDOWN_GRACE"),
            log_format: get("LOG_FORMAT"),
            log_filter: get("LOG"),
            // The OpenTelemetry SDK's standard variables work too; Tessera's own wins.
            otlp_endpoint: get("OTLP_ENDPOINT")
                .or_else(|| env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").cloned())
                .or_else(|| env.get("OTEL_EXPORTER_OTLP_ENDPOINT").cloned()),
            drain_delay: get("DRAIN_DELAY"),
            tls_cert_file: get("TLS_CERT_FILE"),
            tls_key_file: get("TLS_KEY_FILE"),
            tls_client_ca_file: get("TLS_CLIENT_CA_FILE"),
            spiffe_callers: get("SPIFFE_CALLERS")
                .map(|s| parse_spiffe_callers(&s))
                .transpose()?,
            auth_failure_limit: number("AUTH_FAILURE_LIMIT")?,
            auth_failure_window: get("AUTH_FAILURE_WINDOW"),
            auth_failure_block: get("AUTH_FAILURE_BLOCK"),
        })
    }

    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills every unset field of `self` from `lower`.
    pub fn or(self, lower: Layer) -> Layer {
        Layer {
            grpc_addr: self.grpc_addr.or(lower.grpc_addr),
            http_addr: self.http_addr.or(lower.http_addr),
            metrics_addr: self.metrics_addr.or(lower.metrics_addr),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            http_request_timeout: self.http_request_timeout.or(lower.http_request_timeout),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            data_dir: self.data_dir.or(lower.data_dir),
            database_url: self.database_url.or(lower.database_url),
            max_staleness: self.max_staleness.or(lower.max_staleness),
            issuer: self.issuer.or(lower.issuer),
            authorization_endpoint: self.authorization_endpoint.or(lower.authorization_endpoint),
            signing_alg: self.signing_alg.or(lower.signing_alg),
            access_token_ttl: self.access_token_ttl.or(lower.access_token_ttl),
            max_access_token_ttl: self.max_access_token_ttl.or(lower.max_access_token_ttl),
            scope_ttl: self.scope_ttl.or(lower.scope_ttl),
            api_key_ttl: self.api_key_ttl.or(lower.api_key_ttl),
            max_api_key_ttl: self.max_api_key_ttl.or(lower.max_api_key_ttl),
            refresh_token_ttl: self.refresh_token_ttl.or(lower.refresh_token_ttl),
            refresh_family_ttl: self.refresh_family_ttl.or(lower.refresh_family_ttl),
            refresh_reuse_grace: self.refresh_reuse_grace.or(lower.refresh_reuse_grace),
            audit_retention: self.audit_retention.or(lower.audit_retention),
            key_publish_lead: self.key_publish_lead.or(lower.key_publish_lead),
            signing_key_rotation_period: self
                .signing_key_rotation_period
                .or(lower.signing_key_rotation_period),
            master_key_file: self.master_key_file.or(lower.master_key_file),
            max_request_bytes: self.max_request_bytes.or(lower.max_request_bytes),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            log_format: self.log_format.or(lower.log_format),
            log_filter: self.log_filter.or(lower.log_filter),
            otlp_endpoint: self.otlp_endpoint.or(lower.otlp_endpoint),
            drain_delay: self.drain_delay.or(lower.drain_delay),
            tls_cert_file: self.tls_cert_file.or(lower.tls_cert_file),
            tls_key_file: self.tls_key_file.or(lower.tls_key_file),
            tls_client_ca_file: self.tls_client_ca_file.or(lower.tls_client_ca_file),
            spiffe_callers: self.spiffe_callers.or(lower.spiffe_callers),
            auth_failure_limit: self.auth_failure_limit.or(lower.auth_failure_limit),
            auth_failure_window: self.auth_failure_window.or(lower.auth_failure_window),
            auth_failure_block: self.auth_failure_block.or(lower.auth_failure_block),
        }
    }
}

impl Config {
    /// The database in effect: `database_url`, else the SQLite file `tessera.db` in
    /// `data_dir`.
    pub fn database(&self) -> DatabaseUrl {
        self.database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite(self.data_dir.join("tessera.db")))
    }

    /// The failed-authentication throttle's numbers.
    pub fn auth_throttle(&self) -> crate::ratelimit::ThrottleConfig {
        crate::ratelimit::ThrottleConfig {
            max_failures: self.auth_failure_limit,
            window: self.auth_failure_window,
            block: self.auth_failure_block,
        }
    }

    /// The whole layering `serve` and the offline admin tools share: `flags` over the
    /// `TESSERA_*` env over the TOML file (`config_file`, else `TESSERA_CONFIG`) over the
    /// defaults. Errors name the offending setting or file.
    pub fn load(
        flags: Layer,
        config_file: Option<PathBuf>,
        env: &HashMap<String, String>,
    ) -> Result<Config, String> {
        let file = match config_file.or_else(|| env.get("TESSERA_CONFIG").map(PathBuf::from)) {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Layer::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => Layer::default(),
        };
        Config::from_layers(flags.or(Layer::from_env(env)?).or(file), env)
    }

    /// Builds the config from layered sources (highest first: flags, env, file) and
    /// the env-only secrets. Errors name the offending setting.
    pub fn from_layers(merged: Layer, env: &HashMap<String, String>) -> Result<Config, String> {
        let mut c = Config::default();
        let addr = |k: &str, v: String| v.parse::<SocketAddr>().map_err(|e| format!("{k}: {e}"));
        let dur = |k: &str, v: String| parse_duration(&v).map_err(|e| format!("{k}: {e}"));
        if let Some(v) = merged.grpc_addr {
            c.grpc_addr = addr("grpc_addr", v)?;
        }
        if let Some(v) = merged.http_addr {
            c.http_addr = addr("http_addr", v)?;
        }
        if let Some(v) = merged.metrics_addr {
            c.metrics_addr = addr("metrics_addr", v)?;
        }
        if let Some(v) = merged.header_timeout {
            c.header_timeout = dur("header_timeout", v)?;
        }
        if let Some(v) = merged.http_request_timeout {
            c.http_request_timeout = dur("http_request_timeout", v)?;
        }
        if let Some(v) = merged.idle_timeout {
            c.idle_timeout = dur("idle_timeout", v)?;
        }
        if let Some(v) = merged.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = merged.data_dir {
            if v.is_empty() {
                return Err("data_dir: must not be empty".into());
            }
            c.data_dir = v.into();
        }
        if let Some(v) = merged.database_url {
            // Never echo the value: it may carry a password.
            c.database_url = Some(v.0.parse().map_err(|e| format!("database_url: {e}"))?);
        }
        if let Some(v) = merged.max_staleness {
            c.max_staleness = dur("max_staleness", v)?;
        }
        if let Some(v) = merged.issuer {
            check_issuer(&v).map_err(|e| format!("issuer: {v:?} {e}"))?;
            c.issuer = v;
        }
        if let Some(v) = merged.authorization_endpoint {
            let url_like = (v.starts_with("https://") || v.starts_with("http://"))
                && v.split_once("://")
                    .is_some_and(|(_, rest)| !rest.is_empty())
                && !v.contains(|ch: char| ch.is_whitespace() || ch.is_control() || ch == '#');
            if !url_like {
                return Err(format!(
                    "authorization_endpoint: {v:?} is not an absolute http(s) URL without a fragment"
                ));
            }
            c.authorization_endpoint = Some(v);
        }
        if let Some(v) = merged.signing_alg {
            c.signing_alg = v.parse().map_err(|e| format!("signing_alg: {e}"))?;
        }
        if let Some(v) = merged.access_token_ttl {
            c.access_token_ttl = dur("access_token_ttl", v)?;
        }
        if let Some(v) = merged.max_access_token_ttl {
            c.max_access_token_ttl = dur("max_access_token_ttl", v)?;
        }
        if let Some(m) = merged.scope_ttl {
            for (scope, v) in m {
                if scope.is_empty() {
                    return Err("scope_ttl: a cap needs a scope name".into());
                }
                let d = dur("scope_ttl", v)?;
                if d.is_zero() {
                    // Every token carrying the scope would be born expired.
                    return Err(format!("scope_ttl: the cap of {scope:?} must be > 0"));
                }
                c.scope_ttl.insert(scope, d);
            }
        }
        if let Some(v) = merged.api_key_ttl {
            c.api_key_ttl = dur("api_key_ttl", v)?;
        }
        if let Some(v) = merged.max_api_key_ttl {
            c.max_api_key_ttl = dur("max_api_key_ttl", v)?;
        }
        if let Some(v) = merged.refresh_token_ttl {
            c.refresh_token_ttl = dur("refresh_token_ttl", v)?;
        }
        if let Some(v) = merged.refresh_family_ttl {
            c.refresh_family_ttl = dur("refresh_family_ttl", v)?;
        }
        if let Some(v) = merged.refresh_reuse_grace {
            c.refresh_reuse_grace = dur("refresh_reuse_grace", v)?;
        }
        if let Some(v) = merged.audit_retention {
            c.audit_retention = dur("audit_retention", v)?;
        }
        if let Some(v) = merged.key_publish_lead {
            c.key_publish_lead = dur("key_publish_lead", v)?;
        }
        if let Some(v) = merged.signing_key_rotation_period {
            // "off" (or "0s") keeps rotation manual, so a layer can undo a lower one.
            let d = if v == "off" {
                Duration::ZERO
            } else {
                dur("signing_key_rotation_period", v)?
            };
            c.signing_key_rotation_period = (!d.is_zero()).then_some(d);
        }
        if let Some(v) = merged.master_key_file {
            if v.is_empty() {
                return Err("master_key_file: must not be empty".into());
            }
            c.master_key_file = Some(v.into());
        }
        if let Some(v) = merged.max_request_bytes {
            c.max_request_bytes = v;
        }
        if let Some(v) = merged.request_timeout {
            c.request_timeout = dur("request_timeout", v)?;
        }
        if let Some(v) = merged.shutdown_grace {
            c.shutdown_grace = dur("shutdown_grace", v)?;
        }
        if let Some(v) = merged.drain_delay {
            c.drain_delay = dur("drain_delay", v)?;
        }
        if let Some(v) = merged.auth_failure_limit {
            c.auth_failure_limit =
                u32::try_from(v).map_err(|_| "auth_failure_limit: too large".to_string())?;
        }
        if let Some(v) = merged.auth_failure_window {
            c.auth_failure_window = dur("auth_failure_window", v)?;
        }
        if let Some(v) = merged.auth_failure_block {
            c.auth_failure_block = dur("auth_failure_block", v)?;
        }
        if let Some(v) = merged.log_format {
            c.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("log_format: {other:?} is not text or json")),
            };
        }
        if let Some(v) = merged.log_filter {
            // The same parser the log subscriber uses: a filter it would reject must not
            // quietly become "info" at start-up.
            tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| {
                format!("log_filter (TESSERA_LOG): {v:?} is not a tracing filter: {e}")
            })?;
            c.log_filter = v;
        }
        c.otlp_endpoint = merged.otlp_endpoint.filter(|v| !v.is_empty());
        if let Some(v) = &c.otlp_endpoint {
            check_http_url(v).map_err(|e| format!("otlp_endpoint: {v:?} {e}"))?;
        }
        // An empty path unsets, so an env variable can switch off what a file set.
        let file = |v: String| (!v.is_empty()).then(|| PathBuf::from(v));
        c.tls_cert_file = merged.tls_cert_file.and_then(file);
        c.tls_key_file = merged.tls_key_file.and_then(file);
        c.tls_client_ca_file = merged.tls_client_ca_file.and_then(file);
        if let Some(m) = merged.spiffe_callers {
            for (id, scopes) in m {
                if !crate::tls::is_spiffe_id(&id) {
                    return Err(format!(
                        "spiffe_callers: {id:?} is not a SPIFFE id (spiffe://trust-domain/path)"
                    ));
                }
                if scopes.is_empty()
                    || scopes
                        .iter()
                        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
                {
                    return Err(format!(
                        "spiffe_callers: {id:?} needs a list of scopes, each one word"
                    ));
                }
                c.spiffe_callers.insert(id, scopes);
            }
        }
        c.master_key = env.get("TESSERA_MASTER_KEY").map(|s| Secret(s.clone()));
        if let Some(k) = &c.master_key {
            // Checked here so a malformed key is a configuration error (exit 64), like
            // any other value that does not parse. The value itself is never echoed.
            crate::keys::seal::MasterKey::from_text(&k.0)
                .map_err(|e| format!("TESSERA_MASTER_KEY: {e}"))?;
        }
        c.bootstrap_admin_key = env
            .get("TESSERA_BOOTSTRAP_ADMIN_KEY")
            .map(|s| Secret(s.clone()));
        if let Some(k) = &c.bootstrap_admin_key
            && crate::apikeys::parse(&k.0).is_none()
        {
            return Err(
                "TESSERA_BOOTSTRAP_ADMIN_KEY: not a well-formed Tessera API key (make one with \
                 `tessera keygen`)"
                    .into(),
            );
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => return Err("tls_cert_file is set but tls_key_file is not".into()),
            (None, Some(_)) => return Err("tls_key_file is set but tls_cert_file is not".into()),
            _ => {}
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Err("tls_client_ca_file needs TLS: set tls_cert_file and tls_key_file".into());
        }
        // Without client certificates no caller could ever match an entry.
        if !self.spiffe_callers.is_empty() && self.tls_client_ca_file.is_none() {
            return Err("spiffe_callers needs client certificates: set tls_client_ca_file".into());
        }
        if self.access_token_ttl.is_zero() || self.access_token_ttl > self.max_access_token_ttl {
            return Err("access_token_ttl must be > 0 and <= max_access_token_ttl".into());
        }
        if self.api_key_ttl.is_zero() || self.api_key_ttl > self.max_api_key_ttl {
            return Err("api_key_ttl must be > 0 and <= max_api_key_ttl".into());
        }
        if self.refresh_token_ttl.is_zero() || self.refresh_token_ttl > self.refresh_family_ttl {
            return Err("refresh_token_ttl must be > 0 and <= refresh_family_ttl".into());
        }
        // Longer than a retry needs would keep replayable successor pairs around and
        // blunt reuse detection (the same cap as Hydra's rotation_grace_period).
        if self.refresh_reuse_grace > MAX_REFRESH_REUSE_GRACE {
            return Err("refresh_reuse_grace must be at most 5m".into());
        }
        // A typo such as "1s" must not quietly erase the audit trail.
        if self.audit_retention < Duration::from_secs(86_400) {
            return Err("audit_retention must be at least 1d".into());
        }
        if self.key_publish_lead > Duration::from_secs(7 * 86_400) {
            return Err("key_publish_lead must be at most 7d".into());
        }
        if let Some(p) = self.signing_key_rotation_period {
            // Otherwise every key would be replaced as soon as it starts signing.
            if p <= self.key_publish_lead {
                return Err(
                    "signing_key_rotation_period must be longer than key_publish_lead".into(),
                );
            }
        }
        if self.max_request_bytes < 1024 {
            return Err("max_request_bytes must be at least 1024".into());
        }
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("http_request_timeout", self.http_request_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be > 0".into());
        }
        // Zero would fail every introspection at the first blip; beyond an hour, a
        // revocation made through another replica could go unseen for that long.
        if self.max_staleness.is_zero() || self.max_staleness > Duration::from_secs(3600) {
            return Err("max_staleness must be > 0 and at most 1h".into());
        }
        if self.auth_failure_limit > 0
            && (self.auth_failure_window.is_zero() || self.auth_failure_block.is_zero())
        {
            return Err(
                "auth_failure_window and auth_failure_block must be > 0 (auth_failure_limit = 0 turns the throttle off)"
                    .into(),
            );
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err("max_connections must be a number from 1 to 65536".into());
        }
        // The development master key lives next to the database it protects: fine on
        // a laptop, not for a service other machines can reach.
        if self.master_key.is_none() && self.master_key_file.is_none() {
            for (name, a) in [("grpc_addr", self.grpc_addr), ("http_addr", self.http_addr)] {
                if !a.ip().is_loopback() {
                    return Err(format!(
                        "{name} {a} is not a loopback address, and no master key is configured: \
                         set TESSERA_MASTER_KEY or master_key_file (the development master key \
                         is for loopback only)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The lifetime cap that applies to a token carrying `scopes`.
    pub fn scope_cap(&self, scopes: &[String]) -> Duration {
        scopes
            .iter()
            .filter_map(|s| self.scope_ttl.get(s))
            .copied()
            .fold(self.max_access_token_ttl, Duration::min)
    }
}

/// Parses `TESSERA_SCOPE_TTL`: `scope=duration` entries separated by commas, e.g.
/// `write:payments=60s,admin=5m`. An entry without `=` or without a scope is an error;
/// an empty value sets no caps.
pub fn parse_scope_ttl(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for entry in s.split(',') {
        let (scope, ttl) = entry
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                format!(
                    "scope_ttl (TESSERA_SCOPE_TTL): entry {entry:?} is not scope=duration \
                     (e.g. write:payments=60s,admin=5m)"
                )
            })?;
        out.insert(scope.to_string(), ttl.to_string());
    }
    Ok(out)
}

/// Parses `TESSERA_SPIFFE_CALLERS`: `spiffe-id=scope scope…` entries separated by
/// commas (neither `,` nor `=` can occur in a SPIFFE id), e.g.
/// `spiffe://example.org/ns/mesh/sa/envoy=tessera:introspect`.
pub fn parse_spiffe_callers(s: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    for entry in s.split(',').filter(|e| !e.trim().is_empty()) {
        let (id, scopes) = entry
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.split_whitespace().map(str::to_string).collect()))
            .ok_or_else(|| {
                format!(
                    "spiffe_callers (TESSERA_SPIFFE_CALLERS): entry {entry:?} is not \
                     spiffe-id=scope scope… (e.g. spiffe://example.org/sa/envoy=tessera:introspect)"
                )
            })?;
        out.insert(id.to_string(), scopes);
    }
    Ok(out)
}

/// An absolute `http`/`https` URL with a host and no user info or fragment.
fn check_http_url(v: &str) -> Result<axum::http::Uri, String> {
    if v.contains('#') {
        return Err("must not have a fragment".into());
    }
    let uri: axum::http::Uri = v
        .parse()
        .map_err(|_| "is not an absolute http:// or https:// URL".to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("is not an absolute http:// or https:// URL".into()),
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => Err("must not carry user info".into()),
        Some(a) if !a.host().is_empty() => Ok(uri),
        _ => Err("has no host".into()),
    }
}

/// The issuer is an `http`/`https` URL without query or fragment (RFC 8414 §2; RFC 9068
/// verifiers compare it octet for octet, so it is kept exactly as written, trailing
/// slash included).
fn check_issuer(v: &str) -> Result<(), String> {
    let uri = check_http_url(v)?;
    if uri.query().is_some() || v.contains('?') {
        return Err("must not have a query (RFC 8414 §2)".into());
    }
    Ok(())
}

/// Parses `90s`, `15m`, `24h`, `90d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 24h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = Layer::from_toml(
            "grpc_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\nissuer = \"https://file.test\"",
        )
        .unwrap();
        let env: HashMap<String, String> = [
            ("TESSERA_HTTP_ADDR".to_string(), "127.0.0.1:3".to_string()),
            ("TESSERA_ISSUER".into(), "https://env.test".into()),
        ]
        .into_iter()
        .collect();
        let flags = Layer {
            issuer: Some("https://flag.test".into()),
            ..Layer::default()
        };
        let c =
            Config::from_layers(flags.or(Layer::from_env(&env).unwrap()).or(file), &env).unwrap();
        assert_eq!(c.grpc_addr.port(), 1);
        assert_eq!(c.http_addr.port(), 3);
        assert_eq!(c.issuer, "https://flag.test");
        assert_eq!(c.data_dir, PathBuf::from("tessera-data"));
    }

    #[test]
    fn durations_and_scope_caps() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        let env: HashMap<String, String> = [(
            "TESSERA_SCOPE_TTL".to_string(),
            "write:payments=60s".to_string(),
        )]
        .into_iter()
        .collect();
        let c = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap();
        assert_eq!(
            c.scope_cap(&["read".into(), "write:payments".into()]),
            Duration::from_secs(60)
        );
        assert_eq!(c.scope_cap(&["read".into()]), Duration::from_secs(3600));
        let env: HashMap<String, String> =
            [("TESSERA_AUDIT_RETENTION".to_string(), "30d".to_string())]
                .into_iter()
                .collect();
        let c = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(30 * 86_400));
        let c = Config::from_layers(Layer::from_toml("audit_retention = \"2d\"").unwrap(), &env)
            .unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn refresh_reuse_grace_defaults_to_zero_and_is_capped_at_five_minutes() {
        let env = HashMap::new();
        let c = Config::from_layers(Layer::default(), &env).unwrap();
        assert_eq!(c.refresh_reuse_grace, Duration::ZERO);
        let env: HashMap<String, String> =
            [("TESSERA_REFRESH_REUSE_GRACE".to_string(), "30s".to_string())]
                .into_iter()
                .collect();
        let c = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap();
        assert_eq!(c.refresh_reuse_grace, Duration::from_secs(30));
        let c = Config::from_layers(
            Layer::from_toml("refresh_reuse_grace = \"5m\"").unwrap(),
            &env,
        )
        .unwrap();
        assert_eq!(c.refresh_reuse_grace, Duration::from_secs(300));
        let e = Config::from_layers(
            Layer::from_toml("refresh_reuse_grace = \"301s\"").unwrap(),
            &env,
        )
        .unwrap_err();
        assert!(e.contains("refresh_reuse_grace"), "{e}");
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = Layer {
            grpc_addr: Some("nope".into()),
            ..Layer::default()
        };
        assert!(
            Config::from_layers(bad, &HashMap::new())
                .unwrap_err()
                .contains("grpc_addr")
        );
        assert!(Layer::from_toml("unknown_key = 1").is_err());
        let short = Layer {
            audit_retention: Some("1h".into()),
            ..Layer::default()
        };
        assert!(
            Config::from_layers(short, &HashMap::new())
                .unwrap_err()
                .contains("audit_retention")
        );
        for (k, v) in [
            ("TESSERA_MAX_CONNECTIONS", "lots"),
            ("TESSERA_MAX_REQUEST_BYTES", "lots"),
            ("TESSERA_MAX_REQUEST_BYTES", "-1"),
            ("TESSERA_SCOPE_TTL", "write:payments"),
            ("TESSERA_SCOPE_TTL", "write:payments=60s,=5m"),
            ("TESSERA_SCOPE_TTL", "write:payments=soon"),
            ("TESSERA_LOG", "[[["),
            ("TESSERA_ISSUER", "not a url"),
            ("TESSERA_ISSUER", "ftp://tessera.test"),
            ("TESSERA_ISSUER", "https://tessera.test/#frag"),
            ("TESSERA_ISSUER", "https://tessera.test/?tenant=a"),
            ("TESSERA_ISSUER", "https://user@tessera.test"),
            ("TESSERA_ISSUER", "/relative"),
            ("TESSERA_SIGNING_ALG", "RS256"),
            ("TESSERA_DATA_DIR", ""),
            ("TESSERA_MASTER_KEY_FILE", ""),
            ("TESSERA_MASTER_KEY", "not-base64!"),
            ("TESSERA_BOOTSTRAP_ADMIN_KEY", "tsk_nope"),
            ("TESSERA_OTLP_ENDPOINT", "collector:4317"),
            ("TESSERA_REQUEST_TIMEOUT", "0s"),
            ("TESSERA_DRAIN_DELAY", "soon"),
            ("TESSERA_MAX_CONNECTIONS", "0"),
            ("TESSERA_HEADER_TIMEOUT", "0s"),
            ("TESSERA_IDLE_TIMEOUT", "5x"),
            ("TESSERA_METRICS_ADDR", "nope"),
            ("TESSERA_DATABASE_URL", "mysql://db.test/tessera"),
            ("TESSERA_DATABASE_URL", "sqlite://"),
            ("TESSERA_MAX_STALENESS", "0s"),
            ("TESSERA_MAX_STALENESS", "61m"),
            ("TESSERA_MAX_STALENESS", "soon"),
        ] {
            let env: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = load(&env).unwrap_err();
            let setting = k.trim_start_matches("TESSERA_");
            assert!(
                e.contains(setting) || e.contains(&setting.to_ascii_lowercase()),
                "{k}={v}: {e}"
            );
        }
    }

    #[test]
    fn listener_defaults_and_overrides() {
        let c = Config::default();
        assert_eq!(c.metrics_addr, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        let file = Layer::from_toml(
            "metrics_addr = \"127.0.0.1:9999\"\nheader_timeout = \"2s\"\nmax_connections = 7",
        )
        .unwrap();
        let env: HashMap<String, String> =
            [("TESSERA_IDLE_TIMEOUT".to_string(), "3m".to_string())].into();
        let c = Config::from_layers(Layer::from_env(&env).unwrap().or(file), &env).unwrap();
        assert_eq!(c.metrics_addr.port(), 9999);
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(180));
        assert_eq!(c.max_connections, 7);
    }

    #[test]
    fn a_non_loopback_bind_needs_a_master_key() {
        for (k, v) in [
            ("TESSERA_GRPC_ADDR", "0.0.0.0:50051"),
            ("TESSERA_HTTP_ADDR", "[::]:8080"),
        ] {
            let mut env: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap_err();
            assert!(e.contains("master key") && e.contains(v), "{e}");
            env.insert("TESSERA_MASTER_KEY_FILE".into(), "/run/secrets/mk".into());
            assert!(Config::from_layers(Layer::from_env(&env).unwrap(), &env).is_ok());
        }
    }

    fn load(env: &HashMap<String, String>) -> Result<Config, String> {
        Config::from_layers(Layer::from_env(env)?, env)
    }

    #[test]
    fn issuers_that_are_urls_are_kept_as_written() {
        for v in [
            "https://tessera.test",
            "https://tessera.test/",
            "http://127.0.0.1:8080",
            "https://auth.example/tenants/a",
        ] {
            let env: HashMap<String, String> = [("TESSERA_ISSUER".into(), v.into())].into();
            assert_eq!(load(&env).unwrap().issuer, v);
        }
        let env: HashMap<String, String> =
            [("TESSERA_SCOPE_TTL".into(), " a=1m , b = 2m ".into())].into();
        let c = load(&env).unwrap();
        assert_eq!(c.scope_ttl["a"], Duration::from_secs(60));
        assert_eq!(c.scope_ttl["b"], Duration::from_secs(120));
        let env: HashMap<String, String> = [("TESSERA_SCOPE_TTL".into(), String::new())].into();
        assert!(load(&env).unwrap().scope_ttl.is_empty());
    }

    #[test]
    fn secret_values_are_never_echoed_in_errors() {
        for k in ["TESSERA_MASTER_KEY", "TESSERA_BOOTSTRAP_ADMIN_KEY"] {
            let env: HashMap<String, String> = [(k.into(), "hunter2-secret".into())].into();
            let e = load(&env).unwrap_err();
            assert!(e.contains(k) && !e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn unknown_tessera_variables_are_found() {
        let env: HashMap<String, String> = [
            ("TESSERA_SHUTDOWN_GRAC".to_string(), "5s".to_string()),
            ("TESSERA_SHUTDOWN_GRACE".into(), "5s".into()),
            ("TESSERA_MASTER_KEY".into(), "x".into()),
            ("TESSERA_LOG".into(), "info".into()),
            ("HOME".into(), "/".into()),
        ]
        .into();
        assert_eq!(Layer::unknown_env(&env), vec!["TESSERA_SHUTDOWN_GRAC"]);
    }

    #[test]
    fn database_defaults_to_tessera_db_in_the_data_dir() {
        let c = Config::default();
        assert_eq!(c.database_url, None);
        assert_eq!(
            c.database(),
            DatabaseUrl::Sqlite(PathBuf::from("tessera-data").join("tessera.db"))
        );
        let env: HashMap<String, String> =
            [("TESSERA_DATA_DIR".into(), "/var/lib/t".into())].into();
        assert_eq!(
            load(&env).unwrap().database(),
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/t/tessera.db"))
        );
    }

    #[test]
    fn database_urls_parse() {
        for (v, want) in [
            (
                "sqlite://state/t.db",
                DatabaseUrl::Sqlite(PathBuf::from("state/t.db")),
            ),
            (
                "sqlite:///var/lib/tessera/t.db",
                DatabaseUrl::Sqlite(PathBuf::from("/var/lib/tessera/t.db")),
            ),
            (
                "postgres://tessera:pw@db.test:5432/tessera?sslmode=require",
                DatabaseUrl::Postgres(
                    "postgres://tessera:pw@db.test:5432/tessera?sslmode=require".into(),
                ),
            ),
            (
                "postgresql://db.test/tessera",
                DatabaseUrl::Postgres("postgresql://db.test/tessera".into()),
            ),
        ] {
            let env: HashMap<String, String> = [("TESSERA_DATABASE_URL".into(), v.into())].into();
            let c = load(&env).unwrap();
            assert_eq!(c.database_url.as_ref(), Some(&want), "{v}");
            assert_eq!(c.database(), want, "{v}");
        }
    }

    #[test]
    fn database_url_from_toml_env_and_flag() {
        let file =
            Layer::from_toml("database_url = \"postgres://file.test/t\"\nmax_staleness = \"1h\"")
                .unwrap();
        let c = Config::from_layers(file, &HashMap::new()).unwrap();
        assert_eq!(
            c.database(),
            DatabaseUrl::Postgres("postgres://file.test/t".into())
        );
        assert_eq!(c.max_staleness, Duration::from_secs(3600));

        let file = Layer::from_toml("database_url = \"postgres://file.test/t\"").unwrap();
        let env: HashMap<String, String> = [
            (
                "TESSERA_DATABASE_URL".to_string(),
                "sqlite://env.db".to_string(),
            ),
            ("TESSERA_MAX_STALENESS".into(), "2m".into()),
        ]
        .into();
        let c = Config::from_layers(Layer::from_env(&env).unwrap().or(file), &env).unwrap();
        assert_eq!(c.database(), DatabaseUrl::Sqlite(PathBuf::from("env.db")));
        assert_eq!(c.max_staleness, Duration::from_secs(120));

        let flags = Layer {
            database_url: Some(Secret("postgresql://flag.test/t".into())),
            ..Layer::default()
        };
        let c = Config::from_layers(flags.or(Layer::from_env(&env).unwrap()), &env).unwrap();
        assert_eq!(
            c.database(),
            DatabaseUrl::Postgres("postgresql://flag.test/t".into())
        );
    }

    #[test]
    fn bad_database_urls_are_named_and_never_echoed() {
        for v in [
            "mysql://u:hunter2@h/db",
            "POSTGRES://u:hunter2@h/db",
            " postgres://u:hunter2@h/db",
            "u:hunter2@h/db",
            "sqlite:",
            "sqlite://",
            "",
        ] {
            let env: HashMap<String, String> = [("TESSERA_DATABASE_URL".into(), v.into())].into();
            let e = load(&env).unwrap_err();
            assert!(e.starts_with("database_url: "), "{v}: {e}");
            assert!(!e.contains("hunter2"), "{v}: {e}");
            let e = Config::from_layers(
                Layer::from_toml(&format!("database_url = {v:?}")).unwrap(),
                &HashMap::new(),
            )
            .unwrap_err();
            assert!(
                e.starts_with("database_url: ") && !e.contains("hunter2"),
                "{e}"
            );
        }
    }

    #[test]
    fn database_passwords_do_not_print() {
        for (v, shown) in [
            ("postgres://u:hunter2@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u:hunter2@h:5432/db?sslmode=require",
                "postgresql://u:***@h:5432/db?sslmode=require",
            ),
            // Unescaped `@` and `/` in the password.
            ("postgres://u:p@hunter2@h/db", "postgres://u:***@h/db"),
            ("postgres://u:hunter2/x@h/db", "postgres://u:***@h/db"),
            ("postgres://u:@h/db", "postgres://u:***@h/db"),
            // The driver's `password` parameter, also percent-encoded.
            (
                "postgres://u@h/db?sslmode=disable&password=hunter2&application_name=t",
                "postgres://u@h/db?sslmode=disable&password=***&application_name=t",
            ),
            (
                "postgres://h?%70assword=hunter2",
                "postgres://h?%70assword=***",
            ),
            (
                "postgres://u:hunter2@h/db?password=hunter2",
                "postgres://u:***@h/db?password=***",
            ),
            // Nothing secret: kept whole.
            ("postgres://alice@h/db", "postgres://alice@h/db"),
            (
                "postgres://h:5432,h2:5433/db?sslmode=require",
                "postgres://h:5432,h2:5433/db?sslmode=require",
            ),
        ] {
            let url = DatabaseUrl::Postgres(v.into());
            assert_eq!(url.redacted(), shown, "{v}");
            assert_eq!(url.to_string(), shown, "{v}");
            assert_eq!(format!("{url:?}"), format!("Postgres({shown:?})"), "{v}");
        }
        let env: HashMap<String, String> = [(
            "TESSERA_DATABASE_URL".into(),
            "postgres://u:hunter2@h/db".into(),
        )]
        .into();
        let layer = Layer::from_env(&env).unwrap();
        assert!(!format!("{layer:?}").contains("hunter2"));
        let c = load(&env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(
            format!("{:?}", DatabaseUrl::Sqlite("t.db".into())),
            "Sqlite(\"t.db\")"
        );
        assert_eq!(
            DatabaseUrl::Sqlite("t.db".into()).redacted(),
            "sqlite://t.db"
        );
    }

    #[test]
    fn max_staleness_defaults_to_30s_and_is_capped_at_an_hour() {
        let env = HashMap::new();
        let c = Config::from_layers(Layer::default(), &env).unwrap();
        assert_eq!(c.max_staleness, Duration::from_secs(30));
        for (v, ok) in [
            ("1s", true),
            ("3600", true),
            ("1h", true),
            ("0s", false),
            ("3601s", false),
        ] {
            let env: HashMap<String, String> = [("TESSERA_MAX_STALENESS".into(), v.into())].into();
            match load(&env) {
                Ok(c) => {
                    assert!(ok, "{v}");
                    assert_eq!(c.max_staleness, parse_duration(v).unwrap());
                }
                Err(e) => assert!(!ok && e.contains("max_staleness"), "{v}: {e}"),
            }
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "[redacted]");
    }

    #[test]
    fn tls_settings_from_toml_and_env() {
        let file = Layer::from_toml(
            "tls_cert_file = \"/etc/tessera/tls.crt\"\ntls_key_file = \"/etc/tessera/tls.key\"\n\
             tls_client_ca_file = \"/etc/tessera/ca.crt\"\n\
             [spiffe_callers]\n\"spiffe://example.org/ns/mesh/sa/envoy\" = [\"tessera:introspect\"]\n",
        )
        .unwrap();
        let env = HashMap::new();
        let c = Config::from_layers(file, &env).unwrap();
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/etc/tessera/tls.crt")));
        assert_eq!(
            c.spiffe_callers["spiffe://example.org/ns/mesh/sa/envoy"],
            vec!["tessera:introspect".to_string()]
        );

        let env: HashMap<String, String> = [
            ("TESSERA_TLS_CERT_FILE", "/c"),
            ("TESSERA_TLS_KEY_FILE", "/k"),
            ("TESSERA_TLS_CLIENT_CA_FILE", "/ca"),
            (
                "TESSERA_SPIFFE_CALLERS",
                "spiffe://a.test/x=tessera:introspect tessera:revoke, spiffe://b.test/y=tessera:issue",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = load(&env).unwrap();
        assert_eq!(c.tls_client_ca_file, Some(PathBuf::from("/ca")));
        assert_eq!(c.spiffe_callers["spiffe://a.test/x"].len(), 2);
        assert_eq!(
            c.spiffe_callers["spiffe://b.test/y"],
            vec!["tessera:issue".to_string()]
        );
    }

    #[test]
    fn incomplete_or_malformed_tls_settings_are_refused() {
        let rows: [(&str, &[(&str, &str)]); 6] = [
            ("cert without key", &[("TESSERA_TLS_CERT_FILE", "/c")]),
            ("key without cert", &[("TESSERA_TLS_KEY_FILE", "/k")]),
            (
                "client CA without TLS",
                &[("TESSERA_TLS_CLIENT_CA_FILE", "/ca")],
            ),
            (
                "SPIFFE callers without client certificates",
                &[
                    ("TESSERA_TLS_CERT_FILE", "/c"),
                    ("TESSERA_TLS_KEY_FILE", "/k"),
                    (
                        "TESSERA_SPIFFE_CALLERS",
                        "spiffe://a.test/x=tessera:introspect",
                    ),
                ],
            ),
            (
                "not a SPIFFE id",
                &[
                    ("TESSERA_TLS_CERT_FILE", "/c"),
                    ("TESSERA_TLS_KEY_FILE", "/k"),
                    ("TESSERA_TLS_CLIENT_CA_FILE", "/ca"),
                    (
                        "TESSERA_SPIFFE_CALLERS",
                        "https://a.test/x=tessera:introspect",
                    ),
                ],
            ),
            (
                "a SPIFFE id without scopes",
                &[
                    ("TESSERA_TLS_CERT_FILE", "/c"),
                    ("TESSERA_TLS_KEY_FILE", "/k"),
                    ("TESSERA_TLS_CLIENT_CA_FILE", "/ca"),
                    ("TESSERA_SPIFFE_CALLERS", "spiffe://a.test/x="),
                ],
            ),
        ];
        for (name, vars) in rows {
            let env: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert!(load(&env).is_err(), "{name}");
        }
    }
}
