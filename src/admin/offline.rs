//! The front of the offline commands (`recover`, `import-key`, `reseal`, `backup`):
//! resolve the configuration `serve` would use for the data dir, run the tool, and
//! phrase its outcome as an [`Output`] or a [`Failure`] with its exit code.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use super::backup::{self, BackupError};
use super::remote::{Failure, Output, exit};
use crate::clock::Clock;
use crate::config::{Config, DatabaseUrl, Layer};
use crate::keys::import::ImportAlg;
use crate::keys::seal::MasterKeySource;

pub(super) async fn recover(data_dir: &Path, clock: &Clock) -> Result<Output, Failure> {
    // The recovered key lives as long as a freshly issued API key by default.
    let ttl = Config::default().api_key_ttl.as_secs() as i64;
    let path = super::recover(data_dir, clock, ttl)
        .await
        .map_err(|e| Failure::new(exit::FAILURE, format!("recover: {e:#}")))?;
    Ok(Output {
        text: format!("admin API key written to {}\n", path.display()),
        json: json!({ "admin_key_file": path.display().to_string() }),
        note: None,
        code: 0,
    })
}

/// The config `serve` would use for this data dir: `--config` (else TESSERA_CONFIG),
/// then TESSERA_* env, with `--data-dir` on top.
pub(super) fn offline_config(
    data_dir: &Path,
    config: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Config, Failure> {
    let flags = Layer {
        data_dir: Some(data_dir.display().to_string()),
        ..Layer::default()
    };
    let config = Config::load(flags, config.map(Path::to_path_buf), env)
        .map_err(|e| Failure::usage(format!("bad configuration: {e}")))?;
    // The offline tools open the data dir's own SQLite file. Anywhere else they would
    // report success on a database the service does not use.
    let own = DatabaseUrl::Sqlite(data_dir.join("tessera.db"));
    match config.database() {
        db if db == own => Ok(config),
        DatabaseUrl::Postgres(_) => Err(Failure::usage(
            "this command works on a SQLite data dir, and database_url names PostgreSQL: \
             back up with the database's own tools (pg_dump), and issue or revoke keys \
             through a running replica",
        )),
        other => Err(Failure::usage(format!(
            "this command works on {}, and database_url names {other}: \
             point --data-dir at the dir that holds the database",
            own.redacted()
        ))),
    }
}

pub(super) async fn import_key(
    alg: &str,
    pem: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    env: &HashMap<String, String>,
    clock: &Clock,
) -> Result<Output, Failure> {
    let alg: ImportAlg = alg
        .parse()
        .map_err(|e| Failure::usage(format!("--alg: {e}")))?;
    let config = offline_config(data_dir, config, env)?;
    let kid = super::import::import_key(&config, alg, pem, clock)
        .await
        .map_err(|e| Failure::new(exit::FAILURE, format!("import-key: {e:#}")))?;
    Ok(Output {
        text: format!(
            "imported {} key {kid}; it signs from the next start of the server\n",
            alg.name()
        ),
        json: json!({ "kid": kid, "alg": alg.name() }),
        note: None,
        code: 0,
    })
}

pub(super) async fn reseal(
    data_dir: &Path,
    new_key_file: &Path,
    config: Option<&Path>,
    env: &HashMap<String, String>,
    clock: &Clock,
) -> Result<Output, Failure> {
    let config = offline_config(data_dir, config, env)?;
    let done = super::reseal::reseal(&config, new_key_file, clock)
        .await
        .map_err(|e| Failure::new(exit::FAILURE, format!("reseal: {e:#}")))?;
    let next = match &done.previous {
        MasterKeySource::Development(path) => {
            format!("{} now holds the new master key", path.display())
        }
        previous => format!(
            "start the server with the new master key (master_key_file or TESSERA_MASTER_KEY): \
             the old one ({previous}) no longer opens this database"
        ),
    };
    Ok(Output {
        text: format!(
            "re-sealed {} signing keys and {} refresh grace pairs under the new master key; {next}\n",
            done.signing_keys, done.grace_pairs
        ),
        json: json!({
            "signing_keys": done.signing_keys,
            "refresh_grace_pairs": done.grace_pairs,
            "development_key_replaced": matches!(done.previous, MasterKeySource::Development(_)),
        }),
        note: done.warning,
        code: 0,
    })
}

pub(super) fn run_backup(data_dir: &Path, to: &Path) -> Result<Output, Failure> {
    let bytes = backup::backup(data_dir, to).map_err(|e| {
        let code = match e {
            BackupError::Exists(_) => exit::CANT_CREATE,
            BackupError::NoDatabase(_) => exit::USAGE,
            BackupError::Failed(_) => exit::FAILURE,
        };
        Failure::new(code, format!("backup: {e}"))
    })?;
    Ok(Output {
        text: format!(
            "backed up {} to {} ({bytes} bytes); the master key is not in it\n",
            data_dir.join("tessera.db").display(),
            to.display()
        ),
        json: json!({ "backup": to.display().to_string(), "bytes": bytes }),
        note: None,
        code: 0,
    })
}
