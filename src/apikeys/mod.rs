//! API keys, the credential that says which application calls:
//! - `format`: the key text — generate, parse, checksum, hash (pure, no I/O);
//! - `live`: the live keys in memory, the hot-path check of every call;
//! - `check`: the hot-path check of a presented key (throttle, live set, rate limit);
//! - `issue`: issuing and rotating keys ([`Authority`](crate::authority::Authority) methods).

mod check;
pub(crate) mod format;
mod issue;
pub(crate) mod live;

pub use check::Refusal;
pub(crate) use format::split;
pub use format::{MAX_LEN, Parsed, generate, hash, parse, valid_environment, verify};
pub use issue::NewApiKey;
pub(crate) use issue::last_live_admin;
pub use live::Caller;
pub(crate) use live::Callers;
