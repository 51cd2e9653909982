//! RFC 8693 token exchange.

use super::Granted;
use crate::auth::Caller;
use crate::authority::{Authority, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::oauth::rules::{self, ACCESS_TOKEN_TYPE};
use crate::secret::Secret;
use crate::store::audit;
use crate::store::lineage;
use crate::tokens::AccessTokenRequest;
use crate::tokens::verify::MAX_TOKEN_LEN;

/// An RFC 8693 token exchange.
#[derive(Debug, Default)]
pub struct TokenExchangeRequest {
    /// An access token of ours.
    pub subject_token: Secret,
    /// Must be [`ACCESS_TOKEN_TYPE`].
    pub subject_token_type: String,
    /// `aud` of the new token, each in the caller key's `exchange_audiences`; none
    /// means the caller's own key id.
    pub audience: Vec<String>,
    /// Scopes ⊆ the subject token's; none means the subject token's.
    pub scopes: Vec<String>,
}

impl Authority {
    /// RFC 8693 token exchange, on behalf of a user: a service (the caller's API key)
    /// that the user's access token was issued to trades it for a token to call the
    /// next hop. The caller must be an audience of the subject token (its key id or its
    /// key's name is in `aud`), and every requested audience must be in the key's
    /// `exchange_audiences` (empty: the key may not exchange at all); none requested
    /// means the caller's own id. The subject token gets the full check (signature,
    /// claims, blocklist, version); the new token keeps its `sub`, `ver`, `owner` and
    /// extra claims, has scopes ⊆ its scopes, expires no later than it, and names the
    /// caller in `act` (nesting the subject token's own `act`). No refresh token.
    ///
    /// The new token's lineage is recorded in the write that re-checks, in the store,
    /// that the subject token is still live: a revocation committed before it refuses
    /// the exchange, one committed after it reaches the new token.
    pub async fn grant_token_exchange(
        &self,
        caller: &Caller,
        req: TokenExchangeRequest,
    ) -> Result<Granted> {
        let Some(p) = &caller.principal else {
            return Err(Error::Unauthenticated(
                "token exchange needs the acting service's API key: authorization: Bearer <api key>",
            ));
        };
        if req.subject_token.expose().is_empty() {
            return Err(Error::InvalidArgument("subject_token is required".into()));
        }
        if req.subject_token_type != ACCESS_TOKEN_TYPE {
            return Err(Error::InvalidArgument(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE}"
            )));
        }
        if req.subject_token.expose().len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidArgument(format!(
                "subject_token longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let key = self
            .callers
            .get(&p.key_id)
            .ok_or(Error::Unauthenticated("the calling API key is not live"))?;
        if key.row.exchange_audiences.is_empty() {
            return Err(Error::InvalidTarget(
                "this API key may not exchange tokens: its exchange_audiences list is empty".into(),
            ));
        }
        let audience =
            rules::exchange_audience(&req.audience, &key.row.id, &key.row.exchange_audiences)?;
        let now = self.clock.now();
        let found = self
            .check_access_token(req.subject_token.expose(), now)
            .map_err(|r| {
                self.metrics.inactive(r);
                tracing::debug!(reason = r.label(), "token exchange: inactive subject token");
                Error::InactiveSubjectToken
            })?;
        let subject = &found.claims;
        if !rules::is_audience(&subject.aud, &key.row.id, &key.row.name) {
            return Err(Error::InvalidTarget(
                "the calling service is not an audience of the subject token: only a service \
                 the token was issued to may exchange it"
                    .into(),
            ));
        }
        let scopes = rules::grant_scopes(&req.scopes, &subject.scopes())?;
        let act = rules::actor_claim(&p.owner, &p.key_id, subject.act.as_ref())?;
        let at = AccessTokenRequest {
            subject: subject.sub.clone(),
            audience,
            scopes,
            claims: subject.extra.clone(),
            client_id: p.key_id.to_string(),
            owner: subject.owner.clone(),
            ver: Some(subject.ver),
            ..AccessTokenRequest::default()
        };
        let scopes = self.check_access_request(&at)?;
        let lifetime = self.access_lifetime(None, &scopes)?.min(subject.exp - now);
        if lifetime <= 0 {
            return Err(Error::InactiveSubjectToken);
        }
        let (jwt, jti, exp) = self.mint(&at, &scopes, lifetime, Some(act), now)?;
        let entry = audit_entry(caller, now, "token.exchanged", &jti)
            .about(at.subject.clone())
            .with("grant", "token_exchange")
            .with("subject_jti", subject.jti.clone())
            .with("audience", at.audience.clone())
            .with("scopes", scopes.clone());
        let (parent, child) = (subject.jti.clone(), jti.clone());
        let (sub, ver) = (subject.sub.clone(), subject.ver);
        let recorded = self
            .store
            .write(move |c| {
                if !lineage::still_live(c, &parent, &sub, ver)? {
                    return Ok(false);
                }
                lineage::record(c, &parent, &child, exp)?;
                audit::append(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !recorded {
            // Revoked between the check above and this write: the token just signed
            // was never handed out and has no lineage, so it is simply dropped.
            tracing::info!(subject_jti = %subject.jti, "token exchange: subject token revoked meanwhile");
            return Err(Error::InactiveSubjectToken);
        }
        Metrics::inc(&self.metrics.issued);
        Ok(Granted {
            issued_token_type: ACCESS_TOKEN_TYPE,
            ..Granted::bearer(jwt, now, exp, scopes)
        })
    }
}
