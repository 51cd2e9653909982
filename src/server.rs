//! Composition and lifecycle: authority → gRPC services (+ health, reflection, auth,
//! limits), the HTTP listener and the metrics listener → serve until shutdown → drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::auth;
use crate::authority::Authority;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::StartupError;
use crate::net::{self, GrpcIncoming, Limits, NetMetrics, Port};
use crate::proto::servers::key_service_server::KeyServiceServer;
use crate::proto::servers::token_service_server::TokenServiceServer;
use crate::service::ext_authz::ExtAuthzHandler;
use crate::service::http::{self, HttpState};
use crate::service::keys::KeyHandlers;
use crate::service::tokens::TokenHandlers;
use crate::tls::Tls;

/// The bound listeners.
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP: JWKS, probes, OAuth endpoints.
    pub http: TcpListener,
    /// Prometheus `/metrics`, apart from the public port.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config` (port 0 picks a free port). Errors name the
    /// address that could not be bound.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let bind = |name: &'static str, setting: &'static str, addr: SocketAddr| {
            listen(addr).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on the {name} address {addr} ({setting}): {e}"),
                )
            })
        };
        Ok(Listeners {
            grpc: bind("gRPC", "grpc_addr", config.grpc_addr)?,
            http: bind("HTTP", "http_addr", config.http_addr)?,
            metrics: bind("metrics", "metrics_addr", config.metrics_addr)?,
        })
    }
}

/// Pending connections the kernel queues for `accept`. The default of 128 overflows
/// under a burst of connections while the accept loop waits for a core, and a client
/// whose handshake completed into a full queue hangs, unanswered.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Server-sent HTTP/2 pings on an otherwise quiet gRPC connection, and how long the
/// peer has to answer before the connection is dropped: finds peers that vanished.
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls in flight on one gRPC connection.
const MAX_CALLS_PER_CONNECTION: u32 = 256;

/// How often housekeeping runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);

/// How often the signing-key lifecycle is brought up to the clock. Signing itself
/// switches to a successor at its exact instant; this tick reloads the key set,
/// logs the transition and rotates on schedule, and costs nothing when nothing is due.
const KEY_LIFECYCLE_EVERY: Duration = Duration::from_secs(1);

/// How often a probe write checks storage, so readiness follows a disk that fills or
/// fails while idle, and comes back once it works again without waiting for a caller.
const STORAGE_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Sets the overall ("") and per-service gRPC health status together.
async fn report_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    if serving {
        reporter
            .set_serving::<TokenServiceServer<TokenHandlers>>()
            .await;
        reporter
            .set_serving::<KeyServiceServer<KeyHandlers>>()
            .await;
    } else {
        reporter
            .set_not_serving::<TokenServiceServer<TokenHandlers>>()
            .await;
        reporter
            .set_not_serving::<KeyServiceServer<KeyHandlers>>()
            .await;
    }
}

/// Runs the service until `shutdown` resolves, then drains and returns: readiness
/// (`/readyz`, gRPC health) turns NOT_SERVING at once; everything keeps serving for
/// `drain_delay`, so load balancers stop sending; then gRPC stops accepting and its
/// in-flight calls finish; the HTTP listener, probes included, closes last. The drain
/// is bounded by `shutdown_grace`.
pub async fn run(
    config: Config,
    clock: Clock,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let authority = Arc::new(
        Authority::open(config.clone(), clock)
            .await
            .map_err(StartupError::from)?,
    );
    if authority.store.shared() {
        crate::replication::spawn(&authority);
    }
    let grpc_addr: SocketAddr = listeners.grpc.local_addr()?;
    let http_addr: SocketAddr = listeners.http.local_addr()?;
    let metrics_addr: SocketAddr = listeners.metrics.local_addr()?;
    let limits = Limits::from_config(&config);
    let tls = Tls::from_config(&config).map_err(StartupError)?;
    if tls.is_some() && !metrics_addr.ip().is_loopback() {
        tracing::warn!(metrics = %metrics_addr, "TLS is on, but the metrics listener is plaintext and not on loopback");
    }
    let net_metrics = Arc::new(NetMetrics::default());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Ready only if storage takes a write now, not merely because it opened: an
    // existing database opens and reads fine on a full disk.
    let _ = authority.store.probe().await;
    report_health(&health_reporter, authority.store.healthy()).await;

    // Both reflection versions advertise every service, both reflection ones included,
    // so `grpcurl list` prints the same whichever version the client speaks.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let limit = config.max_request_bytes;
    let tokens = TokenServiceServer::new(TokenHandlers(authority.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let keys = KeyServiceServer::new(KeyHandlers(authority.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let ext_authz = crate::proto::envoy_authz::authorization_server::AuthorizationServer::new(
        ExtAuthzHandler(authority.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let interceptor = auth::interceptor(authority.clone());
    let observer = crate::observe::Observer::new(
        authority.clone(),
        config.request_timeout,
        config.otlp_endpoint.is_some(),
    );

    // Shutdown in two steps: gRPC and housekeeping stop first; the HTTP and metrics
    // listeners (probes, /metrics) only once gRPC has drained.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    // False once shutdown has begun; `/readyz` also asks the store.
    let ready = Arc::new(AtomicBool::new(true));

    let mut grpc_stop = stop_rx.clone();
    let grpc = Server::builder()
        // What bounds a connection's calls in flight: a client may not open more
        // streams (HTTP/2 SETTINGS), so no per-call semaphore is needed on top.
        .max_concurrent_streams(MAX_CALLS_PER_CONNECTION)
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        // Outermost: the request id, span, metrics and the per-call deadline
        // (`request_timeout`) see every answer, the size limit's and the
        // interceptor's refusals included. Ids only, never metadata.
        .layer(crate::observe::GrpcLayer(observer.clone()))
        .layer(crate::service::codec::limit_messages(limit))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(tokens, interceptor.clone()))
        .add_service(InterceptedService::new(keys, interceptor.clone()))
        .add_service(InterceptedService::new(ext_authz, interceptor))
        .serve_with_incoming_shutdown(
            GrpcIncoming::new(
                listeners.grpc,
                limits,
                net_metrics.clone(),
                tls.as_ref().map(|t| t.grpc.clone()),
            ),
            async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            },
        );

    let state = HttpState {
        authority: authority.clone(),
        observer,
        ready: ready.clone(),
        net: net_metrics.clone(),
    };
    let http = net::serve_http(
        listeners.http,
        Port::Http,
        http::router(state.clone()),
        limits,
        net_metrics.clone(),
        tls.as_ref().map(|t| t.http.clone()),
        http_stop_rx.clone(),
    );
    let metrics = net::serve_http(
        listeners.metrics,
        Port::Metrics,
        http::metrics_router(state),
        limits,
        net_metrics.clone(),
        // Plaintext: the metrics listener stays on loopback by default, for a scraper
        // on the same host or pod.
        None,
        http_stop_rx,
    );

    let mut maint_stop = stop_rx.clone();
    let maint_auth = authority.clone();
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.tick().await;
        let mut probe = tokio::time::interval(STORAGE_PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let mut keys_tick = tokio::time::interval(KEY_LIFECYCLE_EVERY);
        keys_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = keys_tick.tick() => {
                    if let Err(e) = maint_auth.key_lifecycle().await {
                        tracing::warn!(error = %e, "signing-key lifecycle failed; will retry");
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = maint_auth.maintain().await {
                        tracing::warn!(error = %e, "housekeeping failed; will retry");
                    }
                }
                _ = probe.tick() => {
                    // The outcome is recorded in the store's health; logged there.
                    let _ = maint_auth.store.probe().await;
                }
                _ = maint_stop.changed() => break,
            }
        }
    });

    // gRPC health follows the store's; `/readyz` asks the store itself.
    let mut store_health = authority.store.watch_health();
    let reporter = health_reporter.clone();
    let health_task = tokio::spawn(async move {
        while store_health.changed().await.is_ok() {
            let healthy = *store_health.borrow_and_update();
            report_health(&reporter, healthy).await;
        }
    });

    tracing::info!(tls = tls.is_some(), mtls = config.tls_client_ca_file.is_some(), grpc = %grpc_addr, http = %http_addr, metrics = %metrics_addr, data_dir = %config.data_dir.display(), "tessera serving");

    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(http);
    let metrics_task = tokio::spawn(metrics);
    shutdown.await;
    tracing::info!(drain_delay = ?config.drain_delay, "shutdown requested: not ready, draining");
    ready.store(false, Ordering::Relaxed);
    // Stopped first, so a storage change can no longer turn health back to SERVING.
    health_task.abort();
    let _ = health_task.await;
    report_health(&health_reporter, false).await;
    tokio::time::sleep(config.drain_delay).await;
    // Watch streams end now, so the gRPC drain does not wait on them.
    authority.store.close_feed();
    let _ = stop_tx.send(true);

    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let _ = grpc_task.await;
        let _ = maintenance.await;
        // Probes keep seeing 503 until the last gRPC call is done.
        let _ = http_stop_tx.send(true);
        let _ = http_task.await;
        let _ = metrics_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing with calls in flight");
        let _ = http_stop_tx.send(true);
    }
    // Audit records still queued behind answered calls reach the disk before exit.
    if let Err(e) = authority.store.flush().await {
        tracing::error!(error = %e, "could not flush queued audit records");
    }
    // Flush last-use times and purge once more before exit.
    if let Err(e) = authority.maintain().await {
        tracing::warn!(error = %e, "final housekeeping failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not
/// when the future is first polled: a SIGTERM that arrives after the service logged
/// "serving" must drain it, never kill it with the default action. Call it inside the
/// runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                // Without handlers the default actions stand; wait for nothing.
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
