//! The online admin commands: plain gRPC clients of a running server, authenticated
//! like any other caller with `authorization: Bearer <api key>`.
//!
//! Each command returns an [`Output`] (a table for people, a JSON document for
//! machines) or a [`Failure`] carrying the gRPC code and message and the exit code
//! that goes with them.
//!
//! - `failure.rs`      exit codes, and what a failed command tells the operator
//! - `api_keys.rs`     `keys list|show|revoke|rotate`
//! - `clients.rs`      `clients list`
//! - `signing_keys.rs` `signing-keys list|rotate|revoke`
//! - `audit.rs`        the pages `audit tail` reads
//! - `status.rs`       `status`

use std::time::Duration;

use serde_json::Value;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::proto::key_service_client::KeyServiceClient;
use crate::proto::token_service_client::TokenServiceClient;

mod api_keys;
mod audit;
mod clients;
mod failure;
mod signing_keys;
mod status;

pub(crate) use audit::AuditFilter;
pub(crate) use failure::{Failure, code_name, exit};

/// What a command prints: `text` for people, `json` with `--json`; `note` goes to
/// stderr in either mode (context that must not mix with a secret on stdout).
#[derive(Debug)]
pub(crate) struct Output {
    /// Human-readable stdout.
    pub(crate) text: String,
    /// The one JSON document for `--json`.
    pub(crate) json: Value,
    /// Extra lines for stderr.
    pub(crate) note: Option<String>,
    /// Exit code when the command ran but the answer is bad news (`status` of a
    /// server that is not serving).
    pub(crate) code: u8,
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
pub(crate) struct Remote {
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
pub(crate) fn normalize_addr(addr: &str) -> Result<String, Failure> {
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
    pub(crate) async fn connect(
        addr: &str,
        key: Option<Zeroizing<String>>,
    ) -> Result<Self, Failure> {
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
}
