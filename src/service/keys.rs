//! `tessera.v1.KeyService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::authority::Authority;
use crate::proto::key_service_server::KeyService;
use crate::proto::{
    GetJwksRequest, GetJwksResponse, ListSigningKeysRequest, ListSigningKeysResponse,
    RevokeSigningKeyRequest, RevokeSigningKeyResponse, RotateSigningKeyRequest,
    RotateSigningKeyResponse,
};

/// gRPC handlers for key publication and rotation.
pub struct KeyHandlers(pub Arc<Authority>);

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
        req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        let caller = super::caller(&req)?;
        let kid = self.0.rotate_signing_key(&caller).await?;
        Ok(Response::new(RotateSigningKeyResponse { kid }))
    }

    async fn list_signing_keys(
        &self,
        _req: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        Err(Status::unimplemented(
            "ListSigningKeys is not available yet",
        ))
    }

    async fn revoke_signing_key(
        &self,
        _req: Request<RevokeSigningKeyRequest>,
    ) -> Result<Response<RevokeSigningKeyResponse>, Status> {
        Err(Status::unimplemented(
            "RevokeSigningKey is not available yet",
        ))
    }
}
