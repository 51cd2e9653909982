//! The service's one error type and the one table that turns it into a gRPC status and
//! into an OAuth HTTP error (RFC 6749 §5.2 JSON): [`Error::mapping`]. The gRPC handlers
//! and the HTTP endpoints both answer from that table, so one refusal reads the same on
//! either port.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::StatusCode;
use tonic::{Code, Status};

/// What went wrong, phrased for the caller. Expected outcomes (an inactive token, a
/// missing row) are values, not errors. The OAuth grant refusals (RFC 6749 §5.2,
/// RFC 7009 §2.2.1, RFC 8693 §2.2.2) are variants of their own: the OAuth error code
/// they answer with does not follow from a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or out of bounds.
    #[error("{0}")]
    InvalidArgument(String),
    /// No client credential, or one that does not check out.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The code or refresh token is unknown, used, expired, revoked or bound to another
    /// client or redirect URI, or the PKCE verifier does not match.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// RFC 8693 §2.2.2: the subject token is not an active access token of ours.
    #[error("subject_token is not an active access token")]
    InactiveSubjectToken,
    /// A known caller without the scope (or right) this needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// A scope is malformed, or more than the grant or key holds.
    #[error("{0}")]
    InvalidScope(String),
    /// An audience the service will not issue for (RFC 8693 §2.2.2).
    #[error("{0}")]
    InvalidTarget(String),
    /// This client may not use this grant, or act on this token.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// A grant type the service does not offer.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// RFC 7009 §2.2.1: a kind of token this endpoint does not revoke.
    #[error("{0}")]
    UnsupportedTokenType(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request message or body over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// A limit other than a rate was hit (a watcher fell too far behind).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Too many calls (a key's rate limit, or failed authentications from one
    /// address): retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        /// For the caller; names no key and no address.
        message: &'static str,
        /// How long until a retry can succeed.
        retry_after: Duration,
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

/// How one kind of [`Error`] is answered on each port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// The gRPC status code.
    pub(crate) grpc: Code,
    /// The OAuth `error` code of the HTTP JSON body.
    pub(crate) oauth: &'static str,
    /// The HTTP status.
    pub(crate) http: StatusCode,
}

const fn row(grpc: Code, oauth: &'static str, http: StatusCode) -> Mapping {
    Mapping { grpc, oauth, http }
}

impl Error {
    /// Over a key's rate limit.
    pub(crate) fn over_rate_limit(retry_after: Duration) -> Self {
        Error::RateLimited {
            message: "this API key is over its rate limit; retry later",
            retry_after,
        }
    }

    /// Too many failed authentications from the caller's address.
    pub(crate) fn auth_throttled(retry_after: Duration) -> Self {
        Error::RateLimited {
            message: "too many failed authentications from this address; retry later",
            retry_after,
        }
    }

    /// An internal fault with a cause for the log.
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }

    /// The whole error policy: each kind's gRPC code, OAuth error code and HTTP status.
    ///
    /// The OAuth codes are RFC 6749 §5.2's, RFC 7009 §2.2.1's `unsupported_token_type`
    /// and RFC 8693 §2.2.2's `invalid_target`; those errors are 400, except
    /// `invalid_client`, 401 (sent with a `WWW-Authenticate` challenge). Where no RFC
    /// speaks (a scope the caller's key lacks, a missing row, a limit, a fault), the
    /// HTTP status is the one that matches the gRPC code (`google.rpc.Code`): a known
    /// caller refused for lack of a right gets 403, never a 400 that would send it
    /// looking for a malformed parameter.
    #[rustfmt::skip]
    pub(crate) fn mapping(&self) -> Mapping {
        use Code::*;
        use StatusCode as H;
        match self {
            Error::InvalidArgument(_)      => row(InvalidArgument,    "invalid_request",         H::BAD_REQUEST),
            Error::Unauthenticated(_)      => row(Unauthenticated,    "invalid_client",          H::UNAUTHORIZED),
            Error::InvalidGrant(_)         => row(Unauthenticated,    "invalid_grant",           H::BAD_REQUEST),
            // RFC 8693 §2.2.2 names invalid_request for an unacceptable subject token.
            Error::InactiveSubjectToken    => row(Unauthenticated,    "invalid_request",         H::BAD_REQUEST),
            // access_denied: the registered OAuth code for a refusal by the server.
            Error::PermissionDenied(_)     => row(PermissionDenied,   "access_denied",           H::FORBIDDEN),
            Error::InvalidScope(_)         => row(PermissionDenied,   "invalid_scope",           H::BAD_REQUEST),
            Error::InvalidTarget(_)        => row(PermissionDenied,   "invalid_target",          H::BAD_REQUEST),
            Error::UnauthorizedClient(_)   => row(FailedPrecondition, "unauthorized_client",     H::BAD_REQUEST),
            Error::UnsupportedGrantType(_) => row(InvalidArgument,    "unsupported_grant_type",  H::BAD_REQUEST),
            Error::UnsupportedTokenType(_) => row(InvalidArgument,    "unsupported_token_type",  H::BAD_REQUEST),
            Error::NotFound(_)             => row(NotFound,           "invalid_request",         H::NOT_FOUND),
            Error::FailedPrecondition(_)   => row(FailedPrecondition, "invalid_request",         H::BAD_REQUEST),
            Error::TooLarge(_)             => row(ResourceExhausted,  "invalid_request",         H::PAYLOAD_TOO_LARGE),
            // slow_down (RFC 8628 §3.5, registered for the token endpoint) is the one
            // OAuth code that tells a client to call less often.
            Error::ResourceExhausted(_)    => row(ResourceExhausted,  "slow_down",               H::TOO_MANY_REQUESTS),
            Error::RateLimited { .. }      => row(ResourceExhausted,  "slow_down",               H::TOO_MANY_REQUESTS),
            Error::Unavailable             => row(Unavailable,        "temporarily_unavailable", H::SERVICE_UNAVAILABLE),
            Error::Internal(_)             => row(Internal,           "server_error",            H::INTERNAL_SERVER_ERROR),
        }
    }

    /// The gRPC status code.
    pub(crate) fn grpc_code(&self) -> Code {
        self.mapping().grpc
    }

    /// The OAuth `error` code.
    pub fn oauth_error(&self) -> &'static str {
        self.mapping().oauth
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        self.mapping().http
    }

    /// When a retry can succeed, for `RetryInfo` (gRPC) and `Retry-After` (HTTP).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// What the caller is told, on either port. An internal cause is logged here, once,
    /// and replaced: it may name paths, SQL or key ids.
    pub(crate) fn message(&self) -> Cow<'_, str> {
        match self {
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Cow::Borrowed("internal error")
            }
            Error::Unavailable => Cow::Borrowed("storage unavailable, retry later"),
            other => Cow::Owned(other.to_string()),
        }
    }
}
/// Why the service did not start, for the operator reading stderr. Unlike [`Error`],
/// whose `Display` is what a remote caller may see, it carries the cause: only the
/// operator sees it, and "internal error" would leave them guessing. Causes name paths
/// and addresses, never key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StartupError(pub(crate) String);

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

impl From<crate::store::db::DbError> for Error {
    fn from(e: crate::store::db::DbError) -> Self {
        use crate::store::db::DbError;
        match e {
            DbError::Sqlite(e) => e.into(),
            DbError::Postgres(e) => {
                // No SQLSTATE: the connection broke or was never made. Class 08
                // (connection), 53 (resources), 57 (shutdown, cancelled) and 40
                // (serialization, deadlock) are the database's trouble, not the call's.
                let broken = e.is_closed()
                    || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
                let transient = broken
                    || e.code()
                        .is_some_and(|c| matches!(&c.code()[..2], "08" | "53" | "57" | "40"));
                if transient {
                    tracing::error!(error = %e, "storage unavailable");
                    Error::Unavailable
                } else {
                    match e.as_db_error() {
                        Some(db) => Error::internal(format!("database: {}", db.message())),
                        None => Error::internal(format!("database: {e:?}")),
                    }
                }
            }
            DbError::Connect(cause) => {
                tracing::error!(error = %cause, "storage unavailable");
                Error::Unavailable
            }
            DbError::NoRows | DbError::Decode(_) => Error::internal(e),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.grpc_code();
        let message = e.message().into_owned();
        match e.retry_after() {
            Some(delay) => {
                use tonic_types::{ErrorDetails, StatusExt};
                Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_retry_info(Some(delay)),
                )
            }
            None => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use tonic_types::StatusExt;

    /// A distinct number per variant. The match has no wildcard, so a new variant does
    /// not compile until it is given a number, and then the table below misses a row.
    fn variant(e: &Error) -> usize {
        match e {
            Error::InvalidArgument(_) => 0,
            Error::Unauthenticated(_) => 1,
            Error::InvalidGrant(_) => 2,
            Error::InactiveSubjectToken => 3,
            Error::PermissionDenied(_) => 4,
            Error::InvalidScope(_) => 5,
            Error::InvalidTarget(_) => 6,
            Error::UnauthorizedClient(_) => 7,
            Error::UnsupportedGrantType(_) => 8,
            Error::UnsupportedTokenType(_) => 9,
            Error::NotFound(_) => 10,
            Error::FailedPrecondition(_) => 11,
            Error::TooLarge(_) => 12,
            Error::ResourceExhausted(_) => 13,
            Error::RateLimited { .. } => 14,
            Error::Unavailable => 15,
            Error::Internal(_) => 16,
        }
    }
    const VARIANTS: usize = 17;

    /// The table, once: every variant through the real gRPC and HTTP conversions.
    #[tokio::test]
    async fn every_error_maps_to_one_grpc_code_oauth_code_and_http_status() {
        type Row = (fn() -> Error, Code, &'static str, u16);
        let rows: Vec<Row> = vec![
            (
                || Error::InvalidArgument("m".into()),
                Code::InvalidArgument,
                "invalid_request",
                400,
            ),
            (
                || Error::Unauthenticated("m"),
                Code::Unauthenticated,
                "invalid_client",
                401,
            ),
            (
                || Error::InvalidGrant("m"),
                Code::Unauthenticated,
                "invalid_grant",
                400,
            ),
            (
                || Error::InactiveSubjectToken,
                Code::Unauthenticated,
                "invalid_request",
                400,
            ),
            (
                || Error::PermissionDenied("m".into()),
                Code::PermissionDenied,
                "access_denied",
                403,
            ),
            (
                || Error::InvalidScope("m".into()),
                Code::PermissionDenied,
                "invalid_scope",
                400,
            ),
            (
                || Error::InvalidTarget("m".into()),
                Code::PermissionDenied,
                "invalid_target",
                400,
            ),
            (
                || Error::UnauthorizedClient("m".into()),
                Code::FailedPrecondition,
                "unauthorized_client",
                400,
            ),
            (
                || Error::UnsupportedGrantType("m".into()),
                Code::InvalidArgument,
                "unsupported_grant_type",
                400,
            ),
            (
                || Error::UnsupportedTokenType("m".into()),
                Code::InvalidArgument,
                "unsupported_token_type",
                400,
            ),
            (
                || Error::NotFound("m".into()),
                Code::NotFound,
                "invalid_request",
                404,
            ),
            (
                || Error::FailedPrecondition("m".into()),
                Code::FailedPrecondition,
                "invalid_request",
                400,
            ),
            (
                || Error::TooLarge("m".into()),
                Code::ResourceExhausted,
                "invalid_request",
                413,
            ),
            (
                || Error::ResourceExhausted("m".into()),
                Code::ResourceExhausted,
                "slow_down",
                429,
            ),
            (
                || Error::over_rate_limit(Duration::from_millis(1500)),
                Code::ResourceExhausted,
                "slow_down",
                429,
            ),
            (
                || Error::Unavailable,
                Code::Unavailable,
                "temporarily_unavailable",
                503,
            ),
            (
                || Error::internal("secret cause in /var/lib/x"),
                Code::Internal,
                "server_error",
                500,
            ),
        ];
        let mut seen = [false; VARIANTS];
        for (make, grpc, oauth, http) in rows {
            let e = make();
            let name = format!("{e:?}");
            seen[variant(&e)] = true;
            let retry = e.retry_after();
            let message = e.message().into_owned();
            assert!(!message.contains("secret"), "{name}: cause leaked");
            let want = Mapping {
                grpc,
                oauth,
                http: StatusCode::from_u16(http).unwrap(),
            };
            assert_eq!(e.mapping(), want, "{name}");

            // gRPC: the code, the caller's message, RetryInfo when there is a delay.
            let status = Status::from(e);
            assert_eq!(status.code(), grpc, "{name}");
            assert_eq!(status.message(), message, "{name}");
            assert_eq!(
                status.get_details_retry_info().and_then(|r| r.retry_delay),
                retry,
                "{name}"
            );

            // HTTP: the status, an RFC 6749 JSON body, never cached, and the headers
            // that go with the status.
            let r = make().into_response();
            assert_eq!(r.status().as_u16(), http, "{name}");
            let h = r.headers().clone();
            assert_eq!(h["cache-control"], "no-store", "{name}");
            assert_eq!(
                h.get("www-authenticate").is_some(),
                http == 401,
                "{name}: a challenge goes with 401 and only 401"
            );
            assert_eq!(
                h.get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
                retry.map(|_| "2".to_string()),
                "{name}: Retry-After in whole seconds, rounded up"
            );
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"error": oauth, "error_description": message}),
                "{name}"
            );
        }
        assert!(seen.iter().all(|s| *s), "a variant has no row: {seen:?}");
    }
}
