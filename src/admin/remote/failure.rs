//! Exit codes (sysexits.h) and [`Failure`]: what a command that did not succeed tells
//! the operator, mapped from the gRPC status the server answered.

use tonic::{Code, Status};

/// Exit codes (sysexits.h), documented in the README.
pub(crate) mod exit {
    /// Anything else: an internal error, a limit hit, an offline task that failed.
    pub(crate) const FAILURE: u8 = 1;
    /// EX_USAGE: bad command line, no API key, a malformed address.
    pub(crate) const USAGE: u8 = 64;
    /// EX_DATAERR: the server refused the request as invalid (INVALID_ARGUMENT,
    /// FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS).
    pub(crate) const DATA: u8 = 65;
    /// EX_NOINPUT: NOT_FOUND.
    pub(crate) const NOT_FOUND: u8 = 66;
    /// EX_UNAVAILABLE: the server cannot be reached, is not serving, or does not
    /// offer the RPC (UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED).
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// EX_CANTCREAT: a file to write already exists or cannot be created.
    pub(crate) const CANT_CREATE: u8 = 73;
    /// EX_NOPERM: UNAUTHENTICATED or PERMISSION_DENIED.
    pub(crate) const NO_PERMISSION: u8 = 77;
}

/// A command that did not succeed: what to tell the operator, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Process exit code (see [`exit`]).
    pub(crate) code: u8,
    /// One line for stderr.
    pub(crate) message: String,
}

impl Failure {
    /// A usage error (exit 64).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// A failure with an explicit exit code.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A gRPC status: its code name and message, and the matching exit code.
    pub(crate) fn from_status(s: &Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists => exit::DATA,
            Code::NotFound => exit::NOT_FOUND,
            Code::Unavailable | Code::DeadlineExceeded | Code::Unimplemented => exit::UNAVAILABLE,
            Code::Unauthenticated | Code::PermissionDenied => exit::NO_PERMISSION,
            _ => exit::FAILURE,
        };
        Failure {
            code,
            message: format!("{}: {}", code_name(s.code()), s.message()),
        }
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::from_status(&s)
    }
}

/// The canonical upper-case name of a gRPC code (`PERMISSION_DENIED`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
