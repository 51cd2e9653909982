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
use crate::net::{self, GrpcIncoming, Limits, NetMetrics, Port};
use crate::proto::key_service_server::KeyServiceServer;
use crate::proto::token_service_server::TokenServiceServer;
use crate::service::http::{self, HttpState};
use crate::service::keys::KeyHandlers;
use crate::service::tokens::TokenHandlers;

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
        let bind = |name: &'static str, addr: SocketAddr| {
            listen(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("binding {name} {addr}: {e}")))
        };
        Ok(Listeners {
            grpc: bind("grpc_addr", config.grpc_addr)?,
            http: bind("http_addr", config.http_addr)?,
            metrics: bind("metrics_addr", config.metrics_addr)?,
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

/// How often housekeeping runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);

/// Runs the service until `shutdown` resolves, then drains in-flight calls (bounded by
/// `shutdown_grace`) and returns.
pub async fn run(
    config: Config,
    clock: Clock,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let authority = Arc::new(Authority::open(config.clone(), clock).await?);
    let grpc_addr: SocketAddr = listeners.grpc.local_addr()?;
    let http_addr: SocketAddr = listeners.http.local_addr()?;
    let metrics_addr: SocketAddr = listeners.metrics.local_addr()?;
    let limits = Limits::from_config(&config);
    let net_metrics = Arc::new(NetMetrics::default());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TokenServiceServer<TokenHandlers>>()
        .await;
    health_reporter
        .set_serving::<KeyServiceServer<KeyHandlers>>()
        .await;

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
    let interceptor = auth::interceptor(authority.clone());

    // One shutdown signal fans out to both listeners and the housekeeping task.
    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));

    let mut grpc_stop = stop_rx.clone();
    let grpc = Server::builder()
        // One span per call, named after the method; ids only, never metadata.
        .trace_fn(|req| tracing::info_span!("grpc", otel.name = %req.uri().path().trim_start_matches('/')))
        .timeout(config.request_timeout)
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .layer(crate::service::codec::limit_messages(limit))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(tokens, interceptor.clone()))
        .add_service(InterceptedService::new(keys, interceptor))
        .serve_with_incoming_shutdown(
            GrpcIncoming::new(listeners.grpc, limits, net_metrics.clone()),
            async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            },
        );

    let state = HttpState {
        authority: authority.clone(),
        ready: ready.clone(),
        net: net_metrics.clone(),
    };
    let http = net::serve_http(
        listeners.http,
        Port::Http,
        http::router(state.clone()),
        limits,
        net_metrics.clone(),
        stop_rx.clone(),
    );
    let metrics = net::serve_http(
        listeners.metrics,
        Port::Metrics,
        http::metrics_router(state),
        limits,
        net_metrics.clone(),
        stop_rx.clone(),
    );

    let mut maint_stop = stop_rx.clone();
    let maint_auth = authority.clone();
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = maint_auth.maintain().await {
                        tracing::warn!(error = %e, "housekeeping failed; will retry");
                    }
                }
                _ = maint_stop.changed() => break,
            }
        }
    });

    tracing::info!(grpc = %grpc_addr, http = %http_addr, metrics = %metrics_addr, data_dir = %config.data_dir.display(), "tessera serving");

    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(http);
    let metrics_task = tokio::spawn(metrics);
    shutdown.await;
    tracing::info!("shutdown requested: draining");
    ready.store(false, Ordering::Relaxed);
    health_reporter
        .set_not_serving::<TokenServiceServer<TokenHandlers>>()
        .await;
    health_reporter
        .set_not_serving::<KeyServiceServer<KeyHandlers>>()
        .await;
    authority.store.close_feed();
    let _ = stop_tx.send(true);

    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let _ = grpc_task.await;
        let _ = http_task.await;
        let _ = metrics_task.await;
        let _ = maintenance.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing with calls in flight");
    }
    // Flush last-use times and purge once more before exit.
    if let Err(e) = authority.maintain().await {
        tracing::warn!(error = %e, "final housekeeping failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
