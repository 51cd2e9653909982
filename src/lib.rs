//! Tessera: a gRPC security-token service.
//!
//! - [`config`]     plain-data `Config`: defaults < TOML file < `TESSERA_*` env < flags
//! - [`server`]     composes everything, serves gRPC, HTTP and metrics, drains on SIGTERM
//! - `authority`    the service's state, composed from the domains below; start-up, signing-key rotation, housekeeping
//! - [`apikeys`]    API keys: the key format (no I/O), the live keys in memory (the hot-path check), issue and rotation
//! - [`tokens`]     access tokens: claims, minting, the strict verifier and its cache, introspection, opaque tokens
//! - [`revocation`] the jti blocklist and token versions in memory; revoke, family revocation, bumps
//! - `oauth`        OAuth clients, authorization codes and one file per grant; `rules` holds the pure checks (PKCE, redirect URIs, scopes, `act`, refresh reuse)
//! - [`keys`]       ring `CryptoProvider`, sealed signing keys, rotation, JWKS
//! - `listing`      the List RPCs (paged, newest first, no secrets) and emergency signing-key revocation
//! - `auth`         caller → `Principal` (API key in `authorization`, or a SPIFFE client certificate), scope checks
//! - `ratelimit`    per-key request rates (lock-free GCRA) and the failed-authentication throttle
//! - `watch`        `WatchRevocations`: snapshot or replay from the change log, then live deltas
//! - `store`        SQLite (WAL) or PostgreSQL behind one SQL surface: the private, locked data dir, migrations, group-committing writer, one file per table family
//! - `replication`  applies other replicas' change-log rows to this one's memory (PostgreSQL)
//! - `service`      tonic handlers, the codec and size limit, Introspect's answer encoded once per live token, the HTTP listener and OAuth endpoints: translate only
//! - `metrics`      counters, histograms and process metrics for `/metrics`
//! - `observe`      per-request middleware: request id, log context or SERVER span, metrics
//! - `net`          listener defences: connection caps, header/request/idle timeouts, their counters
//! - `tls`          rustls for the public listeners: certificate reload, mTLS, SPIFFE ids of client certificates
//! - [`telemetry`]  `tracing` logs and opt-in OpenTelemetry (OTLP) span export
//! - [`secret`]     the one type for secret text: zeroized on drop, `[redacted]` in `Debug`; the one constant-time comparison
//! - [`clock`]      the one source of time
//! - `error`        the error enum and its one mapping to `tonic::Status`
//! - [`test_support`] what the integration tests and benchmarks may see of the internals
//! - [`admin`]      `tessera admin`: the CLI over gRPC, and offline recover, import-key, reseal, backup

pub mod admin;
pub mod apikeys;
pub(crate) mod auth;
pub(crate) mod authority;
pub mod clock;
pub mod config;
pub(crate) mod error;
pub mod keys;
pub(crate) mod listing;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod oauth;
pub(crate) mod observe;
pub(crate) mod ratelimit;
pub(crate) mod replication;
pub mod revocation;
pub mod secret;
pub mod server;
pub(crate) mod service;
pub(crate) mod store;
/// What `params!` builds on (the macro must name it from outside the crate).
#[doc(hidden)]
pub use store::db::Arg as __DbArg;
pub mod telemetry;
pub mod test_support;
pub(crate) mod tls;
pub mod tokens;
pub(crate) mod watch;

/// Generated protobuf and gRPC code for `tessera.v1`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("tessera.v1");

    /// The gRPC servers of `tessera.v1` (build.rs): crate-private, as one of them
    /// answers with a type of the crate's own.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub(crate) mod servers {
        include!(concat!(env!("OUT_DIR"), "/servers/tessera.v1.rs"));
    }

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tessera_descriptor");

    /// Envoy's `envoy.service.auth.v3.Authorization`, as far as Tessera reads and
    /// writes it (`proto/envoy/service/auth/v3/external_auth.proto`).
    pub mod envoy_authz {
        tonic::include_proto!("envoy.service.auth.v3");
    }
}
