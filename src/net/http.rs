//! The HTTP and metrics listeners: HTTP/1.1 under the connection cap, the header,
//! request and idle timeouts, and a drain that lets open requests finish.

use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use super::accept::Acceptor;
use super::handshake::handshake;
use super::{Guarded, Limits, MaybeTls, NetMetrics, PeerAddr, Port, Timeout};

/// Serves `router` over HTTP/1.1 on `listener` with the limits, until `stop` turns
/// true; then stops accepting and lets every open connection finish its request.
pub(crate) async fn serve_http(
    listener: TcpListener,
    port: Port,
    router: Router,
    limits: Limits,
    metrics: Arc<NetMetrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut acceptor = Acceptor::new(listener, port, limits, metrics.clone());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            conn = poll_fn(|cx| acceptor.poll_accept(cx)) => {
                let conn = conn.with_idle(limits.idle_timeout);
                conns.spawn(serve_connection(conn, port, router.clone(), limits, metrics.clone(), tls.clone(), stop.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(acceptor);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    conn: Guarded,
    port: Port,
    router: Router,
    limits: Limits,
    metrics: Arc<NetMetrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let peer = conn.peer();
    // The handshake gets `header_timeout` of its own; hyper's head timer starts after.
    let conn = match tls {
        None => MaybeTls::Plain(conn),
        Some(tls) => {
            let deadline = Instant::now() + limits.header_timeout;
            let handshake = handshake(tls, conn, deadline);
            let shaken = tokio::select! {
                shaken = handshake => shaken,
                () = stopped(&mut stop) => return,
            };
            match shaken {
                Some((io, _)) => io,
                None => return,
            }
        }
    };
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let svc_metrics = metrics.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        count.fetch_add(1, Ordering::Relaxed);
        req.extensions_mut().insert(PeerAddr(peer));
        let router = router.clone();
        let metrics = svc_metrics.clone();
        async move {
            let call = router.oneshot(req.map(Body::new));
            match tokio::time::timeout(limits.request_timeout, call).await {
                Ok(Ok(response)) => Ok::<_, Infallible>(response),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    metrics.timed_out(port, Timeout::Request);
                    tracing::info!(listener = port.label(), %peer, "request timed out");
                    Ok(request_timeout_response())
                }
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let http = builder.serve_connection(TokioIo::new(conn), svc);
    tokio::pin!(http);
    let result = tokio::select! {
        r = http.as_mut() => r,
        () = stopped(&mut stop) => {
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            // hyper's head timer runs from accept and again after every response.
            let t = if served.load(Ordering::Relaxed) == 0 {
                Timeout::Header
            } else {
                Timeout::KeepAlive
            };
            metrics.timed_out(port, t);
            if t == Timeout::Header {
                tracing::info!(listener = port.label(), %peer, "closing a connection that sent no request head in time");
            } else {
                tracing::debug!(listener = port.label(), %peer, "closing an idle kept-alive connection");
            }
        }
        // Resets, malformed requests, and the idle/preface closes already logged.
        Err(e) => tracing::debug!(listener = port.label(), %peer, error = %e, "connection ended"),
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// 408 with an RFC 6749-style JSON body, closing the connection: the rest of the
/// request body, if any, is never read.
fn request_timeout_response() -> Response<Body> {
    let body = r#"{"error":"invalid_request","error_description":"request not completed in time"}"#;
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
