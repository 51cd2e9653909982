//! `tessera admin reseal`: moves every secret sealed under the master key to a new
//! master key, so a master key can be changed (or a compromised one retired) in place.
//!
//! Sealed under the master key are the private halves of the signing keys (every row
//! of `signing_keys`, whatever its state: the column is never emptied) and the
//! refresh grace period's successor pairs (`refresh_grace`). All of them are opened
//! with the current key and sealed under the new one in one transaction; each new
//! value is opened again under the new key before anything is written, and the whole
//! table is checked once more before the commit. One value that does not open (a
//! wrong current key, a damaged row) refuses the lot: nothing changes.
//!
//! The old sealed values must not survive in the database file, where a copy of it and
//! the old key would still open them: SQLite zeroes what the transaction frees
//! (`secure_delete`), and after the commit the file is rebuilt (`VACUUM`) and the WAL
//! checkpointed and truncated.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rusqlite::{Connection, params};

use crate::store::db::Db;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::seal::{self, MasterKey, MasterKeySource};
use crate::oauth::grace_context;
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};

use super::recover::describe;

/// Audit kind of a re-seal.
pub(crate) const RESEAL_ACTION: &str = "master_key.resealed";

/// What a re-seal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resealed {
    /// Signing keys re-sealed (every state).
    pub(crate) signing_keys: usize,
    /// Refresh grace successor pairs re-sealed.
    pub(crate) grace_pairs: usize,
    /// Where the current key came from; only a development key file is replaced.
    pub(crate) previous: MasterKeySource,
    /// Something the operator should know although the re-seal is committed.
    pub(crate) warning: Option<String>,
}

/// Re-seals everything in `config.data_dir` sealed under the configured (current)
/// master key under the key in `new_key_file`, audited as [`RESEAL_ACTION`] by caller
/// `offline`. When the current key is the development `master.key` of the data dir,
/// that file is replaced by the new key after the commit (written aside first, 0600,
/// then renamed over it), so the data dir keeps starting without configuration.
///
/// Goes through [`Store::open`], so a running server's lock refuses it.
pub(crate) async fn reseal(
    config: &Config,
    new_key_file: &Path,
    clock: &Clock,
) -> anyhow::Result<Resealed> {
    let data_dir = config.data_dir.as_path();
    if !data_dir.join("tessera.db").is_file() {
        bail!("{} holds no Tessera database", data_dir.display());
    }
    let new_text =
        seal::read_key_file(new_key_file, "new master key file", true).map_err(describe_plain)?;
    let new = MasterKey::from_text(&new_text)
        .map_err(|e| anyhow::anyhow!("new master key file {}: {e}", new_key_file.display()))?;
    let store = Store::open(data_dir).map_err(|e| describe(e, data_dir))?;
    let previous = MasterKeySource::of(config);
    let current = MasterKey::load_existing(config).map_err(|e| describe(e, data_dir))?;
    if new
        .same_key_as(&current)
        .map_err(|e| describe(e, data_dir))?
    {
        bail!(
            "the new master key in {} is the current one ({previous}): nothing to re-seal",
            new_key_file.display()
        );
    }
    // The development key file is replaced only after the commit, but written aside
    // before it: a failure to write it then changes nothing at all.
    let staged = match &previous {
        MasterKeySource::Development(path) => Some(stage_dev_key(path, new_text.trim())?),
        _ => None,
    };
    let now = clock.now();
    let source = previous.clone();
    let outcome = store
        .write(move |c| reseal_all(c, &current, &new, &source, now))
        .await;
    let (signing_keys, grace_pairs) = match outcome {
        Ok(counts) => counts,
        Err(e) => {
            if let Some(tmp) = &staged {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(describe(e, data_dir));
        }
    };
    let warning = store.path().and_then(scrub);
    if let (Some(tmp), MasterKeySource::Development(path)) = (&staged, &previous) {
        replace_dev_key(tmp, path).with_context(|| {
            format!(
                "the database is sealed under the new master key now, but {} still holds the \
                 old one: copy {} over it (mode 0600), or set master_key_file to {}",
                path.display(),
                tmp.display(),
                new_key_file.display()
            )
        })?;
    }
    tracing::warn!(
        signing_keys,
        grace_pairs,
        "master key changed: every sealed secret is re-sealed under the new key"
    );
    Ok(Resealed {
        signing_keys,
        grace_pairs,
        previous,
        warning,
    })
}

/// The store error alone, for a failure that is not about the data dir.
fn describe_plain(e: Error) -> anyhow::Error {
    match e {
        Error::Internal(cause) => anyhow::anyhow!("{cause}"),
        other => anyhow::anyhow!("{other}"),
    }
}

/// Opens, re-seals and checks every sealed value inside the writer's transaction;
/// returns (signing keys, grace pairs). Any error rolls the whole job back.
fn reseal_all(
    db: &Db<'_>,
    current: &MasterKey,
    new: &MasterKey,
    source: &MasterKeySource,
    now: i64,
) -> Result<(usize, usize)> {
    let c = db
        .sqlite()
        .ok_or_else(|| Error::internal("reseal works on a SQLite data dir"))?;
    // Freed cells and pages are zeroed, so the old values do not linger in the file.
    c.execute_batch("PRAGMA secure_delete = ON")?;
    let keys = sealed_rows(
        c,
        "SELECT kid, sealed_private FROM signing_keys ORDER BY rowid",
    )?;
    for (kid, sealed) in &keys {
        let what = format!("signing key {kid}");
        let resealed = reseal_one(current, new, kid, sealed, &what, source)?;
        let changed = c.execute(
            "UPDATE signing_keys SET sealed_private = ?2 WHERE kid = ?1",
            params![kid, resealed],
        )?;
        if changed != 1 {
            return Err(Error::internal(format!(
                "{what}: row vanished while re-sealing"
            )));
        }
    }
    let pairs = sealed_blob_rows(
        c,
        "SELECT token_hash, sealed FROM refresh_grace ORDER BY rowid",
    )?;
    for (hash, sealed) in &pairs {
        let context = grace_context(hash);
        let what = "a refresh grace successor pair".to_string();
        let resealed = reseal_one(current, new, &context, sealed, &what, source)?;
        let changed = c.execute(
            "UPDATE refresh_grace SET sealed = ?2 WHERE token_hash = ?1",
            params![hash, resealed],
        )?;
        if changed != 1 {
            return Err(Error::internal(format!(
                "{what}: row vanished while re-sealing"
            )));
        }
    }
    // What is about to be committed, read back: every value opens under the new key.
    for (kid, sealed) in sealed_rows(c, "SELECT kid, sealed_private FROM signing_keys")? {
        new.open(&kid, &sealed).map_err(|_| {
            Error::internal(format!(
                "signing key {kid} does not open under the new master key after re-sealing"
            ))
        })?;
    }
    for (hash, sealed) in sealed_blob_rows(c, "SELECT token_hash, sealed FROM refresh_grace")? {
        new.open(&grace_context(&hash), &sealed).map_err(|_| {
            Error::internal(
                "a refresh grace pair does not open under the new master key after re-sealing",
            )
        })?;
    }
    let entry = AuditEntry {
        at: now,
        request_id: "-".into(),
        caller: "offline".into(),
        kind: RESEAL_ACTION.into(),
        ..AuditEntry::default()
    }
    .with("signing_keys", keys.len())
    .with("refresh_grace_pairs", pairs.len())
    .with(
        "previous_key",
        match source {
            MasterKeySource::Env => "env",
            MasterKeySource::File(_) => "file",
            MasterKeySource::Development(_) => "development",
        },
    );
    audit::append(db, &entry)?;
    Ok((keys.len(), pairs.len()))
}

/// Opens `sealed` (bound to `context`) with `current`, seals it under `new`, and
/// checks that the result opens under `new` to the same bytes.
fn reseal_one(
    current: &MasterKey,
    new: &MasterKey,
    context: &str,
    sealed: &[u8],
    what: &str,
    source: &MasterKeySource,
) -> Result<Vec<u8>> {
    let plain = current.open(context, sealed).map_err(|_| {
        Error::FailedPrecondition(format!(
            "{what} does not open under the current master key ({source}): is it the key \
             this database was sealed with? Nothing was changed"
        ))
    })?;
    let resealed = new.seal(context, &plain)?;
    let again: Zeroizing<Vec<u8>> = new
        .open(context, &resealed)
        .map_err(|_| Error::internal(format!("{what} does not open under the new master key")))?;
    if !crate::secret::same_bytes(&again, &plain) {
        return Err(Error::internal(format!(
            "{what} opens under the new master key to different bytes"
        )));
    }
    Ok(resealed)
}

fn sealed_rows(c: &Connection, sql: &str) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(c.prepare(sql)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

fn sealed_blob_rows(c: &Connection, sql: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(c.prepare(sql)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Rewrites the database file and empties the WAL, so that no copy of an old sealed
/// value survives in either: `secure_delete` zeroes only what this transaction frees,
/// and earlier updates of a row may have left stale copies of its cell behind. The
/// store's own connections are idle between writes, and this process still holds the
/// data dir's lock. The re-seal is committed whatever happens here, so a failure is
/// returned as a warning for the operator, not as an error.
fn scrub(db: &Path) -> Option<String> {
    let done = Connection::open(db).and_then(|c| {
        c.execute_batch("PRAGMA temp_store = MEMORY; VACUUM;")?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    let why = match done {
        Ok(0) => return None,
        Ok(_) => "the WAL checkpoint was busy".to_string(),
        Err(e) => e.to_string(),
    };
    Some(format!(
        "warning: compacting {} after the re-seal failed ({why}): old sealed values may remain \
         in its free space until `sqlite3 {} VACUUM` is run with the server stopped",
        db.display(),
        db.display()
    ))
}

/// Writes the new key's text next to the development key file, 0600.
fn stage_dev_key(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let tmp = path.with_file_name(format!(
        "{}.{}.new",
        seal::DEV_KEY_FILE,
        crate::tokens::opaque::public_id()
    ));
    seal::write_private_file(&tmp, text.as_bytes()).map_err(describe_plain)?;
    Ok(tmp)
}

/// Renames the staged key over the development key file (atomic: a reader sees the
/// old file or the new one, never a mix) and makes the rename durable.
fn replace_dev_key(tmp: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}
