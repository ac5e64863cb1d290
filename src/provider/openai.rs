//! The Chat Completions client: OpenAI and every OpenAI-compatible server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::wire::{ChatChunk, ChatRequest, ChatResponse, StreamOptions};
use crate::message::{FunctionCall, ToolCall};
use super::retry::{Limiter, RetryPolicy, asked_delay, jitter};
use super::{Attempt, Completion, CompletionRequest, Exchange, Provider, ProviderError, Secret};

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
    pub fn new(http: reqwest::Client, base_url: &str, api_key: Option<Secret>, timeout: Duration) -> Self {
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
    pub fn with_retry(mut self, policy: RetryPolicy, limiter: Arc<Limiter>) -> Self {
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
        let mut builder = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        let response = match builder.send().await {
            Ok(response) => response,
            // Refused, reset or timed out before an answer: the request may be sent again.
            Err(err) => return Sent::failed(self.transport_error(&err), None, true),
        };
        let status = response.status().as_u16();
        let asked = asked_delay(response.headers());
        if let Some(on_text) = request.on_text
            && (200..300).contains(&status)
        {
            let mut delivered = false;
            let result = self.read_stream(response, on_text, &mut delivered).await;
            // Once text has reached the terminal, another attempt would print it twice.
            let retryable = result.is_err() && !delivered;
            return Sent { result, status: Some(status), retryable, asked: None };
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            // The body was cut short.
            Err(err) => return Sent::failed(self.transport_error(&err), Some(status), true),
        };
        let text = || self.redact(&truncate(&String::from_utf8_lossy(&bytes), MAX_ERROR_BODY));
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

    /// Reads a `text/event-stream` reply: text deltas go to `on_text` as they arrive, tool
    /// calls are put together from their pieces, usage comes from the last chunk.
    async fn read_stream(&self, mut response: reqwest::Response, on_text: super::TextSink<'_>, delivered: &mut bool) -> Result<Completion, ProviderError> {
        let mut buffer: Vec<u8> = Vec::new();
        let mut completion = Completion::default();
        let mut content = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut done = false;
        while !done {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return Err(self.transport_error(&err)),
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim_end().strip_prefix("data:") else { continue };
                let data = data.trim();
                if data == "[DONE]" {
                    done = true;
                    break;
                }
                let parsed: ChatChunk = serde_json::from_str(data).map_err(|err| ProviderError::InvalidResponse {
                    reason: format!("not a Chat Completions stream chunk ({err})"),
                    body: self.redact(&truncate(data, MAX_ERROR_BODY)),
                })?;
                if let Some(usage) = &parsed.usage {
                    completion.usage = Some(usage.into());
                }
                for choice in parsed.choices {
                    if let Some(text) = choice.delta.content.or(choice.delta.refusal) {
                        *delivered |= !text.is_empty();
                        on_text(&self.redact(&text));
                        content.push_str(&text);
                    }
                    for piece in choice.delta.tool_calls {
                        while calls.len() <= piece.index {
                            calls.push(ToolCall { id: String::new(), kind: "function".into(), function: FunctionCall { name: String::new(), arguments: String::new() } });
                        }
                        let call = &mut calls[piece.index];
                        if let Some(id) = piece.id {
                            call.id = id;
                        }
                        if let Some(function) = piece.function {
                            call.function.name.push_str(function.name.as_deref().unwrap_or_default());
                            call.function.arguments.push_str(function.arguments.as_deref().unwrap_or_default());
                        }
                    }
                    if choice.finish_reason.is_some() {
                        completion.finish_reason = choice.finish_reason;
                    }
                }
            }
        }
        if !done {
            return Err(ProviderError::InvalidResponse {
                reason: "the stream ended before [DONE]".to_owned(),
                body: self.redact(&truncate(&content, MAX_ERROR_BODY)),
            });
        }
        completion.content = (!content.is_empty() || calls.is_empty()).then_some(content);
        completion.tool_calls = calls;
        Ok(self.redact_completion(completion))
    }

    /// A reply with the key replaced wherever a server echoed it (nothing in it reaches a
    /// log or the terminal with the key).
    fn redact_completion(&self, mut completion: Completion) -> Completion {
        if self.api_key.is_some() {
            completion.content = completion.content.map(|text| self.redact(&text));
            for call in &mut completion.tool_calls {
                call.function.arguments = self.redact(&call.function.arguments);
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
        })
    }

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
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
