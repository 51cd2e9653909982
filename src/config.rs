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
    /// `iss` of every token, compared octet for octet. Defaults to `http://127.0.0.1:8080`.
    pub issuer: String,
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
    /// How long audit records are kept before housekeeping deletes them. Defaults to
    /// 365 days; at least 1 day.
    pub audit_retention: Duration,
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
    /// Time given to in-flight calls on SIGTERM. Defaults to 10 s.
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
}

/// A secret string from configuration: never printed.
#[derive(Clone, zeroize::ZeroizeOnDrop)]
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
            issuer: "http://127.0.0.1:8080".into(),
            signing_alg: SigningAlg::EdDSA,
            access_token_ttl: Duration::from_secs(15 * 60),
            max_access_token_ttl: Duration::from_secs(60 * 60),
            scope_ttl: BTreeMap::new(),
            api_key_ttl: Duration::from_secs(90 * 86_400),
            max_api_key_ttl: Duration::from_secs(365 * 86_400),
            refresh_token_ttl: Duration::from_secs(14 * 86_400),
            refresh_family_ttl: Duration::from_secs(90 * 86_400),
            audit_retention: Duration::from_secs(365 * 86_400),
            master_key_file: None,
            master_key: None,
            bootstrap_admin_key: None,
            max_request_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            otlp_endpoint: None,
            watch_heartbeat: crate::watch::DEFAULT_HEARTBEAT,
            watch_buffer: crate::watch::DEFAULT_BUFFER,
        }
    }
}

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
    pub issuer: Option<String>,
    pub signing_alg: Option<String>,
    pub access_token_ttl: Option<String>,
    pub max_access_token_ttl: Option<String>,
    pub scope_ttl: Option<BTreeMap<String, String>>,
    pub api_key_ttl: Option<String>,
    pub max_api_key_ttl: Option<String>,
    pub refresh_token_ttl: Option<String>,
    pub refresh_family_ttl: Option<String>,
    pub audit_retention: Option<String>,
    pub master_key_file: Option<String>,
    pub max_request_bytes: Option<usize>,
    pub request_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub log_format: Option<String>,
    pub log_filter: Option<String>,
    pub otlp_endpoint: Option<String>,
}

impl Layer {
    /// Reads the `TESSERA_*` variables out of an environment map.
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        let get = |k: &str| env.get(&format!("TESSERA_{k}")).cloned();
        Layer {
            grpc_addr: get("GRPC_ADDR"),
            http_addr: get("HTTP_ADDR"),
            metrics_addr: get("METRICS_ADDR"),
            header_timeout: get("HEADER_TIMEOUT"),
            http_request_timeout: get("HTTP_REQUEST_TIMEOUT"),
            idle_timeout: get("IDLE_TIMEOUT"),
            // A value that is not a number becomes 0, which validation refuses.
            max_connections: get("MAX_CONNECTIONS").map(|v| v.trim().parse().unwrap_or(0)),
            data_dir: get("DATA_DIR"),
            issuer: get("ISSUER"),
            signing_alg: get("SIGNING_ALG"),
            access_token_ttl: get("ACCESS_TOKEN_TTL"),
            max_access_token_ttl: get("MAX_ACCESS_TOKEN_TTL"),
            scope_ttl: get("SCOPE_TTL").map(|s| {
                // "write:payments=60s,admin=5m"
                s.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            }),
            api_key_ttl: get("API_KEY_TTL"),
            max_api_key_ttl: get("MAX_API_KEY_TTL"),
            refresh_token_ttl: get("REFRESH_TOKEN_TTL"),
            refresh_family_ttl: get("REFRESH_FAMILY_TTL"),
            audit_retention: get("AUDIT_RETENTION"),
            master_key_file: get("MASTER_KEY_FILE"),
            max_request_bytes: get("MAX_REQUEST_BYTES").and_then(|v| v.parse().ok()),
            request_timeout: get("REQUEST_TIMEOUT"),
            shutdown_grace: get("SHUTDOWN_GRACE"),
            log_format: get("LOG_FORMAT"),
            log_filter: get("LOG"),
            otlp_endpoint: get("OTLP_ENDPOINT"),
        }
    }

    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("config file: {e}"))
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
            issuer: self.issuer.or(lower.issuer),
            signing_alg: self.signing_alg.or(lower.signing_alg),
            access_token_ttl: self.access_token_ttl.or(lower.access_token_ttl),
            max_access_token_ttl: self.max_access_token_ttl.or(lower.max_access_token_ttl),
            scope_ttl: self.scope_ttl.or(lower.scope_ttl),
            api_key_ttl: self.api_key_ttl.or(lower.api_key_ttl),
            max_api_key_ttl: self.max_api_key_ttl.or(lower.max_api_key_ttl),
            refresh_token_ttl: self.refresh_token_ttl.or(lower.refresh_token_ttl),
            refresh_family_ttl: self.refresh_family_ttl.or(lower.refresh_family_ttl),
            audit_retention: self.audit_retention.or(lower.audit_retention),
            master_key_file: self.master_key_file.or(lower.master_key_file),
            max_request_bytes: self.max_request_bytes.or(lower.max_request_bytes),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            log_format: self.log_format.or(lower.log_format),
            log_filter: self.log_filter.or(lower.log_filter),
            otlp_endpoint: self.otlp_endpoint.or(lower.otlp_endpoint),
        }
    }
}

impl Config {
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
            c.data_dir = v.into();
        }
        if let Some(v) = merged.issuer {
            if v.is_empty() {
                return Err("issuer: must not be empty".into());
            }
            c.issuer = v;
        }
        if let Some(v) = merged.signing_alg {
            c.signing_alg = v.parse()?;
        }
        if let Some(v) = merged.access_token_ttl {
            c.access_token_ttl = dur("access_token_ttl", v)?;
        }
        if let Some(v) = merged.max_access_token_ttl {
            c.max_access_token_ttl = dur("max_access_token_ttl", v)?;
        }
        if let Some(m) = merged.scope_ttl {
            for (scope, v) in m {
                let d = dur("scope_ttl", v)?;
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
        if let Some(v) = merged.audit_retention {
            c.audit_retention = dur("audit_retention", v)?;
        }
        if let Some(v) = merged.master_key_file {
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
        if let Some(v) = merged.log_format {
            c.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("log_format: {other:?} is not text or json")),
            };
        }
        if let Some(v) = merged.log_filter {
            c.log_filter = v;
        }
        c.otlp_endpoint = merged.otlp_endpoint.filter(|v| !v.is_empty());
        c.master_key = env.get("TESSERA_MASTER_KEY").map(|s| Secret(s.clone()));
        c.bootstrap_admin_key = env
            .get("TESSERA_BOOTSTRAP_ADMIN_KEY")
            .map(|s| Secret(s.clone()));
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        if self.access_token_ttl.is_zero() || self.access_token_ttl > self.max_access_token_ttl {
            return Err("access_token_ttl must be > 0 and <= max_access_token_ttl".into());
        }
        if self.api_key_ttl.is_zero() || self.api_key_ttl > self.max_api_key_ttl {
            return Err("api_key_ttl must be > 0 and <= max_api_key_ttl".into());
        }
        if self.refresh_token_ttl.is_zero() || self.refresh_token_ttl > self.refresh_family_ttl {
            return Err("refresh_token_ttl must be > 0 and <= refresh_family_ttl".into());
        }
        // A typo such as "1s" must not quietly erase the audit trail.
        if self.audit_retention < Duration::from_secs(86_400) {
            return Err("audit_retention must be at least 1d".into());
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
            "grpc_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\nissuer = \"file\"",
        )
        .unwrap();
        let env: HashMap<String, String> = [
            ("TESSERA_HTTP_ADDR".to_string(), "127.0.0.1:3".to_string()),
            ("TESSERA_ISSUER".into(), "env".into()),
        ]
        .into_iter()
        .collect();
        let flags = Layer {
            issuer: Some("flag".into()),
            ..Layer::default()
        };
        let c = Config::from_layers(flags.or(Layer::from_env(&env)).or(file), &env).unwrap();
        assert_eq!(c.grpc_addr.port(), 1);
        assert_eq!(c.http_addr.port(), 3);
        assert_eq!(c.issuer, "flag");
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
        let c = Config::from_layers(Layer::from_env(&env), &env).unwrap();
        assert_eq!(
            c.scope_cap(&["read".into(), "write:payments".into()]),
            Duration::from_secs(60)
        );
        assert_eq!(c.scope_cap(&["read".into()]), Duration::from_secs(3600));
        let env: HashMap<String, String> =
            [("TESSERA_AUDIT_RETENTION".to_string(), "30d".to_string())]
                .into_iter()
                .collect();
        let c = Config::from_layers(Layer::from_env(&env), &env).unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(30 * 86_400));
        let c = Config::from_layers(Layer::from_toml("audit_retention = \"2d\"").unwrap(), &env)
            .unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(2 * 86_400));
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
            ("TESSERA_MAX_CONNECTIONS", "0"),
            ("TESSERA_HEADER_TIMEOUT", "0s"),
            ("TESSERA_IDLE_TIMEOUT", "5x"),
            ("TESSERA_METRICS_ADDR", "nope"),
        ] {
            let env: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = Config::from_layers(Layer::from_env(&env), &env).unwrap_err();
            let setting = k.trim_start_matches("TESSERA_").to_ascii_lowercase();
            assert!(e.contains(&setting), "{k}={v}: {e}");
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
        let c = Config::from_layers(Layer::from_env(&env).or(file), &env).unwrap();
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
            let e = Config::from_layers(Layer::from_env(&env), &env).unwrap_err();
            assert!(e.contains("master key") && e.contains(v), "{e}");
            env.insert("TESSERA_MASTER_KEY_FILE".into(), "/run/secrets/mk".into());
            assert!(Config::from_layers(Layer::from_env(&env), &env).is_ok());
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "[redacted]");
    }
}
