//! What an operator sees when the service will not start, and what probes see while
//! it runs: every start-up failure names its cause and the path or address on stderr;
//! every setting that does not parse exits 64; readiness follows storage and the
//! drain. These run the real binary, because exit codes, stderr and signals are the
//! behaviour under test.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::authed;
use tessera::proto::BumpTokenVersionRequest;
use tessera::proto::token_service_client::TokenServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ISSUER: &str = "https://tessera.test";

/// `tessera serve` on port-0 listeners and `dir`, with no `TESSERA_*` from the outside.
fn serve(dir: &Path) -> Command {
    serve_except(dir, "")
}

/// [`serve`] without the flag `except`, for a test that gives its own.
fn serve_except(dir: &Path, except: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("serve");
    let defaults = [
        ("--grpc-addr", "127.0.0.1:0"),
        ("--http-addr", "127.0.0.1:0"),
        ("--metrics-addr", "127.0.0.1:0"),
        ("--issuer", ISSUER),
    ];
    for (flag, value) in defaults {
        if flag != except {
            cmd.args([flag, value]);
        }
    }
    cmd.arg("--data-dir").arg(dir);
    clean_env(&mut cmd);
    cmd
}

fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
}

/// Runs a `serve` expected to refuse to start: its exit status and stderr.
fn refused(mut cmd: Command) -> (ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera did not exit: it started when it should not have");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

fn master_key_text(byte: u8) -> String {
    B64.encode([byte; 32])
}

fn write_key_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Asserts a start-up failure: non-zero exit, not the config code, and every `needle`
/// on stderr (and never "internal error", which tells an operator nothing).
fn assert_refused(name: &str, cmd: Command, needles: &[&str]) -> String {
    let (status, err) = refused(cmd);
    assert!(!status.success(), "{name}: started");
    assert_eq!(status.code(), Some(1), "{name}: {status}\n{err}");
    assert!(!err.contains("internal error"), "{name}: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: stderr lacks {n:?}:\n{err}");
    }
    err
}

#[test]
fn a_missing_master_key_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("no-such.key");
    let mut cmd = serve(&tmp.path().join("data"));
    cmd.env("TESSERA_MASTER_KEY_FILE", &key);
    assert_refused(
        "missing master key",
        cmd,
        &[key.to_str().unwrap(), "master key file", "No such file"],
    );
}

#[test]
fn a_master_key_path_that_is_a_directory_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("keydir");
    std::fs::create_dir(&key).unwrap();
    let mut cmd = serve(&tmp.path().join("data"));
    cmd.env("TESSERA_MASTER_KEY_FILE", &key);
    assert_refused(
        "master key is a dir",
        cmd,
        &[key.to_str().unwrap(), "not a regular file"],
    );
}

#[test]
fn a_master_key_file_that_does_not_parse_is_named_without_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("mk");
    write_key_file(&key, "hunter2-not-a-key");
    let mut cmd = serve(&tmp.path().join("data"));
    cmd.env("TESSERA_MASTER_KEY_FILE", &key);
    let err = assert_refused(
        "unparsable master key file",
        cmd,
        &[key.to_str().unwrap(), "base64url"],
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// The sealed signing keys in the database do not open under another master key: the
/// operator learns which database, and neither key appears.
#[test]
fn a_wrong_master_key_names_the_database_and_prints_no_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (right, wrong) = (master_key_text(1), master_key_text(2));
    let right_file = tmp.path().join("right.key");
    write_key_file(&right_file, &right);
    // First start seals a signing key under `right`; it must come up, then stop.
    let mut first = Serving::start(
        {
            let mut c = serve(&data);
            c.env("TESSERA_MASTER_KEY_FILE", &right_file)
                .env("TESSERA_DRAIN_DELAY", "0s");
            c
        },
        tmp.path(),
    );
    assert!(first.terminate().success());

    let mut cmd = serve(&data);
    cmd.env("TESSERA_MASTER_KEY", &wrong);
    let db = data.join("tessera.db");
    let err = assert_refused(
        "wrong master key",
        cmd,
        &[
            db.to_str().unwrap(),
            "does not open under the configured master key",
        ],
    );
    assert!(!err.contains(&right) && !err.contains(&wrong), "{err}");
}

#[test]
fn a_data_dir_that_is_a_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    assert_refused(
        "data dir is a file",
        serve(&file),
        &[file.to_str().unwrap(), "not a directory"],
    );
}

#[test]
fn a_data_dir_that_cannot_be_created_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    // Below a regular file nothing can be created, whoever we run as (root included).
    let dir = file.join("data");
    assert_refused(
        "data dir cannot be created",
        serve(&dir),
        &[dir.to_str().unwrap(), "cannot create data dir"],
    );
}

/// Each listener's address in use: the message says which listener, and the address.
#[test]
fn an_address_in_use_names_the_listener_and_the_address() {
    for (flag, listener) in [
        ("--grpc-addr", "gRPC"),
        ("--http-addr", "HTTP"),
        ("--metrics-addr", "metrics"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let mut cmd = serve_except(&tmp.path().join("data"), flag);
        cmd.args([flag, &addr]);
        assert_refused(
            flag,
            cmd,
            &[
                &format!("{listener} address {addr}"),
                "Address already in use",
            ],
        );
    }
}

/// One row per value that does not parse, from env, flags or the config file: exit 64
/// (EX_USAGE) and a message naming the setting.
#[test]
fn every_unparsable_setting_exits_64_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let toml_bad_number = tmp.path().join("bad-number.toml");
    std::fs::write(&toml_bad_number, "max_request_bytes = \"lots\"\n").unwrap();
    let toml_bad_issuer = tmp.path().join("bad-issuer.toml");
    std::fs::write(&toml_bad_issuer, "issuer = \"tessera\"\n").unwrap();
    let toml_typo = tmp.path().join("typo.toml");
    std::fs::write(&toml_typo, "grpc_adr = \"127.0.0.1:1\"\n").unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    // (name, env, extra flags, needles on stderr)
    type Row<'a> = (&'a str, Vec<(&'a str, String)>, Vec<String>, Vec<String>);
    let rows: Vec<Row> = vec![
        (
            "TESSERA_MAX_REQUEST_BYTES=lots",
            vec![("TESSERA_MAX_REQUEST_BYTES", "lots".into())],
            vec![],
            vec!["TESSERA_MAX_REQUEST_BYTES".into(), "lots".into()],
        ),
        (
            "malformed TESSERA_SCOPE_TTL",
            vec![("TESSERA_SCOPE_TTL", "write:payments:60s".into())],
            vec![],
            vec!["TESSERA_SCOPE_TTL".into(), "write:payments:60s".into()],
        ),
        (
            "TESSERA_SCOPE_TTL with a bad duration",
            vec![("TESSERA_SCOPE_TTL", "write:payments=soon".into())],
            vec![],
            vec!["scope_ttl".into(), "soon".into()],
        ),
        (
            "TESSERA_LOG=[[[",
            vec![("TESSERA_LOG", "[[[".into())],
            vec![],
            vec!["TESSERA_LOG".into(), "[[[".into()],
        ),
        (
            "--issuer not a url",
            vec![],
            vec!["--issuer".into(), "not a url".into()],
            vec!["issuer".into(), "not a url".into()],
        ),
        (
            "--issuer with a fragment",
            vec![],
            vec!["--issuer".into(), "https://tessera.test/#x".into()],
            vec!["issuer".into(), "fragment".into()],
        ),
        (
            "--issuer with a query",
            vec![],
            vec!["--issuer".into(), "https://tessera.test/?t=1".into()],
            vec!["issuer".into(), "query".into()],
        ),
        (
            "a TESSERA_ value that is not UTF-8",
            vec![],
            vec![],
            vec!["TESSERA_ISSUER".into(), "UTF-8".into()],
        ),
        (
            "TESSERA_MAX_CONNECTIONS=lots",
            vec![("TESSERA_MAX_CONNECTIONS", "lots".into())],
            vec![],
            vec!["TESSERA_MAX_CONNECTIONS".into()],
        ),
        (
            "TESSERA_SHUTDOWN_GRACE=10 seconds",
            vec![("TESSERA_SHUTDOWN_GRACE", "10 seconds".into())],
            vec![],
            vec!["shutdown_grace".into()],
        ),
        (
            "TESSERA_MASTER_KEY not base64url",
            vec![("TESSERA_MASTER_KEY", "hunter2!".into())],
            vec![],
            vec!["TESSERA_MASTER_KEY".into()],
        ),
        (
            "TESSERA_OTLP_ENDPOINT without a scheme",
            vec![("TESSERA_OTLP_ENDPOINT", "collector:4317".into())],
            vec![],
            vec!["otlp_endpoint".into()],
        ),
        (
            "a config file value that is not a number",
            vec![],
            vec!["--config".into(), p(&toml_bad_number)],
            vec![p(&toml_bad_number), "max_request_bytes".into()],
        ),
        (
            "a config file issuer that is not a URL",
            vec![],
            vec!["--config".into(), p(&toml_bad_issuer)],
            vec!["issuer".into(), "\"tessera\"".into()],
        ),
        (
            "a config file with a mistyped key",
            vec![],
            vec!["--config".into(), p(&toml_typo)],
            vec![p(&toml_typo), "grpc_adr".into()],
        ),
    ];
    for (name, env, flags, needles) in rows {
        let mut cmd = serve_except(&tmp.path().join("data"), "--issuer");
        cmd.args(&flags);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        if name.contains("UTF-8") {
            use std::os::unix::ffi::OsStrExt;
            cmd.env(
                "TESSERA_ISSUER",
                std::ffi::OsStr::from_bytes(b"https://\xff.test"),
            );
        }
        let (status, err) = refused(cmd);
        assert_eq!(status.code(), Some(64), "{name}: {status}\n{err}");
        for n in &needles {
            assert!(
                err.contains(n.as_str()),
                "{name}: stderr lacks {n:?}:\n{err}"
            );
        }
        assert!(!err.contains("hunter2"), "{name}: a secret echoed: {err}");
    }
    assert!(
        !tmp.path().join("data").exists(),
        "a bad configuration touched the data dir"
    );
}

/// A serving process whose stdout and stderr are collected.
struct Serving {
    child: Child,
    output: Arc<Mutex<String>>,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// `addr` from the `tessera serving grpc=... http=...` line.
fn logged_addr(log: &str, key: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("tessera serving"))?;
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Serving {
    fn start(mut cmd: Command, _dir: &Path) -> Serving {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = output.lock().unwrap().clone();
            if let (Some(grpc), Some(http)) = (logged_addr(&log, "grpc"), logged_addr(&log, "http"))
            {
                return Serving {
                    child,
                    output,
                    grpc,
                    http,
                };
            }
            if let Some(s) = child.try_wait().unwrap() {
                panic!("tessera exited before serving ({s}):\n{log}");
            }
            assert!(Instant::now() < deadline, "tessera did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "tessera did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` over a fresh connection: the status code, or None if nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn grpc_health(addr: SocketAddr, service: &str) -> Option<i32> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

const SERVICES: [&str; 3] = ["", "tessera.v1.TokenService", "tessera.v1.KeyService"];

async fn all_health(addr: SocketAddr) -> Vec<Option<i32>> {
    let mut out = Vec::new();
    for s in SERVICES {
        out.push(grpc_health(addr, s).await);
    }
    out
}

fn all(status: ServingStatus) -> Vec<Option<i32>> {
    vec![Some(status as i32); SERVICES.len()]
}

/// SIGTERM: `/readyz` answers 503 and gRPC health NOT_SERVING while the process still
/// runs (the HTTP listener stays up through the drain), `/healthz` stays ok, and the
/// process then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_readiness_fails_first_and_the_probe_port_stays_up_until_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = serve(&tmp.path().join("data"));
    cmd.env("TESSERA_DRAIN_DELAY", "2s")
        // A mistyped variable is warned about by name, never silently ignored.
        .env("TESSERA_SHUTDOWN_GRAC", "1s");
    let mut s = Serving::start(cmd, tmp.path());
    assert!(
        s.log()
            .contains("TESSERA_SHUTDOWN_GRAC is not a Tessera setting"),
        "{}",
        s.log()
    );
    assert_eq!(http_status(s.http, "/readyz"), Some(200));
    assert_eq!(all_health(s.grpc).await, all(ServingStatus::Serving));

    s.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_503 = false;
    let mut saw_not_serving = false;
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "did not exit:\n{}", s.log());
        if http_status(s.http, "/readyz") == Some(503) {
            saw_503 = true;
            // Liveness is not readiness: a draining process is alive.
            if s.child.try_wait().unwrap().is_none() {
                let live = http_status(s.http, "/healthz");
                assert!(matches!(live, Some(200) | None), "{live:?}");
            }
        }
        if !saw_not_serving && all_health(s.grpc).await == all(ServingStatus::NotServing) {
            saw_not_serving = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}:\n{}", s.log());
    assert!(
        saw_503,
        "/readyz never said 503 while draining:\n{}",
        s.log()
    );
    assert!(
        saw_not_serving,
        "gRPC health never said NOT_SERVING while draining:\n{}",
        s.log()
    );
}

/// A real storage failure: the process may not grow its files past a size limit
/// (RLIMIT_FSIZE, with SIGXFSZ ignored so a write fails with EFBIG instead of killing
/// it), the database's WAL hits it, and a write fails. Readiness goes NOT_SERVING
/// (liveness stays ok); once the limit is lifted from outside, the periodic probe
/// write succeeds and readiness comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_makes_the_node_not_ready_until_a_write_succeeds_again() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit(1) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Bootstrap first, unconstrained, so the limited run starts on a complete database.
    let mut first = Serving::start(
        {
            let mut c = serve(&data);
            c.env("TESSERA_DRAIN_DELAY", "0s");
            c
        },
        tmp.path(),
    );
    assert!(first.terminate().success());
    let admin = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let db_len = std::fs::metadata(data.join("tessera.db")).unwrap().len();
    // Room for the database as it is, plus a little WAL.
    let limit_kib = db_len / 1024 + 256;

    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            // The soft limit only: lifting it later needs no privilege.
            "trap '' XFSZ; ulimit -S -f {limit_kib} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(serve(&data).get_args());
    clean_env(&mut cmd);
    cmd.env("TESSERA_DRAIN_DELAY", "0s");
    let mut s = Serving::start(cmd, tmp.path());
    assert_eq!(http_status(s.http, "/readyz"), Some(200));
    assert_eq!(all_health(s.grpc).await, all(ServingStatus::Serving));

    let ch = Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut tk = TokenServiceClient::new(ch);
    let mut failed = None;
    for i in 0..5_000 {
        let req = BumpTokenVersionRequest {
            subject: format!("user-{i}-{}", "x".repeat(200)),
            reason: "filling the disk".into(),
        };
        if let Err(st) = tk.bump_token_version(authed(req, &admin)).await {
            failed = Some(st);
            break;
        }
    }
    let failed = failed.expect("no write failed under the file-size limit");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}\n{}", s.log());

    assert_eq!(http_status(s.http, "/readyz"), Some(503), "{}", s.log());
    assert_eq!(http_status(s.http, "/healthz"), Some(200));
    let deadline = Instant::now() + Duration::from_secs(5);
    while all_health(s.grpc).await != all(ServingStatus::NotServing) {
        assert!(Instant::now() < deadline, "gRPC health still SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Lift the limit from outside; the probe write (every 5 s) proves storage back.
    let pid = s.child.id().to_string();
    let lifted = Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:"])
        .status()
        .unwrap();
    assert!(lifted.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(s.http, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "readiness did not come back:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(all_health(s.grpc).await, all(ServingStatus::Serving));
    let req = BumpTokenVersionRequest {
        subject: "after-recovery".into(),
        reason: "storage back".into(),
    };
    tk.bump_token_version(authed(req, &admin)).await.unwrap();
    assert!(s.log().contains("storage failing"), "{}", s.log());
    assert!(s.terminate().success());
}
