//! Hostile input for `Introspect` (and `Revoke`), as tables run against the real
//! server. Row names carry the case ids of Tessera's security catalog: A1–A13 are
//! attacks on Introspect, B the official RFC vectors and RFC 7662/7009 semantics.
//!
//! One row per attack, its name in every failure. Unless a row is a positive control,
//! the only acceptable answer is `OK` with exactly the default response (`active:
//! false` and nothing else), or `INVALID_ARGUMENT` for empty or oversize input
//! (`RESOURCE_EXHAUSTED` past the message-size limit) — never `active: true`, never `INTERNAL`, never a hang. After every
//! row the base token T0 is introspected again (jwt_tool's persistence check); after
//! every table the health service must still serve.
//!
//! K0 rows need no key. K1 rows re-sign with the server's real key through
//! `common::mint`, so the one property a row changes is the only thing wrong with it;
//! each K1 table carries positive controls proving that re-signing alone keeps a token
//! active.
//!
//! `lineage` is the revocation table: every way a token can be born × every way its
//! ancestor can die → the derived token is inactive.

#[path = "../common/mod.rs"]
mod common;

mod forge;
mod support;

mod a01_alg_none;
mod a02_algorithm_confusion;
mod a03_signature_tampering;
mod a04_kid;
mod a05_embedded_keys;
mod a06_header_semantics;
mod a07_time;
mod a08_claim_confusion;
mod a09_structure_and_size;
mod a10_json_semantics;
mod a11_opaque_tokens;
mod a12_revocation;
mod a13_response_hygiene;
mod b_official_vectors;
mod es256_mixed_keys;
mod lineage;
