//! What every HTTP provider shares: where requests go and with which headers, the timeouts
//! (to the first byte, then between pieces of the body), the retry loop with the endpoint's
//! shared bound, and keeping the key out of everything a server sends back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::retry::{Limiter, RetryPolicy, asked_delay, jitter};
use super::sse::SseReader;
use super::{Attempt, Completion, Exchange, ModelError, ProviderError};
use crate::secret::{Secrets, StreamRedactor};

/// Longest error body kept in a log or message.
pub(crate) const MAX_ERROR_BODY: usize = 16 * 1024;

/// An HTTP endpoint that takes JSON requests.
pub(crate) struct Remote {
    http: reqwest::Client,
    /// Where requests are posted.
    url: String,
    /// What the log calls the endpoint.
    base_url: String,
    /// Sent with every request: authentication and the endpoint's own headers, every one
    /// marked sensitive (never shown by a debug print).
    headers: HeaderMap,
    /// Looked for in everything a server sends back: the batch's every secret.
    secrets: Secrets,
    timeout: Duration,
    retry: RetryPolicy,
    limiter: Arc<Limiter>,
    /// The server is on this machine or a private network (see
    /// [`RetryPolicy::retry_local_timeouts`]).
    local: bool,
}

/// One attempt's outcome and whether another attempt could fare better.
pub(crate) struct Sent {
    pub result: Result<Completion, ProviderError>,
    pub status: Option<u16>,
    /// Worth another attempt (a busy or failing server, a lost or cut reply).
    pub retryable: bool,
    /// The delay the server asked for.
    pub asked: Option<Duration>,
}

impl Sent {
    pub(crate) fn failed(error: ProviderError, status: Option<u16>, retryable: bool) -> Self {
        Self { result: Err(error), status, retryable, asked: None }
    }

    /// A streamed answer's outcome (`retryable` as the stream reader says), never retried
    /// once text has reached the terminal (`delivered`): another attempt would print it twice.
    pub(crate) fn streamed(result: Result<Completion, (ProviderError, bool)>, delivered: bool, status: u16) -> Self {
        let (result, retryable) = match result {
            Ok(completion) => (Ok(completion), false),
            Err((error, retryable)) => (Err(error), retryable && !delivered),
        };
        Self { result, status: Some(status), retryable, asked: None }
    }
}

/// A response whose status is known, before its body is read.
pub(crate) struct Answer {
    pub response: reqwest::Response,
    pub status: u16,
    pub asked: Option<Duration>,
}

impl Remote {
    /// Requests to `url`, logged as `base_url` (credentials written into it redacted), with
    /// `headers` (values are sent as they are and never shown).
    pub(crate) fn new(
        http: reqwest::Client,
        url: String,
        base_url: String,
        headers: &[(String, String)],
        secrets: Secrets,
        timeout: Duration,
    ) -> Result<Self, ModelError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ModelError::HeaderName(name.clone()))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| ModelError::HeaderValue(name.to_string()))?;
            value.set_sensitive(true);
            map.append(name, value);
        }
        let local = is_local(&url);
        let base_url = secrets.redact(&base_url);
        Ok(Self {
            http,
            url,
            base_url,
            headers: map,
            secrets,
            timeout,
            retry: RetryPolicy::default(),
            limiter: Arc::default(),
            local,
        })
    }

    /// Retries by `policy`; requests in flight bounded by `limiter` (one per endpoint, shared
    /// by every model on it).
    pub(crate) fn with_retry(mut self, policy: RetryPolicy, limiter: Arc<Limiter>) -> Self {
        self.retry = policy;
        self.limiter = limiter;
        self
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `text` with every secret replaced wherever it appears.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// A server's text (an error body, a partial reply), redacted whole and then cut.
    pub(crate) fn shown(&self, text: &str) -> String {
        truncate(&self.redact(text), MAX_ERROR_BODY)
    }

    /// A reply with the key replaced wherever a server echoed it. Text is redacted; a value
    /// the model produced as data (arguments, an id, a name, the finish reason) is never
    /// rewritten, only replaced whole when it holds the key.
    pub(crate) fn redact_completion(&self, mut completion: Completion) -> Completion {
        let key = &self.secrets;
        completion.content = completion.content.map(|text| key.redact(&text));
        completion.finish_reason = completion.finish_reason.map(|reason| key.screen(reason));
        for call in &mut completion.tool_calls {
            call.id = key.screen(std::mem::take(&mut call.id));
            call.function.name = key.screen(std::mem::take(&mut call.function.name));
            call.function.arguments = key.screen(std::mem::take(&mut call.function.arguments));
        }
        completion.raw_usage = completion.raw_usage.map(|raw| key.redact_value(raw));
        completion
    }

    /// Posts `body` as JSON and waits for the status: the timeout bounds the wait for the
    /// first byte (connection and headers). A failure to send is always worth another attempt
    /// (one to encode, never).
    pub(crate) async fn post(&self, body: &impl serde::Serialize) -> Result<Answer, Sent> {
        let body = serde_json::to_vec(body).map_err(|err| {
            Sent::failed(ProviderError::Transport(format!("cannot encode request: {err}")), None, false)
        })?;
        let builder =
            self.http.post(&self.url).headers(self.headers.clone()).header(CONTENT_TYPE, "application/json").body(body);
        let response = match tokio::time::timeout(self.timeout, builder.send()).await {
            Ok(Ok(response)) => response,
            // Refused, reset or timed out before an answer: the request may be sent again.
            Ok(Err(err)) => return Err(Sent::failed(self.transport_error(&err), None, true)),
            Err(_) => {
                return Err(Sent::failed(ProviderError::Timeout(self.timeout), None, true));
            }
        };
        let status = response.status().as_u16();
        if let Some(location) = crate::http::unfollowed_redirect(&response) {
            // The shared client follows a redirect only within its origin; one that leaves it
            // is not followed, so the key and headers never reach another server.
            let body = self.redact(&format!(
                "the server redirected to another origin ({location}); runner does not follow it, so that the key and headers go only where the base URL says: set the base URL to the server's own address"
            ));
            return Err(Sent::failed(ProviderError::Status { status, body }, Some(status), false));
        }
        let asked = asked_delay(response.headers());
        Ok(Answer { response, status, asked })
    }

    /// The whole body of a response with `status`, each wait for its next piece bounded by
    /// the timeout. A body cut short, or stalled, is worth another attempt.
    pub(crate) async fn read_body(&self, mut response: reqwest::Response, status: u16) -> Result<Vec<u8>, Sent> {
        let mut body = Vec::new();
        loop {
            match self.next_chunk(&mut response).await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return Ok(body),
                Err(error) => return Err(Sent::failed(error, Some(status), true)),
            }
        }
    }

    /// The next piece of a body, waited for no longer than the timeout.
    pub(crate) async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, ProviderError> {
        match tokio::time::timeout(self.timeout, response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(err)) => Err(self.transport_error(&err)),
            Err(_) => Err(ProviderError::Stalled(self.timeout)),
        }
    }

    /// Reads a `text/event-stream` body: each event's data goes to `event` with a `show` that
    /// hands text to `on_text` as it arrives, the key held back until it is known not to be
    /// one (`delivered` says whether anything was shown). Ends when `event` returns `true`
    /// (the stream said it is done) or the body ends. An error says whether another attempt
    /// could fare better.
    pub(crate) async fn read_events(
        &self,
        mut response: reqwest::Response,
        on_text: super::TextSink<'_>,
        delivered: &mut bool,
        mut event: impl FnMut(&str, &mut dyn FnMut(&str)) -> Result<bool, (ProviderError, bool)>,
    ) -> Result<(), (ProviderError, bool)> {
        let mut reader = SseReader::default();
        let mut shown = StreamRedactor::new(&self.secrets);
        let mut show = |text: &str| {
            let safe = shown.push(text);
            if !safe.is_empty() {
                *delivered = true;
                on_text(&safe);
            }
        };
        let mut done = false;
        while !done {
            let events = match self.next_chunk(&mut response).await.map_err(|e| (e, true))? {
                Some(chunk) => reader.feed(&chunk),
                None => {
                    let events = reader.finish();
                    if events.is_empty() {
                        break;
                    }
                    events
                }
            };
            for data in events {
                done = event(&data, &mut show)?;
                if done {
                    break;
                }
            }
        }
        let rest = shown.finish();
        if !rest.is_empty() {
            *delivered = true;
            on_text(&rest);
        }
        Ok(())
    }

    fn transport_error(&self, err: &reqwest::Error) -> ProviderError {
        if err.is_timeout() {
            return ProviderError::Timeout(self.timeout);
        }
        ProviderError::Transport(self.redact(&crate::http::error_chain(err)))
    }

    /// Runs `send`, and again while the retry policy says another attempt could fare better;
    /// every attempt waits for a place under the endpoint's bound.
    pub(crate) async fn attempts<'a>(&'a self, send: impl Fn() -> BoxFuture<'a, Sent>) -> Exchange {
        let mut attempts = Vec::new();
        loop {
            let permit = self.limiter.acquire().await;
            let started = Instant::now();
            let sent = send().await;
            match &sent.result {
                Ok(_) => self.limiter.succeeded(),
                Err(_) if sent.status == Some(429) => self.limiter.throttled(&permit),
                Err(_) => {}
            }
            drop(permit);
            let number = attempts.len() as u32 + 1;
            let timed_out = matches!(sent.result, Err(ProviderError::Timeout(_) | ProviderError::Stalled(_)));
            let local_timeout = timed_out && self.local && !self.retry.retry_local_timeouts;
            let retry = sent.result.is_err() && sent.retryable && !local_timeout && number <= self.retry.max_retries;
            let wait = retry.then(|| self.retry.delay(number, sent.asked, jitter()));
            attempts.push(Attempt {
                attempt: number,
                latency_ms: started.elapsed().as_millis() as u64,
                status: sent.status,
                error: sent.result.as_ref().err().map(ToString::to_string),
                retry_in_ms: wait.map(|w| w.as_millis() as u64),
            });
            if let Some(last) = attempts.last() {
                tracing::debug!(url = %self.redact(&self.url), attempt = last.attempt, status = ?last.status, error = ?last.error, retry_in_ms = ?last.retry_in_ms, "request attempt");
            }
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    return Exchange { result: sent.result, attempts, cache: Default::default() };
                }
            }
        }
    }
}

/// Whether `url`'s host is this machine or a private network: a loopback, private or
/// link-local address, `localhost`, or a name ending in `.local` / `.internal`.
fn is_local(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_ascii_lowercase)) else {
        return false;
    };
    match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => {
            host == "localhost"
                || host.ends_with(".localhost")
                || host.ends_with(".local")
                || host.ends_with(".internal")
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn local_and_private_hosts_are_told_apart() {
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://localhost:11434/v1",
            "http://[::1]:8000",
            "http://10.1.2.3/v1",
            "http://192.168.0.5",
            "http://172.20.0.1",
            "http://llm.internal/v1",
            "http://[fd00::1]/",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in ["https://api.openai.com/v1", "http://8.8.8.8/", "http://172.32.0.1", "not a url"] {
            assert!(!is_local(url), "{url}");
        }
    }
}
