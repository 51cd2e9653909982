//! The token authority: every operation of the service as a plain async method.
//! gRPC and HTTP handlers only translate to and from these.
//!
//! Write path: validate → one durable store write (with its audit record) → update the
//! in-memory caches → answer. Read path (Introspect, API-key checks): memory only.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::apikeys;
use crate::auth::{self, Caller};
use crate::callers::Callers;
use crate::clock::Clock;
use crate::config::{Config, DatabaseUrl};
use crate::error::{Error, Result};
use crate::keys::seal::{self, MasterKey};
use crate::keys::{Keyring, Rotation};
use crate::listing::PageTokens;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;
use crate::revocation::Revocations;
use crate::store::apikeys::{self as apikey_rows, ApiKeyListing, ApiKeyRow};
use crate::store::audit::{self, AuditEntry};
use crate::store::lineage;
use crate::store::refresh::{self, FamilyRow, TokenRow};
use crate::store::revocation as revocation_rows;
use crate::store::{Location, Store};
use crate::tokens::cache::{self as verified_cache, VerifiedCache};
use crate::tokens::claims::{AccessClaims, REGISTERED};
use crate::tokens::verify::{self, MAX_TOKEN_LEN, Reject, Rules};
use crate::tokens::{self, Jti, check_field, check_list, normalize_scopes, opaque};

/// File the bootstrap admin key is written to, inside the data dir.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// Largest serialized extra-claims object.
pub const MAX_CLAIMS_BYTES: usize = 4096;

/// The service's state and operations.
pub struct Authority {
    /// Configuration.
    pub config: Arc<Config>,
    /// Time.
    pub clock: Clock,
    /// Source of truth.
    pub store: Store,
    /// Signing keys.
    pub keys: Keyring,
    /// Blocklist and token versions (memory).
    pub revocations: Revocations,
    /// Live API keys (memory).
    pub callers: Callers,
    /// Failed authentications per source address.
    pub throttle: crate::ratelimit::FailureThrottle,
    /// Counters.
    pub metrics: Metrics,
    /// Access tokens whose signature and claims already verified.
    pub verified: VerifiedCache,
    /// Signs the List RPCs' page tokens.
    pub page_tokens: PageTokens,
    /// Rotated-in client secrets → their client (memory).
    pub client_keys: crate::exchange::ClientKeys,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// An access token to mint.
#[derive(Debug, Clone, Default)]
pub struct AccessTokenRequest {
    /// `sub`.
    pub subject: String,
    /// `aud` (at least one).
    pub audience: Vec<String>,
    /// Scopes (no `tessera:*`).
    pub scopes: Vec<String>,
    /// Requested lifetime in seconds; capped by configuration.
    pub ttl: Option<i64>,
    /// Extra claims.
    pub claims: Map<String, Value>,
    /// `client_id`; defaults to the caller's key id.
    pub client_id: String,
    /// Also mint a refresh token.
    pub refresh_token: bool,
    /// The `owner` claim. Set by the `client_credentials` grant (and carried through
    /// token exchange); never taken from an `Issue` request.
    pub owner: Option<String>,
    /// The `ver` to stamp; `None` means the subject's current version. A token derived
    /// by exchange keeps its subject token's, so a bump racing the exchange still ends it.
    pub ver: Option<u64>,
}

/// How long a rotated API key keeps working by default (24 h).
pub const DEFAULT_ROTATION_OVERLAP: i64 = 24 * 3600;
/// The longest overlap of a rotation (30 days).
pub const MAX_ROTATION_OVERLAP: i64 = 30 * 24 * 3600;

/// What a rotated API key's successor is to be; empty fields are inherited.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyRotation {
    /// Owner (inherited if empty).
    pub owner: String,
    /// Service name (inherited if empty).
    pub name: String,
    /// Environment (inherited if empty).
    pub environment: String,
    /// Scopes (inherited if empty).
    pub scopes: Vec<String>,
    /// Exchange audiences (inherited if empty).
    pub exchange_audiences: Vec<String>,
    /// Rate limit (inherited if `None`).
    pub rate_limit: Option<RateLimit>,
    /// Lifetime in seconds (default: `api_key_ttl`; never inherited).
    pub ttl: Option<i64>,
}

/// A credential just issued. `token` and `refresh_token` are shown once.
#[derive(Debug, Default)]
pub struct Issued {
    /// The secret.
    pub token: Secretish,
    /// Key id, jti or client id.
    pub token_id: String,
    /// `api_key`, `Bearer`, ...
    pub token_type: &'static str,
    /// Unix seconds.
    pub expires_at: i64,
    /// A refresh token, if one was minted.
    pub refresh_token: Secretish,
    /// Unix seconds.
    pub refresh_expires_at: i64,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

/// A secret on its way to the caller: no `Debug` leak, zeroized on drop.
#[derive(Default, zeroize::ZeroizeOnDrop)]
pub struct Secretish(pub String);

impl std::fmt::Debug for Secretish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What introspection found. `Inactive` carries nothing on purpose.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspection {
    /// Unknown, malformed, forged, expired, revoked, ... — no reason given.
    Inactive,
    /// A live access token.
    AccessToken(Box<AccessClaims>),
    /// A live API key.
    ApiKey(Box<ApiKeyRow>),
    /// A live refresh token.
    RefreshToken(Box<(TokenRow, FamilyRow)>),
}

/// The `tessera:*` scopes that mean something; any other is a typo to refuse.
pub const SERVICE_SCOPES: &[&str] = &[
    auth::SCOPE_ADMIN,
    auth::SCOPE_INTROSPECT,
    auth::SCOPE_ISSUE,
    auth::SCOPE_REVOKE,
];

/// Refuses an unknown `tessera:*` scope: a key with `tessera:isue` would silently lack
/// the right its issuer meant to give.
fn check_service_scopes(scopes: &[String]) -> Result<()> {
    match scopes.iter().find(|s| {
        s.starts_with(tokens::SERVICE_SCOPE_PREFIX) && !SERVICE_SCOPES.contains(&s.as_str())
    }) {
        Some(s) => Err(Error::InvalidArgument(format!(
            "unknown service scope {s:?}: the tessera:* scopes are {}",
            SERVICE_SCOPES.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Is `id` the only live key holding `tessera:admin`?
fn last_live_admin(conn: &crate::store::db::Db, id: &str, now: i64) -> Result<bool> {
    let admins: Vec<String> = apikey_rows::load_live(conn, now)?
        .into_iter()
        .filter(|k| k.scopes.iter().any(|s| s == auth::SCOPE_ADMIN))
        .map(|k| k.id)
        .collect();
    Ok(admins.len() == 1 && admins[0] == id)
}

/// An audit record of `kind` about the credential `token_id`, by this caller; add the
/// subject and details with [`AuditEntry::about`] and [`AuditEntry::with`].
pub(crate) fn audit_entry(caller: &Caller, now: i64, kind: &str, token_id: &str) -> AuditEntry {
    AuditEntry {
        at: now,
        request_id: caller.request_id.clone(),
        caller: caller.audit_id().to_string(),
        kind: kind.into(),
        token_id: token_id.into(),
        ..AuditEntry::default()
    }
}

impl Authority {
    /// Opens the store and keys, fills the caches and bootstraps an admin key on an
    /// empty store.
    pub async fn open(config: Arc<Config>, clock: Clock) -> Result<Self> {
        let store = match config.database() {
            DatabaseUrl::Sqlite(path) => {
                Store::connect(&config.data_dir, Location::Sqlite(&path)).await?
            }
            DatabaseUrl::Postgres(url) => {
                Store::connect(&config.data_dir, Location::Postgres(&url)).await?
            }
        };
        let master = MasterKey::load(&config)?;
        let now = clock.now();
        let retire_window = config.max_access_token_ttl.as_secs() as i64 + 60;
        let keys = Keyring::open(
            store.clone(),
            master,
            config.signing_alg,
            retire_window,
            now,
        )
        .await?;
        let callers = Callers::default();
        let (revocations, versions, live_keys) = store
            .read(move |c| {
                let r = Revocations::with_capacity(revocation_rows::count_blocklist(c, now)?);
                revocation_rows::for_each_blocked(c, now, |jti, exp| {
                    if let Some(j) = tokens::parse_jti(jti) {
                        r.block(j, exp);
                    }
                })?;
                Ok((
                    r,
                    revocation_rows::load_versions(c)?,
                    apikey_rows::load_live(c, now)?,
                ))
            })
            .await?;
        let client_keys = crate::exchange::ClientKeys::default();
        for (key_id, client_id) in store.read(crate::store::clients::rotated_secrets).await? {
            client_keys.insert(key_id, client_id);
        }
        for (subject, v) in versions {
            revocations.set_version(&subject, v);
        }
        for row in live_keys {
            callers.insert(row);
        }
        tracing::info!(
            db = %store.describe(),
            blocklisted = revocations.blocklist_len(),
            "state loaded"
        );
        let throttle = config.auth_throttle();
        let authority = Authority {
            verified: VerifiedCache::new(
                verified_cache::DEFAULT_MAX_ENTRIES,
                verified_cache::DEFAULT_MAX_BYTES,
                clock.clone(),
            ),
            config,
            clock,
            store,
            keys,
            revocations,
            callers,
            throttle: crate::ratelimit::FailureThrottle::new(throttle),
            metrics: Metrics::default(),
            page_tokens: PageTokens::new()?,
            client_keys,
        };
        authority.bootstrap().await?;
        Ok(authority)
    }

    /// On an empty store: installs `TESSERA_BOOTSTRAP_ADMIN_KEY`, or mints an admin key
    /// into `<data dir>/admin.key` (0600). Logs the path, never the key.
    async fn bootstrap(&self) -> Result<()> {
        if self.store.read(apikey_rows::count).await? > 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let (id, text, env, source) = match &self.config.bootstrap_admin_key {
            Some(secret) => {
                let p = apikeys::parse(&secret.0).ok_or_else(|| {
                    Error::InvalidArgument(
                        "TESSERA_BOOTSTRAP_ADMIN_KEY is not a well-formed Tessera API key".into(),
                    )
                })?;
                (
                    p.id.to_string(),
                    secret.0.clone(),
                    p.environment.to_string(),
                    "env",
                )
            }
            None => {
                let (id, key) = apikeys::generate("admin");
                (id, key.expose().to_string(), "admin".to_string(), "file")
            }
        };
        let text = zeroize::Zeroizing::new(text);
        let row = ApiKeyRow {
            id: id.clone(),
            secret_hash: apikeys::hash(&text),
            owner: "bootstrap".into(),
            name: "bootstrap-admin".into(),
            environment: env,
            scopes: vec![auth::SCOPE_ADMIN.to_string()],
            exchange_audiences: Vec::new(),
            created_at: now,
            expires_at: now + self.config.max_api_key_ttl.as_secs() as i64,
            revoked_at: None,
            rate_limit: None,
        };
        let entry = AuditEntry {
            at: now,
            request_id: "-".into(),
            caller: "system".into(),
            kind: "api_key.issued".into(),
            token_id: id.clone(),
            ..AuditEntry::default()
        }
        .with("bootstrap", source)
        .with("scopes", vec![auth::SCOPE_ADMIN]);
        // Check-and-insert in one transaction: of several first starts, one bootstraps.
        let stored = row.clone();
        let inserted = self
            .store
            .write(move |c| {
                if apikey_rows::count(c)? > 0 {
                    return Ok(false);
                }
                apikey_rows::insert(c, &stored)?;
                audit::append(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !inserted {
            return Ok(());
        }
        self.callers.insert(row);
        if source == "file" {
            let path = self.config.data_dir.join(ADMIN_KEY_FILE);
            // A file left from an earlier, deleted database no longer works: replace it.
            let _ = std::fs::remove_file(&path);
            seal::write_private_file(&path, format!("{}\n", &*text).as_bytes())?;
            tracing::warn!(path = %path.display(), key_id = %id, "bootstrap admin API key written (mode 0600)");
        } else {
            tracing::info!(key_id = %id, "bootstrap admin API key installed from TESSERA_BOOTSTRAP_ADMIN_KEY");
        }
        Ok(())
    }

    /// Persists a new API key with its audit record, then makes it live in memory.
    async fn store_api_key(&self, row: ApiKeyRow, entry: AuditEntry) -> Result<()> {
        let stored = row.clone();
        self.store
            .write(move |c| {
                apikey_rows::insert(c, &stored)?;
                audit::append(c, &entry)
            })
            .await?;
        self.callers.insert(row);
        Ok(())
    }

    /// Checks what a new API key is to be and builds its row (with `now` as its
    /// creation time) and text. Nothing is stored.
    #[allow(clippy::too_many_arguments)]
    fn new_api_key(
        &self,
        owner: String,
        name: String,
        environment: String,
        scopes: Vec<String>,
        exchange_audiences: Vec<String>,
        ttl: Option<i64>,
        rate_limit: Option<RateLimit>,
        now: i64,
    ) -> Result<(ApiKeyRow, apikeys::ApiKey)> {
        check_field("owner", &owner, true)?;
        check_field("name", &name, false)?;
        if !apikeys::valid_environment(&environment) {
            return Err(Error::InvalidArgument(
                "environment must be 1-16 characters of [a-z0-9]".into(),
            ));
        }
        let scopes = normalize_scopes(&scopes)?;
        check_service_scopes(&scopes)?;
        check_list(
            "exchange_audiences",
            &exchange_audiences,
            false,
            tokens::MAX_AUDIENCES,
        )?;
        let mut exchange_audiences = exchange_audiences;
        exchange_audiences.sort();
        exchange_audiences.dedup();
        let max = self.config.max_api_key_ttl.as_secs() as i64;
        let ttl = match ttl {
            None => self.config.api_key_ttl.as_secs() as i64,
            Some(t) if t <= 0 => return Err(Error::InvalidArgument("ttl must be positive".into())),
            Some(t) if t > max => {
                return Err(Error::InvalidArgument(format!(
                    "ttl must be at most {max} s"
                )));
            }
            Some(t) => t,
        };
        let (id, key) = apikeys::generate(&environment);
        let row = ApiKeyRow {
            id,
            secret_hash: apikeys::hash(key.expose()),
            owner,
            name,
            environment,
            scopes,
            exchange_audiences,
            created_at: now,
            expires_at: now + ttl,
            revoked_at: None,
            rate_limit,
        };
        Ok((row, key))
    }

    /// Issues an API key (admin only). `exchange_audiences` are the audiences the key
    /// may ask for in a token exchange; empty means it may not exchange at all.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_api_key(
        &self,
        caller: &Caller,
        owner: String,
        name: String,
        environment: String,
        scopes: Vec<String>,
        exchange_audiences: Vec<String>,
        ttl: Option<i64>,
        rate_limit: Option<RateLimit>,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ADMIN)?;
        let now = self.clock.now();
        let (row, key) = self.new_api_key(
            owner,
            name,
            environment,
            scopes,
            exchange_audiences,
            ttl,
            rate_limit,
            now,
        )?;
        let (id, scopes, expires_at) = (row.id.clone(), row.scopes.clone(), row.expires_at);
        let entry = audit_entry(caller, now, "api_key.issued", &id)
            .with("owner", row.owner.clone())
            .with("environment", row.environment.clone())
            .with("scopes", scopes.clone())
            .with("exchange_audiences", row.exchange_audiences.clone())
            .with("rate_limit", rate_limit_detail(row.rate_limit));
        self.store_api_key(row, entry).await?;
        Metrics::inc(&self.metrics.issued);
        tracing::info!(key_id = %id, "API key issued");
        Ok(Issued {
            token: Secretish(key.expose().to_string()),
            token_id: id,
            token_type: "api_key",
            expires_at,
            scopes,
            ..Issued::default()
        })
    }

    /// Rotates API key `from` (admin only, and the caller must hold every scope of
    /// the key, as for revoke): a new key inherits owner, name, environment, scopes
    /// and exchange audiences wherever `next` leaves them empty; the old key keeps
    /// working for `overlap` (default 24 h, at most 30 days), then dies, and is linked
    /// to its successor (`rotated_to`). The new key's `ttl` is its own, not inherited.
    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        from: &str,
        overlap: Option<i64>,
        next: ApiKeyRotation,
    ) -> Result<Issued> {
        self.rotate_key(caller, from, overlap, next, None).await
    }

    /// [`rotate_api_key`](Self::rotate_api_key), or — with `client` — the rotation of
    /// that OAuth client's secret: the same overlap rules, and in the same write the
    /// successor is recorded as the client's current secret. A client's secret is
    /// rotated only as the client's (`rotate_secret_of`), so the mapping never misses.
    pub(crate) async fn rotate_key(
        &self,
        caller: &Caller,
        from: &str,
        overlap: Option<i64>,
        next: ApiKeyRotation,
        client: Option<String>,
    ) -> Result<Issued> {
        let principal = caller.require(auth::SCOPE_ADMIN)?;
        check_field("rotate_from", from, true)?;
        let overlap = match overlap {
            None => DEFAULT_ROTATION_OVERLAP,
            Some(o) if !(0..=MAX_ROTATION_OVERLAP).contains(&o) => {
                return Err(Error::InvalidArgument(format!(
                    "overlap must be between 0 and {MAX_ROTATION_OVERLAP} s (30 days)"
                )));
            }
            Some(o) => o,
        };
        let now = self.clock.now();
        let old = self.live_key_for_rotation(from, now).await?;
        if client.is_none() {
            let key_id = from.to_string();
            let owner = self
                .store
                .read(move |c| crate::store::clients::client_of_secret(c, &key_id))
                .await?;
            if let Some(owner) = owner {
                return Err(Error::FailedPrecondition(format!(
                    "API key {from} is the secret of OAuth client {owner}: rotate it with \
                     Issue(client{{rotate_secret_of: {owner:?}}}) so the client keeps its id"
                )));
            }
        }
        if let Some(missing) = old.scopes.iter().find(|s| !principal.has(s)) {
            return Err(Error::PermissionDenied(format!(
                "rotating API key {from} needs every scope it holds, and this API key lacks {missing}"
            )));
        }
        let pick = |given: String, inherited: &String| {
            if given.is_empty() {
                inherited.clone()
            } else {
                given
            }
        };
        let pick_list = |given: Vec<String>, inherited: &Vec<String>| {
            if given.is_empty() {
                inherited.clone()
            } else {
                given
            }
        };
        let (row, key) = self.new_api_key(
            pick(next.owner, &old.owner),
            pick(next.name, &old.name),
            pick(next.environment, &old.environment),
            pick_list(next.scopes, &old.scopes),
            pick_list(next.exchange_audiences, &old.exchange_audiences),
            next.ttl,
            next.rate_limit.or(old.rate_limit),
            now,
        )?;
        let (id, scopes, expires_at) = (row.id.clone(), row.scopes.clone(), row.expires_at);
        let old_is_admin = old.scopes.iter().any(|s| s == auth::SCOPE_ADMIN);
        let new_is_admin = scopes.iter().any(|s| s == auth::SCOPE_ADMIN);
        let kind = if client.is_some() {
            "client.secret_rotated"
        } else {
            "api_key.rotated"
        };
        let entry = audit_entry(caller, now, kind, &id)
            .with("rotated_from", from)
            .with("client_id", client.clone().unwrap_or_default())
            .with("overlap_seconds", overlap)
            .with("owner", row.owner.clone())
            .with("environment", row.environment.clone())
            .with("scopes", scopes.clone())
            .with("exchange_audiences", row.exchange_audiences.clone())
            .with("rate_limit", rate_limit_detail(row.rate_limit));
        let (stored, old_id, for_client) = (row.clone(), from.to_string(), client.clone());
        let old_expires_at = self
            .store
            .write(move |c| {
                // Checked again inside the write: a concurrent revoke or rotation of
                // the same key may have committed since it was read.
                if old_is_admin && !new_is_admin && last_live_admin(c, &old_id, now)? {
                    return Err(Error::FailedPrecondition(
                        "this is the last live admin API key and its successor would not be an admin key: keep tessera:admin on the new key".into(),
                    ));
                }
                apikey_rows::insert(c, &stored)?;
                let old_exp = match apikey_rows::find_listing(c, &old_id)? {
                    Some(k) if k.revoked_at.is_none() && k.expires_at > now && k.rotated_to.is_none() => {
                        apikey_rows::rotate(c, &old_id, &stored.id, now.saturating_add(overlap))?
                    }
                    _ => None,
                };
                let old_exp = old_exp.ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "API key {old_id} was revoked, expired or rotated meanwhile"
                    ))
                })?;
                if let Some(client) = &for_client {
                    crate::store::clients::add_secret(c, &stored.id, client)?;
                    crate::store::clients::set_current_secret(c, client, &stored.id)?;
                }
                audit::append(c, &entry.with("old_expires_at", old_exp))?;
                Ok(old_exp)
            })
            .await?;
        self.callers.insert(row);
        self.callers.set_expiry(from, old_expires_at);
        if let Some(client) = client {
            self.client_keys.insert(id.clone(), client);
        }
        Metrics::inc(&self.metrics.issued);
        tracing::info!(key_id = %id, rotated_from = %from, old_expires_at, "API key rotated");
        Ok(Issued {
            token: Secretish(key.expose().to_string()),
            token_id: id,
            token_type: "api_key",
            expires_at,
            scopes,
            ..Issued::default()
        })
    }

    /// The key `id` if it may be rotated: `NOT_FOUND` if it never existed,
    /// `FAILED_PRECONDITION` if it is revoked, expired or already rotated.
    async fn live_key_for_rotation(&self, id: &str, now: i64) -> Result<ApiKeyListing> {
        let key_id = id.to_string();
        let found = self
            .store
            .read(move |c| apikey_rows::find_listing(c, &key_id))
            .await?;
        let k = found.ok_or_else(|| Error::NotFound(format!("no API key with id {id:?}")))?;
        if k.revoked_at.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "API key {id} is revoked: issue a new key instead of rotating it"
            )));
        }
        if k.expires_at <= now {
            return Err(Error::FailedPrecondition(format!(
                "API key {id} has expired: issue a new key instead of rotating it"
            )));
        }
        if let Some(next) = &k.rotated_to {
            return Err(Error::FailedPrecondition(format!(
                "API key {id} was already rotated to {next}: rotate that one"
            )));
        }
        Ok(k)
    }

    /// Lifetime of an access token: min(requested or default, every cap of its scopes).
    pub(crate) fn access_lifetime(&self, requested: Option<i64>, scopes: &[String]) -> Result<i64> {
        let cap = self.config.scope_cap(scopes).as_secs() as i64;
        let want = match requested {
            None => self.config.access_token_ttl.as_secs() as i64,
            Some(t) if t <= 0 => return Err(Error::InvalidArgument("ttl must be positive".into())),
            Some(t) => t,
        };
        Ok(want.min(cap))
    }

    /// Checks an access-token request; returns normalized scopes.
    pub(crate) fn check_access_request(&self, req: &AccessTokenRequest) -> Result<Vec<String>> {
        check_field("subject", &req.subject, true)?;
        check_list("audience", &req.audience, true, tokens::MAX_AUDIENCES)?;
        check_field("client_id", &req.client_id, false)?;
        let scopes = normalize_scopes(&req.scopes)?;
        if scopes
            .iter()
            .any(|s| s.starts_with(tokens::SERVICE_SCOPE_PREFIX))
        {
            return Err(Error::InvalidArgument(
                "tessera:* scopes are never put in access tokens".into(),
            ));
        }
        if let Some(k) = req.claims.keys().find(|k| REGISTERED.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "claim {k:?} is set by Tessera, not by the request"
            )));
        }
        if req.claims.keys().any(|k| !tokens::valid_list_entry(k)) {
            return Err(Error::InvalidArgument(format!(
                "claim names must be 1-{} bytes without whitespace, control or invisible characters",
                tokens::MAX_FIELD_LEN
            )));
        }
        if serde_json::to_vec(&req.claims).map_or(true, |v| v.len() > MAX_CLAIMS_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "claims: at most {MAX_CLAIMS_BYTES} bytes of JSON"
            )));
        }
        Ok(scopes)
    }

    /// Issues an access token, and a refresh token if asked (caller needs `tessera:issue`).
    pub async fn issue_access_token(
        &self,
        caller: &Caller,
        mut req: AccessTokenRequest,
    ) -> Result<Issued> {
        let principal = caller.require(auth::SCOPE_ISSUE)?;
        let scopes = self.check_access_request(&req)?;
        if req.client_id.is_empty() {
            req.client_id = principal.key_id.clone();
        }
        let now = self.clock.now();
        let lifetime = self.access_lifetime(req.ttl, &scopes)?;
        let (jwt, jti, exp) = self.mint(&req, &scopes, lifetime, None, now)?;
        let mut issued = Issued {
            token: Secretish(jwt),
            token_id: jti.clone(),
            token_type: "Bearer",
            expires_at: exp,
            scopes: scopes.clone(),
            ..Issued::default()
        };
        let mut entry = audit_entry(caller, now, "token.issued", &jti)
            .about(req.subject.clone())
            .with("audience", req.audience.clone())
            .with("scopes", scopes.clone());
        if req.refresh_token {
            let family = FamilyRow {
                id: opaque::public_id(),
                subject: req.subject.clone(),
                client_id: req.client_id.clone(),
                audience: req.audience.clone(),
                scopes: scopes.clone(),
                claims: Value::Object(req.claims.clone()).to_string(),
                created_at: now,
                absolute_expires_at: now + self.config.refresh_family_ttl.as_secs() as i64,
                revoked_at: None,
            };
            let rt = opaque::generate(opaque::REFRESH_PREFIX);
            let rt_exp = (now + self.config.refresh_token_ttl.as_secs() as i64)
                .min(family.absolute_expires_at);
            let row = TokenRow {
                token_hash: opaque::hash(rt.expose()),
                family_id: family.id.clone(),
                id: opaque::public_id(),
                issued_at: now,
                expires_at: rt_exp,
                used_at: None,
            };
            entry = entry.with("refresh_family", family.id.clone());
            let jti_c = jti.clone();
            self.store
                .write(move |c| {
                    refresh::insert_family(c, &family)?;
                    refresh::insert_token(c, &row)?;
                    refresh::record_access_token(c, &family.id, &jti_c, exp)?;
                    audit::append(c, &entry)
                })
                .await?;
            issued.refresh_token = Secretish(rt.expose().to_string());
            issued.refresh_expires_at = rt_exp;
        } else {
            // A plain access token has no durable state: only its audit record, which
            // need not hold up the answer (see `Store::audit_later`).
            self.store.audit_later(entry).await?;
        }
        Metrics::inc(&self.metrics.issued);
        Ok(issued)
    }

    /// Signs an access token; returns (jwt, jti, exp).
    pub fn mint(
        &self,
        req: &AccessTokenRequest,
        scopes: &[String],
        lifetime: i64,
        act: Option<Value>,
        now: i64,
    ) -> Result<(String, String, i64)> {
        let (_, jti) = tokens::new_jti();
        let exp = now + lifetime;
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: req.subject.clone(),
            aud: req.audience.clone(),
            exp,
            nbf: now,
            iat: now,
            jti: jti.clone(),
            scope: scopes.join(" "),
            client_id: req.client_id.clone(),
            ver: req
                .ver
                .unwrap_or_else(|| self.revocations.version(&req.subject)),
            act,
            owner: req.owner.clone(),
            extra: req.claims.clone(),
        };
        let (jwt, _kid) = self.keys.sign(&claims, now)?;
        Ok((jwt, jti, exp))
    }

    /// The one strict verification policy of this service, at instant `now`.
    fn rules(&self, now: i64) -> Rules<'_> {
        Rules {
            keys: &self.keys,
            issuer: &self.config.issuer,
            max_lifetime: self.config.max_access_token_ttl.as_secs() as i64,
            now,
        }
    }

    /// Verifies an access token fully: signature, claims, blocklist, token version.
    pub fn check_access_token(
        &self,
        token: &str,
    ) -> std::result::Result<(AccessClaims, Jti), Reject> {
        let rules = self.rules(self.clock.now());
        let found = self.verified.verify(token, &rules)?;
        let (claims, jti) = (found.claims.clone(), found.jti);
        if self.revocations.is_blocked(jti) {
            return Err(Reject::Revoked);
        }
        if claims.ver < self.revocations.version(&claims.sub) {
            return Err(Reject::OldVersion);
        }
        Ok((claims, jti))
    }

    /// RFC 7662 introspection (caller needs `tessera:introspect`). Every kind of bad
    /// token is `Inactive`; the reason goes to metrics and debug logs only.
    pub async fn introspect(&self, caller: &Caller, token: &str) -> Result<Introspection> {
        caller.require(auth::SCOPE_INTROSPECT)?;
        if token.is_empty() {
            return Err(Error::InvalidArgument("token is required".into()));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidArgument(format!(
                "token longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        // Fail-static, then closed: memory answers while the shared database is away,
        // but not for longer than `max_staleness` (a revocation made elsewhere in the
        // meantime could not have reached it).
        if self.store.staleness().exceeds(self.config.max_staleness) {
            return Err(Error::Unavailable);
        }
        let now = self.clock.now();
        // The three kinds have disjoint shapes, so the hint never changes the answer.
        if token.starts_with("tsk_") {
            return Ok(match self.callers.check(token, now) {
                Some(c) => {
                    Metrics::inc(&self.metrics.introspect_active);
                    Introspection::ApiKey(Box::new(c.row.clone()))
                }
                None => {
                    Metrics::inc(&self.metrics.introspect_inactive_opaque);
                    Introspection::Inactive
                }
            });
        }
        if token.starts_with(opaque::REFRESH_PREFIX) {
            let found = self.live_refresh(token, now).await?;
            return Ok(match found {
                Some(pair) => {
                    Metrics::inc(&self.metrics.introspect_active);
                    Introspection::RefreshToken(Box::new(pair))
                }
                None => {
                    Metrics::inc(&self.metrics.introspect_inactive_opaque);
                    Introspection::Inactive
                }
            });
        }
        Ok(match self.check_access_token(token) {
            Ok((claims, _)) => {
                Metrics::inc(&self.metrics.introspect_active);
                Introspection::AccessToken(Box::new(claims))
            }
            Err(reason) => {
                self.metrics.inactive(reason);
                tracing::debug!(reason = reason.label(), "introspect: inactive access token");
                Introspection::Inactive
            }
        })
    }

    /// A refresh token that is unused, unexpired and in a live family.
    async fn live_refresh(&self, token: &str, now: i64) -> Result<Option<(TokenRow, FamilyRow)>> {
        if !opaque::well_formed(token, opaque::REFRESH_PREFIX) {
            return Ok(None);
        }
        let hash = opaque::hash(token);
        let found = self.store.read(move |c| refresh::find(c, &hash)).await?;
        Ok(found.filter(|(t, f)| {
            t.used_at.is_none()
                && f.revoked_at.is_none()
                && now < t.expires_at
                && now < f.absolute_expires_at
        }))
    }

    /// RFC 7009 revocation (caller needs `tessera:revoke`). Unknown and already-revoked
    /// tokens succeed. Answers only after the revocation is durable.
    pub async fn revoke(&self, caller: &Caller, token: &str, token_id: &str) -> Result<()> {
        caller.require(auth::SCOPE_REVOKE)?;
        if token.len() > MAX_TOKEN_LEN || token_id.len() > tokens::MAX_FIELD_LEN {
            return Err(Error::InvalidArgument("token or token_id too long".into()));
        }
        let now = self.clock.now();
        match (token.is_empty(), token_id.is_empty()) {
            (true, true) => Err(Error::InvalidArgument("give token or token_id".into())),
            (false, false) => Err(Error::InvalidArgument(
                "give token or token_id, not both".into(),
            )),
            (false, true) => self.revoke_token(caller, token, now).await,
            (true, false) => self.revoke_id(caller, token_id, now).await,
        }
    }

    /// RFC 7009 revocation at the HTTP endpoint. A caller holding `tessera:revoke` is
    /// an operator and revokes any access or refresh token, as [`Authority::revoke`].
    /// Any other authenticated client may revoke the tokens issued to it (RFC 7009
    /// §2.1): an access token whose `client_id` is its id, or a refresh token of a
    /// family bound to it. Another client's token is refused (`unauthorized_client`)
    /// and stays live; an invalid or unknown token succeeds (§2.2). API keys are client
    /// credentials, not tokens issued to a client: they are revoked over gRPC only.
    pub async fn revoke_for_client(&self, caller: &Caller, token: &str) -> Result<()> {
        let Some(principal) = &caller.principal else {
            return Err(Error::Unauthenticated("client authentication required"));
        };
        if token.is_empty() {
            return Err(Error::InvalidArgument("token is required".into()));
        }
        // Decided by shape alone, so the answer says nothing about the key's validity.
        if token.starts_with("tsk_") {
            return Err(Error::UnsupportedTokenType(
                "API keys are not revoked here: use the gRPC Revoke call".into(),
            ));
        }
        if principal.has(auth::SCOPE_REVOKE) {
            return self.revoke(caller, token, "").await;
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidArgument(format!(
                "token longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let now = self.clock.now();
        let client = self.client_keys.client_of(&principal.key_id);
        let client = client.as_str();
        let not_yours = || {
            tracing::info!(client_id = %client, "refused to revoke a token issued to another client");
            Error::UnauthorizedClient(
                "this token was not issued to the authenticated client".into(),
            )
        };
        if token.starts_with(opaque::REFRESH_PREFIX) {
            if !opaque::well_formed(token, opaque::REFRESH_PREFIX) {
                return self.audit_noop(caller, now).await;
            }
            let hash = opaque::hash(token);
            let found = self.store.read(move |c| refresh::find(c, &hash)).await?;
            return match found {
                Some((_, family)) if family.client_id == client => {
                    self.revoke_family(caller, &family.id, "refresh.revoked", now)
                        .await
                }
                Some(_) => Err(not_yours()),
                None => self.audit_noop(caller, now).await,
            };
        }
        let rules = self.rules(now);
        match verify::verify(token, &rules) {
            Ok((claims, jti)) if claims.client_id == client => {
                self.block(caller, jti, &claims.jti, claims.exp, now).await
            }
            Ok(_) => Err(not_yours()),
            Err(_) => self.audit_noop(caller, now).await,
        }
    }

    async fn revoke_token(&self, caller: &Caller, token: &str, now: i64) -> Result<()> {
        if token.starts_with("tsk_") {
            // Only the real key revokes itself: a right id with a wrong secret is a no-op.
            return match self.callers.check(token, now) {
                Some(c) => self.revoke_api_key(caller, &c.row.id.clone(), now).await,
                None => self.audit_noop(caller, now).await,
            };
        }
        if token.starts_with(opaque::REFRESH_PREFIX) {
            if !opaque::well_formed(token, opaque::REFRESH_PREFIX) {
                return self.audit_noop(caller, now).await;
            }
            let hash = opaque::hash(token);
            let found = self.store.read(move |c| refresh::find(c, &hash)).await?;
            return match found {
                Some((_, family)) => {
                    self.revoke_family(caller, &family.id, "refresh.revoked", now)
                        .await
                }
                None => self.audit_noop(caller, now).await,
            };
        }
        // An access token: only a genuine one of ours names a jti worth blocking.
        let rules = self.rules(now);
        match verify::verify(token, &rules) {
            Ok((claims, jti)) => self.block(caller, jti, &claims.jti, claims.exp, now).await,
            Err(_) => self.audit_noop(caller, now).await,
        }
    }

    async fn revoke_id(&self, caller: &Caller, id: &str, now: i64) -> Result<()> {
        if id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return self.revoke_api_key(caller, id, now).await;
        }
        if let Some(jti) = tokens::parse_jti(id) {
            // Without the token its exp is unknown: keep the entry as long as any token lives.
            let exp = now + self.config.max_access_token_ttl.as_secs() as i64;
            return self.block(caller, jti, id, exp, now).await;
        }
        self.audit_noop(caller, now).await
    }

    /// Revokes an API key, under the rules that prevent a lock-out from below: the
    /// caller must hold every scope of the key (`tessera:admin` holds them all), and the
    /// last live admin key stays.
    async fn revoke_api_key(&self, caller: &Caller, id: &str, now: i64) -> Result<()> {
        let principal = caller.require(auth::SCOPE_REVOKE)?;
        // A key's scopes never change after issue, so memory answers this; a key not
        // in memory is revoked already and revoking it again changes nothing.
        let target_is_admin = match self.callers.get(id) {
            Some(target) => {
                if let Some(missing) = target.scopes.iter().find(|s| !principal.has(s)) {
                    return Err(Error::PermissionDenied(format!(
                        "revoking API key {id} needs every scope it holds, and this API key lacks {missing}"
                    )));
                }
                target.scopes.iter().any(|s| s == auth::SCOPE_ADMIN)
            }
            None => false,
        };
        let entry = audit_entry(caller, now, "api_key.revoked", id);
        let key_id = id.to_string();
        self.store
            .write(move |c| {
                // Counted inside the revoking transaction: of two concurrent revocations
                // of the last two admin keys, the writer runs one after the other and
                // the second sees the first.
                if target_is_admin && last_live_admin(c, &key_id, now)? {
                    return Err(Error::FailedPrecondition(
                        "this is the last live admin API key: issue another admin key before revoking it \
                         (an operator with the data dir can run `tessera admin recover`)"
                            .into(),
                    ));
                }
                apikey_rows::revoke(c, &key_id, now)?;
                audit::append(c, &entry)
            })
            .await
            .inspect_err(|e| {
                if matches!(e, Error::FailedPrecondition(_)) {
                    tracing::warn!(key_id = %id, "refused to revoke the last live admin API key");
                }
            })?;
        self.callers.remove(id);
        Metrics::inc(&self.metrics.revoked);
        tracing::info!(key_id = %id, "API key revoked");
        Ok(())
    }

    async fn block(
        &self,
        caller: &Caller,
        jti: Jti,
        jti_text: &str,
        exp: i64,
        now: i64,
    ) -> Result<()> {
        let entry = audit_entry(caller, now, "token.revoked", jti_text);
        let text = jti_text.to_string();
        let blocked = self
            .store
            .write(move |c| {
                let all = lineage::block_with_descendants(c, vec![(text, exp)], now)?;
                audit::append(c, &entry.with("derived_revoked", all.len() - 1))?;
                Ok(all)
            })
            .await?;
        self.revocations.block(jti, exp);
        self.block_in_memory(&blocked);
        Metrics::inc(&self.metrics.revoked);
        tracing::info!(jti = %jti_text, derived = blocked.len() - 1, "access token revoked");
        Ok(())
    }

    /// Revokes a refresh family and blocklists every access token it minted and every
    /// token derived from those by exchange.
    pub async fn revoke_family(
        &self,
        caller: &Caller,
        family_id: &str,
        kind: &str,
        now: i64,
    ) -> Result<()> {
        let entry = audit_entry(caller, now, kind, family_id);
        let id = family_id.to_string();
        let blocked = self
            .store
            .write(move |c| {
                let minted = refresh::revoke_family(c, &id, now)?;
                let all = lineage::block_with_descendants(c, minted, now)?;
                audit::append(c, &entry.with("access_tokens_revoked", all.len()))?;
                Ok(all)
            })
            .await?;
        self.block_in_memory(&blocked);
        Metrics::inc(&self.metrics.revoked);
        tracing::info!(family = %family_id, access_tokens = blocked.len(), "refresh family revoked");
        Ok(())
    }

    pub(crate) fn block_in_memory(&self, blocked: &[(String, i64)]) {
        for (jti, exp) in blocked {
            if let Some(j) = tokens::parse_jti(jti) {
                self.revocations.block(j, *exp);
            }
        }
    }

    async fn audit_noop(&self, caller: &Caller, now: i64) -> Result<()> {
        let entry = audit_entry(caller, now, "revoke.noop", "");
        self.store.write(move |c| audit::append(c, &entry)).await
    }

    /// "Log out everywhere" (caller needs `tessera:revoke`): bumps the subject's token
    /// version and revokes its refresh families.
    pub async fn bump_token_version(
        &self,
        caller: &Caller,
        subject: &str,
        reason: &str,
    ) -> Result<u64> {
        caller.require(auth::SCOPE_REVOKE)?;
        check_field("subject", subject, true)?;
        check_field("reason", reason, false)?;
        let now = self.clock.now();
        let entry = audit_entry(caller, now, "token_version.bumped", "")
            .about(subject)
            .with("reason", reason);
        let sub = subject.to_string();
        let (version, blocked) = self
            .store
            .write(move |c| {
                let v = revocation_rows::bump_version(c, &sub, now)?;
                // Tokens of the subject die by version; the blocklist also reaches what
                // its families' tokens were exchanged into.
                let minted = refresh::revoke_subject(c, &sub, now)?;
                let minted = lineage::block_with_descendants(c, minted, now)?;
                audit::append(c, &entry.with("version", v))?;
                Ok((v, minted))
            })
            .await?;
        self.revocations.set_version(subject, version);
        self.block_in_memory(&blocked);
        Metrics::inc(&self.metrics.bumps);
        tracing::info!(%subject, version, "token version bumped");
        Ok(version)
    }

    /// Rotates the signing key (admin only): publishes a successor that signs after
    /// `key_publish_lead`, or at once with `now` (an emergency: verifiers caching the
    /// JWKS may meet its kid before they refetch).
    pub async fn rotate_signing_key(&self, caller: &Caller, at_once: bool) -> Result<Rotation> {
        caller.require(auth::SCOPE_ADMIN)?;
        let now = self.clock.now();
        let at = if at_once {
            now
        } else {
            now.saturating_add(self.config.key_publish_lead.as_secs() as i64)
        };
        self.keys
            .rotate(now, at, &caller.request_id, caller.audit_id())
            .await
    }

    /// The signing-key lifecycle tick: rotates on schedule if one is configured, then
    /// brings the key set up to the clock (activation, retirement) and logs the
    /// transitions. Cheap when nothing is due, so it runs often.
    pub async fn key_lifecycle(&self) -> Result<()> {
        let now = self.clock.now();
        // One replica schedules rotations (the store would keep a single successor
        // anyway; this keeps the others from generating keys for nothing).
        if let Some(period) = self.config.signing_key_rotation_period
            && self.store.leads().await
        {
            let lead = self.config.key_publish_lead.as_secs() as i64;
            self.keys
                .rotate_if_due(now, period.as_secs() as i64, lead)
                .await?;
        }
        self.keys.settle(now).await
    }

    /// The public JWK Set, from memory (see [`KeySet::jwks_at`]).
    ///
    /// [`KeySet::jwks_at`]: crate::keys::KeySet::jwks_at
    pub fn jwks_json(&self) -> Arc<str> {
        self.keys.current().jwks_at(self.clock.now())
    }

    /// Periodic housekeeping: purge expired blocklist entries and keys, flush API-key
    /// use times, purge dead refresh families and old audit records. Entries are
    /// dropped only once their token is past `exp` plus a margin.
    pub async fn maintain(&self) -> Result<()> {
        let now = self.clock.now();
        let before = now - 60;
        let uses = self.callers.take_unflushed();
        // Every replica records its own keys' use; one purges the shared tables.
        let leads = self.store.leads().await;
        self.store
            .write(move |c| {
                if leads {
                    revocation_rows::purge_blocklist(c, before)?;
                    crate::exchange::purge(c, now)?;
                }
                apikey_rows::touch(c, &uses)
            })
            .await?;
        self.revocations.purge(before);
        self.callers.purge(now);
        self.keys.settle(now).await?;
        self.keys.reload(now).await?;
        if leads {
            self.purge_history(now).await?;
        }
        Ok(())
    }

    /// Deletes what can no longer matter, in bounded batches so other writes are never
    /// held up for long: dead refresh families once every access token they minted has
    /// expired (a revocation or reuse of them could then change nothing), and audit
    /// records older than `audit_retention`. A backlog larger than one pass clears over
    /// the following passes.
    async fn purge_history(&self, now: i64) -> Result<()> {
        const BATCH: i64 = 500;
        const BATCHES_PER_PASS: usize = 20;
        let minted_before = now - 60;
        let dead_before = now - self.config.max_access_token_ttl.as_secs() as i64 - 60;
        let audit_before = now - self.config.audit_retention.as_secs() as i64;
        let changes_before = now - crate::watch::retention(&self.config);
        let (mut families, mut records) = (0, 0);
        for _ in 0..BATCHES_PER_PASS {
            let (f, a, l) = self
                .store
                .write(move |c| {
                    Ok((
                        refresh::purge(c, dead_before, minted_before, BATCH)?,
                        audit::purge(c, audit_before, BATCH)?,
                        crate::store::changes::purge(c, changes_before, BATCH)?,
                    ))
                })
                .await?;
            families += f;
            records += a;
            if (f as i64) < BATCH && (a as i64) < BATCH && (l as i64) < BATCH {
                break;
            }
        }
        if families + records > 0 {
            tracing::info!(families, audit_records = records, "purged expired history");
        }
        Ok(())
    }
}

/// A key's rate limit as an audit detail (`null` without one).
fn rate_limit_detail(l: Option<RateLimit>) -> serde_json::Value {
    l.map_or(
        serde_json::Value::Null,
        |l| serde_json::json!({ "per_second": l.per_second, "burst": l.burst }),
    )
}
