//! `tessera serve` as a child process: spawned on ephemeral ports, its output
//! captured, stopped with SIGTERM or SIGKILL.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera::proto::token_service_client::TokenServiceClient;
use tonic::transport::Channel;

/// A running `tessera serve` and everything it has written to stdout and stderr.
pub struct Proc {
    pub child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    pub grpc: SocketAddr,
}

fn capture(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// Drops ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The gRPC address from the `tessera serving grpc=... http=...` line.
pub fn serving_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("tessera serving"))?;
    let rest = &line[line.find("grpc=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Proc {
    pub fn spawn(dir: &Path) -> Proc {
        Self::spawn_env(dir, &[])
    }

    pub fn spawn_env(dir: &Path, env: &[(&str, &str)]) -> Proc {
        // Only the tessera package's own tests are built with the binary beside them.
        let Some(bin) = option_env!("CARGO_BIN_EXE_tessera") else {
            panic!("Proc needs the tessera binary (a test of the tessera package)")
        };
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--issuer", "https://tessera.test", "--data-dir"])
        .arg(dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("TESSERA_") {
                cmd.env_remove(k);
            }
        }
        // The backend parameter (see `pg`), unless the test names a database itself.
        if !env.iter().any(|(k, _)| *k == "TESSERA_DATABASE_URL")
            && let Some(tessera::config::DatabaseUrl::Postgres(url)) = super::pg::backend_for(dir)
        {
            cmd.env("TESSERA_DATABASE_URL", url);
        }
        cmd.envs(env.iter().copied());
        cmd.env("TESSERA_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tessera");
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            capture(child.stdout.take().unwrap(), output.clone()),
            capture(child.stderr.take().unwrap(), output.clone()),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        let grpc = loop {
            let log = strip_ansi(&String::from_utf8_lossy(&output.lock().unwrap()));
            if let Some(addr) = serving_addr(&log) {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tessera exited before serving ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "tessera did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        Proc {
            child,
            output,
            readers,
            grpc,
        }
    }

    pub async fn tokens(&self) -> TokenServiceClient<Channel> {
        let ch = Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TokenServiceClient::new(ch)
    }

    /// Polls for the exit without blocking the runtime, so the test's own client
    /// connections can still answer the server's graceful-shutdown handshake.
    pub async fn wait_bounded(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "tessera did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn finish(mut self, status: ExitStatus) -> (ExitStatus, String) {
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned();
        (status, strip_ansi(&out))
    }

    /// SIGTERM, then the exit status (bounded wait) and the whole output.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let status = self.wait_bounded(Duration::from_secs(30)).await;
        self.finish(status)
    }

    /// SIGKILL: no drain, no final housekeeping.
    pub async fn kill_9(mut self) -> (ExitStatus, String) {
        self.child.kill().unwrap();
        let status = self.wait_bounded(Duration::from_secs(30)).await;
        self.finish(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only if a test failed half-way; a reaped child is not signalled again.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
