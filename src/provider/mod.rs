//! Model providers behind one trait: send a conversation, get the model's next message.
//! Here too: a model ready to be asked ([`Target`]) and the factory that makes one from a name
//! (what names a model and what a request samples with sit below, in `crate::model`).

pub(crate) mod anthropic;
pub(crate) mod cache;
pub(crate) mod factory;
#[cfg(feature = "local")]
pub mod local;
pub mod openai;
pub(crate) mod remote;
pub(crate) mod retry;
mod sse;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::message::{Message, ToolCall, ToolSpec};
use crate::pricing::PriceEntry;
use crate::usage::Usage;

pub use crate::model::{ModelSpec, Sampling};
pub use crate::record::Attempt;
pub use factory::ModelError;
pub(crate) use factory::{Endpoint, Models, ProviderConfig};

/// The embedded model's name.
pub const LOCAL_MODEL: &str = "local:smollm2-135m";

/// A model ready to be asked: its name, its provider and its price.
pub struct Target {
    pub spec: ModelSpec,
    pub provider: Arc<dyn Provider>,
    /// `None`: unpriced.
    pub price: Option<PriceEntry>,
    /// The request cache its requests go through, when one is in use.
    pub(crate) cache: Option<Arc<cache::RequestCache>>,
}

/// What fetching a model's weights tells whoever waits for it. The command layer draws it
/// (a bar on a terminal); the core never prints.
pub trait FetchProgress: Send + Sync {
    /// A step worth a line of its own.
    fn note(&self, _text: &str) {}
    /// A download started; `total` bytes when the server said.
    fn started(&self, _what: &str, _total: Option<u64>) {}
    /// `bytes` more arrived.
    fn advanced(&self, _bytes: u64) {}
    /// The download ended, well or not.
    fn finished(&self) {}
    /// Whether a person watches (a terminal): a helper's own progress may then be shown.
    fn watched(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct Quiet;

impl FetchProgress for Quiet {}

/// Receives the reply's text as it arrives, piece by piece.
pub type TextSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What one completion request sends.
#[derive(Clone, Copy)]
pub struct CompletionRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
    pub sampling: &'a Sampling,
    /// The one tool the model must call (a forced call, as a judge is asked); `None`: the
    /// model chooses between the tools and text.
    pub tool_choice: Option<&'a str>,
    /// When set, the reply is streamed and its text handed here as it arrives.
    pub on_text: Option<TextSink<'a>>,
}

impl std::fmt::Debug for CompletionRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionRequest")
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("tools", &self.tools.len())
            .field("tool_choice", &self.tool_choice)
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
    /// The provider's own usage object, as it sent it (kept in the log as `raw_usage`).
    pub raw_usage: Option<serde_json::Value>,
}

/// The outcome of one request with every attempt made for it.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<Completion, ProviderError>,
    pub attempts: Vec<Attempt>,
    /// Whether the request cache answered it.
    pub cache: cache::CacheUse,
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
    #[error(
        "no response within {0:?} (--timeout SECS gives a slow model longer; a server that serves one request at a time may still be busy with an earlier one, and --max-retries 0 stops queueing behind it)"
    )]
    Timeout(Duration),
    /// The body stopped arriving: nothing for the length of the timeout.
    #[error("the response stalled: nothing arrived for {0:?} (--timeout SECS gives a slow model longer)")]
    Stalled(Duration),
    /// A streamed request got a success status and not a single event.
    #[error("the server answered with an empty stream")]
    EmptyStream,
    /// The server reported an error inside a streamed reply.
    #[error("the server reported an error in the stream: {0}")]
    Streamed(String),
    /// `--replay` and the request is not in the cache: its key, and why (what the cache holds).
    #[error("not in the cache: {key}; {why}")]
    NotCached { key: String, why: String },
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
