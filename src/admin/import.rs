//! `tessera admin import-key`: seals an existing RSA private key into a stopped
//! server's data dir, for verifiers that only speak RS256 or PS256.
//!
//! The imported key becomes the active signing key at the server's next start; the
//! key that was active retires as on a rotation (it verifies for
//! `max_access_token_ttl` plus 60 s, then leaves the JWKS). A later `RotateSigningKey` generates a key of the
//! configured `signing_alg`: to stay on RSA, import the next RSA key instead.

use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::import::{self, ImportAlg};
use crate::keys::seal::MasterKey;
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};
use crate::store::keys as key_rows;

use super::recover::describe;

/// Largest PEM file read: a 16384-bit key is well under this.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// Imports the RSA key in `pem_path` into `config.data_dir` (which must hold a
/// database), sealed under the configured master key, audited as `key.created` by
/// caller `offline` with `imported: true`. Returns the new kid (RFC 7638 thumbprint).
///
/// Goes through [`Store::open`], so a running server's lock refuses it.
pub(crate) async fn import_key(
    config: &Config,
    alg: ImportAlg,
    pem_path: &Path,
    clock: &Clock,
) -> anyhow::Result<String> {
    let data_dir = config.data_dir.as_path();
    if !data_dir.join("tessera.db").is_file() {
        bail!(
            "{} holds no Tessera database (start the server once to create it)",
            data_dir.display()
        );
    }
    let pem = read_pem(pem_path)?;
    let store = Store::open(data_dir).map_err(|e| describe(e, data_dir))?;
    let master = MasterKey::load(config).map_err(|e| describe(e, data_dir))?;
    let now = clock.now();
    let row = import::rsa_key_row(alg, &pem, &master, now)
        .map_err(|e| anyhow::anyhow!("{}: {e}", pem_path.display()))?;
    let kid = row.kid.clone();
    // The same window `Authority` gives `Keyring` for a rotation.
    let retire_until = now + config.max_access_token_ttl.as_secs() as i64 + 60;
    let entry = AuditEntry {
        at: now,
        request_id: "-".into(),
        caller: "offline".into(),
        kind: "key.created".into(),
        token_id: kid.clone(),
        ..AuditEntry::default()
    }
    .with("imported", true)
    .with("alg", alg.name())
    .with("previous_verify_until", retire_until);
    let inserted = store
        .write(move |c| {
            if key_rows::state(c, &row.kid, now)?.is_some() {
                return Ok(false);
            }
            // Offline, nothing is serving a JWKS to publish it ahead in: it signs from
            // the next start, like `rotate --now` (any waiting successor is dropped from
            // the hand-over, as the imported key replaces it).
            key_rows::insert(c, &row)?;
            key_rows::retire_others(c, &row.kid, now, retire_until)?;
            key_rows::announce(c, now)?;
            audit::append(c, &entry)?;
            Ok(true)
        })
        .await
        .map_err(|e| describe(e, data_dir))?;
    if !inserted {
        bail!("key {kid} is already in the store");
    }
    tracing::warn!(%kid, alg = alg.name(), "RSA signing key imported; it signs from the next start");
    Ok(kid)
}

fn read_pem(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    if meta.len() > MAX_PEM_BYTES {
        bail!(
            "{} is {} bytes; a PEM private key is under {MAX_PEM_BYTES}",
            path.display(),
            meta.len()
        );
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM text file", path.display()))?;
    Ok(Zeroizing::new(text.to_string()))
}
