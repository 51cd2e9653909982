//! `Layer`: one source of settings (the TOML file, the `TESSERA_*` env, the flags), every
//! field optional so sources stack, highest first.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::Secret;

/// `TESSERA_*` variables read outside [`Layer::from_env`]: secrets (env only), the config
/// file's path, and the admin client's key.
const ENV_ONLY: &[&str] = &["MASTER_KEY", "BOOTSTRAP_ADMIN_KEY", "CONFIG", "API_KEY"];

/// One source of settings; every field optional so sources can be layered. Each field
/// is the [`Config`](super::Config) field of the same name (documented there), as
/// its source spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
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
    pub(crate) fn from_env(env: &HashMap<String, String>) -> Result<Self, String> {
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
            database_url: get("DATABASE_URL").map(Secret::from),
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
    pub(crate) fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills every unset field of `self` from `lower`.
    pub(crate) fn or(self, lower: Layer) -> Layer {
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
