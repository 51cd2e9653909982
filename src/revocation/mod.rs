//! Revocation: what ends a credential before its expiry.
//! - `cascade`: what revoking an access token reaches through token exchange (pure);
//! - `memory`: the jti blocklist and per-subject token versions, read on the hot path;
//! - `revoke`: RFC 7009 revocation, family revocation and token-version bumps
//!   ([`Authority`](crate::authority::Authority) methods);
//! - `target`: what a revocation request names, and what revoking it reaches (pure).

mod cascade;
pub(crate) mod memory;
mod revoke;
pub(crate) mod target;

pub(crate) use cascade::cascade;
pub use memory::Revocations;
