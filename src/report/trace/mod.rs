//! Runs as OpenTelemetry traces (`--otlp`, `OTEL_EXPORTER_OTLP_*`): each run, as it ends,
//! becomes one trace of spans with the times its record holds (`spans.rs`), handed to the
//! OpenTelemetry SDK's batch processor, which posts them over OTLP/HTTP (`export.rs`). A
//! collector that is down or refuses never stops the batch: what it did not take is counted
//! and said once at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};

use crate::record::{Reporter, RunOutcome};
use crate::secret::{Secret, Secrets};

mod export;
mod spans;

/// The longest the end of a batch waits for the collector.
pub(crate) const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Spans waiting for the collector at most; past it, new ones are dropped (and counted).
const QUEUE: usize = 32 * 1024;

/// Where and how traces are sent: settled once from `--otlp` and the standard variables.
#[derive(Debug, Clone)]
pub(crate) struct TraceConfig {
    /// The URL spans are posted to (`.../v1/traces`).
    pub url: String,
    pub protocol: TraceProtocol,
    /// Headers for the collector (`OTEL_EXPORTER_OTLP_HEADERS`): sent to it, written nowhere.
    pub headers: Vec<(String, Secret)>,
    /// `service.name` (`OTEL_SERVICE_NAME`, else `runner`).
    pub service_name: String,
    /// `--otlp-content`: the messages, tool arguments and results go into the spans too.
    pub content: bool,
}

/// OTLP over HTTP, as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TraceProtocol {
    /// `http/protobuf`, the default.
    Protobuf,
    /// `http/json`.
    Json,
}

impl TraceProtocol {
    /// The protocol named `text`; `None` for gRPC and anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "http/protobuf" => Some(TraceProtocol::Protobuf),
            "http/json" => Some(TraceProtocol::Json),
            _ => None,
        }
    }
}

/// The batch's exporter: a reporter that turns each finished run into a trace.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    content: bool,
    /// Spans handed to the processor.
    made: usize,
    tally: Arc<export::Tally>,
    /// Where they go, for the last line (credentials redacted).
    url: String,
}

/// What became of a batch's spans.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The collector took every span.
    Sent { spans: usize, url: String },
    /// Some were lost: how many, where to, and why (a sentence, redacted).
    Lost { lost: usize, spans: usize, url: String, why: String },
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Sent { spans, url } => write!(f, "traces: {spans} spans sent to {url}"),
            Delivery::Lost { lost, spans, url, why } => {
                write!(f, "traces: {lost} of {spans} spans were not sent to {url}: {why}")
            }
        }
    }
}

impl Traces {
    /// Starts the exporter (a thread of the SDK's batch processor); must run on runner's
    /// runtime, which carries its requests. Nothing is sent before the first run ends.
    pub(crate) fn start(config: &TraceConfig, http: reqwest::Client, secrets: Secrets) -> anyhow::Result<Self> {
        let tally = Arc::new(export::Tally::default());
        let client = export::Client {
            http,
            runtime: tokio::runtime::Handle::current(),
            timeout: FLUSH_LIMIT,
            secrets: secrets.clone(),
            tally: tally.clone(),
        };
        let headers: HashMap<String, String> =
            config.headers.iter().map(|(name, value)| (name.clone(), value.expose().to_owned())).collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(config.url.clone())
            .with_protocol(match config.protocol {
                TraceProtocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
                TraceProtocol::Json => opentelemetry_otlp::Protocol::HttpJson,
            })
            .with_headers(headers)
            .with_timeout(FLUSH_LIMIT)
            .build()
            .map_err(|err| anyhow::anyhow!("traces: {}", secrets.redact(&err.to_string())))?;
        let exporter = export::Counted { inner: exporter, tally: tally.clone() };
        let batches = BatchConfigBuilder::default().with_max_queue_size(QUEUE).build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .with_max_events_per_span(spans::MAX_EVENTS)
            .with_max_attributes_per_span(64)
            .build();
        let scope = InstrumentationScope::builder("runner").with_version(env!("CARGO_PKG_VERSION")).build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Self { provider, tracer, content: config.content, made: 0, tally, url: secrets.redact(&config.url) })
    }

    /// Sends what waits (at most [`FLUSH_LIMIT`]) and says what became of every span. Blocks:
    /// call it outside the runtime's workers (`block_in_place`).
    pub(crate) fn finish(self) -> Delivery {
        let ended = self.provider.shutdown_with_timeout(FLUSH_LIMIT);
        let spans = self.made;
        let exported = self.tally.exported.load(Ordering::Relaxed).min(spans);
        if exported == spans {
            return Delivery::Sent { spans, url: self.url };
        }
        let why = match (self.tally.why(), ended) {
            (Some(why), _) => why,
            // The processor's own failure to end is a time-out (wrapped in the provider's words).
            (None, Err(_)) => {
                format!("the collector had not taken them when the {} s wait at the end ran out", FLUSH_LIMIT.as_secs())
            }
            (None, _) => "more spans waited than the queue holds (the collector is slower than the runs)".to_owned(),
        };
        Delivery::Lost { lost: spans - exported, spans, url: self.url, why }
    }
}

impl Reporter for Traces {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        if let RunOutcome::Finished(record) = outcome {
            self.made += spans::export(&self.tracer, record, self.content);
        }
        Ok(())
    }
}
