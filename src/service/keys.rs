//! `tessera.v1.KeyService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::ts;
use crate::authority::Authority;
use crate::proto::servers::key_service_server::KeyService;
use crate::proto::{
    GetJwksRequest, GetJwksResponse, ListSigningKeysRequest, ListSigningKeysResponse,
    RevokeSigningKeyRequest, RevokeSigningKeyResponse, RotateSigningKeyRequest,
    RotateSigningKeyResponse, SigningKeyInfo,
};

/// gRPC handlers for key publication and rotation.
pub(crate) struct KeyHandlers(pub(crate) Arc<Authority>);

#[tonic::async_trait]
impl KeyService for KeyHandlers {
    async fn get_jwks(
        &self,
        _req: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse {
            jwks_json: self.0.jwks_json().to_string(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        mut req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let rotation = self
            .0
            .rotate_signing_key(&caller, req.get_ref().rotate_now)
            .await?;
        Ok(Response::new(RotateSigningKeyResponse {
            kid: rotation.kid,
            activates_at: ts(rotation.activates_at),
        }))
    }

    async fn list_signing_keys(
        &self,
        mut req: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let keys = self
            .0
            .list_signing_keys(&caller)
            .await?
            .into_iter()
            .map(|k| SigningKeyInfo {
                state: k.state.as_str().into(),
                kid: k.kid,
                alg: k.alg,
                created_at: ts(k.created_at),
                activates_at: ts(k.activates_at),
                retires_at: k.retired_at.and_then(ts),
            })
            .collect();
        Ok(Response::new(ListSigningKeysResponse { keys }))
    }

    async fn revoke_signing_key(
        &self,
        mut req: Request<RevokeSigningKeyRequest>,
    ) -> Result<Response<RevokeSigningKeyResponse>, Status> {
        let caller = super::caller(&mut req)?;
        let active_kid = self
            .0
            .revoke_signing_key(&caller, &req.get_ref().kid)
            .await?;
        Ok(Response::new(RevokeSigningKeyResponse { active_kid }))
    }
}
