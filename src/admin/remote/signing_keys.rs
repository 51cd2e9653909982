//! `signing-keys list|rotate|revoke`: the service's own signing keys.

use serde_json::json;

use super::{Failure, Output, Remote};
use crate::admin::render;
use crate::proto::{ListSigningKeysRequest, RevokeSigningKeyRequest, RotateSigningKeyRequest};

impl Remote {
    /// `signing-keys list`.
    pub(crate) async fn signing_keys_list(&self) -> Result<Output, Failure> {
        let keys = self
            .keys()
            .list_signing_keys(self.authed(ListSigningKeysRequest {})?)
            .await?
            .into_inner()
            .keys;
        let json = json!({ "signing_keys": keys.iter().map(render::signing_key_json).collect::<Vec<_>>() });
        Ok(Output::new(render::signing_keys_table(&keys), json))
    }

    /// `signing-keys rotate [--now]`.
    pub(crate) async fn signing_keys_rotate(&self, now: bool) -> Result<Output, Failure> {
        let r = self
            .keys()
            .rotate_signing_key(self.authed(RotateSigningKeyRequest { rotate_now: now })?)
            .await?
            .into_inner();
        let at = r.activates_at.map(|t| render::rfc3339(t.seconds));
        Ok(Output::new(
            format!(
                "new signing key {} published; it signs from {}\n",
                r.kid,
                at.as_deref().unwrap_or("-")
            ),
            json!({ "kid": r.kid, "activates_at": at }),
        ))
    }

    /// `signing-keys revoke KID`.
    pub(crate) async fn signing_keys_revoke(&self, kid: &str) -> Result<Output, Failure> {
        let active = self
            .keys()
            .revoke_signing_key(self.authed(RevokeSigningKeyRequest { kid: kid.into() })?)
            .await?
            .into_inner()
            .active_kid;
        Ok(Output::new(
            format!("revoked signing key {kid}; signing with {active}\n"),
            json!({ "revoked": kid, "active_kid": active }),
        ))
    }
}
