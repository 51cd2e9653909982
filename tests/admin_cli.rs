//! `tessera admin …`: the real binary against a real server (in-process, on ephemeral
//! ports), its output and exit codes asserted.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TestServer, authed, test_config};
use serde_json::Value;
use tessera::clock::Clock;
use tessera::proto::issue_request::Credential;
use tessera::proto::{ClientSpec, GetJwksRequest, IssueRequest, RevokeRequest};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// `tessera <args>` with no inherited TESSERA_* variables, plus `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).stdin(Stdio::null());
    cmd
}

/// Runs the binary off the async executor, so the in-process server keeps serving.
async fn tessera(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = command(args, env);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run tessera"))
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tessera admin --addr <server> --key-file <admin.key> <args>`.
async fn admin(s: &TestServer, args: &[&str]) -> Run {
    let addr = format!("http://{}", s.grpc);
    let key_file = s.data_dir.join("admin.key");
    let mut all = vec![
        "admin",
        "--addr",
        &addr,
        "--key-file",
        key_file.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    tessera(&all, &[]).await
}

/// `tessera admin --addr <server> <args>` with the key in TESSERA_API_KEY.
async fn admin_with_key(s: &TestServer, key: &str, args: &[&str]) -> Run {
    let addr = format!("http://{}", s.grpc);
    let mut all = vec!["admin", "--addr", &addr];
    all.extend_from_slice(args);
    tessera(&all, &[("TESSERA_API_KEY", key)]).await
}

fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_list_and_show_print_tables_and_json_without_any_secret() {
    let s = TestServer::start().await;
    let issued = s.api_key(&["tessera:introspect", "read:payments"]).await;
    let admin_key = s.admin_key.clone();

    let table = admin(&s, &["keys", "list"]).await;
    assert_ok(&table);
    let header = table.stdout.lines().next().unwrap();
    for col in [
        "KEY_ID", "OWNER", "NAME", "ENV", "STATE", "EXPIRES", "SCOPES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&issued.token_id))
        .unwrap_or_else(|| panic!("no row for the issued key: {}", table.stdout));
    assert!(row.contains("team-test") && row.contains("live"), "{row}");
    assert!(
        row.contains("tessera:introspect") && row.contains("read:payments"),
        "{row}"
    );

    let json = admin(&s, &["keys", "list", "--json"]).await;
    assert_ok(&json);
    let doc = json.json();
    let keys = doc["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "bootstrap admin and the issued key: {doc}");
    let mine = keys
        .iter()
        .find(|k| k["key_id"] == issued.token_id.as_str())
        .unwrap();
    assert_eq!(mine["owner"], "team-test");
    assert_eq!(mine["environment"], "test");
    assert_eq!(mine["revoked"], false);
    assert!(
        mine["expires_at"].as_str().unwrap().ends_with('Z'),
        "{mine}"
    );

    let show = admin(&s, &["keys", "show", &issued.token_id]).await;
    assert_ok(&show);
    assert!(show.stdout.contains("key_id:"), "{}", show.stdout);
    assert!(show.stdout.contains("owner:") && show.stdout.contains("team-test"));
    let show_json = admin(&s, &["keys", "show", &issued.token_id, "--json"]).await;
    assert_eq!(show_json.json()["key_id"], issued.token_id.as_str());

    // Neither a key's text nor its secret part appears in anything printed.
    for run in [&table, &json, &show, &show_json] {
        for secret in [&issued.token, &admin_key] {
            // The secret part follows the third `_`; base64url may itself hold `_`, so
            // splitting from the right could leave a tail of a character or two.
            let tail = secret.splitn(4, '_').nth(3).unwrap();
            assert!(tail.len() >= 43, "{tail}");
            assert!(
                !run.stdout.contains(secret.as_str()) && !run.stdout.contains(tail),
                "a secret was printed: {run:?}"
            );
            assert!(!run.stderr.contains(tail), "a secret was printed: {run:?}");
        }
    }

    let missing = admin(&s, &["keys", "show", "0000000000000000"]).await;
    assert_eq!(missing.code, 66, "{missing:?}");
    assert!(missing.stderr.contains("NOT_FOUND"), "{missing:?}");
    assert!(missing.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_list_filters_and_includes_revoked_only_when_asked() {
    let s = TestServer::start().await;
    let live = s.api_key(&["read:payments"]).await;
    let gone = s.api_key(&["read:payments"]).await;
    s.revoke(RevokeRequest {
        token_id: gone.token_id.clone(),
        ..RevokeRequest::default()
    })
    .await
    .unwrap();

    let default = admin(&s, &["keys", "list", "--owner", "team-test"]).await;
    assert_ok(&default);
    assert!(
        default.stdout.contains(&live.token_id),
        "{}",
        default.stdout
    );
    assert!(
        !default.stdout.contains(&gone.token_id),
        "{}",
        default.stdout
    );
    assert!(
        !default.stdout.contains("bootstrap"),
        "owner filter: {}",
        default.stdout
    );

    let all = admin(&s, &["keys", "list", "--all", "--environment", "test"]).await;
    assert_ok(&all);
    let row = all
        .stdout
        .lines()
        .find(|l| l.starts_with(&gone.token_id))
        .unwrap_or_else(|| panic!("{}", all.stdout));
    assert!(row.contains("revoked"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_revoke_stops_the_key_at_once() {
    let s = TestServer::start().await;
    let issued = s.api_key(&["tessera:introspect"]).await;
    assert!(s.introspect(&issued.token).await.unwrap().active);

    let run = admin(&s, &["keys", "revoke", &issued.token_id]).await;
    assert_ok(&run);
    assert_eq!(run.stdout, format!("revoked {}\n", issued.token_id));
    assert!(!s.introspect(&issued.token).await.unwrap().active);

    let json = admin(&s, &["keys", "revoke", &issued.token_id, "--json"]).await;
    assert_ok(&json);
    assert_eq!(json.json()["revoked"], issued.token_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_prints_only_the_new_key_on_stdout_and_links_the_old_one() {
    let s = TestServer::start().await;
    let old = s.api_key(&["tessera:introspect", "read:payments"]).await;

    let run = admin(&s, &["keys", "rotate", &old.token_id, "--overlap", "1h"]).await;
    assert_ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be the new key alone: {run:?}");
    let new_key = lines[0];
    assert!(new_key.starts_with("tsk_test_"), "{new_key}");
    assert!(run.stderr.contains(&old.token_id), "{run:?}");
    assert!(
        !run.stderr.contains(new_key),
        "the secret went to stderr: {run:?}"
    );

    let new = s.introspect(new_key).await.unwrap();
    assert!(new.active);
    assert_eq!(new.scopes, old.scopes);
    assert!(
        s.introspect(&old.token).await.unwrap().active,
        "inside the overlap the old key still works"
    );
    let show = admin(&s, &["keys", "show", &old.token_id, "--json"]).await;
    assert_eq!(show.json()["rotated_to"], new.token_id.as_str());
    assert_eq!(show.json()["state"], "rotated");

    let json = admin(&s, &["keys", "rotate", &new.token_id, "--json"]).await;
    assert_ok(&json);
    let doc = json.json();
    assert!(doc["api_key"].as_str().unwrap().starts_with("tsk_test_"));
    assert_eq!(doc["rotated_from"], new.token_id.as_str());

    let bad = admin(&s, &["keys", "rotate", &old.token_id, "--overlap", "soon"]).await;
    assert_eq!(bad.code, 64, "{bad:?}");
    assert!(bad.stderr.contains("--overlap"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exit_codes_say_who_is_at_fault() {
    let s = TestServer::start().await;
    let reader = s.api_key(&["tessera:introspect"]).await;

    let denied = admin_with_key(&s, &reader.token, &["keys", "list"]).await;
    assert_eq!(denied.code, 77, "{denied:?}");
    assert!(denied.stderr.contains("PERMISSION_DENIED"), "{denied:?}");

    let forged = format!("{}x", reader.token);
    let unauthenticated = admin_with_key(&s, &forged, &["clients", "list"]).await;
    assert_eq!(unauthenticated.code, 77, "{unauthenticated:?}");
    assert!(
        unauthenticated.stderr.contains("UNAUTHENTICATED"),
        "{unauthenticated:?}"
    );
    assert!(!unauthenticated.stderr.contains(&forged));

    let addr = format!("http://{}", s.grpc);
    let no_key = tessera(&["admin", "--addr", &addr, "keys", "list"], &[]).await;
    assert_eq!(no_key.code, 64, "{no_key:?}");
    assert!(no_key.stderr.contains("TESSERA_API_KEY"), "{no_key:?}");

    // Nothing listens on a port we just bound and released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("127.0.0.1:{}", free.local_addr().unwrap().port());
    drop(free);
    let unreachable = tessera(
        &["admin", "--addr", &dead, "status"],
        &[("TESSERA_API_KEY", &s.admin_key)],
    )
    .await;
    assert_eq!(unreachable.code, 69, "{unreachable:?}");
    assert!(
        unreachable.stderr.contains("UNAVAILABLE") && unreachable.stderr.contains(&dead),
        "{unreachable:?}"
    );

    let env_addr = tessera(
        &["admin", "signing-keys", "list"],
        &[("TESSERA_ADDR", &addr), ("TESSERA_API_KEY", &s.admin_key)],
    )
    .await;
    assert_ok(&env_addr);

    for args in [
        &["admin", "nonsense"][..],
        &["admin", "keys", "show"][..],
        &["admin", "--addr", "ftp://x", "status"][..],
        &["admin", "audit", "tail", "-n", "many"][..],
    ] {
        let run = tessera(args, &[]).await;
        assert_eq!(run.code, 64, "{args:?}: {run:?}");
    }
    let help = tessera(&["admin", "--help"], &[]).await;
    assert_ok(&help);
    assert!(help.stdout.contains("signing-keys"), "{help:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_list_shows_registered_clients() {
    let s = TestServer::start().await;
    let client = s
        .issue(IssueRequest {
            credential: Some(Credential::Client(ClientSpec {
                name: "web-spa".into(),
                public: true,
                redirect_uris: vec!["https://app.example/cb".into()],
                scopes: vec!["read:payments".into()],
                ..Default::default()
            })),
        })
        .await
        .unwrap();

    let run = admin(&s, &["clients", "list"]).await;
    assert_ok(&run);
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&client.token_id))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    for cell in [
        "web-spa",
        "public",
        "read:payments",
        "https://app.example/cb",
    ] {
        assert!(row.contains(cell), "{cell} missing: {row}");
    }
    let json = admin(&s, &["clients", "list", "--json"]).await;
    let doc = json.json();
    assert_eq!(doc["clients"][0]["client_id"], client.token_id.as_str());
    assert_eq!(doc["clients"][0]["public"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_keys_list_rotate_and_revoke() {
    let s = TestServer::start().await;
    let before = admin(&s, &["signing-keys", "list", "--json"]).await;
    assert_ok(&before);
    let first = before.json()["signing_keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();

    let rotated = admin(&s, &["signing-keys", "rotate", "--now", "--json"]).await;
    assert_ok(&rotated);
    let second = rotated.json()["kid"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    let table = admin(&s, &["signing-keys", "list"]).await;
    assert_ok(&table);
    let state_of = |out: &str, kid: &str| {
        out.lines()
            .find(|l| l.starts_with(kid))
            .unwrap_or_else(|| panic!("{kid} not listed: {out}"))
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_string()
    };
    assert_eq!(state_of(&table.stdout, &second), "active");
    assert_eq!(state_of(&table.stdout, &first), "retired");

    let token = s.access_token("alice").await.token;
    let revoked = admin(&s, &["signing-keys", "revoke", &second]).await;
    assert_ok(&revoked);
    assert!(
        revoked
            .stdout
            .starts_with(&format!("revoked signing key {second}; signing with ")),
        "{}",
        revoked.stdout
    );
    assert!(
        !s.introspect(&token).await.unwrap().active,
        "a token of the revoked key is inactive at once"
    );
    let after = admin(&s, &["signing-keys", "list"]).await;
    assert_eq!(state_of(&after.stdout, &second), "revoked");

    let unknown = admin(&s, &["signing-keys", "revoke", "no-such-kid"]).await;
    assert_eq!(unknown.code, 66, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_reports_health_jwks_and_the_active_key() {
    let s = TestServer::start().await;
    let jwks: Value = serde_json::from_str(
        &s.keys()
            .await
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap()
            .into_inner()
            .jwks_json,
    )
    .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();

    let run = admin(&s, &["status"]).await;
    assert_ok(&run);
    assert!(
        run.stdout.contains("server:") && run.stdout.contains("SERVING"),
        "{run:?}"
    );
    let active = run
        .stdout
        .lines()
        .find(|l| l.starts_with("active signing key:"))
        .unwrap();
    assert!(active.contains(&kid), "{active}");

    let json = admin(&s, &["status", "--json"]).await;
    let doc = json.json();
    assert_eq!(doc["serving"], true);
    assert_eq!(doc["health"]["tessera.v1.TokenService"], "SERVING");
    assert_eq!(doc["jwks"][0]["kid"], kid.as_str());
    assert_eq!(doc["signing_keys"][0]["state"], "active");

    // Health and the JWKS are open: status works without a key, and says what it lacks.
    let addr = format!("http://{}", s.grpc);
    let anonymous = tessera(&["admin", "--addr", &addr, "status"], &[]).await;
    assert_ok(&anonymous);
    assert!(anonymous.stdout.contains("no API key"), "{anonymous:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_tail_prints_the_newest_events_and_follows_new_ones() {
    let s = TestServer::start().await;
    let a = s.api_key(&["read:payments"]).await;
    let b = s.api_key(&["read:payments"]).await;

    let tail = admin(&s, &["audit", "tail", "-n", "2"]).await;
    assert_ok(&tail);
    let lines: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", tail.stdout);
    // Oldest first, like tail(1): the last line is the newest event.
    assert!(lines[0].contains(&a.token_id), "{}", tail.stdout);
    assert!(lines[1].contains(&b.token_id), "{}", tail.stdout);
    assert!(lines[1].contains("api_key.issued"), "{}", tail.stdout);

    let json = admin(&s, &["audit", "tail", "--kind", "api_key.issued", "--json"]).await;
    assert_ok(&json);
    let events = json.json()["events"].as_array().unwrap().clone();
    assert!(events.len() >= 3, "bootstrap + 2: {events:?}");
    assert!(events.iter().all(|e| e["kind"] == "api_key.issued"));
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // --follow: a new event shows up within a few polls, exactly once.
    let (mut child, rx) = follow(&s, &["-n", "1", "--json"]);
    // -n 0: nothing old is printed, only what comes next.
    let (mut quiet, quiet_rx) = follow(&s, &["-n", "0"]);
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first line");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["token_id"], b.token_id.as_str(), "{first}");

    let c = s.api_key(&["read:payments"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains(&c.token_id)) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    assert!(
        seen.iter().any(|l| l.contains(&c.token_id)),
        "the new event was not followed: {seen:?}"
    );
    // Ctrl-C ends a follow cleanly.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "follow did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = rx.try_iter().collect();
    let mentions = seen
        .iter()
        .chain(&rest)
        .filter(|l| l.contains(&c.token_id))
        .count();
    assert_eq!(mentions, 1, "each event once: {seen:?} {rest:?}");

    // It polls on its own schedule: wait for its line, then for a poll more.
    let quiet_first = quiet_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the -n 0 follower printed the new event");
    assert!(quiet_first.contains(&c.token_id), "{quiet_first}");
    std::thread::sleep(Duration::from_millis(1500));
    quiet.kill().unwrap();
    quiet.wait().unwrap();
    let more: Vec<String> = quiet_rx.try_iter().collect();
    assert!(more.is_empty(), "only the new event: {more:?}");
}

/// `audit tail --follow <extra>` as a child process, its stdout lines on a channel.
fn follow(
    s: &TestServer,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let addr = format!("http://{}", s.grpc);
    let key_file = s.data_dir.join("admin.key");
    let mut args = vec![
        "admin",
        "--addr",
        &addr,
        "--key-file",
        key_file.to_str().unwrap(),
        "audit",
        "tail",
        "--follow",
    ];
    args.extend_from_slice(extra);
    let mut child = command(&args, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The CLI announces on stderr once its cursor is set: from then on, nothing new
    // can slip past it.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut announced = String::new();
    stderr.read_line(&mut announced).unwrap();
    assert!(announced.contains("following"), "{announced:?}");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_serving_and_writing_restores_keys_and_revocations() {
    // `admin backup` is SQLite's online backup of the data dir's file.
    if common::on_postgres() {
        return;
    }
    let s = TestServer::start().await;
    let kept = s.api_key(&["tessera:introspect"]).await;
    let revoked = s.api_key(&["tessera:introspect"]).await;
    s.revoke(RevokeRequest {
        token_id: revoked.token_id.clone(),
        ..RevokeRequest::default()
    })
    .await
    .unwrap();

    // Keep the server writing through the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut tokens = s.tokens().await;
        let admin_key = s.admin_key.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokens
                    .issue(authed(common::access_spec("writer"), &admin_key))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("tessera-backup.db");
    let data_dir = s.data_dir.to_str().unwrap().to_string();
    let run = tessera(
        &[
            "admin",
            "backup",
            "--data-dir",
            &data_dir,
            "--to",
            copy.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert_ok(&run);
    assert!(writes > 0, "the server was written to during the backup");
    assert!(run.stdout.contains("master key is not in it"), "{run:?}");
    assert_eq!(mode(&copy), 0o600);

    // Never overwrites.
    let again = tessera(
        &[
            "admin",
            "backup",
            "--data-dir",
            &data_dir,
            "--to",
            copy.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(again.code, 73, "{again:?}");
    let nothing = tessera(
        &[
            "admin",
            "backup",
            "--data-dir",
            out.path().to_str().unwrap(),
            "--to",
            "/dev/null/x",
        ],
        &[],
    )
    .await;
    assert_eq!(nothing.code, 64, "no database there: {nothing:?}");

    // A fresh server on the copy (with the master key, which a backup does not hold)
    // knows the keys and the revocation.
    let restored = tempfile::tempdir().unwrap();
    let dir = restored.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(&copy, dir.join("tessera.db")).unwrap();
    std::fs::copy(s.data_dir.join("master.key"), dir.join("master.key")).unwrap();
    let mut fresh = TestServer::start_with(test_config(&dir), Clock::system()).await;
    fresh.admin_key = s.admin_key.clone();
    assert!(fresh.introspect(&kept.token).await.unwrap().active);
    assert!(!fresh.introspect(&revoked.token).await.unwrap().active);
    // The signing keys opened under the master key: the copy can issue.
    let token = fresh.access_token("after-restore").await.token;
    assert!(fresh.introspect(&token).await.unwrap().active);
    fresh.stop().await;
}

/// A fresh RSA key from OpenSSL (ring cannot generate RSA): `(pkcs8_pem, pkcs1_pem)`.
fn openssl_rsa(dir: &Path, bits: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let pkcs8 = dir.join(format!("rsa{bits}.pem"));
    let pkcs1 = dir.join(format!("rsa{bits}-pkcs1.pem"));
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .arg("-out")
        .arg(&pkcs8)
        .stderr(Stdio::null())
        .status()
        .expect("this test needs the openssl command to generate RSA keys");
    assert!(ok.success());
    let ok = Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&pkcs8)
        .arg("-out")
        .arg(&pkcs1)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    (pkcs8, pkcs1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_rsa_keys_sign_and_verify_through_the_jwks() {
    // `admin import-key` works offline on the data dir's SQLite file.
    if common::on_postgres() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (pkcs8, pkcs1) = openssl_rsa(keys.path(), 2048);
    for (alg, pem) in [("RS256", &pkcs8), ("PS256", &pkcs1)] {
        let mut s = TestServer::start().await;
        let data_dir = s.data_dir.to_str().unwrap().to_string();
        let import = |d: String| {
            let pem = pem.to_str().unwrap().to_string();
            async move {
                tessera(
                    &[
                        "admin",
                        "import-key",
                        "--alg",
                        alg,
                        "--pem",
                        &pem,
                        "--data-dir",
                        &d,
                    ],
                    &[],
                )
                .await
            }
        };
        // The running server holds the data dir: offline means offline.
        let busy = import(data_dir.clone()).await;
        assert_ne!(busy.code, 0, "{busy:?}");
        assert!(
            busy.stderr.contains("in use by another tessera process"),
            "{busy:?}"
        );

        s.stop().await;
        let run = import(data_dir.clone()).await;
        assert_ok(&run);
        let kid = run
            .stdout
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("{run:?}"))
            .trim_end_matches(';')
            .to_string();
        let again = import(data_dir.clone()).await;
        assert!(again.stderr.contains("already in the store"), "{again:?}");

        let s = s.restart().await;
        let issued = s.access_token("alice").await;
        let (header, rest) = issued.token.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], alg);
        assert_eq!(header["kid"], kid.as_str());

        // Verify with nothing but the published JWK and ring.
        let jwks: Value = serde_json::from_str(
            &s.keys()
                .await
                .get_jwks(GetJwksRequest {})
                .await
                .unwrap()
                .into_inner()
                .jwks_json,
        )
        .unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap_or_else(|| panic!("{kid} not in {jwks}"));
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], alg);
        assert!(jwk.get("d").is_none() && jwk.get("p").is_none(), "{jwk}");
        let (n, e) = (jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap());
        // kid = RFC 7638 thumbprint of {"e","kty","n"}.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let thumb = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ));
        assert_eq!(thumb, kid);
        let (payload, signature) = rest.split_once('.').unwrap();
        let signing_input = format!("{}.{payload}", issued.token.split('.').next().unwrap());
        let params = if alg == "RS256" {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        } else {
            &ring::signature::RSA_PSS_2048_8192_SHA256
        };
        ring::signature::RsaPublicKeyComponents {
            n: B64.decode(n).unwrap(),
            e: B64.decode(e).unwrap(),
        }
        .verify(
            params,
            signing_input.as_bytes(),
            &B64.decode(signature).unwrap(),
        )
        .expect("the token verifies with the published RSA key");
        assert!(s.introspect(&issued.token).await.unwrap().active);

        let listed = admin(&s, &["signing-keys", "list", "--json"]).await;
        let listed = listed.json();
        assert_eq!(listed["signing_keys"][0]["kid"], kid.as_str());
        assert_eq!(listed["signing_keys"][0]["alg"], alg);
        assert_eq!(listed["signing_keys"][0]["state"], "active");
        assert_eq!(listed["signing_keys"][1]["state"], "retired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_key_refuses_small_non_rsa_and_unknown_algorithms_by_name() {
    let keys = tempfile::tempdir().unwrap();
    let (small, _) = openssl_rsa(keys.path(), 1024);
    let ec = keys.path().join("ec.pem");
    assert!(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out"
            ])
            .arg(&ec)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let mut s = TestServer::start().await;
    s.stop().await;
    let d = s.data_dir.to_str().unwrap().to_string();
    let cases = [
        ("RS256", small.to_str().unwrap(), 1, "at least 2048 bits"),
        ("RS256", ec.to_str().unwrap(), 1, "not an RSA key"),
        ("HS256", small.to_str().unwrap(), 64, "RS256 or PS256"),
        ("RS256", "/nonexistent.pem", 1, "/nonexistent.pem"),
    ];
    for (alg, pem, code, want) in cases {
        let run = tessera(
            &[
                "admin",
                "import-key",
                "--alg",
                alg,
                "--pem",
                pem,
                "--data-dir",
                &d,
            ],
            &[],
        )
        .await;
        assert_eq!(run.code, code, "{alg} {pem}: {run:?}");
        assert!(run.stderr.contains(want), "{alg} {pem}: {run:?}");
    }
    let empty = tempfile::tempdir().unwrap();
    let run = tessera(
        &[
            "admin",
            "import-key",
            "--alg",
            "RS256",
            "--pem",
            small.to_str().unwrap(),
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(run.stderr.contains("holds no Tessera database"), "{run:?}");
}

#[tokio::test]
async fn offline_tools_refuse_a_database_that_is_not_the_data_dirs_own() {
    // They open `<data dir>/tessera.db`: elsewhere they would report success on a
    // database the service does not use.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    let backup = tmp.path().join("b.db");
    let pem = tmp.path().join("k.pem");
    let key = tmp.path().join("master.key");
    let cases: [&[&str]; 4] = [
        &["admin", "recover", "--data-dir", dir],
        &[
            "admin",
            "backup",
            "--data-dir",
            dir,
            "--to",
            backup.to_str().unwrap(),
        ],
        &[
            "admin",
            "import-key",
            "--alg",
            "RS256",
            "--pem",
            pem.to_str().unwrap(),
            "--data-dir",
            dir,
        ],
        &[
            "admin",
            "reseal",
            "--data-dir",
            dir,
            "--new-master-key-file",
            key.to_str().unwrap(),
        ],
    ];
    for args in cases {
        for (url, says) in [
            (
                "postgres://tessera:hunter2@127.0.0.1:5432/tessera",
                "PostgreSQL",
            ),
            ("sqlite:///elsewhere/tessera.db", "/elsewhere/tessera.db"),
        ] {
            let run = tessera(args, &[("TESSERA_DATABASE_URL", url)]).await;
            assert_eq!(run.code, 64, "{args:?} {url}: {run:?}");
            assert!(run.stderr.contains(says), "{args:?}: {run:?}");
            assert!(!run.stderr.contains("hunter2"), "{run:?}");
        }
    }
    assert!(!backup.exists());
}
