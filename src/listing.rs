//! What an operator can see and do to what exists: the List RPCs, emergency
//! signing-key revocation, as more [`Authority`] methods (all `tessera:admin`).
//!
//! Paging is newest first by a keyset cursor (never an offset, so a page boundary does
//! not shift when rows are added). The cursor travels as an opaque page token carrying
//! an HMAC under a key made at start-up and bound to the list and its filters: a token
//! that was altered, comes from another list or filter set, or from before a restart
//! is `INVALID_ARGUMENT` (start the listing again).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;

use crate::auth::{self, Caller};
use crate::authority::{Authority, audit_entry};
use crate::error::{Error, Result};
use crate::store::apikeys::{self as apikey_rows, ApiKeyFilter, ApiKeyListing};
use crate::store::audit::{self, AuditEntry, AuditFilter};
use crate::store::clients::{self, ClientRow};
use crate::store::keys::KeyListing;
use crate::tokens::check_field;

/// Page size when the request gives none.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page; a larger request is clamped to it (as Google's AIP-158 advises).
pub(crate) const MAX_PAGE_SIZE: u32 = 500;

/// The page size to use for a requested one.
pub(crate) fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Makes and checks page tokens.
pub(crate) struct PageTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens([redacted])")
    }
}

impl PageTokens {
    /// A fresh key: tokens are good for this process's lifetime.
    pub(crate) fn new() -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| Error::internal("no randomness for the page-token key"))?;
        Ok(PageTokens { key })
    }

    fn signed(list: &str, filters: &str, cursor: &str) -> Vec<u8> {
        // NUL cannot occur in a validated filter, so the fields cannot run together.
        format!("{list}\0{filters}\0{cursor}").into_bytes()
    }

    /// The token for resuming `list` (with these `filters`) after `cursor`.
    pub(crate) fn make(&self, list: &str, filters: &str, cursor: &str) -> String {
        let tag = hmac::sign(&self.key, &Self::signed(list, filters, cursor));
        format!("{}.{}", B64.encode(cursor), B64.encode(tag.as_ref()))
    }

    /// The cursor in `token`, if this service made it for `list` with `filters`.
    pub(crate) fn open(&self, list: &str, filters: &str, token: &str) -> Result<String> {
        let bad = || {
            Error::InvalidArgument(
                "page_token is not one this service handed out for this list and these filters (or it predates a restart): start again without it".into(),
            )
        };
        let (cursor, tag) = token.split_once('.').ok_or_else(bad)?;
        let cursor =
            String::from_utf8(B64.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
        let tag = B64.decode(tag).map_err(|_| bad())?;
        hmac::verify(&self.key, &Self::signed(list, filters, &cursor), &tag).map_err(|_| bad())?;
        Ok(cursor)
    }
}

/// `created_at:id` cursors of the API-key and client lists.
fn split_cursor(c: &str) -> Result<(i64, &str)> {
    c.split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id)))
        .ok_or_else(|| Error::internal("malformed signed cursor"))
}

/// One page and the token for the next (empty on the last page).
pub(crate) type Page<T> = (Vec<T>, String);

fn filter_text(fields: &[&str]) -> String {
    fields.join("\u{1}")
}

fn check_kind(kind: &str) -> Result<()> {
    if kind.is_empty() || audit::KINDS.contains(&kind) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "unknown audit event kind {kind:?}; known kinds: {}",
        audit::KINDS.join(", ")
    )))
}

impl Authority {
    /// `ListApiKeys`: newest first, never a secret or hash.
    pub(crate) async fn list_api_keys(
        &self,
        caller: &Caller,
        filter: ApiKeyFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<ApiKeyListing>> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("owner", &filter.owner, false)?;
        check_field("environment", &filter.environment, false)?;
        let size = self::page_size(page_size);
        let filters = filter_text(&[
            &filter.owner,
            &filter.environment,
            if filter.include_revoked { "1" } else { "0" },
        ]);
        let cursor = match page_token {
            "" => None,
            t => Some(self.page_tokens.open("api_keys", &filters, t)?),
        };
        let now = self.clock.now();
        let mut rows = self
            .store
            .read(move |c| {
                let after = cursor.as_deref().map(split_cursor).transpose()?;
                apikey_rows::list(c, &filter, after, now, size + 1)
            })
            .await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map_or(String::new(), |k| {
                self.page_tokens
                    .make("api_keys", &filters, &format!("{}:{}", k.created_at, k.id))
            })
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// `ListClients`: newest first, never a secret.
    pub(crate) async fn list_clients(
        &self,
        caller: &Caller,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<ClientRow>> {
        caller.require(auth::SCOPE_ADMIN)?;
        let size = self::page_size(page_size);
        let cursor = match page_token {
            "" => None,
            t => Some(self.page_tokens.open("clients", "", t)?),
        };
        let mut rows = self
            .store
            .read(move |c| {
                let after = cursor.as_deref().map(split_cursor).transpose()?;
                clients::list(c, after, size + 1)
            })
            .await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map_or(String::new(), |c| {
                self.page_tokens
                    .make("clients", "", &format!("{}:{}", c.created_at, c.id))
            })
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// `ListAuditEvents`: newest first.
    pub(crate) async fn list_audit_events(
        &self,
        caller: &Caller,
        filter: AuditFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<AuditEntry>> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("subject", &filter.subject, false)?;
        check_field("key_id", &filter.caller, false)?;
        check_kind(&filter.kind)?;
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(Error::InvalidArgument("since must be before until".into()));
        }
        let size = self::page_size(page_size);
        let filters = filter_text(&[
            &filter.subject,
            &filter.caller,
            &filter.kind,
            &filter.since.map_or(String::new(), |s| s.to_string()),
            &filter.until.map_or(String::new(), |s| s.to_string()),
        ]);
        let before = match page_token {
            "" => None,
            t => Some(
                self.page_tokens
                    .open("audit", &filters, t)?
                    .parse::<i64>()
                    .map_err(|_| Error::internal("malformed signed cursor"))?,
            ),
        };
        // Issuance records are committed behind their answers: wait for those already
        // answered, so the trail a caller reads includes every call it saw succeed.
        self.store.flush().await?;
        let mut rows = self
            .store
            .read(move |c| audit::list(c, &filter, before, size + 1))
            .await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map_or(String::new(), |e| {
                self.page_tokens.make("audit", &filters, &e.id.to_string())
            })
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// `ListSigningKeys`: every key held, newest first.
    pub(crate) async fn list_signing_keys(&self, caller: &Caller) -> Result<Vec<KeyListing>> {
        caller.require(auth::SCOPE_ADMIN)?;
        self.keys.list(self.clock.now()).await
    }

    /// `RevokeSigningKey`: every token `kid` signed is inactive at once (the verified-
    /// token cache re-checks the key on every hit), it leaves the JWKS, and if it was
    /// signing a fresh key signs from now on. Idempotent; an unknown kid is `NOT_FOUND`.
    /// Returns the kid that signs now.
    pub(crate) async fn revoke_signing_key(&self, caller: &Caller, kid: &str) -> Result<String> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("kid", kid, true)?;
        let now = self.clock.now();
        let entry = audit_entry(caller, now, "key.revoked", kid);
        self.keys
            .revoke(kid, now, entry)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no signing key with kid {kid:?}")))
    }
}
