//! The fixed label tables: gRPC methods and codes, HTTP routes and statuses, and the
//! reasons a token is inactive. Every combination is registered up front.

use crate::tokens::verify::Reject;

pub(super) const REJECTS: [Reject; 11] = [
    Reject::Malformed,
    Reject::Header,
    Reject::UnknownKey,
    Reject::Signature,
    Reject::Claims,
    Reject::Issuer,
    Reject::Expired,
    Reject::NotYetValid,
    Reject::Lifetime,
    Reject::Revoked,
    Reject::OldVersion,
];

/// The gRPC methods counted one by one (`/package.Service/Method` without the slash).
/// Anything else (an unknown method) is counted as `other`; reflection is not counted.
pub(crate) const GRPC_METHODS: [&str; 16] = [
    "tessera.v1.TokenService/Issue",
    "tessera.v1.TokenService/Exchange",
    "tessera.v1.TokenService/Introspect",
    "tessera.v1.TokenService/Revoke",
    "tessera.v1.TokenService/BumpTokenVersion",
    "tessera.v1.TokenService/WatchRevocations",
    "tessera.v1.TokenService/ListApiKeys",
    "tessera.v1.TokenService/ListClients",
    "tessera.v1.TokenService/ListAuditEvents",
    "tessera.v1.KeyService/GetJwks",
    "tessera.v1.KeyService/RotateSigningKey",
    "tessera.v1.KeyService/ListSigningKeys",
    "tessera.v1.KeyService/RevokeSigningKey",
    "envoy.service.auth.v3.Authorization/Check",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
];

/// Index of the `other` method row.
pub(crate) const GRPC_OTHER: usize = GRPC_METHODS.len();

/// The row of a request path (`/package.Service/Method`).
pub(crate) fn grpc_method_index(path: &str) -> usize {
    let name = path.strip_prefix('/').unwrap_or(path);
    GRPC_METHODS
        .iter()
        .position(|m| *m == name)
        .unwrap_or(GRPC_OTHER)
}

/// gRPC status code names, by code number (0..=16).
pub(crate) const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The HTTP routes counted one by one; any other path is `other`.
pub(crate) const HTTP_ROUTES: [&str; 8] = [
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/oauth2/token",
    "/oauth2/introspect",
    "/oauth2/revoke",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// Index of the `other` route row.
pub(crate) const HTTP_OTHER_ROUTE: usize = HTTP_ROUTES.len();

/// The route row of a request path (the routes have no parameters).
pub(crate) fn http_route_index(path: &str) -> usize {
    HTTP_ROUTES
        .iter()
        .position(|r| *r == path)
        .unwrap_or(HTTP_OTHER_ROUTE)
}

/// The route label of a row.
pub(crate) fn http_route_label(i: usize) -> &'static str {
    HTTP_ROUTES.get(i).copied().unwrap_or("other")
}

/// HTTP statuses the listeners answer with; anything else is counted as `other`.
pub(super) const HTTP_STATUSES: [u16; 18] = [
    200, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 429, 500, 503, 504,
];

pub(super) fn http_status_index(s: u16) -> usize {
    HTTP_STATUSES
        .iter()
        .position(|x| *x == s)
        .unwrap_or(HTTP_STATUSES.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_table_matches_the_served_protos() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut served = Vec::new();
        for f in set.file {
            for s in &f.service {
                for m in &s.method {
                    served.push(format!("{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
        for m in &served {
            assert!(GRPC_METHODS.contains(&m.as_str()), "{m} is not counted");
        }
        assert_eq!(grpc_method_index("/tessera.v1.TokenService/Issue"), 0);
        assert_eq!(grpc_method_index("/x.Y/Z"), GRPC_OTHER);
    }
}
