//! RFC 7009 revocation, family revocation and token-version bumps, as [`Authority`]
//! methods. Each answers only once its write is durable, then updates memory.

use super::target::{self, Named, Presented};
use crate::apikeys::last_live_admin;
use crate::auth::{self, Caller};
use crate::authority::{Authority, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::apikeys::{self as apikey_rows};
use crate::store::audit;
use crate::store::lineage;
use crate::store::refresh::{self, FamilyRow};
use crate::store::revocation as revocation_rows;
use crate::tokens::verify::{self, MAX_TOKEN_LEN};
use crate::tokens::{self, Jti, check_field, opaque};

impl Authority {
    /// RFC 7009 revocation (caller needs `tessera:revoke`). Unknown and already-revoked
    /// tokens succeed. Answers only after the revocation is durable.
    pub(crate) async fn revoke(&self, caller: &Caller, token: &str, token_id: &str) -> Result<()> {
        caller.require(auth::SCOPE_REVOKE)?;
        if token.len() > MAX_TOKEN_LEN || token_id.len() > tokens::MAX_FIELD_LEN {
            return Err(Error::InvalidArgument("token or token_id too long".into()));
        }
        let now = self.clock.now();
        match (token.is_empty(), token_id.is_empty()) {
            (true, true) => Err(Error::InvalidArgument("give token or token_id".into())),
            (false, false) => Err(Error::InvalidArgument(
                "give token or token_id, not both".into(),
            )),
            (false, true) => self.revoke_token(caller, token, now).await,
            (true, false) => self.revoke_id(caller, token_id, now).await,
        }
    }

    /// RFC 7009 revocation at the HTTP endpoint. A caller holding `tessera:revoke` is
    /// an operator and revokes any access or refresh token, as [`Authority::revoke`].
    /// Any other authenticated client may revoke the tokens issued to it (RFC 7009
    /// §2.1): an access token whose `client_id` is its id, or a refresh token of a
    /// family bound to it. Another client's token is refused (`unauthorized_client`)
    /// and stays live; an invalid or unknown token succeeds (§2.2). API keys are client
    /// credentials, not tokens issued to a client: they are revoked over gRPC only.
    pub(crate) async fn revoke_for_client(&self, caller: &Caller, token: &str) -> Result<()> {
        let Some(principal) = &caller.principal else {
            return Err(Error::Unauthenticated("client authentication required"));
        };
        if token.is_empty() {
            return Err(Error::InvalidArgument("token is required".into()));
        }
        // Decided by shape alone, so the answer says nothing about the key's validity.
        let presented = target::presented(token);
        if presented == Presented::ApiKey {
            return Err(Error::UnsupportedTokenType(
                "API keys are not revoked here: use the gRPC Revoke call".into(),
            ));
        }
        if principal.has(auth::SCOPE_REVOKE) {
            return self.revoke(caller, token, "").await;
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidArgument(format!(
                "token longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let now = self.clock.now();
        let client = self.client_keys.client_of(&principal.key_id);
        let client = client.as_str();
        let not_yours = || {
            tracing::info!(client_id = %client, "refused to revoke a token issued to another client");
            Error::UnauthorizedClient(
                "this token was not issued to the authenticated client".into(),
            )
        };
        match presented {
            Presented::ApiKey | Presented::MalformedRefreshToken => {
                self.audit_noop(caller, now).await
            }
            Presented::RefreshToken => match self.refresh_family_of(token).await? {
                Some(family) if family.client_id == client => {
                    self.revoke_family(caller, &family.id, "refresh.revoked", now)
                        .await
                }
                Some(_) => Err(not_yours()),
                None => self.audit_noop(caller, now).await,
            },
            Presented::AccessToken => match verify::verify(token, &self.rules(now)) {
                Ok((claims, jti)) if claims.client_id == client => {
                    self.block(caller, jti, &claims.jti, claims.exp, now).await
                }
                Ok(_) => Err(not_yours()),
                Err(_) => self.audit_noop(caller, now).await,
            },
        }
    }

    async fn revoke_token(&self, caller: &Caller, token: &str, now: i64) -> Result<()> {
        match target::presented(token) {
            // Only the real key revokes itself: a right id with a wrong secret is a no-op.
            Presented::ApiKey => match self.callers.check(token, now) {
                Some(c) => self.revoke_api_key(caller, &c.row.id.clone(), now).await,
                None => self.audit_noop(caller, now).await,
            },
            Presented::RefreshToken => match self.refresh_family_of(token).await? {
                Some(family) => {
                    self.revoke_family(caller, &family.id, "refresh.revoked", now)
                        .await
                }
                None => self.audit_noop(caller, now).await,
            },
            Presented::MalformedRefreshToken => self.audit_noop(caller, now).await,
            // Only a genuine access token of ours names a jti worth blocking.
            Presented::AccessToken => match verify::verify(token, &self.rules(now)) {
                Ok((claims, jti)) => self.block(caller, jti, &claims.jti, claims.exp, now).await,
                Err(_) => self.audit_noop(caller, now).await,
            },
        }
    }

    /// The family of a (well-formed) refresh token, used or not.
    async fn refresh_family_of(&self, token: &str) -> Result<Option<FamilyRow>> {
        let hash = opaque::hash(token);
        let found = self.store.read(move |c| refresh::find(c, &hash)).await?;
        Ok(found.map(|(_, family)| family))
    }

    async fn revoke_id(&self, caller: &Caller, id: &str, now: i64) -> Result<()> {
        match target::named(id) {
            Named::ApiKey => self.revoke_api_key(caller, id, now).await,
            Named::AccessToken(jti) => {
                // Without the token its exp is unknown: keep the entry as long as any token lives.
                let exp = now + self.config.max_access_token_ttl.as_secs() as i64;
                self.block(caller, jti, id, exp, now).await
            }
            Named::Nothing => self.audit_noop(caller, now).await,
        }
    }

    /// Revokes an API key, under the rules that prevent a lock-out from below: the
    /// caller must hold every scope of the key (`tessera:admin` holds them all), and the
    /// last live admin key stays.
    async fn revoke_api_key(&self, caller: &Caller, id: &str, now: i64) -> Result<()> {
        let principal = caller.require(auth::SCOPE_REVOKE)?;
        // A key's scopes never change after issue, so memory answers this; a key not
        // in memory is revoked already and revoking it again changes nothing.
        let target_is_admin = match self.callers.get(id) {
            Some(target) => {
                if let Some(missing) = target.row.scopes.iter().find(|s| !principal.has(s)) {
                    return Err(Error::PermissionDenied(format!(
                        "revoking API key {id} needs every scope it holds, and this API key lacks {missing}"
                    )));
                }
                target.row.scopes.iter().any(|s| s == auth::SCOPE_ADMIN)
            }
            None => false,
        };
        let entry = audit_entry(caller, now, "api_key.revoked", id);
        let key_id = id.to_string();
        self.store
            .write(move |c| {
                // Counted inside the revoking transaction: of two concurrent revocations
                // of the last two admin keys, the writer runs one after the other and
                // the second sees the first.
                if target_is_admin && last_live_admin(c, &key_id, now)? {
                    return Err(Error::FailedPrecondition(
                        "this is the last live admin API key: issue another admin key before revoking it \
                         (an operator with the data dir can run `tessera admin recover`)"
                            .into(),
                    ));
                }
                apikey_rows::revoke(c, &key_id, now)?;
                audit::append(c, &entry)
            })
            .await
            .inspect_err(|e| {
                if matches!(e, Error::FailedPrecondition(_)) {
                    tracing::warn!(key_id = %id, "refused to revoke the last live admin API key");
                }
            })?;
        self.callers.remove(id);
        Metrics::inc(&self.metrics.revoked);
        tracing::info!(key_id = %id, "API key revoked");
        Ok(())
    }

    async fn block(
        &self,
        caller: &Caller,
        jti: Jti,
        jti_text: &str,
        exp: i64,
        now: i64,
    ) -> Result<()> {
        let entry = audit_entry(caller, now, "token.revoked", jti_text);
        let text = jti_text.to_string();
        let blocked = self
            .store
            .write(move |c| {
                let all = lineage::block_with_descendants(c, vec![(text, exp)], now)?;
                audit::append(c, &entry.with("derived_revoked", all.len() - 1))?;
                Ok(all)
            })
            .await?;
        self.revocations.block(jti, exp);
        self.block_in_memory(&blocked);
        Metrics::inc(&self.metrics.revoked);
        tracing::info!(jti = %jti_text, derived = blocked.len() - 1, "access token revoked");
        Ok(())
    }

    /// Revokes a refresh family and blocklists every access token it minted and every
    /// token derived from those by exchange.
    pub(crate) async fn revoke_family(
        &self,
        caller: &Caller,
        family_id: &str,
        kind: &str,
        now: i64,
    ) -> Result<()> {
        let entry = audit_entry(caller, now, kind, family_id);
        let id = family_id.to_string();
        let blocked = self
            .store
            .write(move |c| {
                let minted = refresh::revoke_family(c, &id, now)?;
                let all = lineage::block_with_descendants(c, minted, now)?;
                audit::append(c, &entry.with("access_tokens_revoked", all.len()))?;
                Ok(all)
            })
            .await?;
        self.block_in_memory(&blocked);
        Metrics::inc(&self.metrics.revoked);
        tracing::info!(family = %family_id, access_tokens = blocked.len(), "refresh family revoked");
        Ok(())
    }

    pub(crate) fn block_in_memory(&self, blocked: &[(String, i64)]) {
        for (jti, exp) in blocked {
            if let Some(j) = tokens::parse_jti(jti) {
                self.revocations.block(j, *exp);
            }
        }
    }

    async fn audit_noop(&self, caller: &Caller, now: i64) -> Result<()> {
        let entry = audit_entry(caller, now, "revoke.noop", "");
        self.store.write(move |c| audit::append(c, &entry)).await
    }

    /// "Log out everywhere" (caller needs `tessera:revoke`): bumps the subject's token
    /// version and revokes its refresh families.
    pub(crate) async fn bump_token_version(
        &self,
        caller: &Caller,
        subject: &str,
        reason: &str,
    ) -> Result<u64> {
        caller.require(auth::SCOPE_REVOKE)?;
        check_field("subject", subject, true)?;
        check_field("reason", reason, false)?;
        let now = self.clock.now();
        let entry = audit_entry(caller, now, "token_version.bumped", "")
            .about(subject)
            .with("reason", reason);
        let sub = subject.to_string();
        let (version, blocked) = self
            .store
            .write(move |c| {
                let v = revocation_rows::bump_version(c, &sub, now)?;
                // Tokens of the subject die by version; the blocklist also reaches what
                // its families' tokens were exchanged into.
                let minted = refresh::revoke_subject(c, &sub, now)?;
                let minted = lineage::block_with_descendants(c, minted, now)?;
                audit::append(c, &entry.with("version", v))?;
                Ok((v, minted))
            })
            .await?;
        self.revocations.set_version(subject, version);
        self.block_in_memory(&blocked);
        Metrics::inc(&self.metrics.bumps);
        tracing::info!(%subject, version, "token version bumped");
        Ok(version)
    }
}
