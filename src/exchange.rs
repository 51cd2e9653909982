//! The OAuth grants (`Exchange`) and the OAuth kinds of `Issue` (clients and
//! authorization codes), as more methods on [`Authority`]. The gRPC handlers and the
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
//!   one pair. Any other use of a used token is a reuse. See [`grants::refresh_use`].

use crate::store::db::Db;
use serde_json::{Map, Value};

use crate::apikeys;
use crate::auth::{self, Caller, Principal};
use crate::authority::{AccessTokenRequest, Authority, Issued, Secretish, audit_entry};
use crate::error::{Error, Result};
use crate::grants::{self, ACCESS_TOKEN_TYPE, CODE_TTL, GraceRecord, RefreshUse};
use crate::metrics::{Metrics, Reuse};
use crate::store::apikeys::{self as apikey_rows, ApiKeyRow};
use crate::store::audit;
use crate::store::clients::{self, ClientRow};
use crate::store::codes::{self, CodeRow};
use crate::store::lineage;
use crate::store::refresh::{self, FamilyRow, GraceRow, TokenRow};
use crate::tokens::verify::MAX_TOKEN_LEN;
use crate::tokens::{SERVICE_SCOPE_PREFIX, check_field, normalize_scopes, opaque};

/// Environment label of the API keys that serve as confidential clients' secrets.
pub const CLIENT_KEY_ENVIRONMENT: &str = "oauth";
/// How long a used or expired code is kept (so a late replay still revokes) before
/// housekeeping deletes it, in seconds.
pub const CODE_RETENTION: i64 = 86_400;

/// Which client each rotated-in client secret belongs to. A confidential client's first
/// secret is the API key whose id is the client id; after `rotate_secret_of`, its
/// secret is a new API key with an id of its own, mapped back to the client here so
/// the client id stays stable. Loaded from `client_secrets` at start, updated on every
/// rotation; a key that is not here is its own client.
#[derive(Debug, Default)]
pub struct ClientKeys(std::sync::RwLock<std::collections::HashMap<String, String>>);

impl ClientKeys {
    /// Maps `key_id` to `client_id`.
    pub fn insert(&self, key_id: String, client_id: String) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key_id, client_id);
    }

    /// The client an API key authenticates as: its client for a rotated-in secret,
    /// else the key's own id.
    pub fn client_of(&self, key_id: &str) -> String {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_id)
            .cloned()
            .unwrap_or_else(|| key_id.to_string())
    }
}

/// An OAuth client to register (`Issue(client)`).
#[derive(Debug, Clone, Default)]
pub struct ClientRegistration {
    /// Human label; the owner of a confidential client's API key.
    pub name: String,
    /// A public client has no secret (SPAs, native apps); a confidential one gets an
    /// API key as its secret.
    pub public: bool,
    /// Redirect URIs: `https`, or `http` on a loopback IP literal. Matched exactly.
    pub redirect_uris: Vec<String>,
    /// The most an authorization code for this client may carry (no `tessera:*`).
    pub scopes: Vec<String>,
}

/// An authorization code to mint (`Issue(authorization_code)`), asked for by the login
/// front end once it has authenticated `subject`.
#[derive(Debug, Clone, Default)]
pub struct CodeRequest {
    /// A registered client.
    pub client_id: String,
    /// One of the client's redirect URIs (a loopback one may differ in its port).
    pub redirect_uri: String,
    /// The authenticated user.
    pub subject: String,
    /// Scopes ⊆ the client's; none means all of the client's.
    pub scopes: Vec<String>,
    /// PKCE challenge: BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: String,
    /// Must be `S256`.
    pub code_challenge_method: String,
}

/// A `client_credentials` grant.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentialsRequest {
    /// Optional; if given, must be the authenticated key's id.
    pub client_id: String,
    /// Scopes ⊆ the key's; none means all of the key's but `tessera:*`.
    pub scopes: Vec<String>,
    /// `aud`; none means the key's own id.
    pub audience: Vec<String>,
}

/// A `refresh_token` grant.
#[derive(Debug, Default)]
pub struct RefreshRequest {
    /// Optional; if given, must be the client the token was issued to.
    pub client_id: String,
    /// The refresh token.
    pub refresh_token: Secretish,
    /// Narrower scopes for this access token; none means the grant's.
    pub scopes: Vec<String>,
}

/// An `authorization_code` grant.
#[derive(Debug, Default)]
pub struct CodeRedemption {
    /// The client; may be left empty when the caller authenticated as it.
    pub client_id: String,
    /// The code.
    pub code: Secretish,
    /// PKCE verifier.
    pub code_verifier: Secretish,
    /// Exactly the redirect URI of the authorization request.
    pub redirect_uri: String,
}

/// An RFC 8693 token exchange.
#[derive(Debug, Default)]
pub struct TokenExchangeRequest {
    /// An access token of ours.
    pub subject_token: Secretish,
    /// Must be [`ACCESS_TOKEN_TYPE`].
    pub subject_token_type: String,
    /// `aud` of the new token, each in the caller key's `exchange_audiences`; none
    /// means the caller's own key id.
    pub audience: Vec<String>,
    /// Scopes ⊆ the subject token's; none means the subject token's.
    pub scopes: Vec<String>,
}

/// What a grant issued. The secrets are shown once.
#[derive(Debug, Default)]
pub struct Granted {
    /// The access token (JWT).
    pub access_token: Secretish,
    /// Its jti.
    pub jti: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Unix seconds (`expires_in` = `expires_at − issued_at`).
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// A new refresh token (authorization_code and refresh_token grants), else empty.
    pub refresh_token: Secretish,
    /// Unix seconds, 0 without a refresh token.
    pub refresh_expires_at: i64,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// RFC 8693 `issued_token_type`; empty except for token exchange.
    pub issued_token_type: &'static str,
}

impl Granted {
    /// A bearer access token and nothing else; grants add what they issue besides.
    fn bearer(jwt: String, jti: String, now: i64, exp: i64, scopes: Vec<String>) -> Self {
        Granted {
            access_token: Secretish(jwt),
            jti,
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

/// A refresh token's successor pair as sealed for the grace period. Zeroized
/// plaintext only; what is stored is its AES-256-GCM sealing.
#[derive(serde::Serialize, serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct SuccessorPair {
    access_token: String,
    jti: String,
    issued_at: i64,
    expires_at: i64,
    refresh_token: String,
    refresh_expires_at: i64,
    scopes: Vec<String>,
}

/// The sealing context of a used refresh token's successor pair: its hash, so a
/// sealed pair cannot be moved to another token's row and opened there. `reseal`
/// seals the same rows again under a new master key.
pub(crate) fn grace_context(used_hash: &[u8]) -> String {
    use base64::Engine;
    format!(
        "refresh-grace:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(used_hash)
    )
}

/// Deletes authorization codes past their retention and lineage links of expired
/// tokens (housekeeping).
pub(crate) fn purge(conn: &Db, now: i64) -> Result<()> {
    codes::purge(conn, now - CODE_RETENTION)?;
    lineage::purge(conn, now - 60)?;
    refresh::purge_grace(conn, now)?;
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
    let minted = refresh::revoke_family(conn, family_id, now)?;
    lineage::block_with_descendants(conn, minted, now)
}

impl Authority {
    async fn find_client(&self, id: &str) -> Result<Option<ClientRow>> {
        let id = id.to_string();
        self.store.read(move |c| clients::find(c, &id)).await
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

    /// Checks client credentials sent to the HTTP token endpoint (`client_secret_basic`
    /// or `client_secret_post`): the secret is the client's API key and `client_id`
    /// its id. The principal goes into the [`Caller`] handed to the grant methods.
    pub fn authenticate_client(&self, client_id: &str, secret: &str) -> Result<Principal> {
        let c = self
            .callers
            .check(secret, self.clock.now())
            .filter(|c| self.client_keys.client_of(&c.row.id) == client_id)
            .ok_or(Error::Unauthenticated("client authentication failed"))?;
        Ok(Principal::from(&*c))
    }

    /// Registers an OAuth client (admin only). A confidential client also gets an API
    /// key (owner = the client's name, environment `oauth`, the client's scopes): its id
    /// is the `client_id`, its text the client secret, returned once in `token`.
    pub async fn register_client(
        &self,
        caller: &Caller,
        reg: ClientRegistration,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("name", &reg.name, true)?;
        if reg.redirect_uris.is_empty() || reg.redirect_uris.len() > grants::MAX_REDIRECT_URIS {
            return Err(Error::InvalidArgument(format!(
                "redirect_uris: between 1 and {} entries",
                grants::MAX_REDIRECT_URIS
            )));
        }
        let mut redirect_uris: Vec<String> = Vec::with_capacity(reg.redirect_uris.len());
        for u in reg.redirect_uris {
            grants::check_redirect_registration(&u)?;
            if !redirect_uris.contains(&u) {
                redirect_uris.push(u);
            }
        }
        let scopes = normalize_scopes(&reg.scopes)?;
        if scopes.iter().any(|s| s.starts_with(SERVICE_SCOPE_PREFIX)) {
            return Err(Error::InvalidArgument(
                "tessera:* scopes cannot be given to an OAuth client".into(),
            ));
        }
        let now = self.clock.now();
        let (id, secret) = if reg.public {
            (opaque::public_id(), None)
        } else {
            let (id, key) = apikeys::generate(CLIENT_KEY_ENVIRONMENT);
            (id, Some(key))
        };
        let key_row = secret.as_ref().map(|k| ApiKeyRow {
            id: id.clone(),
            secret_hash: apikeys::hash(k.expose()),
            owner: reg.name.clone(),
            name: "oauth-client".into(),
            environment: CLIENT_KEY_ENVIRONMENT.into(),
            scopes: scopes.clone(),
            exchange_audiences: Vec::new(),
            created_at: now,
            expires_at: now + self.config.api_key_ttl.as_secs() as i64,
            revoked_at: None,
            rate_limit: None,
        });
        let client = ClientRow {
            id: id.clone(),
            name: reg.name,
            public: reg.public,
            redirect_uris,
            scopes: scopes.clone(),
            created_at: now,
        };
        let entry = audit_entry(caller, now, "client.registered", &id)
            .with("name", client.name.clone())
            .with("public", client.public)
            .with("scopes", scopes.clone())
            .with("redirect_uris", client.redirect_uris.clone());
        let stored_key = key_row.clone();
        self.store
            .write(move |c| {
                if let Some(k) = &stored_key {
                    apikey_rows::insert(c, k)?;
                }
                clients::insert(c, &client)?;
                if let Some(k) = &stored_key {
                    clients::add_secret(c, &k.id, &client.id)?;
                }
                audit::append(c, &entry)
            })
            .await?;
        let expires_at = key_row.as_ref().map_or(0, |k| k.expires_at);
        if let Some(k) = key_row {
            self.callers.insert(k);
        }
        Metrics::inc(&self.metrics.issued);
        tracing::info!(client_id = %id, public = reg.public, "OAuth client registered");
        Ok(Issued {
            token: Secretish(secret.map(|k| k.expose().to_string()).unwrap_or_default()),
            token_id: id,
            token_type: "client",
            expires_at,
            scopes,
            ..Issued::default()
        })
    }

    /// Rotates a confidential client's secret (admin only; `Issue(client)` with
    /// `rotate_secret_of`): a new API key with the current secret's owner, name,
    /// environment and scopes becomes the client's secret, for the same client id;
    /// the old secret works for `overlap` (as [`Authority::rotate_api_key`]), then
    /// dies. `NOT_FOUND` for an unknown client, `FAILED_PRECONDITION` for a public
    /// one or when the current secret is revoked or expired (register a new client).
    pub async fn rotate_client_secret(
        &self,
        caller: &Caller,
        client_id: &str,
        overlap: Option<i64>,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ADMIN)?;
        check_field("rotate_secret_of", client_id, true)?;
        let id = client_id.to_string();
        let (client, current) = self
            .store
            .read(move |c| Ok((clients::find(c, &id)?, clients::current_secret(c, &id)?)))
            .await?;
        let client = client
            .ok_or_else(|| Error::NotFound(format!("no OAuth client with id {client_id:?}")))?;
        if client.public {
            return Err(Error::FailedPrecondition(format!(
                "OAuth client {client_id} is public: it has no secret to rotate"
            )));
        }
        let current = current.unwrap_or_else(|| client.id.clone());
        let issued = self
            .rotate_key(
                caller,
                &current,
                overlap,
                crate::authority::ApiKeyRotation::default(),
                Some(client.id.clone()),
            )
            .await?;
        tracing::info!(client_id = %client.id, key_id = %issued.token_id, "client secret rotated");
        Ok(Issued {
            token_id: client.id,
            token_type: "client",
            ..issued
        })
    }

    /// Mints an authorization code (caller needs `tessera:issue`: the login front end,
    /// after it authenticated the user). Bound to client, redirect URI, subject, scopes
    /// and PKCE challenge; lives [`CODE_TTL`] seconds; single use.
    pub async fn issue_authorization_code(
        &self,
        caller: &Caller,
        req: CodeRequest,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ISSUE)?;
        check_field("client_id", &req.client_id, true)?;
        check_field("subject", &req.subject, true)?;
        if req.redirect_uri.is_empty() {
            return Err(Error::InvalidArgument("redirect_uri is required".into()));
        }
        grants::check_code_challenge(&req.code_challenge, &req.code_challenge_method)?;
        let client = self
            .find_client(&req.client_id)
            .await?
            .ok_or(Error::NotFound("no OAuth client has this client_id".into()))?;
        if !client
            .redirect_uris
            .iter()
            .any(|r| grants::redirect_uri_matches(r, &req.redirect_uri))
        {
            return Err(Error::InvalidArgument(
                "redirect_uri is not registered for this client (exact match required)".into(),
            ));
        }
        let scopes = grants::grant_scopes(&req.scopes, &client.scopes)?;
        let now = self.clock.now();
        let code = opaque::generate(opaque::CODE_PREFIX);
        let row = CodeRow {
            code_hash: opaque::hash(code.expose()),
            id: opaque::public_id(),
            client_id: client.id.clone(),
            redirect_uri: req.redirect_uri,
            subject: req.subject,
            scopes: scopes.clone(),
            code_challenge: req.code_challenge,
            issued_at: now,
            expires_at: now + CODE_TTL,
            used_at: None,
            family_id: None,
            access_jti: None,
        };
        let entry = audit_entry(caller, now, "code.issued", &row.id)
            .about(row.subject.clone())
            .with("client_id", row.client_id.clone())
            .with("scopes", scopes.clone());
        let code_id = row.id.clone();
        let expires_at = row.expires_at;
        let challenge_seen = self
            .store
            .write(move |c| {
                let seen = codes::challenge_seen(c, &row.code_challenge)?;
                codes::insert(c, &row)?;
                audit::append(c, &entry)?;
                Ok(seen)
            })
            .await?;
        if challenge_seen {
            // RFC 9700 §2.1.1: challenges should be per transaction. Allowed (a front
            // end may retry a lost call), but worth an operator's look.
            tracing::warn!(client_id = %client.id, code_id = %code_id, "code_challenge reused");
        }
        Metrics::inc(&self.metrics.issued);
        Ok(Issued {
            token: Secretish(code.expose().to_string()),
            token_id: code_id,
            token_type: "authorization_code",
            expires_at,
            scopes,
            ..Issued::default()
        })
    }

    /// `client_credentials`: the caller's API key is the credential. `sub` and
    /// `client_id` = the key's id (RFC 9068 §2.2: the client acts on its own behalf),
    /// `owner` = the key's owner, scopes ⊆ the key's (never `tessera:*`), audience as
    /// asked or the key's own id. No refresh token (RFC 6749 §4.4.3).
    pub async fn grant_client_credentials(
        &self,
        caller: &Caller,
        req: ClientCredentialsRequest,
    ) -> Result<Granted> {
        check_field("client_id", &req.client_id, false)?;
        let Some(p) = &caller.principal else {
            if !req.client_id.is_empty()
                && self
                    .find_client(&req.client_id)
                    .await?
                    .is_some_and(|c| c.public)
            {
                return Err(Error::UnauthorizedClient(
                    "a public client cannot use client_credentials".into(),
                ));
            }
            return Err(Error::Unauthenticated(
                "client_credentials needs the caller's API key: authorization: Bearer <api key>",
            ));
        };
        // A rotated-in client secret acts as its client, so `sub` and `client_id`
        // stay the client id across secret rotations.
        let me = self.client_keys.client_of(&p.key_id);
        if !req.client_id.is_empty() && req.client_id != me {
            return Err(Error::Unauthenticated(
                "client_id does not match the authenticated client",
            ));
        }
        let scopes = grants::grant_scopes(&req.scopes, &p.scopes)?;
        let audience = if req.audience.is_empty() {
            vec![me.clone()]
        } else {
            req.audience
        };
        let at = AccessTokenRequest {
            subject: me.clone(),
            audience,
            scopes,
            client_id: me,
            owner: Some(p.owner.clone()),
            ..AccessTokenRequest::default()
        };
        let scopes = self.check_access_request(&at)?;
        let now = self.clock.now();
        let lifetime = self.access_lifetime(None, &scopes)?;
        let (jwt, jti, exp) = self.mint(&at, &scopes, lifetime, None, now)?;
        let entry = audit_entry(caller, now, "token.exchanged", &jti)
            .about(at.subject.clone())
            .with("grant", "client_credentials")
            .with("owner", p.owner.clone())
            .with("audience", at.audience.clone())
            .with("scopes", scopes.clone());
        // As for Issue: the token has no durable state of its own, so its audit record
        // is group-committed behind the answer.
        self.store.audit_later(entry).await?;
        Metrics::inc(&self.metrics.issued);
        Ok(Granted::bearer(jwt, jti, now, exp, scopes))
    }

    /// `refresh_token`: rotation. The token must be unused, unexpired (idle and
    /// absolute) and in a live family; it is marked used and its successor stored in
    /// the same write. Presenting a used token revokes the whole family and every access
    /// token minted from it (RFC 9700 §4.14.2), audited as `refresh.reuse_detected`.
    /// Narrower scopes apply to this access token only; the grant keeps its scopes.
    /// If the family's client is a registered confidential client, the caller must
    /// authenticate as it.
    pub async fn grant_refresh_token(
        &self,
        caller: &Caller,
        req: RefreshRequest,
    ) -> Result<Granted> {
        let text = req.refresh_token.0.as_str();
        if text.is_empty() {
            return Err(Error::InvalidArgument("refresh_token is required".into()));
        }
        if !req.client_id.is_empty() {
            // Named and authenticated client must agree.
            requesting_client(self.authenticated_client(caller).as_deref(), &req.client_id)?;
        }
        if !opaque::well_formed(text, opaque::REFRESH_PREFIX) {
            return Err(Error::InvalidGrant("unknown refresh token"));
        }
        let hash = opaque::hash(text);
        let authenticated = self.authenticated_client(caller);
        let caller_key = authenticated.clone();
        let (found, family_client, caller_is_other_client) = self
            .store
            .read(move |c| {
                let Some((t, f)) = refresh::find(c, &hash)? else {
                    return Ok((None, None, false));
                };
                let fc = clients::find(c, &f.client_id)?;
                let other = match caller_key {
                    Some(k) if k != f.client_id => clients::find(c, &k)?.is_some(),
                    _ => false,
                };
                Ok((Some((t, f)), fc, other))
            })
            .await?;
        let Some((token, family)) = found else {
            return Err(Error::InvalidGrant("unknown refresh token"));
        };

        // Client binding (OAuth 2.1 §4.3.1): a confidential client authenticates; no
        // other client may use the token.
        if let Some(c) = family_client.as_ref().filter(|c| !c.public) {
            authenticate(authenticated.as_deref(), c)?;
        }
        if caller_is_other_client
            || (!req.client_id.is_empty() && req.client_id != family.client_id)
        {
            return Err(Error::InvalidGrant(
                "refresh token was issued to another client",
            ));
        }
        if family.revoked_at.is_some() {
            return Err(Error::InvalidGrant("refresh token has been revoked"));
        }
        let scopes = grants::grant_scopes(&req.scopes, &family.scopes)?;
        let now = self.clock.now();
        let reused = token.used_at.is_some();
        if !reused && (now >= token.expires_at || now >= family.absolute_expires_at) {
            return Err(Error::InvalidGrant("refresh token has expired"));
        }

        // Mint the successor off the writer thread; the write decides whether it counts.
        let mut minted = None;
        if !reused {
            let at = AccessTokenRequest {
                subject: family.subject.clone(),
                audience: family.audience.clone(),
                claims: serde_json::from_str::<Map<String, Value>>(&family.claims)
                    .map_err(Error::internal)?,
                client_id: family.client_id.clone(),
                ..AccessTokenRequest::default()
            };
            let lifetime = self.access_lifetime(None, &scopes)?;
            let (jwt, jti, exp) = self.mint(&at, &scopes, lifetime, None, now)?;
            let rt = opaque::generate(opaque::REFRESH_PREFIX);
            let row = TokenRow {
                token_hash: opaque::hash(rt.expose()),
                family_id: family.id.clone(),
                id: opaque::public_id(),
                issued_at: now,
                expires_at: (now + self.config.refresh_token_ttl.as_secs() as i64)
                    .min(family.absolute_expires_at),
                used_at: None,
            };
            minted = Some((jwt, jti, exp, rt, row));
        }
        // The first use's successor pair, sealed now (off the writer thread) in case
        // the same client retries within the grace period; stored only if this use wins.
        let grace = self.config.refresh_reuse_grace.as_secs() as i64;
        let presenter = self.presenter(caller, &req.client_id);
        let kept = match &minted {
            Some((jwt, jti, exp, rt, row)) if grace > 0 => {
                let pair = SuccessorPair {
                    access_token: jwt.clone(),
                    jti: jti.clone(),
                    issued_at: now,
                    expires_at: *exp,
                    refresh_token: rt.expose().to_string(),
                    refresh_expires_at: row.expires_at,
                    scopes: scopes.clone(),
                };
                let plain =
                    zeroize::Zeroizing::new(serde_json::to_vec(&pair).map_err(Error::internal)?);
                Some(GraceRow {
                    token_hash: hash,
                    family_id: family.id.clone(),
                    presenter: presenter.clone(),
                    successor_hash: row.token_hash,
                    sealed: self.keys.seal_secret(&grace_context(&hash), &plain)?,
                    expires_at: now.saturating_add(grace),
                })
            }
            _ => None,
        };
        let successor = minted
            .as_ref()
            .map(|(_, jti, exp, _, row)| (row.clone(), jti.clone(), *exp));
        let rotated = audit_entry(caller, now, "refresh.rotated", &family.id)
            .about(family.subject.clone())
            .with("used", token.id.clone())
            .with("new", successor.as_ref().map_or("", |s| s.0.id.as_str()))
            .with("jti", successor.as_ref().map_or("", |s| s.1.as_str()))
            .with("scopes", scopes.clone());
        let retried = audit_entry(caller, now, "refresh.grace_retry", &family.id)
            .about(family.subject.clone())
            .with("used", token.id.clone());
        let reuse = audit_entry(caller, now, "refresh.reuse_detected", &family.id)
            .about(family.subject.clone())
            .with("used", token.id.clone())
            .with("family_revoked", true);
        let spent = self
            .store
            .write(move |c| {
                let Some((t, f)) = refresh::find(c, &hash)? else {
                    return Ok(Spent::Dead);
                };
                if f.revoked_at.is_some() {
                    return Ok(Spent::Dead);
                }
                if t.used_at.is_none() && (now >= t.expires_at || now >= f.absolute_expires_at) {
                    return Ok(Spent::Dead);
                }
                if let Some((row, jti, exp)) = successor
                    && refresh::mark_used(c, &hash, now)?
                {
                    refresh::insert_token(c, &row)?;
                    refresh::record_access_token(c, &f.id, &jti, exp)?;
                    if let Some(g) = &kept {
                        refresh::insert_grace(c, g)?;
                    }
                    audit::append(c, &rotated)?;
                    return Ok(Spent::Fresh);
                }
                // Used before: a retry inside the grace period, or a replay (or the
                // loser of a race from another client) that revokes the grant.
                let record = refresh::find_grace(c, &hash)?;
                let decision = grants::refresh_use(
                    t.used_at,
                    t.expires_at.min(f.absolute_expires_at),
                    now,
                    record.as_ref().map(|(g, successor_used)| GraceRecord {
                        presenter: &g.presenter,
                        until: g.expires_at,
                        successor_used: *successor_used,
                    }),
                    &presenter,
                );
                if let (RefreshUse::GraceRetry, Some((g, _))) = (decision, record) {
                    audit::append(c, &retried)?;
                    return Ok(Spent::Replayed(g.sealed));
                }
                let blocked = revoke_family_in(c, &f.id, now)?;
                audit::append(c, &reuse)?;
                Ok(Spent::Reused(blocked))
            })
            .await?;
        match spent {
            Spent::Fresh => {}
            Spent::Dead => {
                return Err(Error::InvalidGrant("refresh token is no longer valid"));
            }
            Spent::Reused(blocked) => {
                self.metrics.reuse(Reuse::RefreshToken);
                self.after_reuse("used refresh token", &family.id, &blocked);
                return Err(Error::InvalidGrant(
                    "refresh token was already used; its grant has been revoked",
                ));
            }
            Spent::Replayed(sealed) => {
                let plain = self.keys.open_secret(&grace_context(&hash), &sealed)?;
                let mut pair: SuccessorPair =
                    serde_json::from_slice(&plain).map_err(Error::internal)?;
                let take = std::mem::take::<String>;
                tracing::info!(family = %family.id, used = %token.id, "refresh token retried inside the grace period: same successor pair");
                return Ok(Granted {
                    refresh_token: Secretish(take(&mut pair.refresh_token)),
                    refresh_expires_at: pair.refresh_expires_at,
                    ..Granted::bearer(
                        take(&mut pair.access_token),
                        take(&mut pair.jti),
                        pair.issued_at,
                        pair.expires_at,
                        std::mem::take(&mut pair.scopes),
                    )
                });
            }
        }
        let Some((jwt, jti, exp, rt, row)) = minted else {
            return Err(Error::internal("refresh rotated without a successor"));
        };
        Metrics::inc(&self.metrics.issued);
        Ok(Granted {
            refresh_token: Secretish(rt.expose().to_string()),
            refresh_expires_at: row.expires_at,
            ..Granted::bearer(jwt, jti, now, exp, scopes)
        })
    }

    /// `authorization_code` with PKCE: the client must be the code's (and authenticate
    /// if confidential), the verifier must match the `S256` challenge, the redirect URI
    /// must repeat the authorization request's exactly, and the code must be unused and
    /// younger than [`CODE_TTL`]. Issues an access token (`aud` = the client id, the
    /// RFC 9068 §3 default resource) and a refresh token in a new family. A second
    /// redemption with otherwise valid parameters revokes what the first one issued.
    pub async fn grant_authorization_code(
        &self,
        caller: &Caller,
        req: CodeRedemption,
    ) -> Result<Granted> {
        let authenticated = self.authenticated_client(caller);
        let client_id = requesting_client(authenticated.as_deref(), &req.client_id)?;
        if req.code.0.is_empty() {
            return Err(Error::InvalidArgument("code is required".into()));
        }
        if req.redirect_uri.is_empty() {
            return Err(Error::InvalidArgument("redirect_uri is required".into()));
        }
        let hash = opaque::hash(&req.code.0);
        let well_formed = opaque::well_formed(&req.code.0, opaque::CODE_PREFIX);
        let (client, code) = self
            .store
            .read(move |c| {
                let code = if well_formed {
                    codes::find(c, &hash)?
                } else {
                    None
                };
                Ok((clients::find(c, &client_id)?, code))
            })
            .await?;
        let client = client.ok_or(Error::Unauthenticated("unknown client"))?;
        authenticate(authenticated.as_deref(), &client)?;
        let code = code.ok_or(Error::InvalidGrant("unknown authorization code"))?;
        if code.client_id != client.id {
            return Err(Error::InvalidGrant(
                "authorization code was issued to another client",
            ));
        }
        if code.redirect_uri != req.redirect_uri {
            return Err(Error::InvalidGrant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        grants::verify_pkce(&req.code_verifier.0, &code.code_challenge)?;
        let now = self.clock.now();
        let reused = code.used_at.is_some();
        if !reused && now >= code.expires_at {
            return Err(Error::InvalidGrant("authorization code has expired"));
        }

        let mut minted = None;
        if !reused {
            let at = AccessTokenRequest {
                subject: code.subject.clone(),
                audience: vec![client.id.clone()],
                client_id: client.id.clone(),
                ..AccessTokenRequest::default()
            };
            let lifetime = self.access_lifetime(None, &code.scopes)?;
            let (jwt, jti, exp) = self.mint(&at, &code.scopes, lifetime, None, now)?;
            let family = FamilyRow {
                id: opaque::public_id(),
                subject: code.subject.clone(),
                client_id: client.id.clone(),
                audience: at.audience.clone(),
                scopes: code.scopes.clone(),
                claims: "{}".into(),
                created_at: now,
                absolute_expires_at: now + self.config.refresh_family_ttl.as_secs() as i64,
                revoked_at: None,
            };
            let rt = opaque::generate(opaque::REFRESH_PREFIX);
            let row = TokenRow {
                token_hash: opaque::hash(rt.expose()),
                family_id: family.id.clone(),
                id: opaque::public_id(),
                issued_at: now,
                expires_at: (now + self.config.refresh_token_ttl.as_secs() as i64)
                    .min(family.absolute_expires_at),
                used_at: None,
            };
            minted = Some((jwt, jti, exp, rt, row, family));
        }
        let issue = minted
            .as_ref()
            .map(|(_, jti, exp, _, row, family)| (family.clone(), row.clone(), jti.clone(), *exp));
        let redeemed = audit_entry(caller, now, "code.redeemed", &code.id)
            .about(code.subject.clone())
            .with("client_id", client.id.clone())
            .with("scopes", code.scopes.clone())
            .with("jti", issue.as_ref().map_or("", |i| i.2.as_str()))
            .with(
                "refresh_family",
                issue.as_ref().map_or("", |i| i.0.id.as_str()),
            );
        let replayed = audit_entry(caller, now, "code.reuse_detected", &code.id)
            .about(code.subject.clone())
            .with("client_id", client.id.clone())
            .with("issued_revoked", true);
        let spent = self
            .store
            .write(move |c| {
                let Some(cur) = codes::find(c, &hash)? else {
                    return Ok(Spent::Dead);
                };
                if let Some((family, row, jti, exp)) = issue
                    && codes::redeem(c, &hash, now, &family.id, &jti, exp)?
                {
                    refresh::insert_family(c, &family)?;
                    refresh::insert_token(c, &row)?;
                    refresh::record_access_token(c, &family.id, &jti, exp)?;
                    audit::append(c, &redeemed)?;
                    return Ok(Spent::Fresh);
                }
                if cur.used_at.is_none() {
                    // Expired between the read and this write.
                    return Ok(Spent::Dead);
                }
                // Used before (a replay, or the loser of a race): revoke what it issued.
                let mut roots = match &cur.family_id {
                    Some(f) => refresh::revoke_family(c, f, now)?,
                    None => Vec::new(),
                };
                roots.extend(cur.access_jti.clone());
                let blocked = lineage::block_with_descendants(c, roots, now)?;
                audit::append(c, &replayed)?;
                Ok(Spent::Reused(blocked))
            })
            .await?;
        match spent {
            Spent::Fresh => {}
            Spent::Dead => return Err(Error::InvalidGrant("authorization code has expired")),
            Spent::Replayed(_) => {
                return Err(Error::internal("authorization codes have no grace period"));
            }
            Spent::Reused(blocked) => {
                self.metrics.reuse(Reuse::AuthorizationCode);
                self.after_reuse("used authorization code", &code.id, &blocked);
                return Err(Error::InvalidGrant(
                    "authorization code was already used; what it issued has been revoked",
                ));
            }
        }
        let Some((jwt, jti, exp, rt, row, _)) = minted else {
            return Err(Error::internal("code redeemed without tokens"));
        };
        Metrics::inc(&self.metrics.issued);
        Ok(Granted {
            refresh_token: Secretish(rt.expose().to_string()),
            refresh_expires_at: row.expires_at,
            ..Granted::bearer(jwt, jti, now, exp, code.scopes)
        })
    }

    /// RFC 8693 token exchange, on behalf of a user: a service (the caller's API key)
    /// that the user's access token was issued to trades it for a token to call the
    /// next hop. The caller must be an audience of the subject token (its key id or its
    /// key's name is in `aud`), and every requested audience must be in the key's
    /// `exchange_audiences` (empty: the key may not exchange at all); none requested
    /// means the caller's own id. The subject token gets the full check (signature,
    /// claims, blocklist, version); the new token keeps its `sub`, `ver`, `owner` and
    /// extra claims, has scopes ⊆ its scopes, expires no later than it, and names the
    /// caller in `act` (nesting the subject token's own `act`). No refresh token.
    ///
    /// The new token's lineage is recorded in the write that re-checks, in the store,
    /// that the subject token is still live: a revocation committed before it refuses
    /// the exchange, one committed after it reaches the new token.
    pub async fn grant_token_exchange(
        &self,
        caller: &Caller,
        req: TokenExchangeRequest,
    ) -> Result<Granted> {
        let Some(p) = &caller.principal else {
            return Err(Error::Unauthenticated(
                "token exchange needs the acting service's API key: authorization: Bearer <api key>",
            ));
        };
        if req.subject_token.0.is_empty() {
            return Err(Error::InvalidArgument("subject_token is required".into()));
        }
        if req.subject_token_type != ACCESS_TOKEN_TYPE {
            return Err(Error::InvalidArgument(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE}"
            )));
        }
        if req.subject_token.0.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidArgument(format!(
                "subject_token longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let key = self
            .callers
            .get(&p.key_id)
            .ok_or(Error::Unauthenticated("the calling API key is not live"))?;
        if key.row.exchange_audiences.is_empty() {
            return Err(Error::InvalidTarget(
                "this API key may not exchange tokens: its exchange_audiences list is empty".into(),
            ));
        }
        let audience =
            grants::exchange_audience(&req.audience, &key.row.id, &key.row.exchange_audiences)?;
        let (subject, _) = self.check_access_token(&req.subject_token.0).map_err(|r| {
            self.metrics.inactive(r);
            tracing::debug!(reason = r.label(), "token exchange: inactive subject token");
            Error::InactiveSubjectToken
        })?;
        if !grants::is_audience(&subject.aud, &key.row.id, &key.row.name) {
            return Err(Error::InvalidTarget(
                "the calling service is not an audience of the subject token: only a service \
                 the token was issued to may exchange it"
                    .into(),
            ));
        }
        let scopes = grants::grant_scopes(&req.scopes, &subject.scopes())?;
        let act = grants::actor_claim(&p.owner, &p.key_id, subject.act.as_ref())?;
        let at = AccessTokenRequest {
            subject: subject.sub.clone(),
            audience,
            scopes,
            claims: subject.extra.clone(),
            client_id: p.key_id.clone(),
            owner: subject.owner.clone(),
            ver: Some(subject.ver),
            ..AccessTokenRequest::default()
        };
        let scopes = self.check_access_request(&at)?;
        let now = self.clock.now();
        let lifetime = self.access_lifetime(None, &scopes)?.min(subject.exp - now);
        if lifetime <= 0 {
            return Err(Error::InactiveSubjectToken);
        }
        let (jwt, jti, exp) = self.mint(&at, &scopes, lifetime, Some(act), now)?;
        let entry = audit_entry(caller, now, "token.exchanged", &jti)
            .about(at.subject.clone())
            .with("grant", "token_exchange")
            .with("subject_jti", subject.jti.clone())
            .with("audience", at.audience.clone())
            .with("scopes", scopes.clone());
        let (parent, child) = (subject.jti.clone(), jti.clone());
        let (sub, ver) = (subject.sub.clone(), subject.ver);
        let recorded = self
            .store
            .write(move |c| {
                if !lineage::still_live(c, &parent, &sub, ver)? {
                    return Ok(false);
                }
                lineage::record(c, &parent, &child, exp)?;
                audit::append(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !recorded {
            // Revoked between the check above and this write: the token just signed
            // was never handed out and has no lineage, so it is simply dropped.
            tracing::info!(subject_jti = %subject.jti, "token exchange: subject token revoked meanwhile");
            return Err(Error::InactiveSubjectToken);
        }
        Metrics::inc(&self.metrics.issued);
        Ok(Granted {
            issued_token_type: ACCESS_TOKEN_TYPE,
            ..Granted::bearer(jwt, jti, now, exp, scopes)
        })
    }
}
