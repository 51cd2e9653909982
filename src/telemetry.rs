//! Telemetry: structured logs through `tracing`, and — when an OTLP endpoint is
//! configured — the same spans exported to OpenTelemetry over gRPC. Log ids (key id,
//! jti, sub), never token text.

mod call_context;

pub(crate) use call_context::CallFields;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{Config, LogFormat};

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("tessera: flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber (once; later calls are no-ops, as in tests). Must run
/// inside a Tokio runtime when an OTLP endpoint is set: the exporter's channel lives there.
pub fn init(config: &Config) -> Telemetry {
    // Two layers over the registry, the filter and the outputs, rather than one per
    // optional part: closing a span walks down the stack looking for the registry at
    // every level, and five levels made that 15 lookups per request.
    let targets = plain_targets(&config.log_filter);
    let plain_filter = targets.is_some();
    let filter: Box<dyn Layer<Registry> + Send + Sync> = match targets {
        Some(targets) => Box::new(targets),
        None => Box::new(
            EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info")),
        ),
    };
    let mut outputs: Vec<Box<dyn Layer<Filtered> + Send + Sync>> = Vec::with_capacity(2);
    // Colour only for a terminal: escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Calls keep their log context beside their task rather than in a span unless a
    // span is needed: for export, for a filter that names spans, for the JSON format
    // (which writes spans as objects), or for colours (which only that format paints).
    let in_task = config.log_format == LogFormat::Text
        && !ansi
        && config.otlp_endpoint.is_none()
        && plain_filter;
    outputs.push(match config.log_format {
        LogFormat::Text if in_task => Box::new(
            fmt::layer()
                .with_ansi(false)
                .fmt_fields(PlainFields)
                .event_format(call_context::CallLines { time: true }),
        ),
        LogFormat::Text => Box::new(
            fmt::layer()
                .with_target(false)
                .with_ansi(ansi)
                .fmt_fields(PlainFields),
        ),
        LogFormat::Json => Box::new(fmt::layer().json().with_target(false)),
    });
    let provider = config
        .otlp_endpoint
        .as_deref()
        .and_then(|endpoint| match exporter(endpoint) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("tessera: OTLP export disabled: {e}");
                None
            }
        });
    if let Some(p) = &provider {
        outputs.push(Box::new(
            tracing_opentelemetry::layer().with_tracer(p.tracer("tessera")),
        ));
    }
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(outputs)
        .try_init()
        .is_ok();
    CALLS_IN_TASK.store(installed && in_task, Ordering::Relaxed);
    Telemetry { provider }
}

/// Whether the installed subscriber writes a call's context from its task.
static CALLS_IN_TASK: AtomicBool = AtomicBool::new(false);

/// Do calls keep their log context beside their task ([`CallFields`]) instead of in a
/// span? Only under the subscriber [`init`] installs, and only when no span is needed.
pub(crate) fn calls_in_task() -> bool {
    CALLS_IN_TASK.load(Ordering::Relaxed)
}

/// The registry under the log filter: what the output layers sit on.
type Filtered = Layered<Box<dyn Layer<Registry> + Send + Sync>, Registry>;

/// The log filter as a [`Targets`], which decides once per call site, for a plain list
/// of `target=level` directives. `None` when a directive names a span or a field
/// (`[grpc{method=...}]`): those need an [`EnvFilter`], which takes a read lock on every
/// span's enter, exit and close, on every call.
fn plain_targets(directives: &str) -> Option<Targets> {
    if directives.contains(['[', '{']) {
        return None;
    }
    directives.parse().ok()
}

/// The text format's fields, as `tracing_subscriber`'s default writes them, through a
/// shorter path for the plain `name=value` case. Every request's span has its fields
/// formatted when it opens, logged or not; the default writes each name through an
/// ANSI painter, colours or not, which was half of that cost. The message (whose
/// control characters the default escapes), errors, raw identifiers and coloured
/// output still go through the default.
#[derive(Debug, Clone, Copy)]
struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = PlainVisitor {
            ansi: writer.has_ansi_escapes(),
            out: Staged {
                writer: writer.by_ref(),
                buf: [0; 128],
                len: 0,
            },
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result.and_then(|()| v.out.flush())
    }
}

struct PlainVisitor<'w> {
    out: Staged<'w>,
    ansi: bool,
    /// Nothing written yet: no separating space.
    empty: bool,
    result: std::fmt::Result,
}

impl PlainVisitor<'_> {
    /// One field through the default visitor.
    fn default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        if let Err(e) = self.out.flush() {
            self.result = Err(e);
            return;
        }
        let mut v = DefaultVisitor::new(self.out.writer.by_ref(), self.empty);
        record(&mut v);
        self.result = v.finish();
        self.empty = false;
    }
}

/// The fields, gathered on the stack and written at once. A span's fields go to a
/// string of their own, which starts empty: written piece by piece, it was reallocated
/// three times per request.
struct Staged<'w> {
    writer: Writer<'w>,
    buf: [u8; 128],
    len: usize,
}

impl Staged<'_> {
    fn flush(&mut self) -> std::fmt::Result {
        let staged = std::str::from_utf8(&self.buf[..self.len]).map_err(|_| std::fmt::Error)?;
        self.len = 0;
        self.writer.write_str(staged)
    }
}

impl std::fmt::Write for Staged<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.len + s.len() > self.buf.len() {
            self.flush()?;
            if s.len() > self.buf.len() {
                return self.writer.write_str(s);
            }
        }
        // Whole `str`s only, so the staged bytes are always UTF-8.
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.ansi || field.name() == "message" {
            self.default(|v| v.record_str(field, value));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Metadata of a `log` record, written elsewhere (as the default does).
        if name.starts_with("log.") {
            return;
        }
        if self.ansi || name == "message" || name.starts_with("r#") {
            return self.default(|v| v.record_debug(field, value));
        }
        // Plain writes: `write!` with four arguments cost twice as much.
        let w = &mut self.out;
        self.result = (if self.empty {
            Ok(())
        } else {
            w.write_char(' ')
        })
        .and_then(|()| w.write_str(name))
        .and_then(|()| w.write_char('='))
        .and_then(|()| write!(w, "{value:?}"));
        self.empty = false;
    }
}

fn exporter(endpoint: &str) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("tessera").build())
        .with_batch_exporter(exporter)
        .build())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::DefaultFields;

    use super::*;

    /// A log sink the test can read.
    #[derive(Clone, Default)]
    pub(super) struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Sink {
        /// What was written.
        pub(super) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One request span and one event in it, as the text format writes them.
    fn logged<N: for<'w> FormatFields<'w> + Send + Sync + 'static>(fields: N) -> String {
        let sink = Sink::default();
        let out = sink.clone();
        let layer = fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(fields)
            .with_writer(move || out.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!(
                "grpc",
                method = %"tessera.v1.TokenService/Introspect",
                request_id = %"req-1",
                n = 3u64,
                quoted = "a \"b\"",
                r#type = "raw",
                trace_id = tracing::field::Empty,
            );
            let _in = span.enter();
            let err = std::io::Error::other("disk on fire");
            tracing::info!(
                error = &err as &(dyn std::error::Error + 'static),
                flag = true,
                "refused \x1b[31m {}",
                7
            );
        });
        sink.text()
    }

    #[test]
    fn plain_fields_write_what_the_default_writes() {
        let plain = logged(PlainFields);
        assert_eq!(plain, logged(DefaultFields::new()));
        assert!(
            plain.contains(
                "method=tessera.v1.TokenService/Introspect request_id=req-1 n=3 \
                 quoted=\"a \\\"b\\\"\" type=\"raw\""
            ),
            "{plain}"
        );
        assert!(
            plain.contains("refused \\x1b[31m 7"),
            "control characters escaped: {plain}"
        );
    }

    #[test]
    fn only_span_directives_need_an_env_filter() {
        for plain in [
            "info",
            "info,tessera=debug",
            "warn,tessera::store=trace",
            "off",
        ] {
            assert!(plain_targets(plain).is_some(), "{plain}");
        }
        for spans in ["info,[grpc]=debug", "[grpc{method=x}]=trace"] {
            assert!(plain_targets(spans).is_none(), "{spans}");
        }
    }
}
