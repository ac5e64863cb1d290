//! The Chat Completions client: OpenAI and every OpenAI-compatible server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::retry::{Limiter, RetryPolicy, asked_delay, jitter};
use super::sse::SseReader;
use super::wire::{ChatChunk, ChatRequest, ChatResponse, StreamOptions, ToolCallDelta};
use super::{Attempt, Completion, CompletionRequest, Exchange, Provider, ProviderError, Secret, StreamRedactor};
use crate::message::{FunctionCall, ToolCall};

/// Longest error body kept in a log or message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Which request field carries the output token cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_completion_tokens`: what OpenAI's own API takes (its newer models refuse `max_tokens`).
    MaxCompletionTokens,
    /// `max_tokens`: what most OpenAI-compatible servers take.
    MaxTokens,
}

/// A Chat Completions endpoint.
pub struct OpenAiProvider {
    http: reqwest::Client,
    url: String,
    base_url: String,
    api_key: Option<Secret>,
    timeout: Duration,
    max_tokens_field: MaxTokensField,
    retry: RetryPolicy,
    limiter: Arc<Limiter>,
}

/// One attempt's outcome and whether another attempt could fare better.
struct Sent {
    result: Result<Completion, ProviderError>,
    status: Option<u16>,
    /// Worth another attempt (a busy or failing server, a lost or cut reply).
    retryable: bool,
    /// The delay the server asked for.
    asked: Option<Duration>,
}

impl Sent {
    fn failed(error: ProviderError, status: Option<u16>, retryable: bool) -> Self {
        Self { result: Err(error), status, retryable, asked: None }
    }
}

impl OpenAiProvider {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`) over the shared `http` pool.
    pub(crate) fn new(http: reqwest::Client, base_url: &str, api_key: Option<Secret>, timeout: Duration) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let max_tokens_field = if base_url.starts_with("https://api.openai.com") {
            MaxTokensField::MaxCompletionTokens
        } else {
            MaxTokensField::MaxTokens
        };
        Self {
            http,
            url: format!("{base_url}/chat/completions"),
            base_url,
            api_key,
            timeout,
            max_tokens_field,
            retry: RetryPolicy::default(),
            limiter: Arc::default(),
        }
    }

    /// Retries by `policy`; requests in flight bounded by `limiter` (one per endpoint, shared
    /// by every model on it).
    pub(crate) fn with_retry(mut self, policy: RetryPolicy, limiter: Arc<Limiter>) -> Self {
        self.retry = policy;
        self.limiter = limiter;
        self
    }

    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => key.redact(text),
            None => text.to_owned(),
        }
    }

    async fn send(&self, request: CompletionRequest<'_>) -> Sent {
        let max_tokens = request.sampling.max_tokens;
        let body = ChatRequest {
            model: request.model,
            messages: request.messages,
            tools: (!request.tools.is_empty()).then_some(request.tools),
            tool_choice: (!request.tools.is_empty()).then_some("auto"),
            temperature: request.sampling.temperature,
            top_p: request.sampling.top_p,
            max_tokens: max_tokens.filter(|_| self.max_tokens_field == MaxTokensField::MaxTokens),
            max_completion_tokens: max_tokens
                .filter(|_| self.max_tokens_field == MaxTokensField::MaxCompletionTokens),
            seed: request.sampling.seed,
            stream: request.on_text.is_some().then_some(true),
            stream_options: request.on_text.is_some().then_some(StreamOptions { include_usage: true }),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(err) => return Sent::failed(ProviderError::Transport(format!("cannot encode request: {err}")), None, false),
        };
        let mut builder = self.http.post(&self.url).header(CONTENT_TYPE, "application/json").body(body);
        if let Some(key) = &self.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        // The timeout bounds the wait for the first byte (connection and headers), then every
        // wait between two pieces of the body: a stream that keeps delivering is never cut.
        let response = match tokio::time::timeout(self.timeout, builder.send()).await {
            Ok(Ok(response)) => response,
            // Refused, reset or timed out before an answer: the request may be sent again.
            Ok(Err(err)) => return Sent::failed(self.transport_error(&err), None, true),
            Err(_) => return Sent::failed(ProviderError::Timeout(self.timeout), None, true),
        };
        let status = response.status().as_u16();
        let asked = asked_delay(response.headers());
        if let Some(on_text) = request.on_text
            && (200..300).contains(&status)
        {
            let mut delivered = false;
            let (result, retryable) = match self.read_stream(response, on_text, &mut delivered).await {
                Ok(completion) => (Ok(completion), false),
                // Once text has reached the terminal, another attempt would print it twice.
                Err((error, retryable)) => (Err(error), retryable && !delivered),
            };
            return Sent { result, status: Some(status), retryable, asked: None };
        }
        let bytes = match self.read_body(response).await {
            Ok(bytes) => bytes,
            // The body was cut short, or stalled.
            Err(error) => return Sent::failed(error, Some(status), true),
        };
        // Redacted whole, then cut: a cut never leaves part of a key behind.
        let text = || truncate(&self.redact(&String::from_utf8_lossy(&bytes)), MAX_ERROR_BODY);
        if !(200..300).contains(&status) {
            let body = text();
            // As OpenAI's own clients do: 408, 409, 429 and 5xx are worth another attempt,
            // except a 429 that says the account's quota is spent.
            let retryable = matches!(status, 408 | 409 | 429 | 500..) && !(status == 429 && body.contains("insufficient_quota"));
            return Sent { result: Err(ProviderError::Status { status, body }), status: Some(status), retryable, asked };
        }
        let parsed: ChatResponse = match serde_json::from_slice(&bytes) {
            Ok(parsed) => parsed,
            Err(err) => {
                // JSON that ends early is a body cut short; other bad JSON would come again.
                let truncated = err.is_eof();
                let reason = if truncated { format!("the response body was cut short ({err})") } else { format!("not a Chat Completions response ({err})") };
                return Sent::failed(ProviderError::InvalidResponse { reason, body: text() }, Some(status), truncated);
            }
        };
        let usage = parsed.usage.as_ref().map(Into::into);
        let Some(choice) = parsed.choices.into_iter().next() else {
            let reason = "response has no choices".to_owned();
            return Sent::failed(ProviderError::InvalidResponse { reason, body: text() }, Some(status), false);
        };
        let message = choice.message;
        let content = message.content.or(message.refusal);
        let completion = self.redact_completion(Completion {
            content,
            tool_calls: message.tool_calls.unwrap_or_default(),
            finish_reason: choice.finish_reason,
            usage,
        });
        Sent { result: Ok(completion), status: Some(status), retryable: false, asked: None }
    }

    /// The whole body, each wait for its next piece bounded by the timeout.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut response).await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn next_chunk(&self, response: &mut reqwest::Response) -> Result<Option<bytes::Bytes>, ProviderError> {
        match tokio::time::timeout(self.timeout, response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(err)) => Err(self.transport_error(&err)),
            Err(_) => Err(ProviderError::Stalled(self.timeout)),
        }
    }

    /// Reads a `text/event-stream` reply: text deltas go to `on_text` as they arrive (with
    /// the key held back until it is known not to be one), tool calls are put together from
    /// their pieces, usage comes from the last chunk. An error says whether another attempt
    /// could fare better.
    async fn read_stream(&self, mut response: reqwest::Response, on_text: super::TextSink<'_>, delivered: &mut bool) -> Result<Completion, (ProviderError, bool)> {
        let mut reader = SseReader::default();
        let mut stream = StreamState::default();
        let mut shown = StreamRedactor::new(self.api_key.as_ref());
        let mut show = |text: &str| {
            let safe = shown.push(text);
            if !safe.is_empty() {
                *delivered = true;
                on_text(&safe);
            }
        };
        while !stream.done {
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
                self.event(&data, &mut stream, &mut show)?;
                if stream.done {
                    break;
                }
            }
        }
        let rest = shown.finish();
        if !rest.is_empty() {
            *delivered = true;
            on_text(&rest);
        }
        if !stream.done && stream.events == 0 {
            // 200 and nothing at all: what servers that cannot stream a tool choice send.
            return Err((ProviderError::EmptyStream, false));
        }
        if !stream.done {
            let error = ProviderError::InvalidResponse {
                reason: "the stream ended before [DONE]".to_owned(),
                body: truncate(&self.redact(&stream.content), MAX_ERROR_BODY),
            };
            // A connection cut mid-stream: another attempt may see the whole answer.
            return Err((error, true));
        }
        let StreamState { mut completion, content, calls, .. } = stream;
        completion.content = (!content.is_empty() || calls.is_empty()).then_some(content);
        completion.tool_calls = calls;
        Ok(self.redact_completion(completion))
    }

    /// One event of the stream.
    fn event(&self, data: &str, stream: &mut StreamState, show: &mut impl FnMut(&str)) -> Result<(), (ProviderError, bool)> {
        stream.events += 1;
        if data == "[DONE]" {
            stream.done = true;
            return Ok(());
        }
        let body = || truncate(&self.redact(data), MAX_ERROR_BODY);
        // The same chunk would come again: not worth another attempt.
        let parsed: ChatChunk = serde_json::from_str(data)
            .map_err(|err| (ProviderError::InvalidResponse { reason: format!("not a Chat Completions stream chunk ({err})"), body: body() }, false))?;
        if let Some(error) = parsed.error {
            let message = error.get("message").and_then(|m| m.as_str()).map_or_else(|| error.to_string(), str::to_owned);
            return Err((ProviderError::Streamed(truncate(&self.redact(&message), MAX_ERROR_BODY)), false));
        }
        if let Some(usage) = &parsed.usage {
            stream.completion.usage = Some(usage.into());
        }
        for choice in parsed.choices {
            if let Some(text) = choice.delta.content.or(choice.delta.refusal) {
                show(&text);
                stream.content.push_str(&text);
            }
            for piece in choice.delta.tool_calls {
                add_piece(stream, piece);
            }
            if choice.finish_reason.is_some() {
                stream.completion.finish_reason = choice.finish_reason;
            }
        }
        Ok(())
    }

    /// A reply with the key replaced wherever a server echoed it (nothing in it reaches a
    /// log or the terminal with the key). Text is redacted; a value the model produced as
    /// data (arguments, an id, a name, the finish reason) is never rewritten, only replaced
    /// whole when it holds the key.
    fn redact_completion(&self, mut completion: Completion) -> Completion {
        if let Some(key) = &self.api_key {
            completion.content = completion.content.map(|text| key.redact(&text));
            completion.finish_reason = completion.finish_reason.map(|reason| key.screen(reason));
            for call in &mut completion.tool_calls {
                call.id = key.screen(std::mem::take(&mut call.id));
                call.function.name = key.screen(std::mem::take(&mut call.function.name));
                call.function.arguments = key.screen(std::mem::take(&mut call.function.arguments));
            }
        }
        completion
    }

    fn transport_error(&self, err: &reqwest::Error) -> ProviderError {
        if err.is_timeout() {
            return ProviderError::Timeout(self.timeout);
        }
        ProviderError::Transport(self.redact(&super::error_chain(err)))
    }
}

impl Provider for OpenAiProvider {
    fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
        Box::pin(async move {
            let mut exchange = self.attempts(request).await;
            // Some servers cannot stream a reply that may call tools: they answer 200 with an
            // empty stream. The same request, not streamed, is the fallback; its text is shown
            // whole.
            if let (Some(on_text), false, Err(ProviderError::EmptyStream)) = (request.on_text, request.tools.is_empty(), &exchange.result) {
                let plain = self.attempts(CompletionRequest { on_text: None, ..request }).await;
                let first = exchange.attempts.len() as u32;
                exchange.attempts.extend(plain.attempts.into_iter().map(|a| Attempt { attempt: a.attempt + first, ..a }));
                if let Ok(completion) = &plain.result
                    && let Some(text) = completion.content.as_deref().filter(|t| !t.is_empty())
                {
                    on_text(text);
                }
                exchange.result = plain.result;
            }
            exchange
        })
    }

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }
}

impl OpenAiProvider {
    /// Sends `request`, and again while the retry policy says another attempt could fare
    /// better.
    async fn attempts(&self, request: CompletionRequest<'_>) -> Exchange {
        let mut attempts = Vec::new();
        loop {
            let permit = self.limiter.acquire().await;
            let started = Instant::now();
            let sent = self.send(request).await;
            match &sent.result {
                Ok(_) => self.limiter.succeeded(),
                Err(_) if sent.status == Some(429) => self.limiter.throttled(&permit),
                Err(_) => {}
            }
            drop(permit);
            let number = attempts.len() as u32 + 1;
            let retry = sent.result.is_err() && sent.retryable && number <= self.retry.max_retries;
            let wait = retry.then(|| self.retry.delay(number, sent.asked, jitter()));
            attempts.push(Attempt {
                attempt: number,
                latency_ms: started.elapsed().as_millis() as u64,
                status: sent.status,
                error: sent.result.as_ref().err().map(ToString::to_string),
                retry_in_ms: wait.map(|w| w.as_millis() as u64),
            });
            if let Some(last) = attempts.last() {
                tracing::debug!(url = %self.url, attempt = last.attempt, status = ?last.status, error = ?last.error, retry_in_ms = ?last.retry_in_ms, "request attempt");
            }
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Exchange { result: sent.result, attempts },
            }
        }
    }
}

/// What a stream has delivered so far.
#[derive(Default)]
struct StreamState {
    completion: Completion,
    content: String,
    calls: Vec<ToolCall>,
    /// The server's `index` of each call in `calls` (`None`: the call came without one).
    indexes: Vec<Option<usize>>,
    /// Events read, `[DONE]` included.
    events: usize,
    done: bool,
}

/// Adds a streamed piece to the tool calls. Its `index` names its call; a new index starts
/// a new call, so a huge index allocates nothing. Without an index, a new id starts a new
/// call. A name piece is appended only when it extends the name (some servers repeat the
/// whole name in every piece).
fn add_piece(stream: &mut StreamState, piece: ToolCallDelta) {
    let calls = &mut stream.calls;
    let new_id = |last: &ToolCall| piece.id.as_deref().is_some_and(|id| !id.is_empty() && !last.id.is_empty() && last.id != id);
    let slot = match (piece.index, calls.last()) {
        (Some(index), _) => stream.indexes.iter().position(|&seen| seen == Some(index)).unwrap_or(calls.len()),
        (None, None) => 0,
        (None, Some(last)) if new_id(last) => calls.len(),
        (None, Some(_)) => calls.len() - 1,
    };
    if slot == calls.len() {
        calls.push(ToolCall { id: String::new(), kind: "function".into(), function: FunctionCall { name: String::new(), arguments: String::new() } });
        stream.indexes.push(piece.index);
    }
    let call = &mut calls[slot];
    if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
        call.id = id;
    }
    if let Some(function) = piece.function {
        if let Some(name) = function.name {
            if name.starts_with(call.function.name.as_str()) {
                call.function.name = name;
            } else {
                call.function.name.push_str(&name);
            }
        }
        call.function.arguments.push_str(function.arguments.as_deref().unwrap_or_default());
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

/// The HTTP client every provider and tool shares: one connection pool for all runs.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // Several callers may race here; only the first installation matters.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(concat!("runner/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    Ok(client)
}
