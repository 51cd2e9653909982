//! `tessera-verifier`: decides whether a Tessera access token is live without asking
//! Tessera, for services that cannot afford a network round trip per request.
//!
//! - [`jwks`]   the JWK Set: fetched over HTTP, parsed strictly, refetched on an
//!   unknown kid (rate-limited) and on a timer
//! - [`follow`] the `WatchRevocations` follower: snapshot, deltas, heartbeats,
//!   reconnect with backoff and resume from the last sequence
//! - [`layer`]  a tonic interceptor and tower layer that guard a Rust gRPC service
//!
//! Verification is the service's own: [`tessera::tokens::verify`] (strict header,
//! pinned algorithm, ring signature check, exact claims), behind the service's own
//! [`VerifiedCache`], then the same blocklist and token-version checks against a
//! [`Revocations`] kept in step by the stream. Nothing is re-implemented here.
//!
//! [`is_active`](Verifier::is_active) fails closed: until the first snapshot has
//! arrived, and whenever the last event or heartbeat is older than
//! [`VerifierConfig::max_staleness`], every token is refused with [`Reason::Stale`].

pub mod follow;
pub mod jwks;
pub mod layer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera::clock::Clock;
use tessera::revocation::Revocations;
use tessera::tokens::cache::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, Verified, VerifiedCache};
use tessera::tokens::claims::AccessClaims;
use tessera::tokens::verify::{Reject, Rules};
use tokio::sync::Notify;
use zeroize::Zeroizing;

pub use layer::{VerifiedClaims, VerifierInterceptor};
pub use tessera::tokens::verify::Reject as RejectReason;

/// Why the verifier could not start or fetch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("invalid verifier config: {0}")]
    Config(String),
    /// The JWKS could not be fetched or is not a JWK Set.
    #[error("jwks: {0}")]
    Jwks(String),
}

/// Why [`Verifier::is_active`] refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The token itself is not live: forged, malformed, expired, revoked, of an old
    /// token version or signed by an unknown or revoked key. The same reasons, from
    /// the same code, as the service's Introspect.
    Inactive(Reject),
    /// The revocation view is older than `max_staleness` (or was never complete), so
    /// no token can be vouched for.
    Stale,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Inactive(r) => write!(f, "token is not active ({})", r.label()),
            Reason::Stale => f.write_str("revocation state is stale"),
        }
    }
}

/// Settings. Plain data; [`VerifierConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct VerifierConfig {
    /// Tessera's gRPC endpoint, e.g. `http://tessera:50051`.
    pub grpc_endpoint: String,
    /// Tessera's JWKS, e.g. `http://tessera:8080/.well-known/jwks.json` (plain HTTP).
    pub jwks_url: String,
    /// An API key with `tessera:introspect`, for `WatchRevocations`.
    pub api_key: Zeroizing<String>,
    /// The `iss` Tessera puts in its tokens, compared exactly.
    pub issuer: String,
    /// The service's `max_access_token_ttl`: a longer-lived token is refused, as
    /// Introspect refuses it. Default 1 h (the service's default).
    pub max_lifetime: Duration,
    /// Refuse everything when the revocation view is older than this. Default 30 s.
    pub max_staleness: Duration,
    /// Refetch the JWKS at least this often. Default 60 s (the service's `max-age`).
    pub jwks_refresh: Duration,
    /// At most one JWKS fetch per this interval, however many unknown kids arrive.
    /// Default 10 s.
    pub jwks_min_interval: Duration,
    /// Reconnect backoff: first delay, doubled up to `reconnect_max`. Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_max: Duration,
    /// Verified-token cache bound, in tokens. Default 100,000.
    pub cache_entries: u64,
    /// The source of time for `exp`/`nbf` (tests move it).
    pub clock: Clock,
}

impl std::fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("grpc_endpoint", &self.grpc_endpoint)
            .field("jwks_url", &self.jwks_url)
            .field("api_key", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("max_staleness", &self.max_staleness)
            .finish_non_exhaustive()
    }
}

impl VerifierConfig {
    /// A config with every default.
    pub fn new(
        grpc_endpoint: impl Into<String>,
        jwks_url: impl Into<String>,
        api_key: impl Into<String>,
        issuer: impl Into<String>,
    ) -> Self {
        VerifierConfig {
            grpc_endpoint: grpc_endpoint.into(),
            jwks_url: jwks_url.into(),
            api_key: Zeroizing::new(api_key.into()),
            issuer: issuer.into(),
            max_lifetime: Duration::from_secs(3600),
            max_staleness: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(60),
            jwks_min_interval: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            cache_entries: DEFAULT_MAX_ENTRIES,
            clock: Clock::system(),
        }
    }
}

/// A live, verified access token: its claims (by `Deref`) and its parsed jti.
#[derive(Clone)]
pub struct Claims(Arc<Verified>);

impl Claims {
    /// The parsed jti.
    pub fn jti(&self) -> tessera::tokens::Jti {
        self.0.jti
    }

    /// The kid of the key that verified it.
    pub fn kid(&self) -> &str {
        &self.0.key.kid
    }

    /// Does the token carry this scope?
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.claims.scope.split(' ').any(|s| s == scope)
    }
}

impl std::ops::Deref for Claims {
    type Target = AccessClaims;
    fn deref(&self) -> &AccessClaims {
        &self.0.claims
    }
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.0.claims.sub)
            .field("jti", &self.0.claims.jti)
            .finish_non_exhaustive()
    }
}

/// State shared by the verifier handle and its background tasks.
pub(crate) struct Inner {
    pub(crate) cfg: VerifierConfig,
    pub(crate) jwks_url: http::Uri,
    pub(crate) keys: jwks::JwksKeys,
    pub(crate) revocations: Revocations,
    /// Revoked API-key ids. The verifier checks only JWTs today; kept so a caller (or
    /// a later version) can refuse revoked keys too.
    pub(crate) revoked_api_keys: papaya::HashSet<String>,
    cache: VerifiedCache,
    /// Origin of `fresh_ms`.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last event or heartbeat, plus one (0: never).
    fresh_ms: AtomicU64,
    /// Has a snapshot ever completed?
    pub(crate) snapshot_done: AtomicBool,
    pub(crate) snapshot_notify: Notify,
    /// The last sequence applied; the resume point.
    pub(crate) last_sequence: AtomicU64,
    /// Wakes the JWKS task early (an unknown kid, a newly published key).
    pub(crate) refetch: Notify,
    /// Completed JWKS fetches, for tests and metrics.
    pub(crate) jwks_fetches: AtomicU64,
}

impl Inner {
    pub(crate) fn mark_fresh(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.fresh_ms.store(ms + 1, Ordering::Release);
    }

    fn is_fresh(&self) -> bool {
        if !self.snapshot_done.load(Ordering::Acquire) {
            return false;
        }
        let at = self.fresh_ms.load(Ordering::Acquire);
        if at == 0 {
            return false;
        }
        let age = (self.epoch.elapsed().as_millis() as u64).saturating_sub(at - 1);
        age <= self.cfg.max_staleness.as_millis() as u64
    }

    pub(crate) async fn fetch_jwks(&self) -> Result<(), Error> {
        let doc = jwks::fetch(&self.jwks_url).await?;
        let keys = jwks::parse(&doc)?;
        self.keys.replace(keys);
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Aborts the background tasks when the last handle goes.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The local verifier. Cheap to clone; the background tasks stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Fetches the JWKS once (an error if that fails: a misconfigured URL should
    /// not start a verifier that refuses everything) and starts following the
    /// revocation stream in the background. Call [`ready`](Self::ready) to wait for
    /// the first snapshot; until then every token is refused as [`Reason::Stale`].
    pub async fn start(cfg: VerifierConfig) -> Result<Verifier, Error> {
        tessera::keys::provider::install();
        let jwks_url = jwks::parse_url(&cfg.jwks_url)?;
        tonic::transport::Endpoint::from_shared(cfg.grpc_endpoint.clone())
            .map_err(|_| Error::Config("grpc_endpoint is not a URL".into()))?;
        if cfg.max_staleness.is_zero() {
            return Err(Error::Config("max_staleness must be positive".into()));
        }
        let cache = VerifiedCache::new(cfg.cache_entries, DEFAULT_MAX_BYTES, cfg.clock.clone());
        let inner = Arc::new(Inner {
            jwks_url,
            keys: jwks::JwksKeys::default(),
            revocations: Revocations::default(),
            revoked_api_keys: papaya::HashSet::new(),
            cache,
            epoch: Instant::now(),
            fresh_ms: AtomicU64::new(0),
            snapshot_done: AtomicBool::new(false),
            snapshot_notify: Notify::new(),
            last_sequence: AtomicU64::new(0),
            refetch: Notify::new(),
            jwks_fetches: AtomicU64::new(0),
            cfg,
        });
        inner.fetch_jwks().await?;
        let tasks = vec![
            tokio::spawn(follow::follow(inner.clone())),
            tokio::spawn(jwks_loop(inner.clone())),
        ];
        Ok(Verifier {
            inner,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// Waits (up to `timeout`) for the first complete snapshot; true once it came.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.snapshot_notify.notified();
                if self.inner.snapshot_done.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Is this access token live? No network round trip: the service's strict
    /// verification (cached after the first success), then the blocklist, the
    /// subject's token version and the revoked kids as last pushed by Tessera.
    /// Refuses everything while the revocation view is stale.
    pub fn is_active(&self, token: &str) -> Result<Claims, Reason> {
        let inner = &*self.inner;
        if !inner.is_fresh() {
            return Err(Reason::Stale);
        }
        let rules = Rules {
            keys: &inner.keys,
            issuer: &inner.cfg.issuer,
            max_lifetime: inner.cfg.max_lifetime.as_secs() as i64,
            now: inner.cfg.clock.now(),
        };
        let found = match inner.cache.verify(token, &rules) {
            Ok(found) => found,
            Err(Reject::UnknownKey) => {
                // Perhaps a key published since the last fetch: ask the JWKS task, which
                // rate-limits, and refuse this time.
                inner.refetch.notify_one();
                return Err(Reason::Inactive(Reject::UnknownKey));
            }
            Err(r) => return Err(Reason::Inactive(r)),
        };
        // The same two checks, in the same order, as the service's check_access_token.
        if inner.revocations.is_blocked(found.jti) {
            return Err(Reason::Inactive(Reject::Revoked));
        }
        if found.claims.ver < inner.revocations.version(&found.claims.sub) {
            return Err(Reason::Inactive(Reject::OldVersion));
        }
        Ok(Claims(found))
    }

    /// Has Tessera said this API key id is revoked? (Kept for callers that see key ids.)
    pub fn is_api_key_revoked(&self, key_id: &str) -> bool {
        self.inner.revoked_api_keys.pin().contains(key_id)
    }

    /// Is the revocation view fresh enough to vouch for tokens right now?
    pub fn is_fresh(&self) -> bool {
        self.inner.is_fresh()
    }

    /// The last revocation-stream sequence applied.
    pub fn last_sequence(&self) -> u64 {
        self.inner.last_sequence.load(Ordering::Acquire)
    }

    /// JWKS fetches completed so far.
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.jwks_fetches.load(Ordering::Relaxed)
    }

    /// A tonic interceptor guarding a service with this verifier.
    pub fn interceptor(&self) -> VerifierInterceptor {
        VerifierInterceptor::new(self.clone())
    }

    /// The same guard as a tower layer for `tonic::transport::Server::layer`.
    pub fn layer(&self) -> tonic::service::InterceptorLayer<VerifierInterceptor> {
        tonic::service::InterceptorLayer::new(self.interceptor())
    }
}

/// Keeps the JWKS current: on a timer, and early (rate-limited) when asked; purges
/// expired blocklist entries on the way.
async fn jwks_loop(inner: Arc<Inner>) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.cfg.jwks_refresh) => {}
            _ = inner.refetch.notified() => {}
        }
        let since = last.elapsed();
        if since < inner.cfg.jwks_min_interval {
            tokio::time::sleep(inner.cfg.jwks_min_interval - since).await;
        }
        last = Instant::now();
        if let Err(e) = inner.fetch_jwks().await {
            // The old set stays: a JWKS outage must not drop keys that still verify.
            tracing::warn!("JWKS refetch failed: {e}");
        }
        inner.revocations.purge(inner.cfg.clock.now());
    }
}
