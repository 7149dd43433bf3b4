//! Logs and traces: tracing to stderr as text or JSON, and OpenTelemetry export over OTLP/HTTP
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::LogFormat;

/// Keeps the trace exporter alive; flushes it when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(Err(err)) = self.provider.take().map(|p| p.shutdown()) {
            eprintln!("warning: could not flush traces: {err}");
        }
    }
}

/// Installs the global subscriber. Returns an error if the OTLP exporter cannot be built.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(filter)?;
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let endpoint =
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|v| !v.trim().is_empty());
    let (otel_layer, provider) = match endpoint {
        Some(_) => {
            // The exporter reads the endpoint and headers from the standard OTEL_* variables.
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("sspr-fleet").build())
                .build();
            let tracer = provider.tracer("sspr-fleet");
            (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init()?;
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Ok(TelemetryGuard { provider })
}
