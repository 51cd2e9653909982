//! The HTTP listener (`/.well-known/jwks.json`, `/healthz`, `/readyz`, the OAuth
//! endpoints) and the metrics listener (`/metrics`, apart from the public port: its
//! refusal-reason counters would tell a prober why a token was turned down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::oauth;
use crate::authority::Authority;
use crate::net::NetMetrics;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// The service.
    pub(crate) authority: Arc<Authority>,
    /// False once shutdown has begun.
    pub(crate) ready: Arc<AtomicBool>,
    /// Connection counters of every listener.
    pub(crate) net: Arc<NetMetrics>,
    /// Request ids, spans and request metrics.
    pub(crate) observer: crate::observe::Observer,
}

/// Builds the public router.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state.clone())
        .merge(oauth_routes(state.authority.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(oauth::MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.observer,
            crate::observe::http,
        ))
}

/// Builds the metrics listener's router.
pub(crate) fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.observer,
            crate::observe::http,
        ))
}

async fn jwks(State(s): State<HttpState>) -> impl IntoResponse {
    // Short max-age: after a rotation verifiers pick up the new key within a minute,
    // and a verifier seeing an unknown kid should refetch anyway.
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, crate::keys::JWKS_CACHE_CONTROL),
        ],
        s.authority.jwks_json().to_string(),
    )
}

/// Ready to take traffic: not draining, and storage works. Liveness (`/healthz`) stays
/// "ok" either way: restarting a process whose disk is full helps nothing.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !s.authority.storage_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let mut body = s.authority.metrics_text();
    crate::metrics::render_process(&mut body);
    s.net.render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn oauth_routes(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .with_state(authority)
        .layer(axum::middleware::map_response(
            oauth::body_too_large_as_json,
        ))
        .layer(axum::middleware::from_fn(
            oauth::challenge_in_clients_scheme,
        ))
}
