//! Telemetry: structured logs through `tracing`, and — when an OTLP endpoint is
//! configured — the same spans exported to OpenTelemetry over gRPC. Log ids (key id,
//! jti, sub), never token text.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
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
    let (spans, targets) = filter(&config.log_filter);
    // Colour only for a terminal: escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let text = (config.log_format == LogFormat::Text)
        .then(|| fmt::layer().with_target(false).with_ansi(ansi));
    let json =
        (config.log_format == LogFormat::Json).then(|| fmt::layer().json().with_target(false));
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
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("tessera")));
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(targets)
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

/// The log filter: a [`Targets`] for a plain list of `target=level` directives, decided
/// once per call site. [`EnvFilter`] only when a directive names a span or a field
/// (`[grpc{method=...}]`): to follow those, it takes a read lock on every span's enter,
/// exit and close, on every call.
fn filter(directives: &str) -> (Option<EnvFilter>, Option<Targets>) {
    if !directives.contains(['[', '{'])
        && let Ok(targets) = directives.parse::<Targets>()
    {
        return (None, Some(targets));
    }
    let env = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    (Some(env), None)
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
    use super::filter;

    #[test]
    fn only_span_directives_need_an_env_filter() {
        for plain in [
            "info",
            "info,tessera=debug",
            "warn,tessera::store=trace",
            "off",
        ] {
            let (env, targets) = filter(plain);
            assert!(env.is_none() && targets.is_some(), "{plain}");
        }
        for spans in ["info,[grpc]=debug", "[grpc{method=x}]=trace"] {
            let (env, targets) = filter(spans);
            assert!(env.is_some() && targets.is_none(), "{spans}");
        }
    }
}
