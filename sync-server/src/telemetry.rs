//! Logs and optional trace export: the `tracing` subscriber (pretty or JSON to stderr, one level) and, when an OTLP endpoint is set, an OpenTelemetry exporter of the server's spans (OTLP over HTTP with JSON bodies).
//!
//! Spans: `http_request` (route template, method, status) around every
//! matched request, `group_commit` (pushes, ops) around every realtime
//! commit. No span field carries a space name, token or value.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The trace exporter, if one runs: flush it before the process exits.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a bad endpoint URL).
    #[error("otlp exporter: {0}")]
    Exporter(String),
    /// A subscriber was installed already.
    #[error("logs: {0}")]
    Subscriber(String),
}

/// Installs the process's subscriber: logs at `level` to stderr (JSON or
/// pretty), and spans to `otlp_endpoint` (a base URL: `/v1/traces` is
/// appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`) when given. Call it
/// before any async runtime starts: the exporter's HTTP client is a
/// blocking one, driven from the batch processor's own thread.
pub fn init(
    json: bool,
    level: tracing::Level,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    let provider = otlp_endpoint
        .map(|endpoint| {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            Ok::<_, TelemetryError>(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        Resource::builder()
                            .with_service_name("arbor-server")
                            .build(),
                    )
                    .build(),
            )
        })
        .transpose()?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>> =
        vec![if json {
            fmt.json().with_filter(filter).boxed()
        } else {
            fmt.with_filter(filter).boxed()
        }];
    if let Some(p) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("arbor-server"))
                .with_filter(filter)
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still buffered (at most a few seconds).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace export: {e}");
        }
    }
}
