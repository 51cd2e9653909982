//! `tessera admin recover`: mints a fresh admin API key when every admin key is lost
//! or revoked — the API itself never lets the last live admin key go, but a key can
//! still be lost.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::apikeys;
use crate::auth;
use crate::authority::ADMIN_KEY_FILE;
use crate::clock::Clock;
use crate::error::Error;
use crate::keys::seal;
use crate::store::Store;
use crate::store::apikeys::{self as apikey_rows, ApiKeyRow};
use crate::store::audit::{self, AuditEntry};

/// Audit action of an offline recovery.
pub(crate) const RECOVER_ACTION: &str = "admin.recovered";

/// Mints a fresh admin API key (scope `tessera:admin`, living `ttl_secs`) straight into
/// the store of `data_dir`, audited as [`RECOVER_ACTION`] by caller `offline`, and
/// writes it to `<data_dir>/admin.key` (mode 0600, replacing any older file). Returns
/// the file's path; the key itself is never printed or logged.
///
/// The store is opened through the same [`Store::open`] the server uses, so whatever
/// guards a data dir against a second process guards it here too. A running server
/// learns of the key at its next start.
pub(crate) async fn recover(
    data_dir: &Path,
    clock: &Clock,
    ttl_secs: i64,
) -> anyhow::Result<PathBuf> {
    // Never create a fresh, empty store in a mistyped directory.
    let db = data_dir.join("tessera.db");
    if !db.is_file() {
        bail!("{} holds no Tessera database", data_dir.display());
    }
    let store = Store::open(data_dir).map_err(|e| describe(e, data_dir))?;
    let now = clock.now();
    let (id, key) = apikeys::generate("admin");
    let row = ApiKeyRow {
        id: id.clone(),
        secret_hash: apikeys::hash(key.expose()),
        owner: "operator".into(),
        name: "recovered-admin".into(),
        environment: "admin".into(),
        scopes: vec![auth::SCOPE_ADMIN.to_string()],
        exchange_audiences: Vec::new(),
        created_at: now,
        expires_at: now + ttl_secs,
        revoked_at: None,
        rate_limit: None,
    };
    let entry = AuditEntry {
        at: now,
        request_id: "-".into(),
        caller: "offline".into(),
        kind: RECOVER_ACTION.into(),
        token_id: id.clone(),
        ..AuditEntry::default()
    }
    .with("written_to", ADMIN_KEY_FILE);
    store
        .write(move |c| {
            apikey_rows::insert(c, &row)?;
            audit::append(c, &entry)
        })
        .await
        .map_err(|e| describe(e, data_dir))?;
    let path = data_dir.join(ADMIN_KEY_FILE);
    // Removing first means an old file, or a link planted in its place, is replaced
    // rather than written through.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    seal::write_private_file(&path, format!("{}\n", key.expose()).as_bytes())
        .map_err(|e| describe(e, data_dir))?;
    tracing::warn!(path = %path.display(), key_id = %id, "recovered admin API key written (mode 0600)");
    Ok(path)
}

/// The service error with its cause: an operator at a terminal needs it.
pub(crate) fn describe(e: Error, data_dir: &Path) -> anyhow::Error {
    match e {
        Error::Internal(cause) => anyhow::anyhow!("{}: {cause}", data_dir.display()),
        other => anyhow::anyhow!("{}: {other}", data_dir.display()),
    }
}
