//! The `authorization_code` grant with PKCE.

use super::{Granted, Spent, authenticate, requesting_client};
use crate::auth::Caller;
use crate::authority::{Authority, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Reuse};
use crate::oauth::rules::{self, CodeUse};
use crate::secret::Secret;
use crate::store::audit;
use crate::store::clients;
use crate::store::codes;
use crate::store::lineage;
use crate::store::refresh;
use crate::tokens::AccessTokenRequest;
use crate::tokens::opaque;

/// An `authorization_code` grant.
#[derive(Debug, Default)]
pub struct CodeRedemption {
    /// The client; may be left empty when the caller authenticated as it.
    pub client_id: String,
    /// The code.
    pub code: Secret,
    /// PKCE verifier.
    pub code_verifier: Secret,
    /// Exactly the redirect URI of the authorization request.
    pub redirect_uri: String,
}

impl Authority {
    /// `authorization_code` with PKCE: the client must be the code's (and authenticate
    /// if confidential), the verifier must match the `S256` challenge, the redirect URI
    /// must repeat the authorization request's exactly, and the code must be unused and
    /// younger than `CODE_TTL`. Issues an access token (`aud` = the client id, the
    /// RFC 9068 §3 default resource) and a refresh token in a new family. A second
    /// redemption with otherwise valid parameters revokes what the first one issued.
    pub async fn grant_authorization_code(
        &self,
        caller: &Caller,
        req: CodeRedemption,
    ) -> Result<Granted> {
        let authenticated = self.authenticated_client(caller);
        let client_id = requesting_client(authenticated.as_deref(), &req.client_id)?;
        if req.code.expose().is_empty() {
            return Err(Error::InvalidArgument("code is required".into()));
        }
        if req.redirect_uri.is_empty() {
            return Err(Error::InvalidArgument("redirect_uri is required".into()));
        }
        let hash = opaque::hash(req.code.expose());
        let well_formed = opaque::well_formed(req.code.expose(), opaque::CODE_PREFIX);
        let (client, code) = self
            .store
            .read(move |c| {
                let code = if well_formed {
                    codes::find(c, &hash)?
                } else {
                    None
                };
                Ok((clients::find(c, &client_id)?, code))
            })
            .await?;
        let client = client.ok_or(Error::Unauthenticated("unknown client"))?;
        authenticate(authenticated.as_deref(), &client)?;
        let code = code.ok_or(Error::InvalidGrant("unknown authorization code"))?;
        if code.client_id != client.id {
            return Err(Error::InvalidGrant(
                "authorization code was issued to another client",
            ));
        }
        if code.redirect_uri != req.redirect_uri {
            return Err(Error::InvalidGrant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        rules::verify_pkce(req.code_verifier.expose(), &code.code_challenge)?;
        let now = self.clock.now();
        let first = match rules::code_use(code.used_at, code.expires_at, now) {
            CodeUse::Expired => return Err(Error::InvalidGrant("authorization code has expired")),
            CodeUse::First => true,
            // Decided again in the write, which revokes what the first use issued.
            CodeUse::Replay => false,
        };

        let mut minted = None;
        if first {
            let at = AccessTokenRequest {
                subject: code.subject.clone(),
                audience: vec![client.id.clone()],
                client_id: client.id.clone(),
                ..AccessTokenRequest::default()
            };
            let lifetime = self.access_lifetime(None, &code.scopes)?;
            let (jwt, jti, exp) = self.mint(&at, &code.scopes, lifetime, None, now)?;
            let family = self.new_family(
                &code.subject,
                &client.id,
                &at.audience,
                &code.scopes,
                "{}".into(),
                now,
            );
            let (rt, row) = self.new_refresh_token(&family, now);
            minted = Some((jwt, jti, exp, rt, row, family));
        }
        let issue = minted
            .as_ref()
            .map(|(_, jti, exp, _, row, family)| (family.clone(), row.clone(), jti.clone(), *exp));
        let redeemed = audit_entry(caller, now, "code.redeemed", &code.id)
            .about(code.subject.clone())
            .with("client_id", client.id.clone())
            .with("scopes", code.scopes.clone())
            .with("jti", issue.as_ref().map_or("", |i| i.2.as_str()))
            .with(
                "refresh_family",
                issue.as_ref().map_or("", |i| i.0.id.as_str()),
            );
        let replayed = audit_entry(caller, now, "code.reuse_detected", &code.id)
            .about(code.subject.clone())
            .with("client_id", client.id.clone())
            .with("issued_revoked", true);
        let spent = self
            .store
            .write(move |c| {
                let Some(cur) = codes::find(c, &hash)? else {
                    return Ok(Spent::Dead);
                };
                match rules::code_use(cur.used_at, cur.expires_at, now) {
                    CodeUse::Expired => return Ok(Spent::Dead),
                    CodeUse::First => {
                        // Writes are serialized, so the conditional update cannot lose
                        // here; if it does (no successor was minted because the read
                        // saw the code used), nothing changes.
                        let Some((family, row, jti, exp)) = issue else {
                            return Ok(Spent::Dead);
                        };
                        if !codes::redeem(c, &hash, now, &family.id, &jti, exp)? {
                            return Ok(Spent::Dead);
                        }
                        refresh::insert_family(c, &family)?;
                        refresh::insert_token(c, &row)?;
                        refresh::record_access_token(c, &family.id, &jti, exp)?;
                        audit::append(c, &redeemed)?;
                        return Ok(Spent::Fresh);
                    }
                    CodeUse::Replay => {}
                }
                // Used before (a replay, or the loser of a race): revoke what it issued.
                let mut roots = match &cur.family_id {
                    Some(f) => refresh::revoke_family(c, f, now)?,
                    None => Vec::new(),
                };
                roots.extend(cur.access_jti.clone());
                let blocked = lineage::block_with_descendants(c, roots, now)?;
                audit::append(c, &replayed)?;
                Ok(Spent::Reused(blocked))
            })
            .await?;
        match spent {
            Spent::Fresh => {}
            Spent::Dead => return Err(Error::InvalidGrant("authorization code has expired")),
            Spent::Replayed(_) => {
                return Err(Error::internal("authorization codes have no grace period"));
            }
            Spent::Reused(blocked) => {
                self.metrics.reuse(Reuse::AuthorizationCode);
                self.after_reuse("used authorization code", &code.id, &blocked);
                return Err(Error::InvalidGrant(
                    "authorization code was already used; what it issued has been revoked",
                ));
            }
        }
        let Some((jwt, _, exp, rt, _, _)) = minted else {
            return Err(Error::internal("code redeemed without tokens"));
        };
        Metrics::inc(&self.metrics.issued);
        Ok(Granted {
            refresh_token: rt,
            ..Granted::bearer(jwt, now, exp, code.scopes)
        })
    }
}
