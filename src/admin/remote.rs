//! The online admin commands: plain gRPC clients of a running server, authenticated
//! like any other caller with `authorization: Bearer <api key>`.
//!
//! Each command returns an [`Output`] (a table for people, a JSON document for
//! machines) or a [`Failure`] carrying the gRPC code and message and the exit code
//! that goes with them.

use std::time::Duration;

use prost_types::Timestamp;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use zeroize::Zeroizing;

use super::render;
use crate::proto::issue_request::Credential;
use crate::proto::key_service_client::KeyServiceClient;
use crate::proto::token_service_client::TokenServiceClient;
use crate::proto::{
    ApiKeyInfo, ApiKeySpec, AuditEvent, ClientInfo, GetJwksRequest, IssueRequest,
    ListApiKeysRequest, ListAuditEventsRequest, ListClientsRequest, ListSigningKeysRequest,
    RevokeRequest, RevokeSigningKeyRequest, RotateSigningKeyRequest,
};

/// Exit codes (sysexits.h), documented in the README.
pub mod exit {
    /// Anything else: an internal error, a limit hit, an offline task that failed.
    pub const FAILURE: u8 = 1;
    /// EX_USAGE: bad command line, no API key, a malformed address.
    pub const USAGE: u8 = 64;
    /// EX_DATAERR: the server refused the request as invalid (INVALID_ARGUMENT,
    /// FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS).
    pub const DATA: u8 = 65;
    /// EX_NOINPUT: NOT_FOUND.
    pub const NOT_FOUND: u8 = 66;
    /// EX_UNAVAILABLE: the server cannot be reached, is not serving, or does not
    /// offer the RPC (UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED).
    pub const UNAVAILABLE: u8 = 69;
    /// EX_CANTCREAT: a file to write already exists or cannot be created.
    pub const CANT_CREATE: u8 = 73;
    /// EX_NOPERM: UNAUTHENTICATED or PERMISSION_DENIED.
    pub const NO_PERMISSION: u8 = 77;
}

/// A command that did not succeed: what to tell the operator, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code (see [`exit`]).
    pub code: u8,
    /// One line for stderr.
    pub message: String,
}

impl Failure {
    /// A usage error (exit 64).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// A failure with an explicit exit code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A gRPC status: its code name and message, and the matching exit code.
    pub fn from_status(s: &Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists => exit::DATA,
            Code::NotFound => exit::NOT_FOUND,
            Code::Unavailable | Code::DeadlineExceeded | Code::Unimplemented => exit::UNAVAILABLE,
            Code::Unauthenticated | Code::PermissionDenied => exit::NO_PERMISSION,
            _ => exit::FAILURE,
        };
        Failure {
            code,
            message: format!("{}: {}", code_name(s.code()), s.message()),
        }
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::from_status(&s)
    }
}

/// The canonical upper-case name of a gRPC code (`PERMISSION_DENIED`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What a command prints: `text` for people, `json` with `--json`; `note` goes to
/// stderr in either mode (context that must not mix with a secret on stdout).
#[derive(Debug)]
pub struct Output {
    /// Human-readable stdout.
    pub text: String,
    /// The one JSON document for `--json`.
    pub json: Value,
    /// Extra lines for stderr.
    pub note: Option<String>,
    /// Exit code when the command ran but the answer is bad news (`status` of a
    /// server that is not serving).
    pub code: u8,
}

impl Output {
    fn new(text: String, json: Value) -> Self {
        Output {
            text,
            json,
            note: None,
            code: 0,
        }
    }
}

/// A connection to a running server, with the caller's API key if one was given.
pub struct Remote {
    channel: Channel,
    addr: String,
    key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("addr", &self.addr)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Largest page asked for (the server's maximum).
const PAGE: u32 = 500;

/// Accepts `http://host:port` or a bare `host:port`. TLS is not spoken by this client.
pub fn normalize_addr(addr: &str) -> Result<String, Failure> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(Failure::usage("--addr is empty"));
    }
    if addr.starts_with("https://") {
        return Err(Failure::usage(
            "https:// addresses are not supported by the admin CLI yet; use http:// \
             (e.g. through a port-forward to the pod)",
        ));
    }
    let full = if addr.starts_with("http://") {
        addr.to_string()
    } else if addr.contains("://") {
        return Err(Failure::usage(format!(
            "--addr {addr}: only http:// is supported"
        )));
    } else {
        format!("http://{addr}")
    };
    full.parse::<tonic::transport::Uri>()
        .ok()
        .filter(|u| u.host().is_some())
        .ok_or_else(|| Failure::usage(format!("--addr {addr}: not a host:port or http:// URL")))?;
    Ok(full)
}

impl Remote {
    /// Connects to `addr` (already normalized), failing with exit 69 naming it.
    pub async fn connect(addr: &str, key: Option<Zeroizing<String>>) -> Result<Self, Failure> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("UNAVAILABLE: cannot reach {addr}: {e}"),
            )
        };
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| Failure::usage(format!("--addr {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let channel = endpoint.connect().await.map_err(|e| {
            // tonic's top-level message is just "transport error"; the cause says why.
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            unreachable(&cause)
        })?;
        Ok(Remote {
            channel,
            addr: addr.to_string(),
            key,
        })
    }

    fn authed<T>(&self, msg: T) -> Result<Request<T>, Failure> {
        let key = self.key.as_ref().ok_or_else(|| {
            Failure::usage("no API key: pass --key-file FILE or set TESSERA_API_KEY")
        })?;
        let mut req = Request::new(msg);
        let value = MetadataValue::try_from(format!("Bearer {}", key.as_str()))
            .map_err(|_| Failure::usage("the API key holds characters a header cannot carry"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }

    fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel.clone())
    }

    fn keys(&self) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel.clone())
    }

    /// Every API key matching the filters, following pages.
    async fn all_api_keys(
        &self,
        owner: &str,
        environment: &str,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyInfo>, Failure> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = ListApiKeysRequest {
                owner: owner.into(),
                environment: environment.into(),
                include_revoked,
                page_size: PAGE,
                page_token,
            };
            let page = self
                .tokens()
                .list_api_keys(self.authed(req)?)
                .await?
                .into_inner();
            out.extend(page.api_keys);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// `keys list`.
    pub async fn keys_list(
        &self,
        owner: &str,
        environment: &str,
        include_revoked: bool,
        now: i64,
    ) -> Result<Output, Failure> {
        let keys = self
            .all_api_keys(owner, environment, include_revoked)
            .await?;
        let json = json!({
            "api_keys": keys.iter().map(|k| render::api_key_json(k, now)).collect::<Vec<_>>()
        });
        Ok(Output::new(render::api_keys_table(&keys, now), json))
    }

    /// `keys show KEY_ID`: the List RPC has no id filter, so this pages through every
    /// key (revoked ones included) until it meets the id.
    pub async fn keys_show(&self, key_id: &str, now: i64) -> Result<Output, Failure> {
        let keys = self.all_api_keys("", "", true).await?;
        let key = keys.iter().find(|k| k.key_id == key_id).ok_or_else(|| {
            Failure::new(
                exit::NOT_FOUND,
                format!("NOT_FOUND: no API key with id {key_id}"),
            )
        })?;
        Ok(Output::new(
            render::api_key_fields(key, now),
            render::api_key_json(key, now),
        ))
    }

    /// `keys revoke KEY_ID`: RFC 7009 semantics, so an unknown id succeeds too.
    pub async fn keys_revoke(&self, key_id: &str) -> Result<Output, Failure> {
        let req = RevokeRequest {
            token_id: key_id.into(),
            ..RevokeRequest::default()
        };
        self.tokens().revoke(self.authed(req)?).await?;
        Ok(Output::new(
            format!("revoked {key_id}\n"),
            json!({ "revoked": key_id }),
        ))
    }

    /// `keys rotate KEY_ID`: the new key goes to stdout alone (so it can be piped into
    /// a secret store); what happened goes to stderr.
    pub async fn keys_rotate(
        &self,
        key_id: &str,
        overlap: Option<Duration>,
    ) -> Result<Output, Failure> {
        let spec = ApiKeySpec {
            rotate_from: key_id.into(),
            overlap: overlap.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: 0,
            }),
            ..ApiKeySpec::default()
        };
        let req = IssueRequest {
            credential: Some(Credential::ApiKey(spec)),
        };
        let issued = self.tokens().issue(self.authed(req)?).await?.into_inner();
        let note = format!(
            "rotated {key_id} -> {} (new key expires {}); the old key keeps working for the \
             overlap, then stops",
            issued.token_id,
            render::cell_time(&issued.expires_at)
        );
        let json = json!({
            "key_id": issued.token_id,
            "api_key": issued.token,
            "rotated_from": key_id,
            "expires_at": render::json_time(&issued.expires_at),
            "scopes": issued.scopes,
        });
        let mut out = Output::new(format!("{}\n", issued.token), json);
        out.note = Some(note);
        Ok(out)
    }

    /// `clients list`.
    pub async fn clients_list(&self) -> Result<Output, Failure> {
        let mut clients: Vec<ClientInfo> = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = ListClientsRequest {
                page_size: PAGE,
                page_token,
            };
            let page = self
                .tokens()
                .list_clients(self.authed(req)?)
                .await?
                .into_inner();
            clients.extend(page.clients);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let json =
            json!({ "clients": clients.iter().map(render::client_json).collect::<Vec<_>>() });
        Ok(Output::new(render::clients_table(&clients), json))
    }

    /// `signing-keys list`.
    pub async fn signing_keys_list(&self) -> Result<Output, Failure> {
        let keys = self
            .keys()
            .list_signing_keys(self.authed(ListSigningKeysRequest {})?)
            .await?
            .into_inner()
            .keys;
        let json = json!({ "signing_keys": keys.iter().map(render::signing_key_json).collect::<Vec<_>>() });
        Ok(Output::new(render::signing_keys_table(&keys), json))
    }

    /// `signing-keys rotate [--now]`.
    pub async fn signing_keys_rotate(&self, now: bool) -> Result<Output, Failure> {
        let r = self
            .keys()
            .rotate_signing_key(self.authed(RotateSigningKeyRequest { rotate_now: now })?)
            .await?
            .into_inner();
        let at = r.activates_at.map(|t| render::rfc3339(t.seconds));
        Ok(Output::new(
            format!(
                "new signing key {} published; it signs from {}\n",
                r.kid,
                at.as_deref().unwrap_or("-")
            ),
            json!({ "kid": r.kid, "activates_at": at }),
        ))
    }

    /// `signing-keys revoke KID`.
    pub async fn signing_keys_revoke(&self, kid: &str) -> Result<Output, Failure> {
        let active = self
            .keys()
            .revoke_signing_key(self.authed(RevokeSigningKeyRequest { kid: kid.into() })?)
            .await?
            .into_inner()
            .active_kid;
        Ok(Output::new(
            format!("revoked signing key {kid}; signing with {active}\n"),
            json!({ "revoked": kid, "active_kid": active }),
        ))
    }

    /// One page of audit events (newest first) matching `filter`, after `since`.
    async fn audit_page(
        &self,
        filter: &AuditFilter,
        since: Option<Timestamp>,
        page_size: u32,
        page_token: String,
    ) -> Result<(Vec<AuditEvent>, String), Failure> {
        let req = ListAuditEventsRequest {
            subject: filter.subject.clone(),
            key_id: filter.key_id.clone(),
            kind: filter.kind.clone(),
            since,
            until: None,
            page_size,
            page_token,
        };
        let page = self
            .tokens()
            .list_audit_events(self.authed(req)?)
            .await?
            .into_inner();
        Ok((page.events, page.next_page_token))
    }

    /// The newest `n` events, oldest first (as `tail` prints them).
    pub async fn audit_newest(
        &self,
        filter: &AuditFilter,
        n: u32,
    ) -> Result<Vec<AuditEvent>, Failure> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        while (events.len() as u32) < n {
            let want = (n - events.len() as u32).min(PAGE);
            let (page, next) = self.audit_page(filter, None, want, page_token).await?;
            events.extend(page);
            if next.is_empty() {
                break;
            }
            page_token = next;
        }
        events.truncate(n as usize);
        events.reverse();
        Ok(events)
    }

    /// Every event with an id above `after_id` (oldest first). `since` (the instant of
    /// that event) narrows the query; ids are what decide.
    pub async fn audit_after(
        &self,
        filter: &AuditFilter,
        after_id: u64,
        since: Option<Timestamp>,
    ) -> Result<Vec<AuditEvent>, Failure> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = self.audit_page(filter, since, PAGE, page_token).await?;
            let reached_old = page.iter().any(|e| e.id <= after_id);
            events.extend(page.into_iter().filter(|e| e.id > after_id));
            if reached_old || next.is_empty() {
                break;
            }
            page_token = next;
        }
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// `status`: health (open), the JWKS (open), and with a key, the signing keys.
    pub async fn status(&self) -> Result<Output, Failure> {
        let mut health = HealthClient::new(self.channel.clone());
        let mut services = Vec::new();
        let mut serving = true;
        for service in ["", "tessera.v1.TokenService", "tessera.v1.KeyService"] {
            let state = match health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                Ok(r) => match r.into_inner().status() {
                    ServingStatus::Serving => "SERVING",
                    ServingStatus::NotServing => "NOT_SERVING",
                    ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
                    ServingStatus::Unknown => "UNKNOWN",
                },
                Err(s) if s.code() == Code::NotFound => "SERVICE_UNKNOWN",
                Err(s) => return Err(s.into()),
            };
            serving &= state == "SERVING";
            services.push((
                if service.is_empty() {
                    "server"
                } else {
                    service
                },
                state,
            ));
        }
        let jwks = self
            .keys()
            .get_jwks(GetJwksRequest {})
            .await?
            .into_inner()
            .jwks_json;
        let published: Vec<(String, String)> = serde_json::from_str::<Value>(&jwks)
            .ok()
            .and_then(|v| v.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .map(|k| {
                let s = |f: &str| k.get(f).and_then(Value::as_str).unwrap_or("?").to_string();
                (s("kid"), s("alg"))
            })
            .collect();
        // Signing-key states need tessera:admin; without a key or the scope, say so.
        let signing = match &self.key {
            None => Err("no API key given".to_string()),
            Some(_) => match self
                .keys()
                .list_signing_keys(self.authed(ListSigningKeysRequest {})?)
                .await
            {
                Ok(r) => Ok(r.into_inner().keys),
                Err(s) => Err(format!("{}: {}", code_name(s.code()), s.message())),
            },
        };

        let mut pairs = vec![("address", self.addr.clone())];
        for (name, state) in &services {
            pairs.push((name, state.to_string()));
        }
        pairs.push((
            "jwks",
            format!(
                "{} key(s): {}",
                published.len(),
                published
                    .iter()
                    .map(|(kid, alg)| format!("{kid} ({alg})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        let active = match &signing {
            Ok(keys) => keys
                .iter()
                .find(|k| k.state == "active")
                .map(|k| {
                    format!(
                        "{} ({}, since {})",
                        k.kid,
                        k.alg,
                        render::cell_time(&k.activates_at)
                    )
                })
                .unwrap_or_else(|| "none".into()),
            Err(why) => format!("unknown ({why})"),
        };
        pairs.push(("active signing key", active));
        let json = json!({
            "address": self.addr,
            "serving": serving,
            "health": services.iter().map(|(n, s)| (n.to_string(), Value::from(*s))).collect::<serde_json::Map<_, _>>(),
            "jwks": published.iter().map(|(kid, alg)| json!({"kid": kid, "alg": alg})).collect::<Vec<_>>(),
            "signing_keys": match &signing {
                Ok(keys) => Value::Array(keys.iter().map(render::signing_key_json).collect()),
                Err(why) => json!({ "error": why }),
            },
        });
        let mut out = Output::new(render::fields(&pairs), json);
        if !serving {
            out.code = exit::UNAVAILABLE;
        }
        Ok(out)
    }
}

/// The filters `audit tail` passes to ListAuditEvents.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Only events about this subject.
    pub subject: String,
    /// Only events by this caller key id.
    pub key_id: String,
    /// Only this kind.
    pub kind: String,
}
