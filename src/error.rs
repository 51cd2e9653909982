//! The service's error type and the one place it becomes a gRPC status.

use tonic::{Code, Status};

/// What went wrong, phrased for the caller. Expected outcomes (an inactive token, a
/// missing row) are values, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or out of bounds.
    #[error("{0}")]
    InvalidArgument(String),
    /// No credential, or one that does not check out.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known caller without the scope this needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A size or rate limit was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Too many calls (a key's rate limit, or failed authentications from one
    /// address): retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        /// For the caller; names no key and no address.
        message: &'static str,
        /// How long until a retry can succeed.
        retry_after: std::time::Duration,
    },
    /// Storage is unreachable or read-only; nothing was changed. Retry later.
    #[error("storage unavailable")]
    Unavailable,
    /// A bug or an environment fault. The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Over a key's rate limit.
    pub fn over_rate_limit(retry_after: std::time::Duration) -> Self {
        Error::RateLimited {
            message: "this API key is over its rate limit; retry later",
            retry_after,
        }
    }

    /// Too many failed authentications from the caller's address.
    pub fn auth_throttled(retry_after: std::time::Duration) -> Self {
        Error::RateLimited {
            message: "too many failed authentications from this address; retry later",
            retry_after,
        }
    }

    /// An internal fault with a cause for the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }
}

/// Why the service did not start, for the operator reading stderr. Unlike [`Error`],
/// whose `Display` is what a remote caller may see, it carries the cause: only the
/// operator sees it, and "internal error" would leave them guessing. Causes name paths
/// and addresses, never key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

impl From<Error> for StartupError {
    fn from(e: Error) -> Self {
        match e {
            Error::Internal(cause) => StartupError(cause),
            other => StartupError(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(
                DatabaseBusy | DatabaseLocked | ReadOnly | DiskFull | CannotOpen | SystemIoFailure,
            ) => {
                tracing::error!(error = %e, "storage unavailable");
                Error::Unavailable
            }
            _ => Error::internal(e),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::RateLimited {
                message,
                retry_after,
            } => {
                use tonic_types::{ErrorDetails, StatusExt};
                Status::with_error_details(
                    Code::ResourceExhausted,
                    message,
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            Error::Unavailable => Status::new(Code::Unavailable, "storage unavailable, retry"),
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
