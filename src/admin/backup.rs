//! `tessera admin backup --to FILE`: a consistent copy of a data dir's database while
//! the server keeps serving.
//!
//! The running server holds the data dir's lock, so this neither takes the lock nor
//! opens the store: it opens `tessera.db` read-only and copies it with SQLite's online
//! backup API in a single step, i.e. inside one read transaction. WAL readers never
//! block the writer, and the copy is the database exactly as of one commit. The master
//! key is not in the database: back it up separately (without it, the sealed signing
//! keys in the copy cannot be opened).

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// Why a backup did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    /// The destination exists; a backup never overwrites.
    #[error("{0} already exists; a backup never overwrites a file")]
    Exists(String),
    /// The data dir holds no database.
    #[error("{0} holds no Tessera database (tessera.db)")]
    NoDatabase(String),
    /// Anything else, with its cause and path.
    #[error("{0}")]
    Failed(String),
}

/// How often a step that found the database busy is retried (50 ms apart).
const BUSY_RETRIES: u32 = 200;

/// Copies `<data_dir>/tessera.db` to `to` (created 0600, never overwritten). Returns
/// the size of the copy in bytes. A half-written copy is removed on failure.
pub(crate) fn backup(data_dir: &Path, to: &Path) -> Result<u64, BackupError> {
    let db = data_dir.join("tessera.db");
    if !db.is_file() {
        return Err(BackupError::NoDatabase(data_dir.display().to_string()));
    }
    create_private(to)?;
    let result = copy(&db, to);
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result
}

fn create_private(to: &Path) -> Result<(), BackupError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::Exists(to.display().to_string()))
        }
        Err(e) => Err(BackupError::Failed(format!(
            "creating {}: {e}",
            to.display()
        ))),
    }
}

fn copy(db: &Path, to: &Path) -> Result<u64, BackupError> {
    let failed = |what: &str, path: &Path, e: rusqlite::Error| {
        BackupError::Failed(format!("{what} {}: {e}", path.display()))
    };
    // Read-only: the server is the only writer of its store.
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed("opening", db, e))?;
    src.busy_timeout(Duration::from_secs(5))
        .map_err(|e| failed("opening", db, e))?;
    let mut dst = Connection::open(to).map_err(|e| failed("opening", to, e))?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(|e| failed("backing up", db, e))?;
        let mut busy = 0;
        loop {
            // -1: every page in one step, one read transaction, one consistent snapshot.
            match backup.step(-1).map_err(|e| failed("backing up", db, e))? {
                StepResult::Done => break,
                StepResult::More => {}
                _ if busy < BUSY_RETRIES => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(BackupError::Failed(format!(
                        "{} stayed busy; try again",
                        db.display()
                    )));
                }
            }
        }
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| failed("checking", to, e))?;
    if check != "ok" {
        return Err(BackupError::Failed(format!(
            "the copy at {} failed its integrity check: {check}",
            to.display()
        )));
    }
    dst.close().map_err(|(_, e)| failed("closing", to, e))?;
    let file = std::fs::File::open(to)
        .map_err(|e| BackupError::Failed(format!("reopening {}: {e}", to.display())))?;
    file.sync_all()
        .map_err(|e| BackupError::Failed(format!("syncing {}: {e}", to.display())))?;
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}
