//! Follows `TokenService.WatchRevocations`: applies the snapshot and every delta to the
//! verifier's view, reconnects with exponential backoff when the stream ends or
//! fails, and resumes from the last sequence applied so nothing is missed.
//!
//! The view only ever grows (a jti is never un-revoked, a version never goes down, a
//! revoked key never comes back), so a replayed or repeated event is harmless and a
//! fresh snapshot after a long outage can be merged into what is already known.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tessera::proto::revocation_event::Event;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{RevocationEvent, WatchRevocationsRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use crate::Inner;

/// Runs for the verifier's life.
pub(crate) async fn follow(inner: Arc<Inner>) {
    let mut backoff = inner.cfg.reconnect_min;
    loop {
        match watch(&inner).await {
            // At least one event arrived: the server was reachable, start backoff over.
            Ok(true) => backoff = inner.cfg.reconnect_min,
            Ok(false) => {}
            Err(e) => tracing::warn!("revocation stream: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.cfg.reconnect_max);
    }
}

/// One connection: until the stream ends, fails or goes quiet for longer than
/// `max_staleness` (a half-open connection would otherwise look alive forever).
/// Returns whether any event was received.
async fn watch(inner: &Inner) -> Result<bool, String> {
    let channel = Endpoint::from_shared(inner.cfg.grpc_endpoint.clone())
        .map_err(|_| "bad endpoint".to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = TokenServiceClient::new(channel);
    let mut req = tonic::Request::new(WatchRevocationsRequest {
        after_sequence: inner.last_sequence.load(Ordering::Acquire),
    });
    let bearer: MetadataValue<_> = format!("Bearer {}", inner.cfg.api_key.as_str())
        .parse()
        .map_err(|_| "api key is not valid metadata".to_string())?;
    req.metadata_mut().insert("authorization", bearer);
    let mut stream = client
        .watch_revocations(req)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut got_any = false;
    let mut last_in_stream = 0u64;
    loop {
        let next = tokio::time::timeout(inner.cfg.max_staleness, stream.message()).await;
        let ev = match next {
            Err(_) => return Err("no event or heartbeat within max_staleness".into()),
            Ok(Err(s)) => return Err(format!("{:?}: {}", s.code(), s.message())),
            Ok(Ok(None)) => return Ok(got_any),
            Ok(Ok(Some(ev))) => ev,
        };
        got_any = true;
        let is_heartbeat = matches!(ev.event, Some(Event::Heartbeat(_)));
        if !is_heartbeat && ev.sequence != 0 {
            if ev.sequence <= last_in_stream {
                // The contract promises strictly increasing sequences; anything else
                // means the view can no longer be trusted to be complete: start over.
                return Err("sequence went backwards".into());
            }
            last_in_stream = ev.sequence;
        }
        apply(inner, ev);
    }
}

/// Applies one event to the view.
fn apply(inner: &Inner, ev: RevocationEvent) {
    match ev.event {
        Some(Event::RevokedTokenId(r)) => match tessera::tokens::parse_jti(&r.jti) {
            Some(jti) => {
                let exp = r.expires_at.map(|t| t.seconds).unwrap_or(i64::MAX);
                inner.revocations.block(jti, exp);
            }
            // Not a jti Tessera mints: no token of ours can carry it.
            None => tracing::debug!("ignoring an unparsable revoked jti"),
        },
        Some(Event::TokenVersion(v)) => inner.revocations.set_version(&v.subject, v.version),
        Some(Event::RevokedApiKeyId(id)) => {
            inner.revoked_api_keys.pin().insert(id);
        }
        Some(Event::SigningKey(k)) => match k.state.as_str() {
            "revoked" => inner.keys.revoke(&k.kid),
            // A key we have not fetched yet will sign soon: fetch it before it does.
            "published" | "active" if !inner.keys.contains(&k.kid) => inner.refetch.notify_one(),
            _ => {}
        },
        Some(Event::SnapshotDone(_)) => {
            inner.snapshot_done.store(true, Ordering::Release);
            inner.snapshot_notify.notify_waiters();
        }
        Some(Event::Heartbeat(_)) | None => {}
    }
    if ev.sequence != 0 {
        inner.last_sequence.fetch_max(ev.sequence, Ordering::AcqRel);
    }
    // Only after the event is applied does the view count as fresh as of now.
    inner.mark_fresh();
}
