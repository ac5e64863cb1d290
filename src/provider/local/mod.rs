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
pub mod decide;
pub mod model;
pub mod sampler;
pub mod tokenizer;

use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Attempt, Completion, CompletionRequest, Exchange, Provider, ProviderError};
use crate::message::{FunctionCall, FunctionSpec, Message, ToolCall, ToolSpec};
use crate::usage::Usage;
use model::Model;
use sampler::Sampler;
use tokenizer::Tokenizer;

/// The model's name after `local:`.
pub const MODEL_NAME: &str = "smollm2-135m";
/// Tokens generated for a text answer when the scenario sets no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 128;
/// Conversations whose KV caches are kept, most recently used last.
const SLOTS: usize = 8;
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
    /// Caches of recent prompts.
    slots: Mutex<Vec<Model>>,
    /// One generation at a time: candle spreads each one over every core already.
    gate: Mutex<()>,
    /// Calibration scores of [`decide`] by rendered content-free prompt and candidates.
    calibration: Mutex<std::collections::HashMap<CalibrationKey, Vec<f64>>>,
    stop: Vec<u32>,
    context_length: usize,
}

impl LocalProvider {
    /// Loads the weights at `path` (the first time, reading and requantizing them, which
    /// takes a second; later, the converted file kept in `cache_dir`).
    pub fn load(path: &std::path::Path, cache_dir: Option<&std::path::Path>) -> Result<Self, String> {
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
                gate: Mutex::new(()),
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
    pub fn prompt(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<String, String> {
        self.engine.render(messages, tools)
    }

    /// Blocking completion; [`Provider::complete`] runs it on a blocking thread.
    pub fn complete_blocking(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        sampling: &crate::provider::Sampling,
    ) -> Result<Completion, String> {
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

/// SmolLM2's function-calling instructions, with the offered tools as JSON.
fn tools_prompt(tools: &[ToolSpec]) -> String {
    let list: Vec<Value> =
        tools.iter().map(|t| json!({"name": t.function.name, "description": t.function.description, "parameters": t.function.parameters})).collect();
    format!(
        "You are an expert in composing functions. You are given a question and a set of possible functions.\n\
         Based on the question, you will need to make one or more function/tool calls to achieve the purpose.\n\
         If none of the functions can be used, point it out and refuse to answer.\n\
         If the given question lacks the parameters required by the function, also point it out.\n\n\
         You have access to the following tools:\n<tools>{}</tools>\n\n\
         The output MUST strictly adhere to the following format, and NO other text MUST be included.\n\
         The example format is as follows. Please make sure the parameter type is correct. If no function call is needed, please make the tool calls an empty list '[]'.\n\
         <tool_call>[\n{{\"name\": \"func_name1\", \"arguments\": {{\"argument1\": \"value1\", \"argument2\": \"value2\"}}}},\n... (more tool calls as required)\n]</tool_call>",
        Value::Array(list)
    )
}

/// The text of an assistant message that called tools, as the model writes it.
fn tool_call_text(calls: &[ToolCall]) -> String {
    let items: Vec<String> = calls
        .iter()
        .map(|c| {
            let arguments: Value = serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
            format!(
                "{{\"name\": {}, \"arguments\": {}}}",
                Value::String(c.function.name.clone()),
                compact_json(&arguments)
            )
        })
        .collect();
    format!("{CALL_OPEN}{}\n]</tool_call>", items.join(",\n"))
}

/// What the model's output starts with when it calls tools.
const CALL_OPEN: &str = "<tool_call>[\n";

/// JSON as the model writes it: `{"a": 1, "b": "x"}`.
fn compact_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let items: Vec<String> =
                map.iter().map(|(k, v)| format!("{}: {}", Value::String(k.clone()), compact_json(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(compact_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

impl Engine {
    /// The prompt a text answer is written from: no tool instructions (they only confuse a
    /// model this small), each tool call's result folded into the user message it answers.
    fn render_plain(&self, messages: &[Message]) -> Result<String, String> {
        let mut rendered: Vec<Value> = Vec::with_capacity(messages.len());
        let mut names: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for message in messages {
            match message {
                Message::System { content } => rendered.push(json!({"role": "system", "content": content})),
                Message::User { content } => rendered.push(json!({"role": "user", "content": content})),
                Message::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                    for call in tool_calls {
                        names.insert(&call.id, &call.function.name);
                    }
                }
                Message::Assistant { content, .. } => {
                    rendered.push(json!({"role": "assistant", "content": content.clone().unwrap_or_default()}));
                }
                Message::Tool { tool_call_id, content } => {
                    let name = names.get(tool_call_id.as_str()).copied().unwrap_or("tool");
                    let result = readable_result(content);
                    if let Some(last) = rendered.iter_mut().rev().find(|m| m["role"] == "user") {
                        let text = format!(
                            "{}\n\nThe {name} tool returned: {result}",
                            last["content"].as_str().unwrap_or_default()
                        );
                        last["content"] = Value::String(text);
                    }
                }
            }
        }
        self.apply_template(rendered)
    }

    fn apply_template(&self, rendered: Vec<Value>) -> Result<String, String> {
        let template = self.templates.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! { messages => rendered, add_generation_prompt => true })
            .map_err(|e| format!("cannot render the chat template: {e}"))
    }

    fn render(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<String, String> {
        let mut rendered: Vec<Value> = Vec::with_capacity(messages.len() + 1);
        let tool_text = (!tools.is_empty()).then(|| tools_prompt(tools));
        let mut system_seen = false;
        for message in messages {
            let (role, content) = match message {
                Message::System { content } => {
                    system_seen = true;
                    let content = match &tool_text {
                        Some(tools) => format!("{content}\n\n{tools}"),
                        None => content.clone(),
                    };
                    ("system", content)
                }
                Message::User { content } => ("user", content.clone()),
                Message::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                    ("assistant", tool_call_text(tool_calls))
                }
                Message::Assistant { content, .. } => ("assistant", content.clone().unwrap_or_default()),
                Message::Tool { content, .. } => ("tool", content.clone()),
            };
            rendered.push(json!({"role": role, "content": content}));
        }
        if !system_seen && let Some(tools) = tool_text {
            rendered.insert(0, json!({"role": "system", "content": tools}));
        }
        self.apply_template(rendered)
    }

    /// A cache to continue from: the slot whose prompt is the longest prefix of `prompt`
    /// (taken out of the pool), else a fresh one.
    fn take_slot(&self, prompt: &[u32]) -> Model {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, m)| m.cached().len() <= prompt.len() && prompt.starts_with(m.cached()))
            .max_by_key(|(_, m)| m.cached().len())
            .map(|(i, _)| i);
        match best {
            Some(i) => slots.remove(i),
            None => self.base.clone(),
        }
    }

    fn put_slot(&self, model: Model) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.push(model);
        if slots.len() > SLOTS {
            slots.remove(0);
        }
    }

    fn complete(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        forced: Option<&str>,
        sampling: &crate::provider::Sampling,
        stream: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, String> {
        let _gate = self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.base.forwarded();
        let completion = self.answer(messages, tools, forced, sampling, stream)?;
        if let Some(usage) = &completion.usage {
            let forwarded = self.base.forwarded() - before;
            tracing::debug!(
                forwarded,
                prompt = usage.prompt_tokens,
                cached = usage.cached_tokens,
                generated = usage.completion_tokens,
                "embedded model request"
            );
        }
        Ok(completion)
    }

    /// [`Engine::complete`] under the gate. `forced`: the tool the answer must call.
    fn answer(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        forced: Option<&str>,
        sampling: &crate::provider::Sampling,
        stream: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, String> {
        let max_tokens = sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS) as usize;
        let mut sampler = Sampler::new(sampling.temperature, sampling.top_p, sampling.seed.unwrap_or(0));
        // The cheap evidence step comes first: with no candidate tool, the long tool prompt
        // is never fed.
        let asked = match messages.last() {
            Some(Message::User { content }) => Some(content.as_str()),
            _ => None,
        };
        if let Some(name) = forced {
            return self.forced_call(messages, tools, name, asked.unwrap_or_default(), &mut sampler);
        }
        let candidates = asked.map(|asked| decide::candidates(asked, tools)).unwrap_or_default();
        if let Some(asked) = asked
            && !candidates.is_empty()
        {
            // Only the candidates are listed: a shorter prompt to feed, and no tool the
            // evidence step ruled out to distract a small model.
            let offered: Vec<ToolSpec> = candidates.iter().map(|&i| tools[i].clone()).collect();
            let all: Vec<usize> = (0..offered.len()).collect();
            let prompt = self.tokenizer.encode(&self.render(messages, &offered)?);
            let (mut model, reused) = self.prefilled(&prompt, 0)?;
            let decision = decide::choose(self, &mut model, messages, &offered, &all)?;
            if let Some((tool, opened)) = decision {
                let (calls, count) = self.write_calls(&mut model, &mut sampler, tool, &offered, asked)?;
                return Ok(Completion {
                    content: None,
                    tool_calls: calls,
                    finish_reason: Some("tool_calls".into()),
                    usage: Some(Usage {
                        cached_tokens: reused as u64,
                        ..Usage::new(prompt.len() as u64, opened + count)
                    }),
                    raw_usage: None,
                });
            }
        }
        let prompt = self.tokenizer.encode(&self.render_plain(messages)?);
        let (mut model, reused) = self.prefilled(&prompt, max_tokens)?;
        let logits = model.feed(&[])?;
        let mut generated = 0;
        let results = turn_results(messages);
        let copy = self.result_tokens(&results.iter().map(|r| readable_result(r)).collect::<Vec<_>>());
        let facts: Vec<String> = results.iter().flat_map(|r| facts(r)).collect();
        let mut completion =
            self.write_text(&mut model, logits, &mut sampler, max_tokens, &mut generated, (&copy, &facts), stream)?;
        completion.usage = Some(Usage { cached_tokens: reused as u64, ..Usage::new(prompt.len() as u64, generated) });
        Ok(completion)
    }

    /// One call to the tool named `name`, with no decision: only that tool is listed, the
    /// call is opened and its arguments written as any call's are (grounded in `asked`).
    fn forced_call(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        name: &str,
        asked: &str,
        sampler: &mut Sampler,
    ) -> Result<Completion, String> {
        let tool = tools
            .iter()
            .find(|t| t.function.name == name)
            .ok_or_else(|| format!("the forced tool `{name}` is not among the offered tools"))?;
        let prompt = self.tokenizer.encode(&self.render(messages, std::slice::from_ref(tool))?);
        let (mut model, reused) = self.prefilled(&prompt, 0)?;
        let (_, opened) =
            self.force(&mut model, &format!("{CALL_OPEN}{{\"name\": {}", Value::String(name.to_owned())))?;
        let (call, written) = self.write_arguments(&mut model, sampler, &tool.function, asked)?;
        let (_, closed) = self.force(&mut model, "\n]</tool_call>")?;
        Ok(Completion {
            content: None,
            tool_calls: vec![call],
            finish_reason: Some("tool_calls".into()),
            usage: Some(Usage {
                cached_tokens: reused as u64,
                ..Usage::new(prompt.len() as u64, opened + written + closed)
            }),
            raw_usage: None,
        })
    }

    /// A model whose cache holds exactly `prompt`, from the best cached slot; the state is
    /// also kept in the pool for the next request that extends this prompt. Returns the
    /// number of prompt tokens served from the cache.
    fn prefilled(&self, prompt: &[u32], max_tokens: usize) -> Result<(Model, usize), String> {
        if prompt.len() + max_tokens > self.context_length {
            return Err(format!(
                "the conversation ({} tokens) and max_tokens ({max_tokens}) exceed the model's context of {} tokens",
                prompt.len(),
                self.context_length
            ));
        }
        let mut model = self.take_slot(prompt);
        // Keep the system message's state on its own too: every conversation with the same
        // system prompt and tools starts from it.
        let system_end = prompt.iter().position(|t| self.stop.first() == Some(t)).map_or(0, |at| at + 1);
        // What came from the pool: the system prompt's own prefill reports it when it runs
        // (the rest then continues what this request just fed).
        let mut from_pool = None;
        if model.cached().len() < system_end && system_end < prompt.len() {
            let (_, reused) = model.prefill(&prompt[..system_end])?;
            from_pool = Some(reused);
            self.put_slot(model.clone());
        }
        let (_, reused) = model.prefill(prompt)?;
        self.put_slot(model.clone());
        Ok((model, from_pool.unwrap_or(reused)))
    }

    /// Token sequences of this turn's tool results (as [`readable_result`] shows them, with
    /// and without a leading space), which the answer is steered to copy.
    fn result_tokens(&self, results: &[String]) -> Vec<Vec<u32>> {
        let mut sequences = Vec::new();
        for result in results {
            sequences.push(self.tokenizer.encode(result));
            sequences.push(self.tokenizer.encode(&format!(" {result}")));
        }
        sequences.retain(|s| !s.is_empty());
        sequences
    }

    /// Free text until the end-of-turn token or `max_tokens`, steered to copy `copy`: a
    /// result's first token gets [`COPY_START_BIAS`], and once the answer has written a
    /// result's first k tokens, its next one gets [`COPY_NEXT_BIAS`]. A model this small
    /// otherwise paraphrases results away ("elppa" becomes "el-ppa"). Once every result is
    /// stated, the steering stops and the answer ends with the sentence or line that stated
    /// the last one: what a
    /// model this small writes after that is rambling, and where it invents numbers.
    #[allow(clippy::too_many_arguments)]
    fn write_text(
        &self,
        model: &mut Model,
        mut logits: Vec<f32>,
        sampler: &mut Sampler,
        max_tokens: usize,
        generated: &mut u64,
        (copy, facts): (&[Vec<u32>], &[String]),
        stream: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, String> {
        let mut ids: Vec<u32> = Vec::new();
        let stated = |text: &str| {
            let text = text.to_lowercase();
            !facts.is_empty() && facts.iter().all(|f| text.contains(&f.to_lowercase()))
        };
        let mut finish = "length";
        // Text already sent to `stream`, as the final answer (trimmed) spells it.
        let mut sent = 0;
        // Every result stated: no more steering (a bias left on makes the model repeat them).
        let mut said = false;
        for _ in 0..max_tokens {
            for sequence in copy.iter().filter(|_| !said) {
                let mut bias = |id: u32, by: f32| {
                    if let Some(logit) = logits.get_mut(id as usize) {
                        *logit += by;
                    }
                };
                bias(sequence[0], COPY_START_BIAS);
                if let Some(k) = (1..sequence.len()).rev().find(|&k| ids.ends_with(&sequence[..k])) {
                    bias(sequence[k], COPY_NEXT_BIAS);
                }
            }
            let Some(next) = sampler.pick(&logits, None) else { break };
            *generated += 1;
            if self.stop.contains(&next) {
                finish = "stop";
                break;
            }
            ids.push(next);
            // Whole characters only; a token may end inside one.
            let bytes = self.tokenizer.decode_bytes(&ids);
            let valid = match std::str::from_utf8(&bytes) {
                Ok(text) => text,
                Err(err) => std::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or_default(),
            };
            said = stated(valid);
            let piece = if said { self.tokenizer.decode(&[next]) } else { String::new() };
            let done = said && (piece.contains('\n') || valid.trim_end().ends_with(['.', '!', '?']));
            if done && piece.trim().is_empty() {
                ids.pop();
            }
            if let Some(stream) = stream {
                let text = if done { self.tokenizer.decode(&ids) } else { valid.to_owned() };
                let text = text.trim_start();
                if text.trim_end().len() > sent {
                    let text = if done { text.trim_end() } else { text };
                    let _ = stream.send(text[sent..].to_owned());
                    sent = text.len();
                }
            }
            if done {
                finish = "stop";
                break;
            }
            logits = model.feed(&[next])?;
        }
        let text = self.tokenizer.decode(&ids).trim().to_owned();
        Ok(Completion {
            content: Some(text),
            tool_calls: vec![],
            finish_reason: Some(finish.into()),
            usage: None,
            raw_usage: None,
        })
    }

    /// Log probability of `text` following the state whose next-token logits are `logits`;
    /// feeds it into `model`.
    fn log_prob(&self, model: &mut Model, mut logits: Vec<f32>, text: &str) -> Result<f64, String> {
        let mut total = 0.0;
        for id in self.tokenizer.encode(text) {
            total += sampler::log_mass(&logits, &|t| t == id);
            logits = model.feed(&[id])?;
        }
        Ok(total)
    }

    /// Feeds fixed text; returns the logits after it and its token count.
    fn force(&self, model: &mut Model, text: &str) -> Result<(Vec<f32>, u64), String> {
        let ids = self.tokenizer.encode(text);
        Ok((model.feed(&ids)?, ids.len() as u64))
    }

    /// Writes the calls. A message that asks for several things ([`decide::request_parts`])
    /// gets a call per part (at most [`MAX_CALLS`]): its tool the part's only fitting one or
    /// the model's choice among them, its arguments grounded in that part alone. Otherwise one
    /// call to the chosen tool. `model` holds the prompt and [`CALL_OPEN`].
    fn write_calls(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        chosen: usize,
        tools: &[ToolSpec],
        asked: &str,
    ) -> Result<(Vec<ToolCall>, u64), String> {
        let parts = decide::request_parts(asked, tools)
            .filter(|parts| parts.len() <= MAX_CALLS)
            .unwrap_or_else(|| vec![(asked.to_owned(), vec![chosen])]);
        let mut calls = Vec::with_capacity(parts.len());
        let mut count = 0;
        for (i, (part, fitting)) in parts.iter().enumerate() {
            let opening = if i == 0 { "{\"name\":" } else { ",\n{\"name\":" };
            let names: Vec<String> =
                fitting.iter().map(|&t| format!(" {}", Value::String(tools[t].function.name.clone()))).collect();
            // One fitting tool: its name goes in with the opening, in one step.
            let index = if let [name] = &names[..] {
                count += self.force(model, &format!("{opening}{name}"))?.1;
                0
            } else {
                let (logits, n) = self.force(model, opening)?;
                let (index, _, m) = self.choose_text(model, logits, &names)?;
                count += n + m;
                index
            };
            let (call, n) = self.write_arguments(model, sampler, &tools[fitting[index]].function, part)?;
            count += n;
            calls.push(call);
        }
        let (_, n) = self.force(model, "\n]</tool_call>")?;
        Ok((calls, count + n))
    }

    /// The rest of a call whose name was written: its arguments, an object of its schema (see
    /// [`Engine::write_object`]), and the closing brace.
    fn write_arguments(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        spec: &FunctionSpec,
        asked: &str,
    ) -> Result<(ToolCall, u64), String> {
        let (_, mut count) = self.force(model, ", \"arguments\": ")?;
        let (arguments, n) = self.write_object(model, sampler, &spec.parameters, asked, 0)?;
        count += n;
        let (_, n) = self.force(model, "}")?;
        count += n;
        let id = format!("call_{}", crate::rng::mix64(count ^ model.cached().len() as u64) % 1_000_000_000);
        let call = ToolCall {
            id,
            kind: "function".into(),
            function: FunctionCall { name: spec.name.clone(), arguments: arguments.to_string() },
        };
        Ok((call, count))
    }

    /// An object of `schema`, in its properties' order: every required property, and an
    /// optional one only when the message gives evidence for it ([`wanted`]); a 135M model
    /// left to choose fills every optional field with something.
    fn write_object(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        schema: &Value,
        asked: &str,
        depth: usize,
    ) -> Result<(Value, u64), String> {
        let properties = schema["properties"].as_object().cloned().unwrap_or_default();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (_, mut count) = self.force(model, "{")?;
        let mut object = serde_json::Map::new();
        for (name, property) in &properties {
            if !required.contains(&name.as_str()) && !wanted(name, property, asked) {
                continue;
            }
            let separator = if object.is_empty() { "" } else { ", " };
            let (logits, n) = self.force(model, &format!("{separator}{}: ", Value::String(name.clone())))?;
            count += n;
            let (value, n) = self.write_value(model, sampler, logits, property, asked, depth + 1)?;
            count += n;
            object.insert(name.clone(), value);
        }
        let (_, n) = self.force(model, "}")?;
        Ok((Value::Object(object), count + n))
    }

    /// An array of `schema`'s items. Numbers: the message's numbers, in order (what a list
    /// of numbers in a request almost always is). Other items: written one by one while the
    /// model prefers `, ` to `]` (at most [`MAX_ITEMS`]).
    fn write_array(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        schema: &Value,
        asked: &str,
        depth: usize,
    ) -> Result<(Value, u64), String> {
        let item = &schema["items"];
        let numbers = match item["type"].as_str() {
            Some(kind @ ("number" | "integer")) => numbers_in(asked, kind == "number"),
            _ => Vec::new(),
        };
        if !numbers.is_empty() {
            let text = format!("[{}]", numbers.join(", "));
            let (_, n) = self.force(model, &text)?;
            return Ok((serde_json::from_str(&text).unwrap_or_else(|_| json!([])), n));
        }
        let (mut logits, mut count) = self.force(model, "[")?;
        let mut items = Vec::new();
        loop {
            let (value, n) = self.write_value(model, sampler, logits, item, asked, depth + 1)?;
            count += n;
            items.push(value);
            let more = items.len() < MAX_ITEMS;
            let choices: Vec<String> = if more { vec![", ".into(), "]".into()] } else { vec!["]".into()] };
            let after = model.feed(&[])?;
            let (index, next, n) = self.choose_text(model, after, &choices)?;
            count += n;
            if choices[index] == "]" {
                break;
            }
            logits = next;
        }
        Ok((Value::Array(items), count))
    }

    /// One JSON value of the schema's type. Strings and numbers are grounded in the user's
    /// message `asked`: a string is a span of it, a number one of its numbers (when it has
    /// any); a 135M model copies far more reliably than it composes. An enum value the
    /// message names is taken as it is. `logits` are those after the key. Returns the value
    /// and the number of tokens written.
    fn write_value(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        logits: Vec<f32>,
        schema: &Value,
        asked: &str,
        depth: usize,
    ) -> Result<(Value, u64), String> {
        if let Some(options) = schema["enum"].as_array() {
            if let Some(named) = named_option(options, asked) {
                let (_, n) = self.force(model, &named.to_string())?;
                return Ok((named.clone(), n));
            }
            let choices: Vec<String> = options.iter().map(Value::to_string).collect();
            let (index, _, n) = self.choose_text(model, logits, &choices)?;
            return Ok((options[index].clone(), n));
        }
        match schema["type"].as_str() {
            Some("string") => self.write_string(model, sampler, asked),
            Some("integer") => self.write_number(model, sampler, logits, false, asked),
            Some("number") => self.write_number(model, sampler, logits, true, asked),
            Some("boolean") => {
                let (index, _, n) = self.choose_text(model, logits, &["true".to_owned(), "false".to_owned()])?;
                Ok((Value::Bool(index == 0), n))
            }
            Some("object") if depth < MAX_DEPTH => self.write_object(model, sampler, schema, asked, depth),
            Some("array") if depth < MAX_DEPTH => self.write_array(model, sampler, schema, asked, depth),
            _ => {
                let (_, n) = self.force(model, "null")?;
                Ok((Value::Null, n))
            }
        }
    }

    fn write_string(&self, model: &mut Model, sampler: &mut Sampler, asked: &str) -> Result<(Value, u64), String> {
        let (mut logits, mut count) = self.force(model, "\"")?;
        let mut bytes: Vec<u8> = Vec::new();
        for _ in 0..MAX_STRING_TOKENS {
            let tokenizer = &self.tokenizer;
            let plain = |id: u32, t: &[u8]| {
                !t.is_empty() && !self.stop.contains(&id) && !t.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
            };
            let closing = |t: &[u8]| t.first() == Some(&b'"') && !bytes.is_empty();
            let current = String::from_utf8_lossy(&bytes).trim_start().to_owned();
            let grounded = |id: u32| {
                let t = tokenizer.token_bytes(id);
                if closing(&t) {
                    return span_at_words(asked, &current, true);
                }
                if !plain(id, &t) {
                    return false;
                }
                let mut next = bytes.clone();
                next.extend_from_slice(&t);
                let next = String::from_utf8_lossy(&next).trim_start().to_owned();
                !next.is_empty() && span_at_words(asked, &next, false)
            };
            let free = |id: u32| {
                let t = tokenizer.token_bytes(id);
                closing(&t) || plain(id, &t)
            };
            let pick = match sampler.pick(&logits, Some(&grounded)) {
                Some(id) => Some(id),
                None => sampler.pick(&logits, Some(&free)),
            };
            let Some(next) = pick else { break };
            let token = tokenizer.token_bytes(next);
            if token[0] == b'"' {
                break;
            }
            bytes.extend_from_slice(&token);
            logits = model.feed(&[next])?;
            count += 1;
        }
        let (_, n) = self.force(model, "\"")?;
        Ok((Value::String(String::from_utf8_lossy(&bytes).trim().to_owned()), count + n))
    }

    fn write_number(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        mut logits: Vec<f32>,
        fraction: bool,
        asked: &str,
    ) -> Result<(Value, u64), String> {
        let numbers = numbers_in(asked, fraction);
        let mut text = String::new();
        let mut count = 0;
        for _ in 0..24 {
            let tokenizer = &self.tokenizer;
            let current = text.clone();
            let grounded = |id: u32| {
                let t = String::from_utf8_lossy(&tokenizer.token_bytes(id)).into_owned();
                if t.starts_with([',', '}', ']']) {
                    return numbers.contains(&current);
                }
                let next = format!("{current}{t}");
                numbers.iter().any(|n| n.starts_with(&next))
            };
            let free = |id: u32| {
                let t = tokenizer.token_bytes(id);
                let Ok(t) = std::str::from_utf8(&t) else { return false };
                let digits = current.trim_start_matches('-');
                if t.len() == 1 && t.as_bytes()[0].is_ascii_digit() {
                    // No leading zeros: "0" may only be followed by a fraction.
                    return digits != "0";
                }
                match t {
                    "-" => current.is_empty(),
                    "." => fraction && !digits.is_empty() && !digits.contains('.') && !digits.ends_with('.'),
                    _ => !digits.is_empty() && !digits.ends_with('.') && t.starts_with([',', '}', ']']),
                }
            };
            let pick = if numbers.is_empty() {
                sampler.pick(&logits, Some(&free))
            } else {
                sampler.pick(&logits, Some(&grounded))
            };
            let Some(next) = pick else { break };
            let token = String::from_utf8_lossy(&tokenizer.token_bytes(next)).into_owned();
            if token.starts_with([',', '}', ']']) {
                break;
            }
            text.push_str(&token);
            logits = model.feed(&[next])?;
            count += 1;
        }
        if text.is_empty() || text == "-" || text.ends_with('.') {
            text = "0".into();
        }
        let value: Value = serde_json::from_str(&text).unwrap_or(json!(0));
        Ok((value, count))
    }

    /// Picks one of `choices` (fixed texts) token by token, always staying on one of them,
    /// feeding what was picked. Returns the index of the choice.
    fn choose_text(
        &self,
        model: &mut Model,
        mut logits: Vec<f32>,
        choices: &[String],
    ) -> Result<(usize, Vec<f32>, u64), String> {
        let mut written = String::new();
        let mut count = 0;
        loop {
            if let Some(index) = choices.iter().position(|c| *c == written) {
                return Ok((index, logits, count));
            }
            let tokenizer = &self.tokenizer;
            let prefix = written.clone();
            let allowed = |id: u32| {
                let t = tokenizer.token_bytes(id);
                let Ok(t) = std::str::from_utf8(&t) else { return false };
                !t.is_empty() && choices.iter().any(|c| c.starts_with(&format!("{prefix}{t}")))
            };
            let Some(next) = sampler::best_allowed(&logits, &allowed) else {
                return Err(format!("no token continues any of {choices:?} after {written:?}"));
            };
            written.push_str(&String::from_utf8_lossy(&tokenizer.token_bytes(next)));
            logits = model.feed(&[next])?;
            count += 1;
        }
    }
}

/// Whether the message gives evidence for an optional property: it names one of its enum
/// values, shares a content word with its name or description, or (a description showing
/// `HH:MM` or `YYYY-MM-DD`) holds a time or date.
fn wanted(name: &str, schema: &Value, asked: &str) -> bool {
    static FORMATS: OnceLock<[(&str, regex::Regex); 2]> = OnceLock::new();
    if let Some(options) = schema["enum"].as_array() {
        return named_option(options, asked).is_some();
    }
    let description = schema["description"].as_str().unwrap_or_default();
    let formats = FORMATS.get_or_init(|| {
        let regex = |pattern: &str| regex::Regex::new(pattern).expect("valid pattern");
        [("HH:MM", regex(r"\b\d{1,2}:\d{2}\b")), ("YYYY-MM-DD", regex(r"\b\d{4}-\d{2}-\d{2}\b"))]
    });
    if formats.iter().any(|(shown, pattern)| description.contains(shown) && pattern.is_match(asked)) {
        return true;
    }
    let about = decide::content_words(&format!("{} {description}", name.replace('_', " ")));
    decide::content_words(asked).iter().any(|word| about.contains(word))
}

/// The enum value the message names (as a whole word, any case) first, if any.
fn named_option<'a>(options: &'a [Value], asked: &str) -> Option<&'a Value> {
    let lower = asked.to_lowercase();
    options
        .iter()
        .filter_map(|option| {
            let text = option.as_str()?.to_lowercase();
            span_at_words(&lower, &text, true).then(|| lower.find(&text)).flatten().map(|at| (at, option))
        })
        .min_by_key(|(at, _)| *at)
        .map(|(_, option)| option)
}

/// The numbers written in `text` (`-3`, `1.5` when `fraction`), as written.
fn numbers_in(text: &str, fraction: bool) -> Vec<String> {
    static WHOLE: OnceLock<regex::Regex> = OnceLock::new();
    static FRACTION: OnceLock<regex::Regex> = OnceLock::new();
    let regex = if fraction {
        FRACTION.get_or_init(|| regex::Regex::new(r"-?\d+(?:\.\d+)?").expect("valid pattern"))
    } else {
        WHOLE.get_or_init(|| regex::Regex::new(r"-?\d+").expect("valid pattern"))
    };
    regex.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

/// Whether `span` occurs in `text` starting where a word starts (after a space or an
/// opening bracket or quote: `EV-1001` and `notes/todo.txt` are one word each) and, with
/// `whole`, also ending where a word ends (before a space, a closing bracket or quote, or
/// punctuation that ends the word: the `.` of `draft.docx.`, not the one of `draft.docx`).
fn span_at_words(text: &str, span: &str, whole: bool) -> bool {
    const OPENING: &str = "\"'([{";
    const CLOSING: &str = "\"')]}";
    if span.is_empty() {
        return false;
    }
    text.match_indices(span).any(|(at, _)| {
        let starts = text[..at].chars().next_back().is_none_or(|c| c.is_whitespace() || OPENING.contains(c));
        let mut after = text[at + span.len()..].chars();
        let ends = match after.next() {
            None => true,
            Some(c) if c.is_whitespace() || CLOSING.contains(c) => true,
            Some(c) if c.is_ascii_punctuation() => {
                after.next().is_none_or(|d| d.is_whitespace() || CLOSING.contains(d))
            }
            Some(_) => false,
        };
        starts && (!whole || ends)
    })
}

/// A tool result as a small model reads it best: `{"result": x}` as x, other objects as
/// `key: value` pairs, anything else as it is.
/// The results of this turn's tool calls (the messages after its user message), as sent.
fn turn_results(messages: &[Message]) -> Vec<&str> {
    let turn = messages.iter().rposition(|m| matches!(m, Message::User { .. })).map_or(0, |i| i + 1);
    messages[turn..]
        .iter()
        .filter_map(|m| match m {
            Message::Tool { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .filter(|r| !r.trim().is_empty())
        .collect()
}

/// What an answer must state of a tool result: its strings and numbers (the readable result
/// when it has none, as `{"deleted": true}`; the whole text when it is not JSON).
fn facts(content: &str) -> Vec<String> {
    fn leaves(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(text) if !text.trim().is_empty() => out.push(text.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match serde_json::from_str::<Value>(content) {
        Ok(value) => leaves(&value, &mut out),
        Err(_) => out.push(content.trim().to_owned()),
    }
    if out.is_empty() {
        out.push(readable_result(content));
    }
    out
}

fn readable_result(content: &str) -> String {
    let scalar = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(map)) if map.len() == 1 && map.contains_key("result") => scalar(&map["result"]),
        Ok(Value::Object(map)) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{}: {}", k.replace('_', " "), scalar(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => content.to_owned(),
    }
}
