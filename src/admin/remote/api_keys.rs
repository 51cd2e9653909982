//! `keys list|show|revoke|rotate`: the caller API keys, over the List, Revoke and
//! Issue RPCs.

use std::time::Duration;

use serde_json::json;

use super::{Failure, Output, PAGE, Remote, exit};
use crate::admin::render;
use crate::proto::issue_request::Credential;
use crate::proto::{ApiKeyInfo, ApiKeySpec, IssueRequest, ListApiKeysRequest, RevokeRequest};

impl Remote {
    /// Every API key matching the filters, following pages.
    async fn all_api_keys(
        &self,
        owner: &str,
        environment: &str,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyInfo>, Failure> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = ListApiKeysRequest {
                owner: owner.into(),
                environment: environment.into(),
                include_revoked,
                page_size: PAGE,
                page_token,
            };
            let page = self
                .tokens()
                .list_api_keys(self.authed(req)?)
                .await?
                .into_inner();
            out.extend(page.api_keys);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// `keys list`.
    pub(crate) async fn keys_list(
        &self,
        owner: &str,
        environment: &str,
        include_revoked: bool,
        now: i64,
    ) -> Result<Output, Failure> {
        let keys = self
            .all_api_keys(owner, environment, include_revoked)
            .await?;
        let json = json!({
            "api_keys": keys.iter().map(|k| render::api_key_json(k, now)).collect::<Vec<_>>()
        });
        Ok(Output::new(render::api_keys_table(&keys, now), json))
    }

    /// `keys show KEY_ID`: the List RPC has no id filter, so this pages through every
    /// key (revoked ones included) until it meets the id.
    pub(crate) async fn keys_show(&self, key_id: &str, now: i64) -> Result<Output, Failure> {
        let keys = self.all_api_keys("", "", true).await?;
        let key = keys.iter().find(|k| k.key_id == key_id).ok_or_else(|| {
            Failure::new(
                exit::NOT_FOUND,
                format!("NOT_FOUND: no API key with id {key_id}"),
            )
        })?;
        Ok(Output::new(
            render::api_key_fields(key, now),
            render::api_key_json(key, now),
        ))
    }

    /// `keys revoke KEY_ID`: RFC 7009 semantics, so an unknown id succeeds too.
    pub(crate) async fn keys_revoke(&self, key_id: &str) -> Result<Output, Failure> {
        let req = RevokeRequest {
            token_id: key_id.into(),
            ..RevokeRequest::default()
        };
        self.tokens().revoke(self.authed(req)?).await?;
        Ok(Output::new(
            format!("revoked {key_id}\n"),
            json!({ "revoked": key_id }),
        ))
    }

    /// `keys rotate KEY_ID`: the new key goes to stdout alone (so it can be piped into
    /// a secret store); what happened goes to stderr.
    pub(crate) async fn keys_rotate(
        &self,
        key_id: &str,
        overlap: Option<Duration>,
    ) -> Result<Output, Failure> {
        let spec = ApiKeySpec {
            rotate_from: key_id.into(),
            overlap: overlap.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: 0,
            }),
            ..ApiKeySpec::default()
        };
        let req = IssueRequest {
            credential: Some(Credential::ApiKey(spec)),
        };
        let issued = self.tokens().issue(self.authed(req)?).await?.into_inner();
        let note = format!(
            "rotated {key_id} -> {} (new key expires {}); the old key keeps working for the \
             overlap, then stops",
            issued.token_id,
            render::cell_time(&issued.expires_at)
        );
        let json = json!({
            "key_id": issued.token_id,
            "api_key": issued.token,
            "rotated_from": key_id,
            "expires_at": render::json_time(&issued.expires_at),
            "scopes": issued.scopes,
        });
        let mut out = Output::new(format!("{}\n", issued.token), json);
        out.note = Some(note);
        Ok(out)
    }
}
