//! Revocation: what ends a credential before its expiry.
//! - [`memory`]: the jti blocklist and per-subject token versions, read on the hot path;
//! - `revoke`: RFC 7009 revocation, family revocation and token-version bumps
//!   ([`Authority`](crate::authority::Authority) methods).

pub mod memory;
mod revoke;

pub use memory::{Revocations, cascade};
