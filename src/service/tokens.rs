//! `tessera.v1.TokenService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::answer::Answer;
use super::convert::{json_to_struct, struct_to_json, ts, ttl};
use crate::apikeys::NewApiKey;
use crate::authority::{Authority, Issued};
use crate::oauth::{
    ClientCredentialsRequest, ClientRegistration, CodeRedemption, CodeRequest, Granted,
    RefreshRequest, TokenExchangeRequest,
};
use crate::proto::exchange_request::Grant;
use crate::proto::issue_request::Credential;
use crate::proto::servers::token_service_server::TokenService;
use crate::proto::{
    ApiKeyInfo, AuditEvent, BumpTokenVersionRequest, BumpTokenVersionResponse, ClientInfo,
    ExchangeRequest, ExchangeResponse, IntrospectRequest, IssueRequest, IssueResponse,
    ListApiKeysRequest, ListApiKeysResponse, ListAuditEventsRequest, ListAuditEventsResponse,
    ListClientsRequest, ListClientsResponse, RevocationEvent, RevokeRequest, RevokeResponse,
    WatchRevocationsRequest,
};
use crate::proto::{
    Heartbeat, RateLimit, RevokedTokenId, SigningKeyEvent, SnapshotDone, TokenVersion,
};
use crate::secret::Secret;
use crate::store::apikeys::ApiKeyFilter;
use crate::store::audit::AuditFilter;
use crate::store::changes::Change;
use crate::tokens::AccessTokenRequest;
use crate::watch::{Event, EventKind};

/// gRPC handlers for the token lifecycle.
pub(crate) struct TokenHandlers(pub(crate) Arc<Authority>);

/// A rotation's `overlap`: `None` when unset; negative durations are refused.
fn overlap(d: Option<prost_types::Duration>) -> Result<Option<i64>, Status> {
    match d {
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(Status::invalid_argument("overlap must not be negative"))
        }
        // Whole seconds: a fraction of a second more is not worth a rounding rule.
        Some(d) => Ok(Some(d.seconds)),
        None => Ok(None),
    }
}

/// A requested rate limit, checked (`INVALID_ARGUMENT` when out of range).
fn rate_limit(l: Option<RateLimit>) -> Result<Option<crate::ratelimit::RateLimit>, Status> {
    l.map(|l| crate::ratelimit::RateLimit::new(l.per_second, l.burst))
        .transpose()
        .map_err(Status::invalid_argument)
}

fn issue_response(mut i: Issued) -> IssueResponse {
    IssueResponse {
        token: i.token.expose().to_owned(),
        token_id: std::mem::take(&mut i.token_id),
        token_type: i.token_type.to_string(),
        expires_at: (i.expires_at > 0).then(|| ts(i.expires_at)).flatten(),
        refresh_token: i.refresh_token.expose().to_owned(),
        refresh_expires_at: (i.refresh_expires_at > 0)
            .then(|| ts(i.refresh_expires_at))
            .flatten(),
        scopes: std::mem::take(&mut i.scopes),
    }
}

fn exchange_response(mut g: Granted) -> ExchangeResponse {
    ExchangeResponse {
        access_token: g.access_token.expose().to_owned(),
        token_type: g.token_type.to_string(),
        expires_at: ts(g.expires_at),
        refresh_token: g.refresh_token.expose().to_owned(),
        scopes: std::mem::take(&mut g.scopes),
        issued_token_type: g.issued_token_type.to_string(),
    }
}

fn revocation_event(ev: Event) -> RevocationEvent {
    use crate::proto::revocation_event::Event as Wire;
    let event = match ev.kind {
        EventKind::Change(Change::RevokedJti { jti, expires_at }) => {
            Wire::RevokedTokenId(RevokedTokenId {
                jti,
                expires_at: ts(expires_at),
            })
        }
        EventKind::Change(Change::TokenVersion { subject, version }) => {
            Wire::TokenVersion(TokenVersion { subject, version })
        }
        EventKind::Change(Change::RevokedApiKey { key_id }) => Wire::RevokedApiKeyId(key_id),
        EventKind::Change(Change::SigningKey { kid, state }) => Wire::SigningKey(SigningKeyEvent {
            kid,
            state: state.as_str().to_string(),
        }),
        // Never streamed (see `Change::streamed`); were one to slip through, a
        // heartbeat carries no claim.
        EventKind::Change(Change::ApiKeyLive { .. }) => Wire::Heartbeat(Heartbeat {}),
        EventKind::SnapshotDone => Wire::SnapshotDone(SnapshotDone {}),
        EventKind::Heartbeat => Wire::Heartbeat(Heartbeat {}),
    };
    RevocationEvent {
        sequence: ev.seq,
        event: Some(event),
    }
}

#[tonic::async_trait]
impl TokenService for TokenHandlers {
    async fn issue(
        &self,
        mut req: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let issued = match req.into_inner().credential {
            None => {
                return Err(Status::invalid_argument(
                    "credential is required: api_key, access_token, authorization_code or client",
                ));
            }
            Some(Credential::ApiKey(s)) => {
                let spec = NewApiKey {
                    owner: s.owner,
                    name: s.name,
                    environment: s.environment,
                    scopes: s.scopes,
                    exchange_audiences: s.exchange_audiences,
                    ttl: ttl(s.ttl)?,
                    rate_limit: rate_limit(s.rate_limit)?,
                };
                if !s.rotate_from.is_empty() {
                    let overlap = overlap(s.overlap)?;
                    self.0
                        .rotate_api_key(&caller, &s.rotate_from, overlap, spec)
                        .await?
                } else if s.overlap.is_some() {
                    return Err(Status::invalid_argument(
                        "overlap applies only with rotate_from (the key being rotated)",
                    ));
                } else {
                    self.0.issue_api_key(&caller, spec).await?
                }
            }
            Some(Credential::AccessToken(s)) => {
                let req = AccessTokenRequest {
                    subject: s.subject,
                    audience: s.audience,
                    scopes: s.scopes,
                    ttl: ttl(s.ttl)?,
                    claims: s
                        .claims
                        .map(struct_to_json)
                        .transpose()?
                        .unwrap_or_default(),
                    client_id: s.client_id,
                    refresh_token: s.refresh_token,
                    ..AccessTokenRequest::default()
                };
                self.0.issue_access_token(&caller, req).await?
            }
            Some(Credential::AuthorizationCode(s)) => {
                let req = CodeRequest {
                    client_id: s.client_id,
                    redirect_uri: s.redirect_uri,
                    subject: s.subject,
                    scopes: s.scopes,
                    code_challenge: s.code_challenge,
                    code_challenge_method: s.code_challenge_method,
                };
                self.0.issue_authorization_code(&caller, req).await?
            }
            Some(Credential::Client(s)) if !s.rotate_secret_of.is_empty() => {
                if !s.name.is_empty()
                    || s.public
                    || !s.redirect_uris.is_empty()
                    || !s.scopes.is_empty()
                {
                    return Err(Status::invalid_argument(
                        "rotate_secret_of rotates a client's secret only: leave name, public, \
                         redirect_uris and scopes empty",
                    ));
                }
                let overlap = overlap(s.overlap)?;
                self.0
                    .rotate_client_secret(&caller, &s.rotate_secret_of, overlap)
                    .await?
            }
            Some(Credential::Client(s)) => {
                if s.overlap.is_some() {
                    return Err(Status::invalid_argument(
                        "overlap applies only with rotate_secret_of (the client being rotated)",
                    ));
                }
                let reg = ClientRegistration {
                    name: s.name,
                    public: s.public,
                    redirect_uris: s.redirect_uris,
                    scopes: s.scopes,
                };
                self.0.register_client(&caller, reg).await?
            }
        };
        Ok(Response::new(issue_response(issued)))
    }

    async fn exchange(
        &self,
        mut req: Request<ExchangeRequest>,
    ) -> Result<Response<ExchangeResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let granted = match req.into_inner().grant {
            None => {
                return Err(Status::invalid_argument(
                    "grant is required: client_credentials, refresh_token, authorization_code or token_exchange",
                ));
            }
            Some(Grant::ClientCredentials(g)) => {
                let req = ClientCredentialsRequest {
                    client_id: String::new(),
                    scopes: g.scopes,
                    audience: g.audience,
                };
                self.0.grant_client_credentials(&caller, req).await?
            }
            Some(Grant::RefreshToken(g)) => {
                let req = RefreshRequest {
                    client_id: String::new(),
                    refresh_token: Secret::new(g.refresh_token),
                    scopes: g.scopes,
                };
                self.0.grant_refresh_token(&caller, req).await?
            }
            Some(Grant::AuthorizationCode(g)) => {
                let req = CodeRedemption {
                    client_id: g.client_id,
                    code: Secret::new(g.code),
                    code_verifier: Secret::new(g.code_verifier),
                    redirect_uri: g.redirect_uri,
                };
                self.0.grant_authorization_code(&caller, req).await?
            }
            Some(Grant::TokenExchange(g)) => {
                let req = TokenExchangeRequest {
                    subject_token: Secret::new(g.subject_token),
                    subject_token_type: g.subject_token_type,
                    audience: g.audience,
                    scopes: g.scopes,
                };
                self.0.grant_token_exchange(&caller, req).await?
            }
        };
        Ok(Response::new(exchange_response(granted)))
    }

    async fn introspect(
        &self,
        mut req: Request<IntrospectRequest>,
    ) -> Result<Response<Answer>, Status> {
        let caller = super::caller(&mut req)?;
        let found = self.0.introspect(&caller, &req.get_ref().token).await?;
        Ok(Response::new(Answer::new(found, &self.0.config.issuer)))
    }

    async fn revoke(
        &self,
        mut req: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let r = req.into_inner();
        self.0.revoke(&caller, &r.token, &r.token_id).await?;
        Ok(Response::new(RevokeResponse {}))
    }

    async fn bump_token_version(
        &self,
        mut req: Request<BumpTokenVersionRequest>,
    ) -> Result<Response<BumpTokenVersionResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let r = req.into_inner();
        let token_version = self
            .0
            .bump_token_version(&caller, &r.subject, &r.reason)
            .await?;
        Ok(Response::new(BumpTokenVersionResponse { token_version }))
    }

    type WatchRevocationsStream = tonic::codegen::BoxStream<RevocationEvent>;

    async fn watch_revocations(
        &self,
        mut req: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = super::caller(&mut req)?;
        let after = req.into_inner().after_sequence;
        let sub = self.0.watch_revocations(&caller, after).await?;
        let stream = tokio_stream::StreamExt::map(sub, |item| {
            item.map(revocation_event).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_api_keys(
        &self,
        mut req: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let r = req.into_inner();
        let filter = ApiKeyFilter {
            owner: r.owner,
            environment: r.environment,
            include_revoked: r.include_revoked,
        };
        let (keys, next_page_token) = self
            .0
            .list_api_keys(&caller, filter, r.page_size, &r.page_token)
            .await?;
        let api_keys = keys
            .into_iter()
            .map(|k| ApiKeyInfo {
                key_id: k.id,
                owner: k.owner,
                name: k.name,
                environment: k.environment,
                scopes: k.scopes,
                created_at: ts(k.created_at),
                expires_at: ts(k.expires_at),
                last_used_at: k.last_used_at.and_then(ts),
                revoked: k.revoked_at.is_some(),
                rotated_to: k.rotated_to.unwrap_or_default(),
                exchange_audiences: k.exchange_audiences,
                rate_limit: k.rate_limit.map(|l| RateLimit {
                    per_second: l.per_second,
                    burst: l.burst,
                }),
            })
            .collect();
        Ok(Response::new(ListApiKeysResponse {
            api_keys,
            next_page_token,
        }))
    }

    async fn list_clients(
        &self,
        mut req: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let r = req.into_inner();
        let (rows, next_page_token) = self
            .0
            .list_clients(&caller, r.page_size, &r.page_token)
            .await?;
        let clients = rows
            .into_iter()
            .map(|c| ClientInfo {
                client_id: c.id,
                name: c.name,
                public: c.public,
                redirect_uris: c.redirect_uris,
                scopes: c.scopes,
                created_at: ts(c.created_at),
            })
            .collect();
        Ok(Response::new(ListClientsResponse {
            clients,
            next_page_token,
        }))
    }

    async fn list_audit_events(
        &self,
        mut req: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let r = req.into_inner();
        let filter = AuditFilter {
            subject: r.subject,
            caller: r.key_id,
            kind: r.kind,
            since: r.since.map(|t| t.seconds),
            // `until` is exclusive: a fraction of a second past a whole second still
            // admits events stamped with that second.
            until: r
                .until
                .map(|t| t.seconds.saturating_add(i64::from(t.nanos > 0))),
        };
        let (rows, next_page_token) = self
            .0
            .list_audit_events(&caller, filter, r.page_size, &r.page_token)
            .await?;
        let events = rows
            .into_iter()
            .map(|e| AuditEvent {
                id: e.id.max(0) as u64,
                at: ts(e.at),
                kind: e.kind,
                caller_key_id: e.caller,
                request_id: e.request_id,
                subject: e.subject,
                token_id: e.token_id,
                detail: Some(json_to_struct(&e.detail)),
            })
            .collect();
        Ok(Response::new(ListAuditEventsResponse {
            events,
            next_page_token,
        }))
    }
}
