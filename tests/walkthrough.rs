//! The README's grpcurl walk-through, run as written with a real grpcurl (installed by
//! `scripts/test` through `scripts/install-grpcurl`) and curl against a real server, so
//! the README fails the build when it drifts from the service. Only the addresses are
//! rewritten (the server listens on ephemeral ports); the commands run in a directory
//! whose `tessera-data/` is the server's data dir, as after `cargo run -- serve`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestServer, test_config};
use serde_json::Value;
use tessera::clock::Clock;

fn grpcurl() -> PathBuf {
    let path = std::env::var_os("TESSERA_GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/grpcurl"));
    assert!(
        path.exists(),
        "the walk-through test needs grpcurl: run scripts/test (or scripts/install-grpcurl, \
         or set TESSERA_GRPCURL)"
    );
    path
}

/// The first ```sh block after the walk-through heading.
fn walkthrough_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = &readme[readme
        .find("## A walk-through with grpcurl")
        .expect("README has the walk-through section")..];
    let start = section.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let len = section[start..].find("\n```").expect("the block ends");
    section[start..start + len].to_string()
}

fn json(step: &str, out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{step}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_runs_against_the_real_server() {
    let grpcurl = grpcurl();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("tessera-data");
    let s = TestServer::start_with(test_config(&data_dir), Clock::system()).await;

    let block = walkthrough_block()
        .replace("localhost:50051", &s.grpc.to_string())
        .replace("localhost:8080", &s.http.to_string());
    // Paragraphs are separated by blank lines; a marker before each splits the output
    // (on a line of its own: curl's output has no trailing newline).
    let paragraphs: Vec<&str> = block.split("\n\n").collect();
    let mut script = String::from("set -euo pipefail\n");
    for (i, p) in paragraphs.iter().enumerate() {
        script.push_str(&format!("printf '\\n@@step {i}\\n'\n{p}\n"));
    }
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cwd = tmp.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(cwd)
            .env("PATH", path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walk-through failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    let mut outputs = vec![String::new(); paragraphs.len()];
    let mut current = None;
    for line in stdout.lines() {
        if let Some(i) = line.strip_prefix("@@step ") {
            current = Some(i.parse::<usize>().unwrap());
        } else if let Some(i) = current {
            outputs[i].push_str(line);
            outputs[i].push('\n');
        }
    }

    let mut checked = 0;
    let mut introspections = 0;
    for (p, out) in paragraphs.iter().zip(&outputs) {
        let out = out.trim();
        let first = p.lines().next().unwrap_or_default();
        if p.contains(" list") {
            // The README lists the services as comment lines under the command.
            let mut want: Vec<&str> = p.lines().filter_map(|l| l.strip_prefix("# ")).collect();
            let mut got: Vec<&str> = out.lines().collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "`grpcurl list` output differs from the README");
        } else if p.contains("echo \"$KEY\"") {
            assert!(out.starts_with("tsk_prod_"), "{first}: {out}");
        } else if p.contains("TokenService/Introspect") {
            let v = json(first, out);
            if introspections == 0 {
                assert_eq!(v["active"], true, "{first}: {out}");
                assert_eq!(v["subject"], "alice", "{first}: {out}");
            } else {
                assert_eq!(v, serde_json::json!({}), "{first}: revoked token: {out}");
            }
            introspections += 1;
        } else if p.contains("TokenService/Revoke") {
            assert_eq!(json(first, out), serde_json::json!({}), "{first}");
        } else if p.contains("BumpTokenVersion") {
            assert!(
                json(first, out)["tokenVersion"].is_string(),
                "{first}: {out}"
            );
        } else if p.contains("jwks.json") {
            let keys = &json(first, out)["keys"];
            assert!(
                keys.as_array().is_some_and(|k| !k.is_empty()),
                "{first}: {out}"
            );
        } else if p.contains("/oauth2/token") {
            let v = json(first, out);
            assert!(v["access_token"].is_string(), "{first}: {out}");
            assert_eq!(v["token_type"], "Bearer", "{first}: {out}");
            assert_eq!(v["scope"], "read:payments", "{first}: {out}");
        } else {
            assert!(out.is_empty(), "{first}: unexpected output: {out}");
            continue;
        }
        checked += 1;
    }
    assert_eq!(
        introspections, 2,
        "the walk-through introspects before and after revoking"
    );
    assert!(
        checked >= 8,
        "only {checked} steps of the walk-through were checked"
    );
}
