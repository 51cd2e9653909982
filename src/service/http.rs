//! The HTTP listener: `/.well-known/jwks.json`, `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::authority::Authority;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The service.
    pub authority: Arc<Authority>,
    /// False once shutdown has begun.
    pub ready: Arc<AtomicBool>,
}

/// Builds the router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn jwks(State(s): State<HttpState>) -> impl IntoResponse {
    // Short max-age: after a rotation verifiers pick up the new key within a minute,
    // and a verifier seeing an unknown kid should refetch anyway.
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        s.authority.jwks_json().to_string(),
    )
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let a = &s.authority;
    let mut body = a.metrics.render(a.revocations.blocklist_len());
    a.verified.render(&mut body);
    crate::metrics::render_process(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
