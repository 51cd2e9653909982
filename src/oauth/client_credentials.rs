//! The `client_credentials` grant.

use super::Granted;
use crate::auth::Caller;
use crate::authority::{Authority, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::oauth::rules;
use crate::tokens::AccessTokenRequest;
use crate::tokens::check_field;

/// A `client_credentials` grant.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentialsRequest {
    /// Optional; if given, must be the authenticated key's id.
    pub client_id: String,
    /// Scopes ⊆ the key's; none means all of the key's but `tessera:*`.
    pub scopes: Vec<String>,
    /// `aud`; none means the key's own id.
    pub audience: Vec<String>,
}

impl Authority {
    /// `client_credentials`: the caller's API key is the credential. `sub` and
    /// `client_id` = the key's id (RFC 9068 §2.2: the client acts on its own behalf),
    /// `owner` = the key's owner, scopes ⊆ the key's (never `tessera:*`), audience as
    /// asked or the key's own id. No refresh token (RFC 6749 §4.4.3).
    pub async fn grant_client_credentials(
        &self,
        caller: &Caller,
        req: ClientCredentialsRequest,
    ) -> Result<Granted> {
        check_field("client_id", &req.client_id, false)?;
        let Some(p) = &caller.principal else {
            if !req.client_id.is_empty()
                && self
                    .find_client(&req.client_id)
                    .await?
                    .is_some_and(|c| c.public)
            {
                return Err(Error::UnauthorizedClient(
                    "a public client cannot use client_credentials".into(),
                ));
            }
            return Err(Error::Unauthenticated(
                "client_credentials needs the caller's API key: authorization: Bearer <api key>",
            ));
        };
        // A rotated-in client secret acts as its client, so `sub` and `client_id`
        // stay the client id across secret rotations.
        let me = self.client_keys.client_of(&p.key_id);
        if !req.client_id.is_empty() && req.client_id != me {
            return Err(Error::Unauthenticated(
                "client_id does not match the authenticated client",
            ));
        }
        let scopes = rules::grant_scopes(&req.scopes, &p.scopes)?;
        let audience = if req.audience.is_empty() {
            vec![me.clone()]
        } else {
            req.audience
        };
        let at = AccessTokenRequest {
            subject: me.clone(),
            audience,
            scopes,
            client_id: me,
            owner: Some(p.owner.to_string()),
            ..AccessTokenRequest::default()
        };
        let scopes = self.check_access_request(&at)?;
        let now = self.clock.now();
        let lifetime = self.access_lifetime(None, &scopes)?;
        let (jwt, jti, exp) = self.mint(&at, &scopes, lifetime, None, now)?;
        let entry = audit_entry(caller, now, "token.exchanged", &jti)
            .about(at.subject.clone())
            .with("grant", "client_credentials")
            .with("owner", &*p.owner)
            .with("audience", at.audience.clone())
            .with("scopes", scopes.clone());
        // As for Issue: the token has no durable state of its own, so its audit record
        // is group-committed behind the answer.
        self.store.audit_later(entry).await?;
        Metrics::inc(&self.metrics.issued);
        Ok(Granted::bearer(jwt, now, exp, scopes))
    }
}
