//! Model providers behind one trait: send a conversation, get the model's next message.

#[cfg(feature = "local")]
pub mod local;
pub mod openai;
pub mod retry;
pub mod wire;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::scenario::Sampling;
use crate::usage::Usage;
use wire::{Message, ToolCall, ToolSpec};

/// Receives the reply's text as it arrives, piece by piece.
pub type TextSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What one completion request sends.
#[derive(Clone, Copy)]
pub struct CompletionRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
    pub sampling: &'a Sampling,
    /// When set, the reply is streamed and its text handed here as it arrives.
    pub on_text: Option<TextSink<'a>>,
}

impl std::fmt::Debug for CompletionRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionRequest")
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("tools", &self.tools.len())
            .field("streaming", &self.on_text.is_some())
            .finish()
    }
}

/// The model's reply to one request.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    /// Usage as the provider reported it; `None` when it reported none.
    pub usage: Option<Usage>,
}

/// One HTTP attempt of a request, as recorded in the log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub latency_ms: u64,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// When the attempt failed and another follows: the wait before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// The outcome of one request with every attempt made for it.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<Completion, ProviderError>,
    pub attempts: Vec<Attempt>,
}

/// Why a request produced no completion. Messages never hold the API key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The server answered with a non-success status; `body` is its body as sent.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// No usable response arrived (connection refused, reset, body cut short).
    #[error("request failed: {0}")]
    Transport(String),
    /// No response within the request timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// A response arrived but is not a Chat Completions response.
    #[error("invalid response: {reason}; body: {body}")]
    InvalidResponse { reason: String, body: String },
}

/// A source of completions: a remote Chat Completions API or an embedded model.
pub trait Provider: Send + Sync {
    /// Sends one request and returns the reply, or why there is none.
    fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange>;

    /// The endpoint requests go to, for the log; `None` for in-process models.
    fn base_url(&self) -> Option<&str>;
}

/// An error with its causes, `{:#}`-style: an HTTP client's top-level message alone rarely
/// says what went wrong.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A secret (an API key): never printed, never serialized.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() { text.to_owned() } else { text.replace(&self.0, "[redacted]") }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}
