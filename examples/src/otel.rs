//! EventCore's spans and metrics through the OpenTelemetry SDK, into
//! in-memory exporters: what an application wires up to ship them to a
//! collector (swap the exporters for OTLP ones; nothing else changes).
//!
//! Spans reach OpenTelemetry through `tracing-opentelemetry` (the
//! `otel.name`, `otel.kind` and `otel.status_code` fields EventCore sets
//! become the span's name, kind and status), metrics through
//! `metrics-exporter-otel`, a `metrics` recorder that records into an
//! OpenTelemetry meter.
//!
//! ```
//! use eventcore_examples::otel::InMemoryTelemetry;
//!
//! let telemetry = InMemoryTelemetry::new();
//! let _spans = tracing::subscriber::set_default(telemetry.subscriber());
//! let recorder = telemetry.recorder();
//! let _metrics = metrics::set_default_local_recorder(&recorder);
//! // ... run commands, then:
//! telemetry.flush()?;
//! assert!(telemetry.spans()?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use metrics_exporter_otel::OpenTelemetryRecorder;
use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _};
use opentelemetry_sdk::{
    error::OTelSdkError,
    metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider, data::ResourceMetrics},
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use tracing_subscriber::layer::SubscriberExt as _;

/// Tracer and meter providers exporting into memory.
pub struct InMemoryTelemetry {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Default for InMemoryTelemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryTelemetry {
    /// Providers with in-memory exporters: spans exported as they end,
    /// metrics when [`flush`](Self::flush)ed.
    pub fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Self {
            spans,
            metrics,
            tracer_provider,
            meter_provider,
        }
    }

    /// A `tracing` subscriber whose spans go to OpenTelemetry.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let tracer = self.tracer_provider.tracer("eventcore");
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    /// A `metrics` recorder whose metrics go to OpenTelemetry.
    pub fn recorder(&self) -> OpenTelemetryRecorder {
        OpenTelemetryRecorder::new(self.meter_provider.meter("eventcore"))
    }

    /// Exports everything recorded so far.
    ///
    /// # Errors
    /// The SDK's error if a provider cannot export.
    pub fn flush(&self) -> Result<(), OTelSdkError> {
        self.tracer_provider.force_flush()?;
        self.meter_provider.force_flush()
    }

    /// The spans exported so far.
    ///
    /// # Errors
    /// The exporter's error.
    pub fn spans(&self) -> Result<Vec<SpanData>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.spans.get_finished_spans()?)
    }

    /// The metrics exported so far, one entry per flush.
    ///
    /// # Errors
    /// The exporter's error.
    pub fn metrics(
        &self,
    ) -> Result<Vec<ResourceMetrics>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.metrics.get_finished_metrics()?)
    }

    /// The names of the metrics exported so far.
    ///
    /// # Errors
    /// The exporter's error.
    pub fn metric_names(&self) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        let mut names: Vec<String> = self
            .metrics()?
            .iter()
            .flat_map(|resource| resource.scope_metrics())
            .flat_map(|scope| scope.metrics())
            .map(|metric| metric.name().to_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}
