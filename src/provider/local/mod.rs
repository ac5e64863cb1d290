//! The embedded model `local:smollm2-135m`: SmolLM2-135M-Instruct running in-process, with no
//! key, no server and no network at run time.
//!
//! Tool calls use SmolLM2's own format (`<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>`)
//! and are decoded under constraints, so a call is always well-formed: the tool name is one
//! of the offered tools and the arguments are an object of its schema (nested objects,
//! arrays, enums, optional properties only with evidence in the message), strings and
//! numbers copied from the message. A message asking for several things gets a call per
//! part ([`decide::request_parts`]). Whether to call a tool at all is decided first (see
//! [`decide`]).

pub mod acquire;
mod batch;
pub mod decide;
pub mod model;
pub mod net;
mod prefix;
pub mod sampler;
pub mod tokenizer;

mod constrained;
mod generate;
mod prompt;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{Attempt, Completion, CompletionRequest, Exchange, Provider, ProviderError};
use crate::message::{Message, ToolSpec};
use model::Model;
use prompt::CALL_OPEN;
use tokenizer::Tokenizer;

/// The model's name after `local:`.
/// What goes wrong in the embedded model.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The tensor library failed (a weight file it cannot use, memory).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// A weight or cache file could not be read or written.
    #[error(transparent)]
    File(#[from] std::io::Error),
    /// What the model was given or made does not hold: a weight file's contents, a chat
    /// template, a forced tool that is not offered, a decoding with no way on.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for LocalError {
    fn from(message: String) -> Self {
        LocalError::Invalid(message)
    }
}

impl From<&str> for LocalError {
    fn from(message: &str) -> Self {
        LocalError::Invalid(message.to_owned())
    }
}

pub const MODEL_NAME: &str = "smollm2-135m";
/// Tokens generated for a text answer when the scenario sets no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 128;
/// New prompt tokens from which a prefix is kept on disk (fewer are quicker to feed again).
const KEEP_FROM: usize = 32;
/// Bytes of KV blocks the kept prompts may hold between them (blocks they share count once).
const SLOT_BYTES: usize = 32 << 20;
/// Added to the logit of a tool result's first token while answering after tool calls.
const COPY_START_BIAS: f32 = 4.0;
/// Added to the logit of the token that continues a partly copied tool result.
const COPY_NEXT_BIAS: f32 = 5.0;
/// Longest string argument, in tokens.
const MAX_STRING_TOKENS: usize = 48;
/// Most calls in one reply.
const MAX_CALLS: usize = 4;
/// Most items of an array argument the model writes.
const MAX_ITEMS: usize = 8;
/// Deepest nesting of objects and arrays in arguments; deeper values are null.
const MAX_DEPTH: usize = 6;

/// A content-free prompt's tokens and the candidates scored after it.
type CalibrationKey = (Vec<u32>, Vec<usize>);

/// The embedded model behind the [`Provider`] trait.
pub struct LocalProvider {
    engine: Arc<Engine>,
}

pub(crate) struct Engine {
    tokenizer: Tokenizer,
    templates: minijinja::Environment<'static>,
    /// The loaded weights with an empty cache.
    base: Model,
    /// Caches of recent prompts, most recently used last; they share their common blocks.
    slots: Mutex<Vec<Model>>,
    /// Prompt prefixes kept on disk for the next process (with a cache folder).
    prefixes: Option<prefix::Prefixes>,
    /// Calibration scores of [`decide`] by rendered content-free prompt and candidates.
    calibration: Mutex<std::collections::HashMap<CalibrationKey, Vec<f64>>>,
    stop: Vec<u32>,
    context_length: usize,
}

impl LocalProvider {
    /// Loads the weights at `path` (the first time, reading and requantizing them, which
    /// takes a second; later, the converted file kept in `cache_dir`).
    pub fn load(path: &std::path::Path, cache_dir: Option<&std::path::Path>) -> Result<Self, LocalError> {
        let loaded = model::load(path, cache_dir)?;
        let mut templates = minijinja::Environment::new();
        templates
            .add_template_owned("chat", loaded.chat_template)
            .map_err(|e| format!("the GGUF's chat template does not parse: {e}"))?;
        let stop = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| loaded.tokenizer.token_id(t)).collect();
        Ok(Self {
            engine: Arc::new(Engine {
                tokenizer: loaded.tokenizer,
                templates,
                base: loaded.model,
                slots: Mutex::new(Vec::new()),
                prefixes: cache_dir.map(|dir| prefix::Prefixes::new(dir, &loaded.weights_id)),
                calibration: Mutex::new(std::collections::HashMap::new()),
                stop,
                context_length: loaded.context_length,
            }),
        })
    }

    /// The tokenizer, for counting and tests.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.engine.tokenizer
    }

    /// Renders `messages` (and the offered tools) as the model's prompt text.
    pub fn prompt(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<String, LocalError> {
        self.engine.render(messages, tools)
    }

    /// Blocking completion; [`Provider::complete`] runs it on a blocking thread.
    pub fn complete_blocking(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        sampling: &crate::provider::Sampling,
    ) -> Result<Completion, LocalError> {
        self.engine.complete(messages, tools, None, sampling, None)
    }
}

impl Provider for LocalProvider {
    fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
        let engine = self.engine.clone();
        let messages = request.messages.to_vec();
        let tools = request.tools.to_vec();
        let sampling = *request.sampling;
        let forced = request.tool_choice.map(str::to_owned);
        let on_text = request.on_text;
        Box::pin(async move {
            let started = std::time::Instant::now();
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
            let sink = on_text.is_some().then_some(sender);
            let task = tokio::task::spawn_blocking(move || {
                engine.complete(&messages, &tools, forced.as_deref(), &sampling, sink.as_ref())
            });
            // The model runs on a blocking thread; its text comes back here, piece by piece.
            while let Some(piece) = receiver.recv().await {
                if let Some(on_text) = on_text {
                    on_text(&piece);
                }
            }
            let joined = task.await;
            let result = match joined {
                Ok(Ok(completion)) => Ok(completion),
                Ok(Err(message)) => Err(ProviderError::Transport(format!("embedded model: {message}"))),
                Err(err) => Err(ProviderError::Transport(format!("embedded model crashed: {err}"))),
            };
            let attempt = Attempt {
                attempt: 1,
                latency_ms: started.elapsed().as_millis() as u64,
                status: None,
                error: result.as_ref().err().map(ToString::to_string),
                retry_in_ms: None,
            };
            Exchange { result, attempts: vec![attempt], cache: Default::default() }
        })
    }

    fn base_url(&self) -> Option<&str> {
        None
    }
}
