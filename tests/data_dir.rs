//! The data dir is trusted only when it is the service user's alone, and held by one
//! process at a time. These run the real binary, because they are about what happens
//! at start-up: the modes it creates under any umask, and what it refuses, with a
//! message on stderr naming the path.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn base_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["serve", "--issuer", "https://tessera.test", "--data-dir"])
        .arg(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

fn loopback(cmd: &mut Command) -> &mut Command {
    cmd.args([
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
}

/// Runs a `serve` that is expected to refuse to start: its exit status and stderr.
fn refused(mut cmd: Command) -> (ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait(&mut child, Duration::from_secs(30)).expect("tessera did not exit");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A serving process; killed if the test ends early.
struct Serving(Child);

impl Serving {
    /// Starts `cmd` and waits until it logs that it is serving (its SIGTERM handler
    /// is then in place). The log goes to a file beside, not in, the data dir.
    fn start(mut cmd: Command, dir: &Path) -> Serving {
        let log_path = dir.with_extension(format!("{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = cmd.stdout(log).stderr(Stdio::null()).spawn().unwrap();
        let mut s = Serving(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("tessera serving") {
                break;
            }
            assert!(
                s.0.try_wait().unwrap().is_none(),
                "tessera exited before serving:\n{text}"
            );
            assert!(
                Instant::now() < deadline,
                "tessera did not come up:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&log_path);
        s
    }

    fn terminate(mut self) -> ExitStatus {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        wait(&mut self.0, Duration::from_secs(30)).expect("tessera did not stop")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

#[test]
fn under_umask_000_the_data_dir_is_0700_and_every_file_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // `umask` has no safe std API: a shell sets it for the child it then becomes.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--issuer", "https://tessera.test", "--data-dir"])
        .arg(&dir);
    loopback(&mut cmd);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    let s = Serving::start(cmd, &dir);
    assert_eq!(mode(&dir), 0o700, "data dir");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    for expected in [
        "admin.key",
        "master.key",
        "tessera.db",
        "tessera.db-shm",
        "tessera.db-wal",
        "tessera.lock",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }
    for f in &files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert!(s.terminate().success());
}

#[test]
fn a_world_writable_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let mut cmd = base_command(&dir);
    loopback(&mut cmd);
    let (status, err) = refused(cmd);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "data dir {} is group- or world-writable",
            dir.display()
        )),
        "{err}"
    );
    assert!(
        !dir.join("tessera.db").exists(),
        "nothing written into an untrusted dir"
    );
}

#[test]
fn a_planted_master_key_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    // The attacker's key, which would let them open the signing keys sealed under it.
    let theirs = tmp.path().join("attacker.key");
    std::fs::write(&theirs, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n").unwrap();
    std::os::unix::fs::symlink(&theirs, dir.join("master.key")).unwrap();
    let mut cmd = base_command(&dir);
    loopback(&mut cmd);
    let (status, err) = refused(cmd);
    assert!(!status.success());
    let path = dir.join("master.key");
    assert!(
        err.contains(&format!("{} is a symbolic link", path.display())),
        "{err}"
    );
}

#[test]
fn a_configured_master_key_file_that_is_a_symlink_or_group_writable_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real.key");
    std::fs::write(&real, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n").unwrap();
    chmod(&real, 0o600);
    let link = tmp.path().join("link.key");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let mut cmd = base_command(&tmp.path().join("d1"));
    loopback(&mut cmd).env("TESSERA_MASTER_KEY_FILE", &link);
    let (status, err) = refused(cmd);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "master key file {} is a symbolic link",
            link.display()
        )),
        "{err}"
    );

    chmod(&real, 0o620);
    let mut cmd = base_command(&tmp.path().join("d2"));
    loopback(&mut cmd).env("TESSERA_MASTER_KEY_FILE", &real);
    let (status, err) = refused(cmd);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "master key file {} is group- or world-writable",
            real.display()
        )),
        "{err}"
    );

    // The same file, private, is accepted.
    chmod(&real, 0o600);
    let dir = tmp.path().join("d3");
    let mut cmd = base_command(&dir);
    loopback(&mut cmd).env("TESSERA_MASTER_KEY_FILE", &real);
    let s = Serving::start(cmd, &dir);
    assert!(!dir.join("master.key").exists(), "no development key made");
    assert!(s.terminate().success());
}

#[test]
fn a_data_dir_owned_by_someone_else_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let me = std::fs::metadata(tmp.path()).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    if std::os::unix::fs::chown(&dir, Some(54_321), None).is_err() {
        eprintln!("skipped: cannot chown here (not root; owner {me:?})");
        return;
    }
    let mut cmd = base_command(&dir);
    loopback(&mut cmd);
    let (status, err) = refused(cmd);
    assert!(!status.success());
    assert!(
        err.contains(&format!("data dir {} is owned by uid 54321", dir.display())),
        "{err}"
    );
}

#[test]
fn a_second_serve_on_the_same_data_dir_exits_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut cmd = base_command(&dir);
    loopback(&mut cmd);
    let first = Serving::start(cmd, &dir);
    let holder = first.0.id();

    let mut cmd = base_command(&dir);
    loopback(&mut cmd);
    let (status, err) = refused(cmd);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "data dir {} is in use by another tessera process (pid {holder}",
            dir.display()
        )),
        "{err}"
    );
    assert!(first.terminate().success());

    // Once the holder is gone, the dir is free again.
    let mut cmd = base_command(&dir);
    loopback(&mut cmd);
    let again = Serving::start(cmd, &dir);
    assert!(again.terminate().success());
}

#[test]
fn binding_beyond_loopback_without_a_master_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (grpc, http) in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "[::]:0")] {
        let addr = if grpc.starts_with("127.") { http } else { grpc };
        let dir = tmp.path().join("data");
        let mut cmd = base_command(&dir);
        cmd.args(["--grpc-addr", grpc, "--http-addr", http])
            .args(["--metrics-addr", "127.0.0.1:0"]);
        let (status, err) = refused(cmd);
        assert_eq!(status.code(), Some(64), "{addr}: {err}");
        assert!(
            err.contains(addr) && err.contains("no master key is configured"),
            "{err}"
        );
        assert!(!dir.exists(), "refused before touching the disk");
    }
}
