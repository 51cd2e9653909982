//! Operating the service: reflection for grpcurl, non-interactive bootstrap.

mod common;

use common::{TestServer, authed, test_config};
use tessera::clock::Clock;
use tessera::config::Secret;
use tessera::proto::IntrospectRequest;
use tonic::Code;

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let s = TestServer::start().await;
    let expected = [
        "grpc.health.v1.Health",
        "tessera.v1.KeyService",
        "tessera.v1.TokenService",
    ];

    let mut c1 = v1::server_reflection_client::ServerReflectionClient::new(s.channel().await);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = c1
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1: no service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for e in expected {
        assert!(names.iter().any(|n| n == e), "v1 lacks {e}: {names:?}");
    }

    let mut c0 = v1alpha::server_reflection_client::ServerReflectionClient::new(s.channel().await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = c0
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha: no service list")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "tessera.v1.TokenService")
    );
}

#[tokio::test]
async fn bootstrap_key_from_env_is_installed_and_no_file_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, key) = tessera::apikeys::generate("ops");
    let mut cfg = test_config(tmp.path());
    cfg.bootstrap_admin_key = Some(Secret::new(key.expose().to_string()));
    let mut s = TestServer::start_with(cfg, Clock::system()).await;
    assert!(
        !tmp.path().join("admin.key").exists(),
        "no key file when one is supplied"
    );
    let req = IntrospectRequest {
        token: key.expose().into(),
        ..Default::default()
    };
    let r = s
        .tokens()
        .await
        .introspect(authed(req, key.expose()))
        .await
        .unwrap()
        .into_inner();
    assert!(r.active);
    assert_eq!(r.scopes, vec!["tessera:admin"]);
    s.stop().await;
}

#[tokio::test]
async fn bootstrap_runs_once_and_the_key_file_is_private() {
    let s = TestServer::start().await;
    let path = s.data_dir.join("admin.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let first = s.admin_key.clone();
    let s = s.restart().await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        first,
        "not re-bootstrapped"
    );
    assert!(s.introspect(&first).await.unwrap().active);
}

#[tokio::test]
async fn malformed_bootstrap_key_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path());
    cfg.bootstrap_admin_key = Some(Secret::new("not-a-key"));
    let listeners = tessera::server::Listeners::bind(&cfg).await.unwrap();
    let err = tessera::server::run(cfg, Clock::system(), listeners, async {})
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("not-a-key"),
        "the secret is not echoed"
    );
    let _ = Code::Ok;
}

#[test]
fn keygen_prints_a_well_formed_key_and_refuses_bad_environments() {
    let bin = env!("CARGO_BIN_EXE_tessera");
    let out = std::process::Command::new(bin)
        .args(["keygen", "--environment", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    let parsed = tessera::apikeys::parse(key.trim()).expect("well formed");
    assert_eq!(parsed.environment, "ops");
    let bad = std::process::Command::new(bin)
        .args(["keygen", "--environment", "Bad_Env"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    let bad_config = std::process::Command::new(bin)
        .args(["serve", "--grpc-addr", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(bad_config.status.code(), Some(64), "a bad config exits 64");
}

/// D4.4 under the data-dir lock: several instances starting at once on one empty data
/// dir — exactly one gets it (the others are refused, naming the holder), and it makes
/// one signing key and one bootstrap admin key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_one_wins_the_data_dir() {
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cfg = Arc::new(test_config(tmp.path()));
        tasks.push(tokio::spawn(async move {
            tessera::test_support::Authority::open(cfg, Clock::system()).await
        }));
    }
    let mut authorities = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => authorities.push(a),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("in use by another tessera process")
                        && msg.contains(&format!("pid {}", std::process::id())),
                    "{msg}"
                );
            }
        }
    }
    assert_eq!(authorities.len(), 1, "one instance holds the data dir");
    let a = &authorities[0];
    let (keys, admins): (i64, i64) = tessera::test_support::store(a)
        .read(|c| {
            let k = c.query_row(
                "SELECT count(*) FROM signing_keys",
                tessera::test_support::params![],
                |r| r.get(0),
            )?;
            let n = c.query_row(
                "SELECT count(*) FROM api_keys",
                tessera::test_support::params![],
                |r| r.get(0),
            )?;
            Ok((k, n))
        })
        .await
        .unwrap();
    assert_eq!(keys, 1, "one signing key");
    assert_eq!(admins, 1, "one bootstrap admin key");
    let file_key = std::fs::read_to_string(tmp.path().join("admin.key")).unwrap();
    // The key in the file is the one in the database.
    let id: String = tessera::test_support::store(a)
        .read(|c| {
            Ok(c.query_row(
                "SELECT id FROM api_keys",
                tessera::test_support::params![],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(tessera::apikeys::parse(file_key.trim()).unwrap().id, id);
}
