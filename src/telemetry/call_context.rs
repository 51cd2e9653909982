//! A gRPC call's log context without a span, for the default output (plain text logs,
//! no trace export, no span-level filter): the fields a `grpc` span would carry — the
//! method, the request id and the caller's trace id — ride with the call's task, and
//! the text format writes them where that span's name and fields would go. The line
//! reads the same; the call pays no span.
//!
//! A span is registered, formatted into a string of its own, entered and left at every
//! poll and closed, on every call, logged or not: about a tenth of a cached
//! introspection. Here the fields are only copied beside the task, and formatted only
//! when a line is written.
//!
//! The fields are the thread's current call while the call's future is polled, as
//! with `tokio::task_local!`, but swapped in from a slot the caller owns: the middleware
//! polls its call in a future of its own, without another future around it.

use std::cell::RefCell;
use std::fmt;

use opentelemetry::trace::TraceId;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::auth::RequestId;

thread_local! {
    /// The call being polled on this thread, when its context is kept here.
    static CALL: RefCell<Option<CallFields>> = const { RefCell::new(None) };
}

/// What a `grpc` span would record.
#[derive(Clone, Debug)]
pub(crate) struct CallFields {
    pub(crate) method: &'static str,
    pub(crate) request_id: RequestId,
    /// The caller's, from `traceparent`.
    pub(crate) trace_id: Option<TraceId>,
}

impl CallFields {
    /// `f`'s result, with the fields in `slot` on every line it logs: they are the
    /// thread's current call while `f` runs, and back in `slot` after (whatever was
    /// current before is current again).
    pub(crate) fn in_scope<R>(slot: &mut Option<CallFields>, f: impl FnOnce() -> R) -> R {
        /// Swaps back on the way out, even by unwinding.
        struct Back<'a>(&'a mut Option<CallFields>);
        impl Drop for Back<'_> {
            fn drop(&mut self) {
                swap(self.0);
            }
        }
        swap(slot);
        let _back = Back(slot);
        f()
    }
}

/// Exchanges `slot` with the thread's current call.
fn swap(slot: &mut Option<CallFields>) {
    // Only fails while the thread is being torn down, when nothing is logged.
    let _ = CALL.try_with(|current| std::mem::swap(slot, &mut current.borrow_mut()));
}

/// As the span's fields are written: `name=value`, by `Display`, space-separated.
impl fmt::Display for CallFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("method=")?;
        f.write_str(self.method)?;
        f.write_str(" request_id=")?;
        f.write_str(self.request_id.as_str())?;
        if let Some(id) = self.trace_id {
            write!(f, " trace_id={id}")?;
        }
        Ok(())
    }
}

/// `tracing_subscriber`'s full text format without colours or targets (what the text
/// output is otherwise configured as), with the task's call written as a `grpc` span.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLines {
    /// Timestamps on (off only to compare lines in tests).
    pub(crate) time: bool,
}

impl<S, N> FormatEvent<S, N> for CallLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.time {
            // As the full format does: a clock that fails is no reason to lose the line.
            if SystemTime.format_time(&mut writer).is_err() {
                writer.write_str("<unknown time>")?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(match *event.metadata().level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        // The call is the outermost context, as its span would be.
        let call = CALL.try_with(|current| match &*current.borrow() {
            Some(call) => write!(writer, "grpc{{{call}}}:").map(|()| true),
            None => Ok(false),
        });
        let mut seen = call.unwrap_or(Ok(false))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
                seen = true;
            }
        }
        if seen {
            writer.write_char(' ')?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::{Registry, fmt};

    use super::*;
    use crate::telemetry::PlainFields;
    use crate::telemetry::tests::Sink;

    const METHOD: &str = "tessera.v1.TokenService/Introspect";

    fn fields(trace_id: Option<TraceId>) -> CallFields {
        CallFields {
            method: METHOD,
            request_id: RequestId::from("req-1"),
            trace_id,
        }
    }

    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

    /// The lines the layer `layer` writes of a few events, logged inside `call` and,
    /// for one, inside a nested span.
    fn lines(layer: impl FnOnce(Sink) -> Boxed, call: impl FnOnce(&dyn Fn())) -> String {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::registry().with(layer(sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            call(&|| {
                tracing::error!(n = 1, "refused \x1b[31m");
                tracing::warn!("warned");
                let inner = tracing::info_span!("inner", step = 2u64);
                let _in = inner.enter();
                tracing::info!(flag = true, "inside");
                tracing::debug!("hidden at info");
            });
        });
        sink.text()
    }

    /// As the call's span writes them.
    fn with_span(call: &CallFields) -> String {
        let layer = |sink: Sink| -> Boxed {
            Box::new(
                fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_target(false)
                    .fmt_fields(PlainFields)
                    .with_writer(move || sink.clone())
                    .with_filter(LevelFilter::INFO),
            )
        };
        lines(layer, |events| {
            let span = tracing::info_span!(
                "grpc",
                method = %call.method,
                request_id = %call.request_id,
                trace_id = tracing::field::Empty,
            );
            if let Some(id) = call.trace_id {
                span.record("trace_id", tracing::field::display(id));
            }
            span.in_scope(events);
        })
    }

    /// As the task's call context writes them.
    fn in_task(call: &CallFields) -> String {
        let layer = |sink: Sink| -> Boxed {
            Box::new(
                fmt::layer()
                    .with_ansi(false)
                    .fmt_fields(PlainFields)
                    .event_format(CallLines { time: false })
                    .with_writer(move || sink.clone())
                    .with_filter(LevelFilter::INFO),
            )
        };
        lines(layer, |events| {
            CallFields::in_scope(&mut Some(call.clone()), events)
        })
    }

    #[test]
    fn a_call_kept_beside_the_task_is_logged_as_its_span_would_be() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        for call in [fields(None), fields(Some(trace))] {
            let want = with_span(&call);
            assert_eq!(in_task(&call), want);
            assert!(
                want.contains("grpc{method=tessera.v1.TokenService/Introspect request_id=req-1"),
                "{want}"
            );
            assert!(want.contains("}:inner{step=2}: inside flag=true"), "{want}");
            assert_eq!(want.lines().count(), 3, "{want}");
        }
    }

    #[test]
    fn a_scope_puts_back_what_was_current_and_its_fields_in_their_slot() {
        let current = || CALL.with(|c| c.borrow().as_ref().map(|f| f.request_id.to_string()));
        let mut outer = Some(fields(None));
        let mut inner = Some(CallFields {
            request_id: RequestId::from("req-2"),
            ..fields(None)
        });
        CallFields::in_scope(&mut outer, || {
            assert_eq!(current().expect("a call"), "req-1");
            CallFields::in_scope(&mut inner, || {
                assert_eq!(current().expect("a call"), "req-2");
            });
            assert_eq!(current().expect("a call"), "req-1");
        });
        assert_eq!(current(), None);
        assert!(outer.is_some() && inner.is_some());

        // Unwinding out of a scope puts things back too.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CallFields::in_scope(&mut outer, || panic!("in a call"))
        }));
        assert!(unwound.is_err());
        assert_eq!(current(), None);
        assert!(outer.is_some());
    }

    #[test]
    fn outside_a_call_a_line_has_no_call_context() {
        let sink = Sink::default();
        let out = sink.clone();
        let layer = fmt::layer()
            .with_ansi(false)
            .fmt_fields(PlainFields)
            .event_format(CallLines { time: true })
            .with_writer(move || out.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(port = 1, "serving");
        });
        let line = sink.text();
        // `2026-12-02T04:25:35.123456Z  INFO serving port=1`
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert_eq!(rest, " INFO serving port=1\n");
    }
}
