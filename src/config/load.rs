//! Building a [`Config`] from layered sources: each value parsed and checked, errors
//! naming the setting, then the checks that span settings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, Layer, LogFormat, MAX_REFRESH_REUSE_GRACE, Secret};

impl Config {
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
    pub(crate) fn from_layers(
        merged: Layer,
        env: &HashMap<String, String>,
    ) -> Result<Config, String> {
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
            c.database_url = Some(
                v.expose()
                    .parse()
                    .map_err(|e| format!("database_url: {e}"))?,
            );
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
        c.master_key = env
            .get("TESSERA_MASTER_KEY")
            .map(|s| Secret::new(s.clone()));
        if let Some(k) = &c.master_key {
            // Checked here so a malformed key is a configuration error (exit 64), like
            // any other value that does not parse. The value itself is never echoed.
            crate::keys::seal::MasterKey::from_text(k.expose())
                .map_err(|e| format!("TESSERA_MASTER_KEY: {e}"))?;
        }
        c.bootstrap_admin_key = env
            .get("TESSERA_BOOTSTRAP_ADMIN_KEY")
            .map(|s| Secret::new(s.clone()));
        if let Some(k) = &c.bootstrap_admin_key
            && crate::apikeys::parse(k.expose()).is_none()
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
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
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
