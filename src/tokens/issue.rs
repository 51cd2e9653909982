//! Minting access tokens, as [`Authority`] methods: the checks on what a caller asks
//! for, the lifetime policy, and the signature.

use serde_json::{Map, Value};

use crate::auth::{self, Caller};
use crate::authority::{Authority, Issued, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::audit;
use crate::store::refresh::{self, FamilyRow, TokenRow};
use crate::tokens::claims::{AccessClaims, REGISTERED};
use crate::tokens::{self, check_field, check_list, normalize_scopes, opaque};

/// Largest serialized extra-claims object.
pub(crate) const MAX_CLAIMS_BYTES: usize = 4096;

/// An access token to mint.
#[derive(Debug, Clone, Default)]
pub struct AccessTokenRequest {
    /// `sub`.
    pub subject: String,
    /// `aud` (at least one).
    pub audience: Vec<String>,
    /// Scopes (no `tessera:*`).
    pub scopes: Vec<String>,
    /// Requested lifetime in seconds; capped by configuration.
    pub ttl: Option<i64>,
    /// Extra claims.
    pub claims: Map<String, Value>,
    /// `client_id`; defaults to the caller's key id.
    pub client_id: String,
    /// Also mint a refresh token.
    pub refresh_token: bool,
    /// The `owner` claim. Set by the `client_credentials` grant (and carried through
    /// token exchange); never taken from an `Issue` request.
    pub owner: Option<String>,
    /// The `ver` to stamp; `None` means the subject's current version. A token derived
    /// by exchange keeps its subject token's, so a bump racing the exchange still ends it.
    pub ver: Option<u64>,
}

impl Authority {
    /// Lifetime of an access token: min(requested or default, every cap of its scopes).
    pub(crate) fn access_lifetime(&self, requested: Option<i64>, scopes: &[String]) -> Result<i64> {
        let cap = self.config.scope_cap(scopes).as_secs() as i64;
        let want = match requested {
            None => self.config.access_token_ttl.as_secs() as i64,
            Some(t) if t <= 0 => return Err(Error::InvalidArgument("ttl must be positive".into())),
            Some(t) => t,
        };
        Ok(want.min(cap))
    }

    /// Checks an access-token request; returns normalized scopes.
    pub(crate) fn check_access_request(&self, req: &AccessTokenRequest) -> Result<Vec<String>> {
        check_field("subject", &req.subject, true)?;
        check_list("audience", &req.audience, true, tokens::MAX_AUDIENCES)?;
        check_field("client_id", &req.client_id, false)?;
        let scopes = normalize_scopes(&req.scopes)?;
        if scopes
            .iter()
            .any(|s| s.starts_with(tokens::SERVICE_SCOPE_PREFIX))
        {
            return Err(Error::InvalidArgument(
                "tessera:* scopes are never put in access tokens".into(),
            ));
        }
        if let Some(k) = req.claims.keys().find(|k| REGISTERED.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "claim {k:?} is set by Tessera, not by the request"
            )));
        }
        if req.claims.keys().any(|k| !tokens::valid_list_entry(k)) {
            return Err(Error::InvalidArgument(format!(
                "claim names must be 1-{} bytes without whitespace, control or invisible characters",
                tokens::MAX_FIELD_LEN
            )));
        }
        if serde_json::to_vec(&req.claims).map_or(true, |v| v.len() > MAX_CLAIMS_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "claims: at most {MAX_CLAIMS_BYTES} bytes of JSON"
            )));
        }
        Ok(scopes)
    }

    /// Issues an access token, and a refresh token if asked (caller needs `tessera:issue`).
    pub(crate) async fn issue_access_token(
        &self,
        caller: &Caller,
        mut req: AccessTokenRequest,
    ) -> Result<Issued> {
        let principal = caller.require(auth::SCOPE_ISSUE)?;
        let scopes = self.check_access_request(&req)?;
        if req.client_id.is_empty() {
            req.client_id = principal.key_id.to_string();
        }
        let now = self.clock.now();
        let lifetime = self.access_lifetime(req.ttl, &scopes)?;
        let (jwt, jti, exp) = self.mint(&req, &scopes, lifetime, None, now)?;
        let mut issued = Issued {
            token: Secret::new(jwt),
            token_id: jti.clone(),
            token_type: "Bearer",
            expires_at: exp,
            scopes: scopes.clone(),
            ..Issued::default()
        };
        let mut entry = audit_entry(caller, now, "token.issued", &jti)
            .about(req.subject.clone())
            .with("audience", req.audience.clone())
            .with("scopes", scopes.clone());
        if req.refresh_token {
            let family = self.new_family(
                &req.subject,
                &req.client_id,
                &req.audience,
                &scopes,
                Value::Object(req.claims.clone()).to_string(),
                now,
            );
            let (rt, row) = self.new_refresh_token(&family, now);
            let rt_exp = row.expires_at;
            entry = entry.with("refresh_family", family.id.clone());
            let jti_c = jti.clone();
            self.store
                .write(move |c| {
                    refresh::insert_family(c, &family)?;
                    refresh::insert_token(c, &row)?;
                    refresh::record_access_token(c, &family.id, &jti_c, exp)?;
                    audit::append(c, &entry)
                })
                .await?;
            issued.refresh_token = rt;
            issued.refresh_expires_at = rt_exp;
        } else {
            // A plain access token has no durable state: only its audit record, which
            // need not hold up the answer (see `Store::audit_later`).
            self.store.audit_later(entry).await?;
        }
        Metrics::inc(&self.metrics.issued);
        Ok(issued)
    }

    /// Signs an access token; returns (jwt, jti, exp).
    pub fn mint(
        &self,
        req: &AccessTokenRequest,
        scopes: &[String],
        lifetime: i64,
        act: Option<Value>,
        now: i64,
    ) -> Result<(String, String, i64)> {
        let (_, jti) = tokens::new_jti();
        let exp = now + lifetime;
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: req.subject.clone(),
            aud: req.audience.clone(),
            exp,
            nbf: now,
            iat: now,
            jti: jti.clone(),
            scope: scopes.join(" "),
            client_id: req.client_id.clone(),
            ver: req
                .ver
                .unwrap_or_else(|| self.revocations.version(&req.subject)),
            act,
            owner: req.owner.clone(),
            extra: req.claims.clone(),
        };
        let (jwt, _kid) = self.keys.sign(&claims, now)?;
        Ok((jwt, jti, exp))
    }

    /// A new refresh family: the grant a chain of refresh tokens carries, living
    /// `refresh_family_ttl` from `now` however often it is rotated.
    pub(crate) fn new_family(
        &self,
        subject: &str,
        client_id: &str,
        audience: &[String],
        scopes: &[String],
        claims: String,
        now: i64,
    ) -> FamilyRow {
        FamilyRow {
            id: opaque::public_id(),
            subject: subject.to_string(),
            client_id: client_id.to_string(),
            audience: audience.to_vec(),
            scopes: scopes.to_vec(),
            claims,
            created_at: now,
            absolute_expires_at: now + self.config.refresh_family_ttl.as_secs() as i64,
            revoked_at: None,
        }
    }

    /// A new refresh token in `family`: its text, shown once, and its row, which holds
    /// only the hash. It lives `refresh_token_ttl`, and never past the family.
    pub(crate) fn new_refresh_token(&self, family: &FamilyRow, now: i64) -> (Secret, TokenRow) {
        let text = opaque::generate(opaque::REFRESH_PREFIX);
        let row = TokenRow {
            token_hash: opaque::hash(text.expose()),
            family_id: family.id.clone(),
            id: opaque::public_id(),
            issued_at: now,
            expires_at: (now + self.config.refresh_token_ttl.as_secs() as i64)
                .min(family.absolute_expires_at),
            used_at: None,
        };
        (text, row)
    }
}
