//! `tessera admin reseal`: the real binary on a real data dir between runs of the real
//! server (in-process, on ephemeral ports), and `tessera serve` itself where what
//! matters is that it refuses to start.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TestServer, access_spec, authed, test_config};
use serde_json::Value;
use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::exchange_request::Grant;
use tessera::proto::issue_request::Credential;
use tessera::proto::{
    ExchangeRequest, ExchangeResponse, GetJwksRequest, IssueRequest, RefreshTokenGrant,
    RotateSigningKeyRequest,
};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `tessera <args>` with no inherited TESSERA_* variables, plus `env`, off the async
/// executor so an in-process server keeps serving.
async fn tessera(args: Vec<String>, env: Vec<(String, String)>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env).stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run tessera"))
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tessera admin reseal` on `data` to the key in `new`, the current key from `env`.
async fn reseal(data: &Path, new: &Path, env: &[(&str, &str)]) -> Run {
    let args = [
        "admin",
        "reseal",
        "--data-dir",
        data.to_str().unwrap(),
        "--new-master-key-file",
        new.to_str().unwrap(),
    ];
    tessera(
        args.iter().map(|s| s.to_string()).collect(),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .await
}

fn key_text(byte: u8) -> String {
    B64.encode([byte; 32])
}

/// A master key file holding `text`, mode 0600.
fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A private data dir under `tmp`.
fn data_dir(tmp: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp.join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn with_key_file(data: &Path, key: &Path) -> Config {
    Config {
        master_key_file: Some(key.to_path_buf()),
        refresh_reuse_grace: Duration::from_secs(300),
        ..test_config(data)
    }
}

async fn jwks_kids(s: &TestServer) -> BTreeSet<String> {
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
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Every sealed value in the database, by table and row, read directly.
fn sealed_values(data: &Path) -> Vec<(String, Vec<u8>)> {
    let db = rusqlite::Connection::open(data.join("tessera.db")).unwrap();
    let mut out = Vec::new();
    for (table, sql) in [
        (
            "signing_keys",
            "SELECT kid, sealed_private FROM signing_keys ORDER BY kid",
        ),
        (
            "refresh_grace",
            "SELECT hex(token_hash), sealed FROM refresh_grace ORDER BY token_hash",
        ),
    ] {
        let mut stmt = db.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((format!("{table}/{}", r.get::<_, String>(0)?), r.get(1)?))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

fn audit_kinds(data: &Path) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open(data.join("tessera.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT kind, caller, detail FROM audit_log ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every byte of the database and its WAL, as they lie on disk.
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = std::fs::read(data.join("tessera.db")).unwrap();
    if let Ok(wal) = std::fs::read(data.join("tessera.db-wal")) {
        all.extend(wal);
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `tessera serve` on `data` with the master key file `key`, expected to refuse to
/// start: its exit code and stderr.
fn serve_refused(data: &Path, key: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("serve");
    for (flag, value) in [
        ("--grpc-addr", "127.0.0.1:0"),
        ("--http-addr", "127.0.0.1:0"),
        ("--metrics-addr", "127.0.0.1:0"),
        ("--issuer", "https://tessera.test"),
    ] {
        cmd.args([flag, value]);
    }
    cmd.arg("--data-dir").arg(data);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TESSERA_MASTER_KEY_FILE", key)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera serve started with the old master key");
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
    (status.code(), err)
}

/// An access token with a refresh token for client `web-app`.
async fn with_refresh(s: &TestServer) -> (String, String) {
    let mut req: IssueRequest = access_spec("alice");
    if let Some(Credential::AccessToken(spec)) = &mut req.credential {
        spec.refresh_token = true;
        spec.client_id = "web-app".into();
    }
    let r = s.issue(req).await.unwrap();
    (r.token, r.refresh_token)
}

async fn refresh(s: &TestServer, rt: &str) -> ExchangeResponse {
    let grant = ExchangeRequest {
        grant: Some(Grant::RefreshToken(RefreshTokenGrant {
            refresh_token: rt.into(),
            scopes: vec![],
        })),
    };
    s.tokens()
        .await
        .exchange(tonic::Request::new(grant))
        .await
        .unwrap()
        .into_inner()
}

/// The whole hand-over: signing keys in every state (retired, active, published,
/// revoked) and a refresh grace pair move to the new key; the server comes back with
/// the new key knowing the same keys and honouring old tokens and the grace pair; the
/// old key is refused by name; no old sealed value is left in the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reseal_moves_every_sealed_secret_to_the_new_master_key() {
    // `admin reseal` works offline on the data dir's SQLite file.
    if common::on_postgres() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let old_key = key_file(tmp.path(), "old.key", &key_text(1));
    let new_key = key_file(tmp.path(), "new.key", &key_text(2));

    let mut s = TestServer::start_with(with_key_file(&data, &old_key), Clock::system()).await;
    let admin_key = s.admin_key.clone();
    let old_token = s.access_token("before").await.token;
    // A revoked key, a retired one, the active one and a published successor.
    let rotate = |now: bool| RotateSigningKeyRequest { rotate_now: now };
    let mut keys = s.keys().await;
    let doomed = keys
        .rotate_signing_key(authed(rotate(true), &admin_key))
        .await
        .unwrap()
        .into_inner()
        .kid;
    keys.rotate_signing_key(authed(rotate(true), &admin_key))
        .await
        .unwrap();
    keys.revoke_signing_key(authed(
        tessera::proto::RevokeSigningKeyRequest { kid: doomed },
        &admin_key,
    ))
    .await
    .unwrap();
    keys.rotate_signing_key(authed(rotate(false), &admin_key))
        .await
        .unwrap();
    let signed_before = s.access_token("before-2").await.token;
    // A used refresh token whose successor pair is sealed for the grace period.
    let (_, rt) = with_refresh(&s).await;
    let first = refresh(&s, &rt).await;
    let kids = jwks_kids(&s).await;
    s.stop().await;

    let before = sealed_values(&data);
    assert_eq!(
        before
            .iter()
            .filter(|(k, _)| k.starts_with("signing_keys/"))
            .count(),
        4,
        "{before:?}"
    );
    assert_eq!(
        before
            .iter()
            .filter(|(k, _)| k.starts_with("refresh_grace/"))
            .count(),
        1
    );
    let old_file = old_key.to_str().unwrap();
    let run = reseal(&data, &new_key, &[("TESSERA_MASTER_KEY_FILE", old_file)]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("re-sealed 4 signing keys and 1 refresh grace pairs"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("start the server with the new master key"),
        "{run:?}"
    );
    assert!(run.stderr.is_empty(), "{run:?}");
    for text in [key_text(1), key_text(2)] {
        assert!(!run.stdout.contains(&text) && !run.stderr.contains(&text));
    }

    // Every value changed; none of the old ones is left anywhere in the files.
    let after = sealed_values(&data);
    assert_eq!(
        before.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        after.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let bytes = database_bytes(&data);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "{name} was not re-sealed");
        assert!(
            !contains(&bytes, old),
            "{name}: the old sealed value is still on disk"
        );
    }
    let audit = audit_kinds(&data);
    let (_, caller, detail) = audit
        .iter()
        .find(|(kind, _, _)| kind == "master_key.resealed")
        .unwrap_or_else(|| panic!("no audit record: {audit:?}"));
    assert_eq!(caller, "offline");
    let detail: Value = serde_json::from_str(detail).unwrap();
    assert_eq!(detail["signing_keys"], 4, "{detail}");
    assert_eq!(detail["refresh_grace_pairs"], 1, "{detail}");
    assert_eq!(detail["previous_key"], "file", "{detail}");

    // With the new key: the same keys, old tokens active, the grace pair handed out
    // again, new tokens issued.
    let mut s = TestServer::start_with(with_key_file(&data, &new_key), Clock::system()).await;
    s.admin_key = admin_key;
    assert_eq!(jwks_kids(&s).await, kids);
    assert!(s.introspect(&old_token).await.unwrap().active);
    assert!(s.introspect(&signed_before).await.unwrap().active);
    let retried = refresh(&s, &rt).await;
    assert_eq!(retried.access_token, first.access_token);
    assert_eq!(retried.refresh_token, first.refresh_token);
    let fresh = s.access_token("after").await.token;
    assert!(s.introspect(&fresh).await.unwrap().active);
    s.stop().await;

    // The old key no longer opens the database, and `serve` says which one.
    let (code, err) = serve_refused(&data, &old_key);
    assert_eq!(code, Some(1), "{err}");
    let db = data.join("tessera.db");
    assert!(err.contains(db.to_str().unwrap()), "{err}");
    assert!(
        err.contains("does not open under the configured master key"),
        "{err}"
    );
}

/// Refusals change nothing: a running server, a wrong current key, the same key again,
/// a damaged row, a new key file that is not a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reseal_refuses_and_changes_nothing_unless_everything_opens() {
    // `admin reseal` works offline on the data dir's SQLite file.
    if common::on_postgres() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let old_key = key_file(tmp.path(), "old.key", &key_text(1));
    let new_key = key_file(tmp.path(), "new.key", &key_text(2));
    let wrong_key = key_file(tmp.path(), "wrong.key", &key_text(3));
    let old_file = old_key.to_str().unwrap().to_string();
    let current = [("TESSERA_MASTER_KEY_FILE", old_file.as_str())];

    let mut s = TestServer::start_with(with_key_file(&data, &old_key), Clock::system()).await;
    let admin_key = s.admin_key.clone();
    let token = s.access_token("kept").await.token;

    // Offline means offline.
    let busy = reseal(&data, &new_key, &current).await;
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(
        busy.stderr.contains("in use by another tessera process"),
        "{busy:?}"
    );
    s.stop().await;

    let sealed = sealed_values(&data);
    let audit = audit_kinds(&data);
    let not_a_key = key_file(tmp.path(), "garbage.key", "hunter2");
    // (case, new key file, the current key's env, what stderr must say)
    type Case<'a> = (&'a str, &'a Path, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "wrong current key",
            &new_key,
            &[("TESSERA_MASTER_KEY_FILE", wrong_key.to_str().unwrap())],
            &[
                "does not open under the current master key",
                wrong_key.to_str().unwrap(),
                "Nothing was changed",
            ],
        ),
        (
            "same key",
            &old_key,
            &current,
            &["is the current one", "nothing to re-seal"],
        ),
        (
            "new key file not a key",
            &not_a_key,
            &current,
            &["new master key file", "base64url"],
        ),
        (
            "no current key at all",
            &new_key,
            &[],
            &["no master key is configured", "master.key"],
        ),
    ];
    for (name, new, env, needles) in cases {
        let run = reseal(&data, new, env).await;
        assert_eq!(run.code, 1, "{name}: {run:?}");
        for n in needles {
            assert!(
                run.stderr.contains(n),
                "{name}: stderr lacks {n:?}: {run:?}"
            );
        }
        assert!(!run.stderr.contains("hunter2"), "{name}: {run:?}");
        assert_eq!(sealed_values(&data), sealed, "{name}: the database changed");
        assert_eq!(audit_kinds(&data), audit, "{name}: the audit changed");
    }
    // Refused without a current key, it made none: a fresh development key would open
    // nothing already sealed.
    assert!(!data.join("master.key").exists());

    // One damaged row refuses the lot, naming the row.
    let damaged = {
        let db = rusqlite::Connection::open(data.join("tessera.db")).unwrap();
        let (kid, mut blob): (String, Vec<u8>) = db
            .query_row(
                "SELECT kid, sealed_private FROM signing_keys ORDER BY rowid LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        *blob.last_mut().unwrap() ^= 1;
        db.execute(
            "UPDATE signing_keys SET sealed_private = ?2 WHERE kid = ?1",
            rusqlite::params![kid, blob],
        )
        .unwrap();
        (kid, blob)
    };
    let sealed = sealed_values(&data);
    let run = reseal(&data, &new_key, &current).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("signing key {} does not open", damaged.0)),
        "{run:?}"
    );
    assert_eq!(sealed_values(&data), sealed);
    assert_eq!(audit_kinds(&data), audit);
    {
        let db = rusqlite::Connection::open(data.join("tessera.db")).unwrap();
        let mut blob = damaged.1;
        *blob.last_mut().unwrap() ^= 1;
        db.execute(
            "UPDATE signing_keys SET sealed_private = ?2 WHERE kid = ?1",
            rusqlite::params![damaged.0, blob],
        )
        .unwrap();
    }

    // After all that the old key still serves the data dir as before.
    let mut s = TestServer::start_with(with_key_file(&data, &old_key), Clock::system()).await;
    s.admin_key = admin_key;
    assert!(s.introspect(&token).await.unwrap().active);
    s.stop().await;
}

/// With no master key configured, the development `master.key` in the data dir is the
/// current key; after the re-seal it holds the new one (0600, replaced atomically), so
/// the data dir starts as before without any configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reseal_replaces_the_development_master_key_file() {
    // `admin reseal` works offline on the data dir's SQLite file.
    if common::on_postgres() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let new_text = key_text(9);
    let new_key = key_file(tmp.path(), "new.key", &format!("{new_text}\n"));

    let mut s = TestServer::start_with(test_config(&data), Clock::system()).await;
    let admin_key = s.admin_key.clone();
    let token = s.access_token("dev").await.token;
    s.stop().await;
    let old_text = std::fs::read_to_string(data.join("master.key")).unwrap();

    let run = reseal(&data, &new_key, &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("master.key now holds the new master key"),
        "{run:?}"
    );
    assert!(!run.stdout.contains(&old_text) && !run.stderr.contains(&old_text));
    let dev = data.join("master.key");
    assert_eq!(std::fs::read_to_string(&dev).unwrap(), new_text);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dev).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let left: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("master.key."))
        .collect();
    assert!(left.is_empty(), "staging files left behind: {left:?}");
    let audit = audit_kinds(&data);
    let (_, _, detail) = audit
        .iter()
        .find(|(kind, _, _)| kind == "master_key.resealed")
        .unwrap();
    assert!(
        detail.contains("\"previous_key\":\"development\""),
        "{detail}"
    );
    assert!(!detail.contains(&old_text) && !detail.contains(&new_text));

    let mut s = TestServer::start_with(test_config(&data), Clock::system()).await;
    s.admin_key = admin_key;
    assert!(s.introspect(&token).await.unwrap().active);
    assert!(
        s.introspect(&s.access_token("dev-2").await.token)
            .await
            .unwrap()
            .active
    );
    s.stop().await;
}
