//! Keeping this replica's memory in step with the others' (PostgreSQL only): every
//! change-log row any replica commits reaches here through the store's change feed
//! (see `store/postgres.rs` for how the log is followed) and is applied to the
//! blocklist, token versions, live API keys and signing keys. Applying is idempotent,
//! so this replica's own changes, already applied by the call that made them, pass
//! through harmlessly.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::RecvError;

use crate::authority::Authority;
use crate::store::apikeys as apikey_rows;
use crate::store::changes::{Change, Logged};
use crate::tokens;

/// Starts applying other replicas' changes to `authority`'s memory. The task ends with
/// the authority (it holds only a weak reference) or when the feed closes.
pub fn spawn(authority: &Arc<Authority>) {
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
            Change::ApiKeyLive { key_id } => {
                let id = key_id.clone();
                match authority
                    .store
                    .read(move |c| apikey_rows::find_live(c, &id, now))
                    .await
                {
                    Ok(Some(row)) => authority.callers.insert(row),
                    Ok(None) => authority.callers.remove(key_id),
                    Err(e) => {
                        tracing::error!(key_id = %key_id, error = %e, "cannot load an API key another replica made")
                    }
                }
            }
            Change::SigningKey { .. } => reload_keys = true,
        }
    }
    if reload_keys && let Err(e) = authority.keys.reload(now).await {
        tracing::error!(error = %e, "cannot reload signing keys after another replica changed them");
    }
}
