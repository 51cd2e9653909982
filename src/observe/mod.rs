//! Per-request observation, as middleware around every gRPC call and HTTP request: the
//! request id (taken from `x-request-id` or generated, echoed in the response), the
//! log context — the OpenTelemetry SERVER span (child of an incoming W3C
//! `traceparent`), or for a gRPC call under the default text logs its fields alone
//! (`telemetry::CallFields`) — the request counters and latency histograms, and the
//! counting and logging of callers refused for want of a credential or a scope.
//!
//! The gRPC layer is in `grpc.rs`; the HTTP middleware and what both share are here.
//!
//! Health and reflection calls get no span: a probe every few seconds would drown the
//! traces. Health calls are still counted; reflection calls are not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::{REQUEST_ID, RequestId};
use crate::authority::Authority;
use crate::metrics;
use crate::telemetry;

mod grpc;
pub(crate) use grpc::GrpcLayer;

/// W3C trace context. Headers are looked up by static name: by `&str`, the name is
/// parsed on every lookup.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The caller's `x-request-id` if sane, else a fresh one; the request header is set to
/// it so every later reader (the auth interceptor, the audit record) sees the same id.
fn request_id(headers: &mut HeaderMap) -> RequestId {
    RequestId::from_headers(headers).unwrap_or_else(|| {
        let id = RequestId::fresh();
        headers.insert(REQUEST_ID, id.header().clone());
        id
    })
}

/// Reads W3C trace-context headers from an HTTP header map.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The caller's trace context, from a valid `traceparent`.
fn remote(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    headers
        .contains_key(&TRACEPARENT)
        .then(|| TraceContextPropagator::new().extract(&Headers(headers)))
        .filter(|cx| cx.span().span_context().is_valid())
}

fn trace_id(cx: &opentelemetry::Context) -> TraceId {
    cx.span().span_context().trace_id()
}

/// Makes `span` a child of the caller's `traceparent`, if any, and records the trace id
/// the logs carry: the span's own when spans are exported, else the caller's.
fn link(span: &Span, headers: &HeaderMap, export: bool) {
    let remote = remote(headers);
    let mut trace_id = remote.as_ref().map(trace_id);
    if export {
        if let Some(cx) = remote {
            let _ = span.set_parent(cx);
        }
        let own = self::trace_id(&span.context());
        if own != TraceId::INVALID {
            trace_id = Some(own);
        }
    }
    if let Some(id) = trace_id {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// What the middleware needs, shared by every call.
#[derive(Clone)]
pub(crate) struct Observer {
    authority: Arc<Authority>,
    /// The server's per-call limit (`request_timeout`), enforced here: a call still
    /// without an answer when it passes is answered `DEADLINE_EXCEEDED`. A call the
    /// client drops after it is counted as `DEADLINE_EXCEEDED` too, one dropped sooner
    /// as `CANCELLED`.
    timeout: Duration,
    export: bool,
    /// A call's log context rides with its task, not in a span (see `telemetry`).
    in_task: bool,
}

impl Observer {
    /// `export`: spans go to an OTLP endpoint. Without one a span only serves the
    /// logs, and a span with three fields costs a fraction of one with ten.
    pub(crate) fn new(authority: Arc<Authority>, timeout: Duration, export: bool) -> Self {
        Observer {
            authority,
            timeout,
            export,
            in_task: !export && telemetry::calls_in_task(),
        }
    }
}

// ---------------------------------------------------------------------------------
// HTTP

/// Is this route traced? The OAuth endpoints are; probes, JWKS and `/metrics` are
/// polled by machines and would only add noise.
fn http_traced(route: usize) -> bool {
    let r = metrics::http_route_label(route);
    r.starts_with("/oauth2/") || r == "/.well-known/oauth-authorization-server"
}

/// axum middleware for both HTTP listeners: request id, span, counters.
pub(crate) async fn http(
    State(observer): State<Observer>,
    mut req: AxumRequest,
    next: Next,
) -> axum::response::Response {
    let start = Instant::now();
    let route = metrics::http_route_index(req.uri().path());
    let rid = request_id(req.headers_mut());
    let export = observer.export;
    let span = if !http_traced(route) {
        Span::none()
    } else if export {
        let method = req.method().as_str();
        let label = metrics::http_route_label(route);
        tracing::info_span!(
            "http",
            otel.name = format!("{method} {label}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = label,
            request_id = %rid,
            trace_id = Empty,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        )
    } else {
        tracing::info_span!(
            "http",
            route = metrics::http_route_label(route),
            request_id = %rid,
            trace_id = Empty,
        )
    };
    link(&span, req.headers(), export);
    let mut res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = res.status().as_u16();
    res.headers_mut()
        .insert(REQUEST_ID, rid.into_answer_header());
    observer
        .authority
        .metrics
        .http_request(route, status, start.elapsed());
    if export {
        span.record("http.response.status_code", status);
        // HTTP semantic conventions: a server span is an error for 5xx only; a 4xx is
        // the client's mistake and leaves the status unset.
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_answers_request_id_is_never_indexed_and_the_request_keeps_it() {
        let mut fresh = HeaderMap::new();
        let id = request_id(&mut fresh);
        assert_eq!(fresh.get(&REQUEST_ID), Some(id.header()));
        let answer = id.into_answer_header();
        assert!(answer.is_sensitive());
        assert_eq!(fresh.get(&REQUEST_ID), Some(&answer));

        let mut given = HeaderMap::new();
        given.insert(REQUEST_ID, HeaderValue::from_static("req-42"));
        let answer = request_id(&mut given).into_answer_header();
        assert!(answer.is_sensitive());
        assert_eq!(answer, "req-42");
        assert_eq!(given.get(&REQUEST_ID), Some(&answer));
    }
}
