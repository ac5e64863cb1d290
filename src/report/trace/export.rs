//! How spans leave: the OTLP exporter posts through runner's own HTTP client (one connection
//! pool, the same redirect rule), and a count of what the collector took, so the end of the
//! batch can say how many spans were lost and why.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::secret::Secrets;

/// The most of a collector's answer that is read: OTLP answers are a few bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// What became of the spans handed to the exporter.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Spans the collector accepted.
    pub exported: AtomicUsize,
    /// Why the first export that failed failed, in words, redacted.
    why: Mutex<Option<String>>,
}

impl Tally {
    /// Keeps the first reason given; a later one (the SDK's shorter word for the same failure)
    /// adds nothing.
    fn failed(&self, why: String) {
        self.why.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
    }

    /// Why an export failed, when one did.
    pub(super) fn why(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The exporter's HTTP client: runner's reqwest client, driven on runner's runtime. The SDK's
/// batch processor exports from a thread of its own, outside any runtime; each request is
/// spawned onto the runtime and awaited from there.
#[derive(Debug)]
pub(super) struct Client {
    pub http: reqwest::Client,
    pub runtime: tokio::runtime::Handle,
    /// Each request's limit: a collector that does not answer costs this much, once.
    pub timeout: Duration,
    pub secrets: Secrets,
    pub tally: Arc<Tally>,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        *request.timeout_mut() = Some(self.timeout);
        let http = self.http.clone();
        let answer = self.runtime.spawn(async move {
            let mut response = http.execute(request).await?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_ANSWER.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            let mut answer = Response::builder().status(response.status().as_u16());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            Ok::<_, reqwest::Error>(answer.body(Bytes::from(body)))
        });
        let answer = match answer.await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(err)) => {
                self.tally.failed(self.secrets.redact(&failure(&err, self.timeout)));
                return Err(Box::new(err));
            }
            Err(err) => return Err(Box::new(err)),
        };
        if !answer.status().is_success() {
            let said = String::from_utf8_lossy(answer.body());
            let said = crate::text::printable(said.trim());
            let said: String = said.chars().take(200).collect();
            let said = self.secrets.redact(&said);
            let status = answer.status();
            self.tally.failed(if said.is_empty() {
                format!("the collector answered HTTP {status}")
            } else {
                format!("the collector answered HTTP {status}: {said}")
            });
        }
        Ok(answer)
    }
}

/// Why a request to the collector got no answer, in words: the innermost cause says it
/// (`Connection refused`), the outer ones only repeat the URL.
fn failure(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("the collector did not answer within {} s", timeout.as_secs());
    }
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if err.is_connect() { format!("cannot connect to the collector: {cause}") } else { crate::http::error_chain(err) }
}

/// An exporter that counts what its inner exporter delivered.
#[derive(Debug)]
pub(super) struct Counted<E> {
    pub inner: E,
    pub tally: Arc<Tally>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.tally.exported.fetch_add(spans, Ordering::Relaxed);
            }
            Err(err) => self.tally.failed(err.to_string()),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
