//! The data dir holds the database and, in development, the master key that opens the
//! signing keys, so it must be this service user's alone. It is created 0700 and its
//! files 0600 whatever the umask; an existing dir that someone else owns or could
//! write to is refused, as is a symlink in place of any file the service reads; and
//! one process holds the dir at a time, through an exclusive lock on [`LOCK_FILE`].
//!
//! Every way into the store goes through [`DataDir::open`] (the server and the
//! offline tools alike), so none of them can run beside a live server.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file in the data dir; holds the pid of the process that has the dir.
pub(crate) const LOCK_FILE: &str = "tessera.lock";

/// Files of the data dir kept private (0600) and never followed if they are symlinks.
pub(crate) const PRIVATE_FILES: &[&str] = &[
    "tessera.db",
    "tessera.db-wal",
    "tessera.db-shm",
    "tessera.db-journal",
    "admin.key",
    crate::keys::seal::DEV_KEY_FILE,
    LOCK_FILE,
];

/// A data dir this process holds exclusively; the lock goes when this is dropped.
#[derive(Debug)]
pub(crate) struct DataDir {
    _lock: File,
}

fn refuse(msg: String) -> Error {
    Error::FailedPrecondition(msg)
}

impl DataDir {
    /// Creates (0700) or checks the data dir, takes its lock, makes its files private,
    /// and creates an empty database file 0600 if there is none, so SQLite's own
    /// files (which copy the database's mode) are private too.
    pub(crate) fn open(path: &Path) -> Result<DataDir> {
        create_private_dir(path)?;
        check_dir(path)?;
        let lock = lock(path)?;
        for name in PRIVATE_FILES {
            make_private(&path.join(name))?;
        }
        let db = path.join("tessera.db");
        if !db.exists() {
            create_private_file(&db)?;
        }
        Ok(DataDir { _lock: lock })
    }
}

/// The effective uid of this process.
#[cfg(unix)]
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| refuse(format!("cannot set the mode of {}: {e}", path.display())))
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| refuse(format!("cannot create data dir {}: {e}", path.display())))?;
    // The umask can only take bits away; set the mode so it is exactly 0700.
    set_mode(path, 0o700)
}

/// The data dir (a symlink to it is followed, and its target checked) must be a
/// directory owned by this user that nobody else can write to. Group or world
/// read access is taken away.
#[cfg(unix)]
fn check_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path)
        .map_err(|e| refuse(format!("cannot read data dir {}: {e}", path.display())))?;
    if !md.is_dir() {
        return Err(refuse(format!(
            "data dir {} is not a directory",
            path.display()
        )));
    }
    let euid = effective_uid();
    if md.uid() != euid {
        return Err(refuse(format!(
            "data dir {} is owned by uid {}, not by uid {euid} this service runs as: refusing to trust it",
            path.display(),
            md.uid()
        )));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "data dir {} is group- or world-writable (mode {mode:o}): others could replace the \
             database or the master key; chmod 700 it",
            path.display()
        )));
    }
    if mode & 0o777 != 0o700 {
        set_mode(path, 0o700)?;
        tracing::warn!(path = %path.display(), from = format!("{mode:o}"), "data dir mode tightened to 700");
    }
    Ok(())
}

/// Checks a file whose content the service trusts (a master key): not a symlink, not
/// writable by group or others, owned by this user (or by root, as a mounted secret is).
#[cfg(unix)]
pub(crate) fn check_trusted_file(path: &Path, what: &str, root_may_own: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path)
        .map_err(|e| refuse(format!("cannot read {what} {}: {e}", path.display())))?;
    if md.file_type().is_symlink() {
        return Err(refuse(format!(
            "{what} {} is a symbolic link: refusing to follow it (point at the file itself; \
             in Kubernetes mount the Secret with subPath)",
            path.display()
        )));
    }
    if !md.is_file() {
        return Err(refuse(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    let euid = effective_uid();
    if md.uid() != euid && !(root_may_own && md.uid() == 0) {
        return Err(refuse(format!(
            "{what} {} is owned by uid {}, not by uid {euid} this service runs as",
            path.display(),
            md.uid()
        )));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "{what} {} is group- or world-writable (mode {mode:o}); chmod 600 it",
            path.display()
        )));
    }
    Ok(())
}

/// A file of the data dir, if present, must not be a symlink nor writable by group or
/// others (someone else may have changed it: an API-key hash, the master key); looser
/// read bits are taken away.
#[cfg(unix)]
fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if md.file_type().is_symlink() {
        return Err(refuse(format!(
            "{} is a symbolic link: refusing to follow it",
            path.display()
        )));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "{} is group- or world-writable (mode {mode:o}): someone else may have changed \
             it; check it, then chmod 600 it",
            path.display()
        )));
    }
    if md.is_file() && md.mode() & 0o777 != 0o600 {
        set_mode(path, 0o600)?;
        tracing::warn!(path = %path.display(), from = format!("{:o}", md.mode() & 0o777), "file mode tightened to 600");
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 exactly; an existing file is left alone.
fn create_private_file(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts
        .open(path)
        .map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
    #[cfg(unix)]
    set_mode(path, 0o600)?;
    Ok(f)
}

/// Takes the exclusive lock and records this pid in the lock file. The lock belongs
/// to the open file: it is released when the process exits, however it exits.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refuse(format!(
            "{} is a symbolic link: refusing to follow it",
            path.display()
        )));
    }
    let mut f = create_private_file(&path)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // The holder writes its pid just after taking the lock: a contender that
            // lost by a hair may look before that, so it looks again briefly.
            let mut holder = String::new();
            for _ in 0..20 {
                holder.clear();
                let _ = f.rewind().and_then(|()| f.read_to_string(&mut holder));
                if !holder.trim().is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let holder = holder.trim();
            let holder = if holder.is_empty() || !holder.chars().all(|c| c.is_ascii_digit()) {
                "unknown pid".to_string()
            } else {
                format!("pid {holder}")
            };
            return Err(refuse(format!(
                "data dir {} is in use by another tessera process ({holder}, lock file {}): \
                 one process per data dir",
                dir.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(refuse(format!("cannot lock {}: {e}", path.display())));
        }
    }
    let pid = std::process::id();
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| writeln!(f, "{pid}"))
        .and_then(|()| f.flush())
        .map_err(|e| refuse(format!("cannot write {}: {e}", path.display())))?;
    Ok(f)
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| refuse(format!("cannot create data dir {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn check_dir(_: &Path) -> Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_: &Path) -> Result<()> {
    Ok(())
}

/// Off Unix there are no owners and modes to check.
#[cfg(not(unix))]
pub(crate) fn check_trusted_file(_: &Path, _: &str, _: bool) -> Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_dir_is_0700_with_a_0600_database_and_a_pid_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let d = DataDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tessera.db")), 0o600);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        let pid = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let e = DataDir::open(&dir).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(d);
        DataDir::open(&dir).expect("the lock goes with its holder");
    }

    #[test]
    fn lax_dirs_writable_files_and_symlinks_are_refused_readable_files_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        drop(DataDir::open(&dir).unwrap());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = DataDir::open(&dir).unwrap_err().to_string();
        assert!(
            e.contains("writable") && e.contains(&dir.display().to_string()),
            "{e}"
        );

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.join("tessera.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        drop(DataDir::open(&dir).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tessera.db")), 0o600);

        std::fs::set_permissions(
            dir.join("tessera.db"),
            std::fs::Permissions::from_mode(0o664),
        )
        .unwrap();
        let e = DataDir::open(&dir).unwrap_err().to_string();
        assert!(e.contains("tessera.db is group- or world-writable"), "{e}");
        std::fs::set_permissions(
            dir.join("tessera.db"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, "x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("admin.key")).unwrap();
        let e = DataDir::open(&dir).unwrap_err().to_string();
        assert!(
            e.contains("symbolic link") && e.contains("admin.key"),
            "{e}"
        );
    }
}
