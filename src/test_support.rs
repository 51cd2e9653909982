//! A narrow window onto the service's internals for the integration tests and the
//! benchmarks: what they must observe or set up that no RPC exposes. The service itself
//! never calls anything here, and tests reach internals through this module only.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::clock::Clock;
use crate::keys::KeySet;

// The service's operations, as the domain-level tests and the benchmarks drive them.
pub use crate::apikeys::NewApiKey;
pub use crate::auth::{AuthFailure, Caller, Principal, SCOPE_ADMIN};
pub use crate::authority::{ADMIN_KEY_FILE, Authority, Issued};
pub use crate::error::{Error, Result};
pub use crate::oauth::rules::ACCESS_TOKEN_TYPE;
pub use crate::oauth::{
    ClientCredentialsRequest, ClientRegistration, CodeRedemption, CodeRequest, Granted,
    RefreshRequest, TokenExchangeRequest,
};
pub use crate::ratelimit::RateLimit;
pub use crate::tokens::{AccessTokenRequest, Introspection};

// The store, for tests that read what the service wrote (on either backend).
pub use crate::store::apikeys::ApiKeyRow;
pub use crate::store::db::{Db, DbError, OptionalExt, PgConn, Row, params};
pub use crate::store::{Location, Store, inspect};

/// The audit log, as tests read it.
pub mod audit {
    pub use crate::store::audit::{AuditEntry, AuditFilter, list, recent};
}

/// The stored signing keys (sealed), for fuzz targets that sign with the service's own key.
pub mod signing_keys {
    pub use crate::store::keys::{KeyRow, load_live};
}

/// The OAuth form decoding of the HTTP endpoints, for the fuzz targets.
pub mod oauth_form {
    pub use crate::service::oauth::{Form, client_key};
}

/// The authority's clock (tests move it; benchmarks read it).
pub fn clock(authority: &Authority) -> &Clock {
    &authority.clock
}

/// The signing keys in memory right now: the active key and every verifying key.
pub fn key_set(authority: &Authority) -> Arc<KeySet> {
    authority.keys.current()
}

/// Makes a successor signing key sign at once, as an emergency rotation would.
pub async fn rotate_signing_key_now(authority: &Authority) -> Result<()> {
    let now = authority.clock.now();
    authority.keys.rotate(now, now, "-", "test").await.map(drop)
}

/// How many reads the store has run so far (requests are meant to answer from memory).
pub fn store_reads(authority: &Authority) -> u64 {
    authority.store.stats.reads.load(Ordering::Relaxed)
}

/// Makes an API key live in memory only, without storing it: for benchmarks of the
/// in-memory check.
pub fn make_live_in_memory(authority: &Authority, row: ApiKeyRow) {
    authority.callers.insert(row);
}

/// The authority's store, for tests that check what was written.
pub fn store(authority: &Authority) -> &crate::store::Store {
    &authority.store
}

/// The hot-path API-key check alone (hash, lookup, constant-time compare): is `key`
/// live at `now`?
pub fn api_key_is_live(authority: &Authority, key: &str, now: i64) -> bool {
    authority.callers.check(key, now).is_some()
}
