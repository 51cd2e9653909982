//! `tessera admin …`: the operator's command line.
//!
//! Two kinds of command live here. Online ones talk gRPC to a running server with an
//! API key, like any other client (`remote`); offline ones work on a data dir
//! directly, where the host file system is the root of trust (`recover`, `import`,
//! `reseal`, `backup`).
//!
//! - [`cli`]     the clap command tree, exit codes, and dispatch
//! - `remote`    online commands over the generated gRPC clients
//! - `render`    tables, JSON and timestamps for what the commands print
//! - `recover`   mint a fresh admin key into a stopped server's data dir
//! - `import`    seal an existing RSA key into a stopped server's data dir
//! - `reseal`    move every sealed secret of a stopped server's data dir to a new master key
//! - `backup`    SQLite online backup of a data dir, safe while the server serves

pub(crate) mod backup;
pub mod cli;
pub(crate) mod import;
mod offline;
pub(crate) mod recover;
pub(crate) mod remote;
pub(crate) mod render;
pub(crate) mod reseal;

pub(crate) use recover::recover;
