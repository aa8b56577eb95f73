//! Tracing to stdout, OpenTelemetry export when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, and W3C trace context carried in NATS headers.
//!
//! With an OTLP endpoint, every message handled is a span: a child of the
//! sender's span, exported, and the parent of what the handler publishes.
//! Without one, spans would be built for nobody (a third of the bus's
//! throughput on two cores, see bench/results/bus.md), so the runtime only
//! carries the incoming `traceparent`/`tracestate` through to what the
//! handler publishes, like any uninstrumented hop: the trace stays whole.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use landlord_contract::header;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter could not be built: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Holds the tracer provider; [`Telemetry::shutdown`] flushes pending spans
/// and is the last thing a service does.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber. `RUST_LOG` filters the log lines
    /// (default `info`); spans at `info` and above are always traced.
    /// OTLP over HTTP/protobuf is used when `otlp_endpoint` is set; the
    /// exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables itself.
    pub fn init(service: &str, otlp_endpoint: Option<&str>) -> Result<Self, TelemetryError> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        let exporting = otlp_endpoint.is_some();
        if exporting {
            // The exporter's reqwest client needs the crypto provider.
            crate::http::install_crypto_provider();
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // RUST_LOG filters what is printed only: exported spans must exist
        // whatever the log level.
        let otel = exporting.then(|| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service.to_owned()))
                .with_filter(LevelFilter::INFO)
        });
        tracing_subscriber::registry()
            .with(fmt::layer().with_target(false).with_filter(filter))
            .with(otel)
            .try_init()?;
        EXPORTING.store(exporting, Ordering::Relaxed);
        Ok(Self { provider })
    }

    /// Flushes and stops export.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Trace context of the message being handled, when spans are not built.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

tokio::task_local! {
    static INCOMING: Incoming;
}

/// Writes the current trace context as `traceparent`/`tracestate`: the
/// current span's when exporting, else the one of the message being handled.
pub fn inject_current(headers: &mut HeaderMap) {
    if EXPORTING.load(Ordering::Relaxed) {
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
        return;
    }
    let _ = INCOMING.try_with(|incoming| {
        if let Some(traceparent) = &incoming.traceparent {
            headers.insert(header::TRACEPARENT, traceparent.as_str());
        }
        if let Some(tracestate) = &incoming.tracestate {
            headers.insert(header::TRACESTATE, tracestate.as_str());
        }
    });
}

/// The current trace context as `(traceparent, tracestate)`, for storing
/// with work that is published later (an outbox row).
pub fn current_trace() -> Option<(String, Option<String>)> {
    let mut headers = HeaderMap::new();
    inject_current(&mut headers);
    let traceparent = headers.get(header::TRACEPARENT)?.as_str().to_owned();
    Some((traceparent, headers.get(header::TRACESTATE).map(|v| v.as_str().to_owned())))
}

/// Runs `work` as the continuation of the trace carried in `headers`: as a
/// child of it when exporting, else by handing the context through.
pub async fn continue_trace<F: std::future::Future>(
    span: &tracing::Span,
    headers: Option<&HeaderMap>,
    work: F,
) -> F::Output {
    let Some(headers) = headers else {
        return work.await;
    };
    if EXPORTING.load(Ordering::Relaxed) {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        // A span disabled by the filter cannot take a parent; nothing to do then.
        let _ = span.set_parent(parent);
        return work.await;
    }
    let value = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let incoming = Incoming { traceparent: value(header::TRACEPARENT), tracestate: value(header::TRACESTATE) };
    INCOMING.scope(incoming, work).await
}
