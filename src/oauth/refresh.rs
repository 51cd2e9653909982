//! The `refresh_token` grant: rotation with reuse detection and the optional grace
//! period for a retry by the same client.

use serde_json::{Map, Value};

use super::{Granted, Spent, authenticate, requesting_client, revoke_family_in};
use crate::auth::Caller;
use crate::authority::{Authority, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Reuse};
use crate::oauth::rules::{self, GraceRecord, RefreshUse};
use crate::secret::Secret;
use crate::store::audit;
use crate::store::clients;
use crate::store::refresh::{self, FamilyRow, GraceRow};
use crate::tokens::AccessTokenRequest;
use crate::tokens::opaque;

/// A `refresh_token` grant.
#[derive(Debug, Default)]
pub struct RefreshRequest {
    /// Optional; if given, must be the client the token was issued to.
    pub client_id: String,
    /// The refresh token.
    pub refresh_token: Secret,
    /// Narrower scopes for this access token; none means the grant's.
    pub scopes: Vec<String>,
}

/// A refresh token's successor pair as sealed for the grace period. Zeroized
/// plaintext only; what is stored is its AES-256-GCM sealing. `jti` and
/// `refresh_expires_at` are not answered any more but stay in the sealed format, so
/// pairs sealed by an earlier build and by this one read alike.
#[derive(serde::Serialize, serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct SuccessorPair {
    access_token: String,
    jti: String,
    issued_at: i64,
    expires_at: i64,
    refresh_token: String,
    refresh_expires_at: i64,
    scopes: Vec<String>,
}

/// The sealing context of a used refresh token's successor pair: its hash, so a
/// sealed pair cannot be moved to another token's row and opened there. `reseal`
/// seals the same rows again under a new master key.
pub(crate) fn grace_context(used_hash: &[u8]) -> String {
    use base64::Engine;
    format!(
        "refresh-grace:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(used_hash)
    )
}

impl Authority {
    /// `refresh_token`: rotation. The token must be unused, unexpired (idle and
    /// absolute) and in a live family; it is marked used and its successor stored in
    /// the same write. Presenting a used token revokes the whole family and every access
    /// token minted from it (RFC 9700 §4.14.2), audited as `refresh.reuse_detected`.
    /// Narrower scopes apply to this access token only; the grant keeps its scopes.
    /// If the family's client is a registered confidential client, the caller must
    /// authenticate as it.
    pub async fn grant_refresh_token(
        &self,
        caller: &Caller,
        req: RefreshRequest,
    ) -> Result<Granted> {
        let text = req.refresh_token.expose();
        if text.is_empty() {
            return Err(Error::InvalidArgument("refresh_token is required".into()));
        }
        if !req.client_id.is_empty() {
            // Named and authenticated client must agree.
            requesting_client(self.authenticated_client(caller).as_deref(), &req.client_id)?;
        }
        if !opaque::well_formed(text, opaque::REFRESH_PREFIX) {
            return Err(Error::InvalidGrant("unknown refresh token"));
        }
        let hash = opaque::hash(text);
        let authenticated = self.authenticated_client(caller);
        let caller_key = authenticated.clone();
        let (found, family_client, caller_is_other_client) = self
            .store
            .read(move |c| {
                let Some((t, f)) = refresh::find(c, &hash)? else {
                    return Ok((None, None, false));
                };
                let fc = clients::find(c, &f.client_id)?;
                let other = match caller_key {
                    Some(k) if k != f.client_id => clients::find(c, &k)?.is_some(),
                    _ => false,
                };
                Ok((Some((t, f)), fc, other))
            })
            .await?;
        let Some((token, family)) = found else {
            return Err(Error::InvalidGrant("unknown refresh token"));
        };

        // Client binding (OAuth 2.1 §4.3.1): a confidential client authenticates; no
        // other client may use the token.
        if let Some(c) = family_client.as_ref().filter(|c| !c.public) {
            authenticate(authenticated.as_deref(), c)?;
        }
        if caller_is_other_client
            || (!req.client_id.is_empty() && req.client_id != family.client_id)
        {
            return Err(Error::InvalidGrant(
                "refresh token was issued to another client",
            ));
        }
        if family.revoked_at.is_some() {
            return Err(Error::InvalidGrant("refresh token has been revoked"));
        }
        let scopes = rules::grant_scopes(&req.scopes, &family.scopes)?;
        let now = self.clock.now();
        let reused = token.used_at.is_some();
        if !reused && (now >= token.expires_at || now >= family.absolute_expires_at) {
            return Err(Error::InvalidGrant("refresh token has expired"));
        }

        // Mint the successor off the writer thread; the write decides whether it counts.
        let mut minted = None;
        if !reused {
            let at = AccessTokenRequest {
                subject: family.subject.clone(),
                audience: family.audience.clone(),
                claims: serde_json::from_str::<Map<String, Value>>(&family.claims)
                    .map_err(Error::internal)?,
                client_id: family.client_id.clone(),
                ..AccessTokenRequest::default()
            };
            let lifetime = self.access_lifetime(None, &scopes)?;
            let (jwt, jti, exp) = self.mint(&at, &scopes, lifetime, None, now)?;
            let (rt, row) = self.new_refresh_token(&family, now);
            minted = Some((jwt, jti, exp, rt, row));
        }
        // The first use's successor pair, sealed now (off the writer thread) in case
        // the same client retries within the grace period; stored only if this use wins.
        let grace = self.config.refresh_reuse_grace.as_secs() as i64;
        let presenter = self.presenter(caller, &req.client_id);
        let kept = match &minted {
            Some((jwt, jti, exp, rt, row)) if grace > 0 => {
                let pair = SuccessorPair {
                    access_token: jwt.clone(),
                    jti: jti.clone(),
                    issued_at: now,
                    expires_at: *exp,
                    refresh_token: rt.expose().to_string(),
                    refresh_expires_at: row.expires_at,
                    scopes: scopes.clone(),
                };
                let plain =
                    zeroize::Zeroizing::new(serde_json::to_vec(&pair).map_err(Error::internal)?);
                Some(GraceRow {
                    token_hash: hash,
                    family_id: family.id.clone(),
                    presenter: presenter.clone(),
                    successor_hash: row.token_hash,
                    sealed: self.keys.seal_secret(&grace_context(&hash), &plain)?,
                    expires_at: now.saturating_add(grace),
                })
            }
            _ => None,
        };
        let rotation = minted
            .as_ref()
            .map(|(_, jti, exp, _, row)| refresh::Rotation {
                used: hash,
                successor: row.clone(),
                jti: jti.clone(),
                access_expires_at: *exp,
                grace: kept,
            });
        let rotated = audit_entry(caller, now, "refresh.rotated", &family.id)
            .about(family.subject.clone())
            .with("used", token.id.clone())
            .with(
                "new",
                rotation.as_ref().map_or("", |r| r.successor.id.as_str()),
            )
            .with("jti", rotation.as_ref().map_or("", |r| r.jti.as_str()))
            .with("scopes", scopes.clone());
        let rotated = match rotation {
            Some(r) => self.store.rotate_refresh(r, rotated, now).await?,
            None => false,
        };
        let spent = if rotated {
            Spent::Fresh
        } else {
            self.refresh_not_rotated(caller, &family, &token.id, hash, presenter, now)
                .await?
        };
        match spent {
            Spent::Fresh => {}
            Spent::Dead => {
                return Err(Error::InvalidGrant("refresh token is no longer valid"));
            }
            Spent::Reused(blocked) => {
                self.metrics.reuse(Reuse::RefreshToken);
                self.after_reuse("used refresh token", &family.id, &blocked);
                return Err(Error::InvalidGrant(
                    "refresh token was already used; its grant has been revoked",
                ));
            }
            Spent::Replayed(sealed) => {
                let plain = self.keys.open_secret(&grace_context(&hash), &sealed)?;
                let mut pair: SuccessorPair =
                    serde_json::from_slice(&plain).map_err(Error::internal)?;
                let take = std::mem::take::<String>;
                tracing::info!(family = %family.id, used = %token.id, "refresh token retried inside the grace period: same successor pair");
                return Ok(Granted {
                    refresh_token: Secret::new(take(&mut pair.refresh_token)),
                    ..Granted::bearer(
                        take(&mut pair.access_token),
                        pair.issued_at,
                        pair.expires_at,
                        std::mem::take(&mut pair.scopes),
                    )
                });
            }
        }
        let Some((jwt, _, exp, rt, _)) = minted else {
            return Err(Error::internal("refresh rotated without a successor"));
        };
        Metrics::inc(&self.metrics.issued);
        Ok(Granted {
            refresh_token: rt,
            ..Granted::bearer(jwt, now, exp, scopes)
        })
    }

    /// The write for a refresh token that [`Store::rotate_refresh`] could not rotate:
    /// it looks at the token again to say why. Gone, revoked or expired is
    /// [`Spent::Dead`]; a used one is a retry inside the grace period (the first use's
    /// sealed successor pair) or a replay, which revokes the family.
    ///
    /// [`Store::rotate_refresh`]: crate::store::Store::rotate_refresh
    async fn refresh_not_rotated(
        &self,
        caller: &Caller,
        family: &FamilyRow,
        used: &str,
        hash: [u8; 32],
        presenter: String,
        now: i64,
    ) -> Result<Spent> {
        let retried = audit_entry(caller, now, "refresh.grace_retry", &family.id)
            .about(family.subject.clone())
            .with("used", used);
        let reuse = audit_entry(caller, now, "refresh.reuse_detected", &family.id)
            .about(family.subject.clone())
            .with("used", used)
            .with("family_revoked", true);
        self.store
            .write(move |c| {
                let Some((t, f)) = refresh::find(c, &hash)? else {
                    return Ok(Spent::Dead);
                };
                // `rotate` takes every unused token of a live family before its expiry.
                if f.revoked_at.is_some() || t.used_at.is_none() {
                    return Ok(Spent::Dead);
                }
                // Used before: a retry inside the grace period, or a replay (or the
                // loser of a race from another client) that revokes the grant.
                let record = refresh::find_grace(c, &hash)?;
                let decision = rules::refresh_use(
                    t.used_at,
                    t.expires_at.min(f.absolute_expires_at),
                    now,
                    record.as_ref().map(|(g, successor_used)| GraceRecord {
                        presenter: &g.presenter,
                        until: g.expires_at,
                        successor_used: *successor_used,
                    }),
                    &presenter,
                );
                if let (RefreshUse::GraceRetry, Some((g, _))) = (decision, record) {
                    audit::append(c, &retried)?;
                    return Ok(Spent::Replayed(g.sealed));
                }
                let blocked = revoke_family_in(c, &f.id, now)?;
                audit::append(c, &reuse)?;
                Ok(Spent::Reused(blocked))
            })
            .await
    }
}
