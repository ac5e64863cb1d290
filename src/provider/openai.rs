//! The Chat Completions client: OpenAI and every OpenAI-compatible server.

use futures::future::BoxFuture;

use super::remote::{Answer, Remote, Sent};
use super::wire::{ChatChunk, ChatRequest, ChatResponse, StreamOptions, ToolCallDelta, WireUsage};
use super::{Attempt, Completion, CompletionRequest, Exchange, Provider, ProviderError};
use crate::message::{FunctionCall, ToolCall};

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
    remote: Remote,
    max_tokens_field: MaxTokensField,
}

impl OpenAiProvider {
    /// A client for the Chat Completions endpoint that `remote` posts to
    /// (`{base}/chat/completions`, or Azure's deployment URL).
    pub(crate) fn new(remote: Remote, max_tokens_field: MaxTokensField) -> Self {
        Self { remote, max_tokens_field }
    }

    async fn send(&self, request: CompletionRequest<'_>) -> Sent {
        let max_tokens = request.sampling.max_tokens;
        let body = ChatRequest {
            model: request.model,
            messages: request.messages,
            tools: (!request.tools.is_empty()).then_some(request.tools),
            tool_choice: match request.tool_choice {
                Some(name) => Some(serde_json::json!({"type": "function", "function": {"name": name}})),
                None => (!request.tools.is_empty()).then(|| serde_json::json!("auto")),
            },
            temperature: request.sampling.temperature,
            top_p: request.sampling.top_p,
            max_tokens: max_tokens.filter(|_| self.max_tokens_field == MaxTokensField::MaxTokens),
            max_completion_tokens: max_tokens.filter(|_| self.max_tokens_field == MaxTokensField::MaxCompletionTokens),
            seed: request.sampling.seed,
            stream: request.on_text.is_some().then_some(true),
            stream_options: request.on_text.is_some().then_some(StreamOptions { include_usage: true }),
        };
        let Answer { response, status, asked } = match self.remote.post(&body).await {
            Ok(answer) => answer,
            Err(sent) => return sent,
        };
        if let Some(on_text) = request.on_text
            && (200..300).contains(&status)
        {
            let mut delivered = false;
            let result = self.read_stream(response, on_text, &mut delivered).await;
            return Sent::streamed(result, delivered, status);
        }
        let bytes = match self.remote.read_body(response, status).await {
            Ok(bytes) => bytes,
            Err(sent) => return sent,
        };
        // Redacted whole, then cut: a cut never leaves part of a key behind.
        let text = || self.remote.shown(&String::from_utf8_lossy(&bytes));
        if !(200..300).contains(&status) {
            let body = text();
            // As OpenAI's own clients do: 408, 409, 429 and 5xx are worth another attempt,
            // except a 429 that says the account's quota is spent.
            let retryable =
                matches!(status, 408 | 409 | 429 | 500..) && !(status == 429 && body.contains("insufficient_quota"));
            return Sent {
                result: Err(ProviderError::Status { status, body }),
                status: Some(status),
                retryable,
                asked,
            };
        }
        let parsed: ChatResponse = match serde_json::from_slice(&bytes) {
            Ok(parsed) => parsed,
            Err(err) => {
                // JSON that ends early is a body cut short; other bad JSON would come again.
                let truncated = err.is_eof();
                let reason = if truncated {
                    format!("the response body was cut short ({err})")
                } else {
                    format!("not a Chat Completions response ({err})")
                };
                return Sent::failed(ProviderError::InvalidResponse { reason, body: text() }, Some(status), truncated);
            }
        };
        let usage = parsed.usage.as_ref().and_then(WireUsage::read);
        let Some(choice) = parsed.choices.into_iter().next() else {
            let reason = "response has no choices".to_owned();
            return Sent::failed(ProviderError::InvalidResponse { reason, body: text() }, Some(status), false);
        };
        let message = choice.message;
        let content = message.content.or(message.refusal);
        let completion = self.remote.redact_completion(Completion {
            content,
            tool_calls: message.tool_calls.unwrap_or_default(),
            finish_reason: choice.finish_reason,
            usage,
            raw_usage: parsed.usage,
        });
        Sent { result: Ok(completion), status: Some(status), retryable: false, asked: None }
    }

    /// Reads a `text/event-stream` reply: text deltas go to `on_text` as they arrive (with
    /// the key held back until it is known not to be one), tool calls are put together from
    /// their pieces, usage comes from the last chunk. An error says whether another attempt
    /// could fare better.
    async fn read_stream(
        &self,
        response: reqwest::Response,
        on_text: super::TextSink<'_>,
        delivered: &mut bool,
    ) -> Result<Completion, (ProviderError, bool)> {
        let mut stream = StreamState::default();
        self.remote
            .read_events(response, on_text, delivered, |data, show| {
                self.event(data, &mut stream, show)?;
                Ok(stream.done)
            })
            .await?;
        if !stream.done && stream.events == 0 {
            // 200 and nothing at all: what servers that cannot stream a tool choice send.
            return Err((ProviderError::EmptyStream, false));
        }
        if !stream.done {
            let error = ProviderError::InvalidResponse {
                reason: "the stream ended before [DONE]".to_owned(),
                body: self.remote.shown(&stream.content),
            };
            // A connection cut mid-stream: another attempt may see the whole answer.
            return Err((error, true));
        }
        let StreamState { mut completion, content, calls, .. } = stream;
        completion.content = (!content.is_empty() || calls.is_empty()).then_some(content);
        completion.tool_calls = calls;
        Ok(self.remote.redact_completion(completion))
    }

    /// One event of the stream.
    fn event(
        &self,
        data: &str,
        stream: &mut StreamState,
        show: &mut dyn FnMut(&str),
    ) -> Result<(), (ProviderError, bool)> {
        stream.events += 1;
        if data == "[DONE]" {
            stream.done = true;
            return Ok(());
        }
        let body = || self.remote.shown(data);
        // The same chunk would come again: not worth another attempt.
        let parsed: ChatChunk = serde_json::from_str(data).map_err(|err| {
            (
                ProviderError::InvalidResponse {
                    reason: format!("not a Chat Completions stream chunk ({err})"),
                    body: body(),
                },
                false,
            )
        })?;
        if let Some(error) = parsed.error {
            let message =
                error.get("message").and_then(|m| m.as_str()).map_or_else(|| error.to_string(), str::to_owned);
            return Err((ProviderError::Streamed(self.remote.shown(&message)), false));
        }
        if let Some(raw) = parsed.usage.filter(serde_json::Value::is_object) {
            stream.completion.usage = WireUsage::read(&raw);
            stream.completion.raw_usage = Some(raw);
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
}

impl Provider for OpenAiProvider {
    fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
        Box::pin(async move {
            let mut exchange = self.attempts(request).await;
            // Some servers cannot stream a reply that may call tools: they answer 200 with an
            // empty stream. The same request, not streamed, is the fallback; its text is shown
            // whole.
            if let (Some(on_text), false, Err(ProviderError::EmptyStream)) =
                (request.on_text, request.tools.is_empty(), &exchange.result)
            {
                let plain = self.attempts(CompletionRequest { on_text: None, ..request }).await;
                let first = exchange.attempts.len() as u32;
                exchange
                    .attempts
                    .extend(plain.attempts.into_iter().map(|a| Attempt { attempt: a.attempt + first, ..a }));
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
        Some(self.remote.base_url())
    }
}

impl OpenAiProvider {
    /// Sends `request`, and again while the retry policy says another attempt could fare
    /// better.
    async fn attempts(&self, request: CompletionRequest<'_>) -> Exchange {
        self.remote.attempts(|| Box::pin(self.send(request))).await
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
    let new_id =
        |last: &ToolCall| piece.id.as_deref().is_some_and(|id| !id.is_empty() && !last.id.is_empty() && last.id != id);
    let slot = match (piece.index, calls.last()) {
        (Some(index), _) => stream.indexes.iter().position(|&seen| seen == Some(index)).unwrap_or(calls.len()),
        (None, None) => 0,
        (None, Some(last)) if new_id(last) => calls.len(),
        (None, Some(_)) => calls.len() - 1,
    };
    if slot == calls.len() {
        calls.push(ToolCall {
            id: String::new(),
            kind: "function".into(),
            function: FunctionCall { name: String::new(), arguments: String::new() },
        });
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
