//! The token authority: the service's state, composed from the domain modules, and
//! the operations that span them (opening, bootstrap, signing-key rotation,
//! housekeeping). The operations of each domain are `impl Authority` blocks in that
//! domain's folder: `apikeys/issue.rs`, `tokens/issue.rs`, `tokens/introspect.rs`,
//! `revocation/revoke.rs` and `oauth/` (one file per grant). gRPC and HTTP handlers
//! only translate to and from these.
//!
//! Write path: validate → one durable store write (with its audit record) → update the
//! in-memory caches → answer. Read path (Introspect, API-key checks): memory only.

use std::sync::Arc;

use crate::apikeys;
use crate::apikeys::Callers;
use crate::auth::{self, Caller};
use crate::clock::Clock;
use crate::config::{Config, DatabaseUrl};
use crate::error::{Error, Result};
use crate::keys::seal::{self, MasterKey};
use crate::keys::{Keyring, Rotation};
use crate::listing::PageTokens;
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::secret::Secret;
use crate::store::apikeys::{self as apikey_rows, ApiKeyRow};
use crate::store::audit::{self, AuditEntry};
use crate::store::refresh;
use crate::store::revocation as revocation_rows;
use crate::store::{Location, Store};
use crate::tokens;
use crate::tokens::cache::{self as verified_cache, VerifiedCache};

/// File the bootstrap admin key is written to, inside the data dir.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// The service's state and operations. Its fields are visible to the crate so that
/// the domain modules' `impl Authority` blocks can reach them; handlers in `service/`
/// go through methods only.
pub struct Authority {
    /// Configuration.
    pub(crate) config: Arc<Config>,
    /// Time.
    pub(crate) clock: Clock,
    /// Source of truth.
    pub(crate) store: Store,
    /// Signing keys.
    pub(crate) keys: Keyring,
    /// Blocklist and token versions (memory).
    pub(crate) revocations: Revocations,
    /// Live API keys (memory).
    pub(crate) callers: Callers,
    /// Failed authentications per source address.
    pub(crate) throttle: crate::ratelimit::FailureThrottle,
    /// Counters.
    pub(crate) metrics: Metrics,
    /// Access tokens whose signature and claims already verified.
    pub(crate) verified: VerifiedCache,
    /// Signs the List RPCs' page tokens.
    pub(crate) page_tokens: PageTokens,
    /// Rotated-in client secrets → their client (memory).
    pub(crate) client_keys: crate::oauth::ClientKeys,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A credential just issued. `token` and `refresh_token` are shown once.
#[derive(Debug, Default)]
pub struct Issued {
    /// The secret.
    pub token: Secret,
    /// Key id, jti or client id.
    pub token_id: String,
    /// `api_key`, `Bearer`, ...
    pub token_type: &'static str,
    /// Unix seconds.
    pub expires_at: i64,
    /// A refresh token, if one was minted.
    pub refresh_token: Secret,
    /// Unix seconds.
    pub refresh_expires_at: i64,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

/// An audit record of `kind` about the credential `token_id`, by this caller; add the
/// subject and details with [`AuditEntry::about`] and [`AuditEntry::with`].
pub(crate) fn audit_entry(caller: &Caller, now: i64, kind: &str, token_id: &str) -> AuditEntry {
    AuditEntry {
        at: now,
        request_id: caller.request_id.to_string(),
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
        let client_keys = crate::oauth::ClientKeys::default();
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
                let p = apikeys::parse(secret.expose()).ok_or_else(|| {
                    Error::InvalidArgument(
                        "TESSERA_BOOTSTRAP_ADMIN_KEY is not a well-formed Tessera API key".into(),
                    )
                })?;
                (
                    p.id.to_string(),
                    secret.expose().to_owned(),
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

    /// The configuration the service runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The service's counters (the request middleware and the interceptor add theirs).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Can the store take writes (for readiness)?
    pub(crate) fn storage_healthy(&self) -> bool {
        self.store.healthy()
    }

    /// The client an API key authenticates as (see [`ClientKeys::client_of`]).
    ///
    /// [`ClientKeys::client_of`]: crate::oauth::ClientKeys::client_of
    pub(crate) fn client_of_key(&self, key_id: &str) -> String {
        self.client_keys.client_of(key_id)
    }

    /// The service's share of `/metrics`: its counters and gauges, the store's and the
    /// verified-token cache's figures.
    pub(crate) fn metrics_text(&self) -> String {
        let gauges = crate::metrics::Gauges {
            blocklist_len: self.revocations.blocklist_len(),
            signing_key_age_seconds: self.clock.now() - self.keys.current().active.created_at,
        };
        let mut body = self.metrics.render(gauges);
        self.store.stats.render(&mut body);
        self.verified.render(&mut body);
        body
    }

    /// Rotates the signing key (admin only): publishes a successor that signs after
    /// `key_publish_lead`, or at once with `now` (an emergency: verifiers caching the
    /// JWKS may meet its kid before they refetch).
    pub(crate) async fn rotate_signing_key(
        &self,
        caller: &Caller,
        at_once: bool,
    ) -> Result<Rotation> {
        caller.require(auth::SCOPE_ADMIN)?;
        let now = self.clock.now();
        let at = if at_once {
            now
        } else {
            now.saturating_add(self.config.key_publish_lead.as_secs() as i64)
        };
        self.keys
            .rotate(now, at, caller.request_id.as_str(), caller.audit_id())
            .await
    }

    /// The signing-key lifecycle tick: rotates on schedule if one is configured, then
    /// brings the key set up to the clock (activation, retirement) and logs the
    /// transitions. Cheap when nothing is due, so it runs often.
    pub(crate) async fn key_lifecycle(&self) -> Result<()> {
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

    /// The public JWK Set, from memory (see `KeySet::jwks_at`).
    pub fn jwks_json(&self) -> Arc<str> {
        self.keys.current().jwks_at(self.clock.now())
    }

    /// Periodic housekeeping: purge expired blocklist entries and keys, flush API-key
    /// use times, purge dead refresh families and old audit records. Entries are
    /// dropped only once their token is past `exp` plus a margin.
    pub(crate) async fn maintain(&self) -> Result<()> {
        let now = self.clock.now();
        let before = now - 60;
        let uses = self.callers.take_unflushed();
        // Every replica records its own keys' use; one purges the shared tables.
        let leads = self.store.leads().await;
        self.store
            .write(move |c| {
                if leads {
                    revocation_rows::purge_blocklist(c, before)?;
                    crate::oauth::purge(c, now)?;
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
