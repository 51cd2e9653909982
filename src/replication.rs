//! Keeping this replica's memory in step with the others' (PostgreSQL only): every
//! change-log row any replica commits reaches here through the store's change feed
//! (see `store/postgres.rs` for how the log is followed) and is applied to the
//! blocklist, token versions, live API keys and signing keys. Applying is idempotent
//! (an API key already in memory keeps its rate-limit bucket), so this replica's own
//! changes, already applied by the call that made them, pass through harmlessly.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::RecvError;

use crate::authority::Authority;
use crate::store::apikeys as apikey_rows;
use crate::store::changes::{Change, Logged};
use crate::tokens;

/// Starts applying other replicas' changes to `authority`'s memory. The task ends with
/// the authority (it holds only a weak reference) or when the feed closes.
pub(crate) fn spawn(authority: &Arc<Authority>) {
    let mut feed = authority.store.subscribe_changes();
    let weak: Weak<Authority> = Arc::downgrade(authority);
    tokio::spawn(async move {
        loop {
            let batch = match feed.recv().await {
                Ok(batch) => batch,
                Err(RecvError::Lagged(missed)) => {
                    // The ring overflowed: this replica's memory can no longer be
                    // trusted to match the log. Restarting reloads it from the
                    // database; serving on would risk honouring a revoked token.
                    tracing::error!(
                        missed,
                        "replication fell behind the change feed; exiting so a restart reloads state"
                    );
                    std::process::exit(70);
                }
                Err(RecvError::Closed) => return,
            };
            let Some(authority) = weak.upgrade() else {
                return;
            };
            apply(&authority, &batch).await;
        }
    });
}

/// Applies one committed batch.
async fn apply(authority: &Authority, batch: &[Logged]) {
    let now = authority.clock.now();
    let mut reload_keys = false;
    let mut load_keys = Vec::new();
    for logged in batch {
        match &logged.change {
            Change::RevokedJti { jti, expires_at } => {
                if let Some(j) = tokens::parse_jti(jti) {
                    authority.revocations.block(j, *expires_at);
                }
            }
            Change::TokenVersion { subject, version } => {
                authority.revocations.set_version(subject, *version);
            }
            Change::RevokedApiKey { key_id } => authority.callers.remove(key_id),
            Change::ApiKeyLive { key_id } => load_keys.push(key_id.clone()),
            Change::SigningKey { .. } => reload_keys = true,
        }
    }
    if !load_keys.is_empty() {
        // One read for the batch's keys. A key revoked later in this same batch is
        // read as revoked (the database is ahead of the batch), so it stays out.
        let ids = load_keys.clone();
        let loaded = authority
            .store
            .read(move |c| {
                ids.iter()
                    .map(|id| apikey_rows::find_live(c, id, now))
                    .collect::<crate::error::Result<Vec<_>>>()
            })
            .await;
        match loaded {
            Ok(rows) => {
                for (id, row) in load_keys.iter().zip(rows) {
                    match row {
                        // Known already (this replica's own key, or seen before): only
                        // its expiry can have changed (a rotation shortens it); its
                        // rate-limit bucket and use times stay as they are.
                        Some(row) if authority.callers.contains(id) => {
                            let moved = authority
                                .callers
                                .get(id)
                                .is_some_and(|c| c.row.expires_at != row.expires_at);
                            if moved {
                                authority.callers.set_expiry(id, row.expires_at);
                            }
                        }
                        Some(row) => authority.callers.insert(row),
                        None => authority.callers.remove(id),
                    }
                }
            }
            Err(e) => {
                tracing::error!(keys = load_keys.len(), error = %e, "cannot load API keys another replica made")
            }
        }
    }
    if reload_keys && let Err(e) = authority.keys.reload(now).await {
        tracing::error!(error = %e, "cannot reload signing keys after another replica changed them");
    }
}
