//! The OAuth grants (`Exchange`) and the OAuth kinds of `Issue` (clients and
//! authorization codes), as [`Authority`] methods, one file per grant. The gRPC handlers and the
//! HTTP token endpoint both call these and only translate; errors come back as
//! [`Error`], whose one table maps it to a gRPC status and to an RFC 6749 error alike.
//!
//! Single-use credentials (authorization codes, refresh tokens) follow one pattern:
//! a read to validate and mint off the writer thread, then ONE store write whose
//! conditional update ("still unused?") decides. Writes are serialized, so of N
//! concurrent uses exactly one wins; every other use is a reuse. A reuse revokes what
//! the credential issued *inside* that write and answers with an error only after
//! the write committed — an `Err` from the write closure would roll the revocation back.
//!
//! Policies:
//! - A concurrent loser counts as a reuse (strict, like node-oidc-provider): after a
//!   race on one refresh token or one code, its whole grant is revoked — except a
//!   refresh token raced by one client inside the grace period (below).
//! - A request with invalid parameters (wrong PKCE verifier, client, redirect URI or
//!   scope) never consumes a code or refresh token and never revokes anything
//!   (OAuth 2.1 "Reuse of Authorization Codes").
//! - Refresh grace period (`refresh_reuse_grace`, default 0 = none): for that long
//!   after a refresh token's first use, the same client presenting it again gets the
//!   successor pair of the first use (kept sealed under the master key for the window
//!   only) and nothing is revoked; a concurrent double use by one client then yields
//!   one pair. Any other use of a used token is a reuse. See [`rules::refresh_use`].

mod authorization_code;
mod client_credentials;
mod clients;
mod codes;
mod refresh;
pub(crate) mod rules;
mod token_exchange;

pub use authorization_code::CodeRedemption;
pub use client_credentials::ClientCredentialsRequest;
pub(crate) use clients::ClientKeys;
pub use clients::ClientRegistration;
pub(crate) use codes::CODE_RETENTION;
pub use codes::CodeRequest;
pub use refresh::RefreshRequest;
pub(crate) use refresh::grace_context;
pub use token_exchange::TokenExchangeRequest;

use crate::auth::Caller;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::clients::{self as client_rows, ClientRow};
use crate::store::codes as code_rows;
use crate::store::db::Db;
use crate::store::lineage;
use crate::store::refresh as refresh_rows;
use crate::tokens::check_field;

/// What a grant issued. The secrets are shown once.
#[derive(Debug, Default)]
pub struct Granted {
    /// The access token (JWT).
    pub access_token: Secret,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Unix seconds (`expires_in` = `expires_at − issued_at`).
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// A new refresh token (authorization_code and refresh_token grants), else empty.
    pub refresh_token: Secret,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// RFC 8693 `issued_token_type`; empty except for token exchange.
    pub issued_token_type: &'static str,
}

impl Granted {
    /// A bearer access token and nothing else; grants add what they issue besides.
    fn bearer(jwt: String, now: i64, exp: i64, scopes: Vec<String>) -> Self {
        Granted {
            access_token: Secret::new(jwt),
            token_type: "Bearer",
            issued_at: now,
            expires_at: exp,
            scopes,
            ..Granted::default()
        }
    }
}

/// How the decisive write of a single-use credential ended.
enum Spent {
    /// It was unused: the successor is stored.
    Fresh,
    /// Gone, revoked or expired by the time the write ran: nothing changed.
    Dead,
    /// It had been used: everything it issued is now revoked; these access tokens
    /// must go on the in-memory blocklist.
    Reused(Vec<(String, i64)>),
    /// A refresh token's retry inside the grace period: the first use's successor
    /// pair, still sealed.
    Replayed(Vec<u8>),
}

/// Deletes authorization codes past their retention and lineage links of expired
/// tokens (housekeeping).
pub(crate) fn purge(conn: &Db, now: i64) -> Result<()> {
    code_rows::purge(conn, now - CODE_RETENTION)?;
    lineage::purge(conn, now - 60)?;
    refresh_rows::purge_grace(conn, now)?;
    Ok(())
}

/// The client making a token request: the authenticated caller's key id or the
/// `client_id` parameter; when both are present they must agree.
fn requesting_client(authenticated: Option<&str>, claimed: &str) -> Result<String> {
    check_field("client_id", claimed, false)?;
    match (authenticated, claimed.is_empty()) {
        (Some(p), true) => Ok(p.to_string()),
        (Some(p), false) if p == claimed => Ok(claimed.to_string()),
        (Some(_), false) => Err(Error::Unauthenticated(
            "client_id does not match the authenticated client",
        )),
        (None, false) => Ok(claimed.to_string()),
        (None, true) => Err(Error::Unauthenticated(
            "client_id is required (or authenticate as the client)",
        )),
    }
}

/// A confidential client must have authenticated as itself (`authenticated`: the
/// client the caller's key belongs to); a public one cannot.
fn authenticate(authenticated: Option<&str>, client: &ClientRow) -> Result<()> {
    if client.public {
        return Ok(());
    }
    match authenticated {
        Some(p) if p == client.id => Ok(()),
        _ => Err(Error::Unauthenticated(
            "a confidential client must authenticate with its secret (its API key)",
        )),
    }
}

/// Revokes a family inside a write and blocklists its access tokens and everything
/// exchanged from them; returns what it blocklisted.
fn revoke_family_in(conn: &Db, family_id: &str, now: i64) -> Result<Vec<(String, i64)>> {
    let minted = refresh_rows::revoke_family(conn, family_id, now)?;
    lineage::block_with_descendants(conn, minted, now)
}

impl Authority {
    async fn find_client(&self, id: &str) -> Result<Option<ClientRow>> {
        let id = id.to_string();
        self.store.read(move |c| client_rows::find(c, &id)).await
    }

    /// Who presents a refresh token, for the grace period's "same client" rule: the
    /// client the caller authenticated as, else the `client_id` it named (a public
    /// client), else nobody (empty).
    fn presenter(&self, caller: &Caller, claimed: &str) -> String {
        self.authenticated_client(caller)
            .unwrap_or_else(|| claimed.to_string())
    }

    /// The client the caller authenticated as: its API key's client (a rotated-in
    /// secret stands for its client), else the key's own id; `None` when anonymous.
    pub(crate) fn authenticated_client(&self, caller: &Caller) -> Option<String> {
        caller
            .principal
            .as_ref()
            .map(|p| self.client_keys.client_of(&p.key_id))
    }

    /// After a detected reuse committed: blocklist in memory, count, log.
    fn after_reuse(&self, what: &str, target: &str, blocked: &[(String, i64)]) {
        self.block_in_memory(blocked);
        Metrics::inc(&self.metrics.revoked);
        tracing::warn!(
            %target,
            access_tokens = blocked.len(),
            "{what} presented again: its grant is revoked"
        );
    }
}
