//! The hot-path check of a presented API key, as an [`Authority`] method: the address
//! throttle, the live set and the key's rate limit. Memory only.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::AuthFailure;
use crate::authority::Authority;
use crate::error::Error;
use crate::metrics::Metrics;

use super::Caller;

/// Why a presented API key did not get its caller through.
#[derive(Debug)]
pub enum Refusal {
    /// The credential does not check out.
    Failed(AuthFailure),
    /// Over the key's rate limit, or the address is throttled: an
    /// [`Error::RateLimited`].
    Limited(Error),
}

impl Authority {
    /// Authenticates a presented API key (hot path: memory only). In order: an address
    /// throttled for failed authentications is refused before the key is looked at; a
    /// key that does not check out counts against its address; a good key takes one call
    /// from its rate limit. `peer` is `None` only where no address is known (in-process
    /// callers), which the throttle then skips.
    pub fn authenticate_api_key(
        &self,
        key: &str,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Caller>, Refusal> {
        // One read of the monotonic clock serves the throttle check and the rate limit:
        // it costs more than either (measured in BENCHMARKS.md, "Rate limits").
        let instant = peer.map(|_| std::time::Instant::now());
        if let (Some(ip), Some(at)) = (peer, instant)
            && let Err(wait) = self.throttle.check_at_instant(ip, at)
        {
            Metrics::inc(&self.metrics.rate_limited_address);
            return Err(Refusal::Limited(Error::auth_throttled(wait)));
        }
        let caller = match self.callers.verify(key, self.clock.now()) {
            Ok(c) => c,
            Err(reason) => {
                if let Some(ip) = peer
                    && self.throttle.failed(ip)
                {
                    // Once per block, not per refused call: the log is not a flood gauge.
                    let block = self.config.auth_failure_block;
                    tracing::warn!(peer = %ip, ?block, "too many failed authentications: address throttled");
                }
                return Err(Refusal::Failed(reason));
            }
        };
        if let Err(wait) = caller.admit(instant) {
            Metrics::inc(&self.metrics.rate_limited_key);
            tracing::debug!(key_id = %caller.row.id, "over rate limit");
            return Err(Refusal::Limited(Error::over_rate_limit(wait)));
        }
        Ok(caller)
    }
}
