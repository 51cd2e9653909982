//! Transport adapters: tonic handlers (one file per service) and the HTTP listener.
//! They decode, call the [`Authority`](crate::authority::Authority), encode. No SQL, no crypto.

pub mod codec;
pub mod convert;
pub mod ext_authz;
pub mod http;
pub mod keys;
pub mod oauth;
pub mod tokens;

use tonic::{Request, Status};

use crate::auth::Caller;

/// The caller the auth interceptor attached to the request.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| crate::error::Error::internal("no caller attached to the request").into())
}
