//! RFC 7662 introspection and the one strict check of an access token, as
//! [`Authority`] methods. Memory only, except for a refresh token's row.

use std::sync::{Arc, OnceLock};

use prost::bytes::Bytes;

use crate::apikeys;
use crate::auth::{self, Caller};
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::refresh::{self, FamilyRow, TokenRow};
use crate::tokens::cache::Verified;
use crate::tokens::opaque;
use crate::tokens::verify::{MAX_TOKEN_LEN, Reject, Rules};

/// What introspection found. `Inactive` carries nothing on purpose. A live access
/// token or API key is the shared record itself, not a copy: the answer is built
/// straight from it, once per record (`EncodedOnce`).
#[derive(Debug, Clone)]
pub enum Introspection {
    /// Unknown, malformed, forged, expired, revoked, ... — no reason given.
    Inactive,
    /// A live access token, as the verified-token cache holds it.
    AccessToken(Arc<Verified>),
    /// A live API key, as the live key set holds it.
    ApiKey(Arc<apikeys::Caller>),
    /// A live refresh token.
    RefreshToken(Box<(TokenRow, FamilyRow)>),
}

/// The wire answer to an Introspect about one live token or key, encoded by the
/// service on first use and shared afterwards. What it says never changes for the
/// record that holds it: a key whose record changes is a new record, with a new answer.
#[derive(Default)]
pub(crate) struct EncodedOnce(OnceLock<Bytes>);

impl EncodedOnce {
    /// The answer, made by `encode` if this is the first call.
    pub(crate) fn get_or_encode(&self, encode: impl FnOnce() -> Bytes) -> Bytes {
        self.0.get_or_init(encode).clone()
    }
}

impl std::fmt::Debug for EncodedOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(b) => write!(f, "EncodedOnce({} bytes)", b.len()),
            None => f.write_str("EncodedOnce(not yet)"),
        }
    }
}

impl Authority {
    /// The one strict verification policy of this service, at instant `now`.
    pub(crate) fn rules(&self, now: i64) -> Rules<'_> {
        Rules {
            keys: &self.keys,
            issuer: &self.config.issuer,
            max_lifetime: self.config.max_access_token_ttl.as_secs() as i64,
            now,
        }
    }

    /// Verifies an access token fully at `now`: signature, claims, blocklist, token
    /// version.
    pub(crate) fn check_access_token(
        &self,
        token: &str,
        now: i64,
    ) -> std::result::Result<Arc<Verified>, Reject> {
        let rules = self.rules(now);
        let found = self.verified.verify(token, &rules)?;
        if self.revocations.is_blocked(found.jti) {
            return Err(Reject::Revoked);
        }
        if found.claims.ver < self.revocations.version(&found.claims.sub) {
            return Err(Reject::OldVersion);
        }
        Ok(found)
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
                    Introspection::ApiKey(c)
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
        Ok(match self.check_access_token(token, now) {
            Ok(found) => {
                Metrics::inc(&self.metrics.introspect_active);
                Introspection::AccessToken(found)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_encoded_once_and_shown_only_by_length() {
        let slot = EncodedOnce::default();
        assert_eq!(format!("{slot:?}"), "EncodedOnce(not yet)");
        let mut made = 0;
        for _ in 0..3 {
            let got = slot.get_or_encode(|| {
                made += 1;
                Bytes::from_static(b"\x08\x01")
            });
            assert_eq!(&got[..], b"\x08\x01");
        }
        assert_eq!(made, 1);
        assert_eq!(format!("{slot:?}"), "EncodedOnce(2 bytes)");
    }
}
