//! Transport adapters: tonic handlers (one file per service) and the HTTP listener.
//! They decode, call the [`Authority`](crate::authority::Authority), encode. No SQL, no crypto.

pub(crate) mod answer;
pub(crate) mod codec;
pub(crate) mod convert;
pub(crate) mod ext_authz;
pub(crate) mod http;
pub(crate) mod keys;
pub(crate) mod oauth;
pub(crate) mod tokens;

use tonic::{Request, Status};

use crate::auth::Caller;

/// The caller the auth interceptor attached to the request, taken out of it: moved,
/// not copied (its strings would otherwise be allocated twice per call).
pub(crate) fn caller<T>(req: &mut Request<T>) -> Result<Caller, Status> {
    req.extensions_mut()
        .remove::<Caller>()
        .ok_or_else(|| crate::error::Error::internal("no caller attached to the request").into())
}
