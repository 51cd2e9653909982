//! Minting authorization codes for the login front end.

use crate::auth::{self, Caller};
use crate::authority::{Authority, Issued, audit_entry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::oauth::rules::{self, CODE_TTL};
use crate::store::audit;
use crate::store::codes::{self, CodeRow};
use crate::tokens::{check_field, opaque};

/// How long a used or expired code is kept (so a late replay still revokes) before
/// housekeeping deletes it, in seconds.
pub(crate) const CODE_RETENTION: i64 = 86_400;

/// An authorization code to mint (`Issue(authorization_code)`), asked for by the login
/// front end once it has authenticated `subject`.
#[derive(Debug, Clone, Default)]
pub struct CodeRequest {
    /// A registered client.
    pub client_id: String,
    /// One of the client's redirect URIs (a loopback one may differ in its port).
    pub redirect_uri: String,
    /// The authenticated user.
    pub subject: String,
    /// Scopes ⊆ the client's; none means all of the client's.
    pub scopes: Vec<String>,
    /// PKCE challenge: BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: String,
    /// Must be `S256`.
    pub code_challenge_method: String,
}

impl Authority {
    /// Mints an authorization code (caller needs `tessera:issue`: the login front end,
    /// after it authenticated the user). Bound to client, redirect URI, subject, scopes
    /// and PKCE challenge; lives `CODE_TTL` seconds; single use.
    pub async fn issue_authorization_code(
        &self,
        caller: &Caller,
        req: CodeRequest,
    ) -> Result<Issued> {
        caller.require(auth::SCOPE_ISSUE)?;
        check_field("client_id", &req.client_id, true)?;
        check_field("subject", &req.subject, true)?;
        if req.redirect_uri.is_empty() {
            return Err(Error::InvalidArgument("redirect_uri is required".into()));
        }
        rules::check_code_challenge(&req.code_challenge, &req.code_challenge_method)?;
        let client = self
            .find_client(&req.client_id)
            .await?
            .ok_or(Error::NotFound("no OAuth client has this client_id".into()))?;
        if !client
            .redirect_uris
            .iter()
            .any(|r| rules::redirect_uri_matches(r, &req.redirect_uri))
        {
            return Err(Error::InvalidArgument(
                "redirect_uri is not registered for this client (exact match required)".into(),
            ));
        }
        let scopes = rules::grant_scopes(&req.scopes, &client.scopes)?;
        let now = self.clock.now();
        let code = opaque::generate(opaque::CODE_PREFIX);
        let row = CodeRow {
            code_hash: opaque::hash(code.expose()),
            id: opaque::public_id(),
            client_id: client.id.clone(),
            redirect_uri: req.redirect_uri,
            subject: req.subject,
            scopes: scopes.clone(),
            code_challenge: req.code_challenge,
            issued_at: now,
            expires_at: now + CODE_TTL,
            used_at: None,
            family_id: None,
            access_jti: None,
        };
        let entry = audit_entry(caller, now, "code.issued", &row.id)
            .about(row.subject.clone())
            .with("client_id", row.client_id.clone())
            .with("scopes", scopes.clone());
        let code_id = row.id.clone();
        let expires_at = row.expires_at;
        let challenge_seen = self
            .store
            .write(move |c| {
                let seen = codes::challenge_seen(c, &row.code_challenge)?;
                codes::insert(c, &row)?;
                audit::append(c, &entry)?;
                Ok(seen)
            })
            .await?;
        if challenge_seen {
            // RFC 9700 §2.1.1: challenges should be per transaction. Allowed (a front
            // end may retry a lost call), but worth an operator's look.
            tracing::warn!(client_id = %client.id, code_id = %code_id, "code_challenge reused");
        }
        Metrics::inc(&self.metrics.issued);
        Ok(Issued {
            token: code,
            token_id: code_id,
            token_type: "authorization_code",
            expires_at,
            scopes,
            ..Issued::default()
        })
    }
}
