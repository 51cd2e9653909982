//! TLS on the gRPC and HTTP listeners, certificates reloaded from disk, mTLS, and
//! SPIFFE-identified callers. Certificates are made here, at test time, with rcgen.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{access_spec, authed, test_config};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tessera::clock::Clock;
use tessera::config::Config;
use tessera::proto::token_service_client::TokenServiceClient;
use tessera::proto::{IntrospectRequest, IssueResponse};
use tessera::server::{self, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const ENVOY: &str = "spiffe://example.org/ns/mesh/sa/envoy";

/// A test CA that signs server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM (for files) and DER (for rustls clients).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn leaf(&self, sans: Vec<SanType>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self) -> Leaf {
        self.leaf(vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ])
    }

    /// A client certificate, with `uri` as its URI SAN if given.
    fn client(&self, uri: Option<&str>) -> Leaf {
        let mut sans = vec![SanType::DnsName("workload.test".try_into().unwrap())];
        if let Some(u) = uri {
            sans.push(SanType::URI(u.try_into().unwrap()));
        }
        self.leaf(sans)
    }
}

fn write(path: &Path, text: &str) {
    // Written to a temp file and renamed in, as a careful operator (or a Kubernetes
    // secret volume) would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The TLS files of one server, in their own temp dir.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(server: &Leaf, client_ca: Option<&Ca>) -> Files {
        let f = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        f.install(server);
        if let Some(ca) = client_ca {
            write(&f.path("client-ca.pem"), &ca.pem());
        }
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn install(&self, leaf: &Leaf) {
        write(&self.path("cert.pem"), &leaf.cert_pem);
        write(&self.path("key.pem"), &leaf.key_pem);
    }

    fn configure(&self, config: &mut Config, mtls: bool) {
        config.tls_cert_file = Some(self.path("cert.pem"));
        config.tls_key_file = Some(self.path("key.pem"));
        if mtls {
            config.tls_client_ca_file = Some(self.path("client-ca.pem"));
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client TLS config trusting `ca`, presenting `client` if given, offering `alpn`.
fn client_config(ca: &Ca, client: Option<&Leaf>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut c = match client {
        Some(l) => builder
            .with_client_auth_cert(vec![l.cert.clone()], l.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    c.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(c)
}

/// A TLS connection to `addr`, checking the server's certificate for 127.0.0.1.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A gRPC channel over TLS with `config` (tonic's own TLS is not compiled in: the
/// connector does the handshake).
async fn tls_channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let config = config.clone();
            async move { tls_connect(addr, config).await.map(TokioIo::new) }
        }))
        .await
}

/// The server's certificate as a fresh TLS connection to `addr` sees it.
async fn served_cert(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let s = tls_connect(addr, config).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// GET over HTTPS (HTTP/1.1): (status, body).
async fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> (u16, String) {
    let mut s = tls_connect(addr, config).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // A close without close_notify is fine for a Connection: close response.
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

/// A running server with TLS on.
struct TlsServer {
    grpc: SocketAddr,
    http: SocketAddr,
    metrics: SocketAddr,
    admin_key: String,
    /// A client config that gets through (trusts the CA, presents a cert if needed).
    client: Arc<rustls::ClientConfig>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
}

impl TlsServer {
    /// Starts with `edit` applied to the test config; waits for gRPC health over TLS
    /// with `client`.
    async fn start(client: Arc<rustls::ClientConfig>, edit: impl FnOnce(&mut Config)) -> TlsServer {
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config(data.path());
        edit(&mut config);
        let listeners = Listeners::bind(&config).await.unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let metrics = listeners.metrics.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            config,
            Clock::system(),
            listeners,
            async move {
                let _ = rx.await;
            },
        ));
        let mut up = false;
        for _ in 0..500 {
            if let Ok(ch) = tls_channel(grpc, client.clone()).await {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                let req = tonic_health::pb::HealthCheckRequest::default();
                if h.check(req).await.is_ok() {
                    up = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(up, "server did not come up over TLS");
        let admin_key = std::fs::read_to_string(data.path().join("admin.key"))
            .unwrap()
            .trim()
            .to_string();
        TlsServer {
            grpc,
            http,
            metrics,
            admin_key,
            client,
            stop: Some(tx),
            task: Some(task),
            _data: data,
        }
    }

    async fn tokens_with(&self, config: Arc<rustls::ClientConfig>) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(tls_channel(self.grpc, config).await.unwrap())
    }

    async fn tokens(&self) -> TokenServiceClient<Channel> {
        self.tokens_with(self.client.clone()).await
    }

    async fn access_token(&self, subject: &str) -> IssueResponse {
        self.tokens()
            .await
            .issue(authed(access_spec(subject), &self.admin_key))
            .await
            .unwrap()
            .into_inner()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

fn introspect(token: &str) -> IntrospectRequest {
    IntrospectRequest {
        token: token.into(),
        token_type_hint: String::new(),
    }
}

/// Does a health check over a channel built with `config` fail (at connect or call)?
async fn refused(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let Ok(ch) = tls_channel(addr, config).await else {
        return true;
    };
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_err()
}

/// Waits (briefly) until the plaintext metrics listener shows `line`: the server
/// counts a closed connection just after closing it.
async fn metrics_show(metrics: SocketAddr, line: &str) {
    let mut body = String::new();
    for _ in 0..50 {
        let (code, _, b) = common::raw_http(
            metrics,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 200);
        if b.contains(line) {
            return;
        }
        body = b;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{line} missing:\n{body}");
}

#[tokio::test]
async fn grpc_and_http_are_served_over_tls() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca.server(), None);
    let s = TlsServer::start(client_config(&ca, None, b"h2"), |c| {
        files.configure(c, false)
    })
    .await;

    let t = s.access_token("alice").await;
    let r = s
        .tokens()
        .await
        .introspect(authed(introspect(&t.token), &s.admin_key))
        .await
        .unwrap()
        .into_inner();
    assert!(r.active);
    assert_eq!(r.subject, "alice");

    let (code, body) = https_get(
        s.http,
        client_config(&ca, None, b"http/1.1"),
        "/.well-known/jwks.json",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"keys\""), "{body}");
    let (code, _) = https_get(s.http, client_config(&ca, None, b"http/1.1"), "/healthz").await;
    assert_eq!(code, 200);
    s.stop().await;
}

#[tokio::test]
async fn plaintext_is_refused_when_tls_is_on() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca.server(), None);
    let s = TlsServer::start(client_config(&ca, None, b"h2"), |c| {
        files.configure(c, false)
    })
    .await;

    // gRPC in the clear: no answer.
    let plain = Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        let r = h
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        assert!(r.is_err(), "a plaintext gRPC call was answered");
    }

    // HTTP in the clear: no HTTP response comes back, only a TLS alert or a close.
    let mut tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server held a plaintext connection open");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "answered in the clear: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // A client that does not trust the server's CA gets no further either.
    let other = Ca::new("another CA");
    assert!(refused(s.grpc, client_config(&other, None, b"h2")).await);

    // The metrics listener stays plaintext, on loopback, and counts the refusal.
    metrics_show(
        s.metrics,
        "tessera_tls_handshake_failures_total{listener=\"http\"} 1",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_to_the_next_connection() {
    let ca = Ca::new("test CA");
    let first = ca.server();
    let files = Files::new(&first, None);
    let grpc_client = client_config(&ca, None, b"h2");
    let http_client = client_config(&ca, None, b"http/1.1");
    let s = TlsServer::start(grpc_client.clone(), |c| files.configure(c, false)).await;
    assert_eq!(
        served_cert(s.grpc, grpc_client.clone()).await,
        first.cert.to_vec()
    );
    assert_eq!(
        served_cert(s.http, http_client.clone()).await,
        first.cert.to_vec()
    );
    // A connection made before the swap keeps working after it.
    let mut before = s.tokens().await;

    let second = ca.server();
    files.install(&second);
    assert_eq!(
        served_cert(s.grpc, grpc_client.clone()).await,
        second.cert.to_vec()
    );
    assert_eq!(
        served_cert(s.http, http_client.clone()).await,
        second.cert.to_vec()
    );
    let t = s.access_token("bob").await;
    let r = before
        .introspect(authed(introspect(&t.token), &s.admin_key))
        .await
        .unwrap();
    assert!(r.into_inner().active);

    // Half a swap (a new certificate, its key not yet written) does not break
    // anything: the previous pair stays in service until the key arrives.
    let third = ca.server();
    write(&files.path("cert.pem"), &third.cert_pem);
    assert_eq!(
        served_cert(s.grpc, grpc_client.clone()).await,
        second.cert.to_vec()
    );
    write(&files.path("key.pem"), &third.key_pem);
    assert_eq!(
        served_cert(s.grpc, grpc_client.clone()).await,
        third.cert.to_vec()
    );

    // Garbage on disk: the last good pair stays.
    write(&files.path("cert.pem"), "not a certificate");
    assert_eq!(served_cert(s.http, http_client).await, third.cert.to_vec());
    s.stop().await;
}

#[tokio::test]
async fn mtls_admits_only_clients_with_a_certificate_from_the_ca() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&server_ca.server(), Some(&client_ca));
    let good = client_ca.client(None);
    let s = TlsServer::start(client_config(&server_ca, Some(&good), b"h2"), |c| {
        files.configure(c, true)
    })
    .await;

    assert!(
        refused(s.grpc, client_config(&server_ca, None, b"h2")).await,
        "a client without a certificate got in"
    );
    let stranger = Ca::new("stranger CA").client(None);
    assert!(
        refused(s.grpc, client_config(&server_ca, Some(&stranger), b"h2")).await,
        "a client certificate from another CA got in"
    );
    // A server certificate is not a client certificate of the client CA either.
    let self_signed_server = server_ca.server();
    assert!(
        refused(
            s.grpc,
            client_config(&server_ca, Some(&self_signed_server), b"h2")
        )
        .await
    );
    assert!(!refused(s.grpc, client_config(&server_ca, Some(&good), b"h2")).await);

    // The same on the HTTP listener.
    assert!(
        tls_connect_and_read(s.http, client_config(&server_ca, None, b"http/1.1"))
            .await
            .is_err()
    );
    let (code, _) = https_get(
        s.http,
        client_config(&server_ca, Some(&good), b"http/1.1"),
        "/healthz",
    )
    .await;
    assert_eq!(code, 200);
    s.stop().await;
}

/// A TLS connection that sends a request and reads the answer; with TLS 1.3 a
/// refused client certificate shows only here, after the client's handshake is done.
async fn tls_connect_and_read(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<Vec<u8>> {
    let mut s = tls_connect(addr, config).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    if buf.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

#[tokio::test]
async fn a_spiffe_caller_without_an_api_key_can_introspect_and_nothing_more() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&server_ca.server(), Some(&client_ca));
    let envoy = client_ca.client(Some(ENVOY));
    let envoy_tls = client_config(&server_ca, Some(&envoy), b"h2");
    let s = TlsServer::start(envoy_tls.clone(), |c| {
        files.configure(c, true);
        c.spiffe_callers
            .insert(ENVOY.into(), vec!["tessera:introspect".into()]);
    })
    .await;
    // Issued by a client with an admin key (the API key carries the call).
    let t = s.access_token("carol").await;

    let mut envoy_client = s.tokens_with(envoy_tls.clone()).await;
    let r = envoy_client
        .introspect(introspect(&t.token))
        .await
        .expect("a mapped SPIFFE id may introspect without an API key")
        .into_inner();
    assert!(r.active);
    assert_eq!(r.subject, "carol");

    let e = envoy_client
        .issue(access_spec("mallory"))
        .await
        .expect_err("introspect scope only");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A client certificate without a SPIFFE id, or with one not in spiffe_callers,
    // is no credential: the call is anonymous.
    for (name, uri) in [
        ("no SPIFFE id", None),
        (
            "an unlisted SPIFFE id",
            Some("spiffe://example.org/ns/mesh/sa/stranger"),
        ),
        (
            "another trust domain",
            Some("spiffe://evil.example/ns/mesh/sa/envoy"),
        ),
    ] {
        let leaf = client_ca.client(uri);
        let mut c = s
            .tokens_with(client_config(&server_ca, Some(&leaf), b"h2"))
            .await;
        let e = c.introspect(introspect(&t.token)).await.expect_err(name);
        assert_eq!(e.code(), Code::Unauthenticated, "{name}: {e:?}");
    }

    // An API key sent over the SPIFFE connection is what counts: an issue-only key
    // cannot introspect, even though the certificate could.
    let issuer = s
        .tokens()
        .await
        .issue(authed(
            tessera::proto::IssueRequest {
                credential: Some(tessera::proto::issue_request::Credential::ApiKey(
                    tessera::proto::ApiKeySpec {
                        owner: "team-test".into(),
                        name: "issuer".into(),
                        environment: "test".into(),
                        scopes: vec!["tessera:issue".into()],
                        ..Default::default()
                    },
                )),
            },
            &s.admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let e = envoy_client
        .introspect(authed(introspect(&t.token), &issuer.token))
        .await
        .expect_err("the API key's scopes apply, not the certificate's");
    assert_eq!(e.code(), Code::PermissionDenied);
    envoy_client
        .issue(authed(access_spec("dave"), &issuer.token))
        .await
        .expect("the API key's own scope works");
    // A bad API key is refused, not quietly replaced by the certificate.
    let e = envoy_client
        .introspect(authed(introspect(&t.token), "tsk_test_bogus"))
        .await
        .expect_err("bad key");
    assert_eq!(e.code(), Code::Unauthenticated);
    s.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_within_the_header_timeout() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca.server(), None);
    let s = TlsServer::start(client_config(&ca, None, b"h2"), |c| {
        files.configure(c, false);
        c.header_timeout = Duration::from_millis(300);
    })
    .await;
    for addr in [s.grpc, s.http] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The start of a ClientHello, then nothing.
        tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        assert!(r.is_ok(), "{addr}: a stalled handshake was held open");
    }
    for port in ["grpc", "http"] {
        let line = format!(
            "tessera_connection_timeouts_total{{listener=\"{port}\",reason=\"tls_handshake\"}} 1"
        );
        metrics_show(s.metrics, &line).await;
    }
    s.stop().await;
}
