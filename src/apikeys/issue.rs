//! Issuing and rotating API keys, as [`Authority`] methods: the checks a new key must
//! pass, the rules that keep the last admin key alive, and the durable write that makes
//! a key live.

use crate::apikeys;
use crate::auth::{self, Caller};
use crate::authority::{Authority, Issued, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;
use crate::secret::Secret;
use crate::store::apikeys::{self as apikey_rows, ApiKeyListing, ApiKeyRow};
use crate::store::audit::{self, AuditEntry};
use crate::tokens::{self, check_field, check_list, normalize_scopes};

/// How long a rotated API key keeps working by default (24 h).
pub(crate) const DEFAULT_ROTATION_OVERLAP: i64 = 24 * 3600;
/// The longest overlap of a rotation (30 days).
pub(crate) const MAX_ROTATION_OVERLAP: i64 = 30 * 24 * 3600;

/// What a new API key is to be. When it is a rotated key's successor, the empty fields
/// (and a `rate_limit` of `None`) are inherited from the key rotated; `ttl` never is.
#[derive(Debug, Clone, Default)]
pub struct NewApiKey {
    /// Who the key is for (required).
    pub owner: String,
    /// Service name.
    pub name: String,
    /// Environment label in the key text, 1-16 of `[a-z0-9]`.
    pub environment: String,
    /// Scopes the key holds.
    pub scopes: Vec<String>,
    /// Audiences the key may ask for in a token exchange; empty means it may not
    /// exchange at all.
    pub exchange_audiences: Vec<String>,
    /// Requests per second and burst; `None` means unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Lifetime in seconds (default: `api_key_ttl`; never inherited).
    pub ttl: Option<i64>,
}

/// The `tessera:*` scopes that mean something; any other is a typo to refuse.
pub(crate) const SERVICE_SCOPES: &[&str] = &[
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
pub(crate) fn last_live_admin(conn: &crate::store::db::Db, id: &str, now: i64) -> Result<bool> {
    let admins: Vec<String> = apikey_rows::load_live(conn, now)?
        .into_iter()
        .filter(|k| k.scopes.iter().any(|s| s == auth::SCOPE_ADMIN))
        .map(|k| k.id)
        .collect();
    Ok(admins.len() == 1 && admins[0] == id)
}

impl Authority {
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
    pub(crate) fn new_api_key(&self, spec: NewApiKey, now: i64) -> Result<(ApiKeyRow, Secret)> {
        let NewApiKey {
            owner,
            name,
            environment,
            scopes,
            exchange_audiences,
            rate_limit,
            ttl,
        } = spec;
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
    pub async fn issue_api_key(&self, caller: &Caller, spec: NewApiKey) -> Result<Issued> {
        caller.require(auth::SCOPE_ADMIN)?;
        let now = self.clock.now();
        let (row, key) = self.new_api_key(spec, now)?;
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
            token: key,
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
    pub(crate) async fn rotate_api_key(
        &self,
        caller: &Caller,
        from: &str,
        overlap: Option<i64>,
        next: NewApiKey,
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
        next: NewApiKey,
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
        let successor = NewApiKey {
            owner: pick(next.owner, &old.owner),
            name: pick(next.name, &old.name),
            environment: pick(next.environment, &old.environment),
            scopes: pick_list(next.scopes, &old.scopes),
            exchange_audiences: pick_list(next.exchange_audiences, &old.exchange_audiences),
            rate_limit: next.rate_limit.or(old.rate_limit),
            ttl: next.ttl,
        };
        let (row, key) = self.new_api_key(successor, now)?;
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
            token: key,
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
}

/// A key's rate limit as an audit detail (`null` without one).
fn rate_limit_detail(l: Option<RateLimit>) -> serde_json::Value {
    l.map_or(
        serde_json::Value::Null,
        |l| serde_json::json!({ "per_second": l.per_second, "burst": l.burst }),
    )
}
