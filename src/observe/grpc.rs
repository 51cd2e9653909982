//! The gRPC half of the middleware: a tower layer around every call that counts it,
//! gives it its log context, enforces the per-call limit and logs refusals.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, Request, Response};
use tracing::Span;
use tracing::field::Empty;

use super::{Observer, link, remote, request_id, trace_id};
use crate::auth::{AuthFailure, REQUEST_ID, RequestId};
use crate::metrics::{self, GRPC_METHODS, GRPC_OTHER};
use crate::telemetry::CallFields;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

const OK: i32 = 0;
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

/// The tower layer that observes every gRPC call.
#[derive(Clone)]
pub(crate) struct GrpcLayer(pub(crate) Observer);

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = Grpc<S>;

    fn layer(&self, inner: S) -> Grpc<S> {
        Grpc {
            inner,
            observer: self.0.clone(),
        }
    }
}

/// See [`GrpcLayer`].
#[derive(Clone)]
pub(crate) struct Grpc<S> {
    inner: S,
    observer: Observer,
}

/// What the call is, for the metrics and the span.
#[derive(Clone, Copy)]
enum Kind {
    /// Counted under this method row, traced when `traced`.
    Method { row: usize, traced: bool },
    /// Reflection: passed through untouched.
    Untracked,
}

fn classify(path: &str) -> Kind {
    if path.starts_with("/grpc.reflection.") {
        return Kind::Untracked;
    }
    let row = metrics::grpc_method_index(path);
    let traced = !path.starts_with("/grpc.health.");
    Kind::Method { row, traced }
}

fn method_name(row: usize) -> &'static str {
    GRPC_METHODS.get(row).copied().unwrap_or("_OTHER")
}

/// Where a call's log context lives: nowhere (health checks), in a span, or beside the
/// call's task (its fields, swapped in while the call runs).
enum LogContext {
    None,
    Span(Span),
    Task(Option<CallFields>),
}

impl LogContext {
    /// `f`'s result, with this context on every line it logs.
    fn in_scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        match self {
            LogContext::None => f(),
            LogContext::Span(span) => span.in_scope(f),
            LogContext::Task(fields) => CallFields::in_scope(fields, f),
        }
    }
}

fn grpc_span(row: usize, request_id: &RequestId, export: bool) -> Span {
    let name = method_name(row);
    if !export {
        // Display (`%`), not Debug: a `&str` field is written escaped, char by char,
        // which was 2.4k of the 3.4k instructions that formatting these fields took.
        return tracing::info_span!(
            "grpc",
            method = %name,
            request_id = %request_id,
            trace_id = Empty,
        );
    }
    let (service, method) = match name.split_once('/') {
        Some(parts) => parts,
        None => (name, name),
    };
    tracing::info_span!(
        "grpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        request_id = %request_id,
        trace_id = Empty,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    )
}

/// Records the call once: when its response ends, or when it is dropped unfinished.
struct Finish {
    observer: Observer,
    row: usize,
    start: Instant,
    context: LogContext,
    had_credential: bool,
    /// From the response headers (trailers-only answers) or the trailers.
    code: Option<i32>,
    ended: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let took = self.start.elapsed();
        let code = match (self.code, self.ended) {
            (Some(c), _) => c,
            (None, true) => UNKNOWN,
            (None, false) if took >= self.observer.timeout => DEADLINE_EXCEEDED,
            (None, false) => CANCELLED,
        };
        let m = &self.observer.authority.metrics();
        m.grpc_call(self.row, code, took);
        if self.observer.export
            && let LogContext::Span(span) = &self.context
        {
            span.record("rpc.grpc.status_code", code);
            if code != OK {
                span.record("otel.status_code", "error");
            }
        }
        // The interceptor counts and logs the credentials it refuses; what is left are
        // calls that needed a credential and had none, and callers lacking a scope.
        // Exchange and GetJwks take no credential: their UNAUTHENTICATED is a grant's.
        let refused = match code {
            UNAUTHENTICATED if !self.had_credential && !anonymous_method(self.row) => {
                Some(AuthFailure::Missing)
            }
            PERMISSION_DENIED => Some(AuthFailure::PermissionDenied),
            _ => None,
        };
        if let Some(reason) = refused {
            m.auth_failure(reason);
            self.context.in_scope(|| {
                if reason == AuthFailure::Missing {
                    tracing::info!(reason = %reason.label(), "authentication failed");
                } else {
                    tracing::info!(reason = %reason.label(), "permission denied");
                }
            });
        }
    }
}

/// Methods callable without a credential.
fn anonymous_method(row: usize) -> bool {
    matches!(
        GRPC_METHODS.get(row),
        Some(&"tessera.v1.TokenService/Exchange" | &"tessera.v1.KeyService/GetJwks")
    )
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl<S> tower::Service<Request<tonic::body::Body>> for Grpc<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>,
    S::Future: Unpin,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Answering<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let Kind::Method { row, traced } = classify(req.uri().path()) else {
            return Answering {
                inner: self.inner.call(req),
                call: None,
                timer: None,
            };
        };
        let request_id = request_id(req.headers_mut());
        let export = self.observer.export;
        let context = if !traced {
            LogContext::None
        } else if self.observer.in_task {
            LogContext::Task(Some(CallFields {
                method: method_name(row),
                request_id: request_id.clone(),
                trace_id: remote(req.headers()).as_ref().map(trace_id),
            }))
        } else {
            let span = grpc_span(row, &request_id, export);
            link(&span, req.headers(), export);
            LogContext::Span(span)
        };
        let mut finish = Finish {
            observer: self.observer.clone(),
            row,
            start: Instant::now(),
            context,
            had_credential: req.headers().contains_key(AUTHORIZATION),
            code: None,
            ended: false,
        };
        // The auth interceptor runs inside `call`: its lines carry the context too.
        let inner = &mut self.inner;
        let inner = finish.context.in_scope(|| inner.call(req));
        Answering {
            inner,
            call: Some(Observing { request_id, finish }),
            timer: None,
        }
    }
}

/// A call being answered: the inner service's future, polled in the call's log context
/// and cut off at the per-call limit. A future of its own rather than an `async` block
/// around the inner one: nesting futures copies the inner one into each layer, and
/// boxing it allocates, on every call.
pub(crate) struct Answering<F> {
    inner: F,
    /// `None` for a call that is not observed (reflection), and once answered.
    call: Option<Observing>,
    /// Armed only when the call has to wait: most calls (a health check, a cached
    /// introspection, an API-key check) are answered in their first poll.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

struct Observing {
    /// For the answer's headers.
    request_id: RequestId,
    finish: Finish,
}

impl<F, E> Future for Answering<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let inner = &mut this.inner;
        let Some(mut call) = this.call.take() else {
            return Pin::new(inner).poll(cx);
        };
        let mut res = match call.finish.context.in_scope(|| Pin::new(inner).poll(cx)) {
            Poll::Ready(Ok(res)) => res,
            // Dropping the call records it, as cancelled.
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                let limit = call.finish.observer.timeout;
                let deadline = tokio::time::Instant::from_std(call.finish.start) + limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    this.call = Some(call);
                    return Poll::Pending;
                }
                tonic::Status::deadline_exceeded(format!(
                    "no answer within the server's per-call limit of {limit:?}"
                ))
                .into_http()
            }
        };
        let Observing {
            request_id,
            mut finish,
        } = call;
        res.headers_mut()
            .insert(REQUEST_ID, request_id.into_answer_header());
        finish.code = grpc_status(res.headers());
        if finish.row == GRPC_OTHER && finish.code.is_none() {
            finish.code = Some(UNKNOWN);
        }
        Poll::Ready(Ok(res.map(|body| {
            tonic::body::Body::new(Observed {
                inner: body,
                finish: Some(finish),
            })
        })))
    }
}

/// A response body that records the call when its trailers (or its end) pass.
struct Observed {
    inner: tonic::body::Body,
    finish: Option<Finish>,
}

impl http_body::Body for Observed {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut f) = self.finish.take()
                {
                    f.code = grpc_status(trailers).or(f.code);
                    f.ended = true;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut f) = self.finish.take() {
                    f.code = f.code.or(Some(UNKNOWN));
                    f.ended = true;
                }
            }
            Poll::Ready(None) => {
                if let Some(mut f) = self.finish.take() {
                    f.ended = true;
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
