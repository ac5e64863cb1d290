//! Anthropic's Messages API, natively: the conversation (kept in the Chat Completions shape
//! everywhere else) becomes a top-level `system` and alternating `user` / `assistant`
//! messages of content blocks, tool calls `tool_use` blocks and their results `tool_result`
//! blocks; the reply's blocks, `stop_reason` and usage (cache reads and writes apart) come
//! back as a [`Completion`]. Streamed replies are read from the Messages event stream.

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::remote::{Answer, Remote, Sent};
use super::{Completion, CompletionRequest, Exchange, Provider, ProviderError};
use crate::message::{FunctionCall, Message, ToolCall};
use crate::usage::Usage;

/// The API version every request names.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this is sent when the scenario sets none.
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A Messages API endpoint.
pub(crate) struct AnthropicProvider {
    remote: Remote,
}

impl AnthropicProvider {
    /// A client for the endpoint that `remote` posts to (`{base}/v1/messages`, with the key in
    /// `x-api-key` and the `anthropic-version` header).
    pub(crate) fn new(remote: Remote) -> Self {
        Self { remote }
    }

    async fn send(&self, request: CompletionRequest<'_>) -> Sent {
        let body = request_body(&request);
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
        let text = || self.remote.shown(&String::from_utf8_lossy(&bytes));
        if !(200..300).contains(&status) {
            // 408, 409, 429, 5xx and 529 (`overloaded_error`) are worth another attempt.
            let retryable = matches!(status, 408 | 409 | 429 | 500..);
            return Sent {
                result: Err(ProviderError::Status { status, body: text() }),
                status: Some(status),
                retryable,
                asked,
            };
        }
        let parsed: Response = match serde_json::from_slice(&bytes) {
            Ok(parsed) => parsed,
            Err(err) => {
                let truncated = err.is_eof();
                let reason = if truncated {
                    format!("the response body was cut short ({err})")
                } else {
                    format!("not a Messages API response ({err})")
                };
                return Sent::failed(ProviderError::InvalidResponse { reason, body: text() }, Some(status), truncated);
            }
        };
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for block in parsed.content {
            match block {
                Block::Text { text } => content.push_str(&text),
                Block::ToolUse { id, name, input } => tool_calls.push(call(id, name, input.to_string())),
                Block::Other => {}
            }
        }
        let completion = Completion {
            content: (!content.is_empty() || tool_calls.is_empty()).then_some(content),
            tool_calls,
            finish_reason: parsed.stop_reason.as_deref().map(finish_reason),
            usage: parsed.usage.as_ref().and_then(read_usage),
            raw_usage: parsed.usage,
        };
        Sent {
            result: Ok(self.remote.redact_completion(completion)),
            status: Some(status),
            retryable: false,
            asked: None,
        }
    }

    /// Reads the event stream: text deltas go to `on_text` as they arrive (the key held
    /// back until it is known not to be one), tool calls are put together from their
    /// `input_json_delta` pieces, usage from `message_start` and `message_delta`.
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
        if !stream.done {
            let error = if stream.events == 0 {
                ProviderError::EmptyStream
            } else {
                ProviderError::InvalidResponse {
                    reason: "the stream ended before message_stop".to_owned(),
                    body: self.remote.shown(&stream.content),
                }
            };
            // A connection cut mid-stream: another attempt may see the whole answer.
            return Err((error, true));
        }
        let tool_calls: Vec<ToolCall> = stream
            .blocks
            .into_iter()
            .filter_map(|block| match block {
                StreamBlock::ToolUse { id, name, json } => {
                    Some(call(id, name, if json.trim().is_empty() { "{}".to_owned() } else { json }))
                }
                StreamBlock::Text | StreamBlock::Other => None,
            })
            .collect();
        let raw = (!stream.usage.is_empty()).then(|| Value::Object(stream.usage));
        let completion = Completion {
            content: (!stream.content.is_empty() || tool_calls.is_empty()).then_some(stream.content),
            tool_calls,
            finish_reason: stream.stop_reason.as_deref().map(finish_reason),
            usage: raw.as_ref().and_then(read_usage),
            raw_usage: raw,
        };
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
        let event: Value = serde_json::from_str(data).map_err(|err| {
            (
                ProviderError::InvalidResponse {
                    reason: format!("not a Messages API stream event ({err})"),
                    body: self.remote.shown(data),
                },
                false,
            )
        })?;
        let index = event["index"].as_u64().unwrap_or(0) as usize;
        match event["type"].as_str().unwrap_or_default() {
            "message_start" => merge_usage(&mut stream.usage, &event["message"]["usage"]),
            "content_block_start" => {
                let block = &event["content_block"];
                let started = match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            show(text);
                            stream.content.push_str(text);
                        }
                        StreamBlock::Text
                    }
                    Some("tool_use") => StreamBlock::ToolUse {
                        id: block["id"].as_str().unwrap_or_default().to_owned(),
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        json: String::new(),
                    },
                    _ => StreamBlock::Other,
                };
                stream.put(index, started);
            }
            "content_block_delta" => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        show(text);
                        stream.content.push_str(text);
                    }
                    Some("input_json_delta") => {
                        if let Some(StreamBlock::ToolUse { json, .. }) = stream.at(index) {
                            json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    stream.stop_reason = Some(reason.to_owned());
                }
                merge_usage(&mut stream.usage, &event["usage"]);
            }
            "message_stop" => stream.done = true,
            "error" => {
                let error = &event["error"];
                let kind = error["type"].as_str().unwrap_or_default();
                let message = error["message"].as_str().map_or_else(|| error.to_string(), str::to_owned);
                // Overloaded or failing mid-stream: another attempt may go through.
                let retryable = matches!(kind, "overloaded_error" | "api_error");
                let text = if kind.is_empty() { message } else { format!("{kind}: {message}") };
                return Err((ProviderError::Streamed(self.remote.shown(&text)), retryable));
            }
            // `ping`, `content_block_stop` and events added later.
            _ => {}
        }
        Ok(())
    }
}

impl Provider for AnthropicProvider {
    fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
        Box::pin(async move { self.remote.attempts(|| Box::pin(self.send(request))).await })
    }

    fn base_url(&self) -> Option<&str> {
        Some(self.remote.base_url())
    }
}

/// The Messages API request for a conversation kept in the Chat Completions shape.
fn request_body(request: &CompletionRequest<'_>) -> Value {
    let (system, messages) = messages(request.messages);
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert("max_tokens".into(), json!(request.sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)));
    if let Some(system) = system {
        body.insert("system".into(), json!(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| json!({"name": tool.function.name, "description": tool.function.description, "input_schema": tool.function.parameters}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(name) = request.tool_choice {
        body.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
    }
    if let Some(temperature) = request.sampling.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.sampling.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if request.on_text.is_some() {
        body.insert("stream".into(), json!(true));
    }
    Value::Object(body)
}

/// System messages joined into the top-level `system`; the rest as alternating messages of
/// content blocks (consecutive messages of one role merged: tool results and the user's
/// next words travel together).
fn messages(messages: &[Message]) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => out.push((role, blocks)),
        }
    };
    for message in messages {
        match message {
            Message::System { content } => system.push(content),
            Message::User { content } => push("user", vec![json!({"type": "text", "text": content})]),
            Message::Assistant { content, tool_calls } => {
                let mut blocks = Vec::new();
                if let Some(text) = content.as_deref().filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    // The API takes an object; arguments that are not one are sent as none.
                    let input = serde_json::from_str::<Value>(&call.function.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push("assistant", blocks);
            }
            Message::Tool { tool_call_id, content } => {
                let mut block = json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content});
                if is_tool_error(content) {
                    block["is_error"] = json!(true);
                }
                push("user", vec![block]);
            }
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, out.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect())
}

/// Whether a tool message is runner's report of a failed call (`{"error": "..."}`).
fn is_tool_error(content: &str) -> bool {
    matches!(serde_json::from_str::<Value>(content), Ok(Value::Object(map)) if map.len() == 1 && map.contains_key("error"))
}

fn call(id: String, name: String, arguments: String) -> ToolCall {
    ToolCall { id, kind: "function".into(), function: FunctionCall { name, arguments } }
}

/// `stop_reason` as a Chat Completions `finish_reason`.
fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

/// Token counts from the API's usage object. `prompt_tokens` counts every input token:
/// `input_tokens` (neither read from nor written to the cache) plus cache writes plus cache
/// reads, so that figures compare with other providers'.
/// `None` too for a report not to believe (a count negative, fractional or past 2^53): the
/// figures are then estimated and the object kept raw.
fn read_usage(raw: &Value) -> Option<Usage> {
    // Absent or null is 0; anything but a non-negative integer is no count at all.
    let count = |field: &str| match raw.get(field) {
        None | Some(Value::Null) => Some(0),
        Some(value) => value.as_u64(),
    };
    if !raw.is_object() || (raw.get("input_tokens").is_none() && raw.get("output_tokens").is_none()) {
        return None;
    }
    let (written, read) = (count("cache_creation_input_tokens")?, count("cache_read_input_tokens")?);
    let prompt = count("input_tokens")?.checked_add(written)?.checked_add(read)?;
    let usage =
        Usage { cached_tokens: read, cache_write_tokens: written, ..Usage::new(prompt, count("output_tokens")?) };
    usage.is_believable().then_some(usage)
}

/// A stream's usage: `message_start` gives the input side, `message_delta` the output (and,
/// from some servers, the input again): later fields win.
fn merge_usage(into: &mut Map<String, Value>, usage: &Value) {
    if let Some(fields) = usage.as_object() {
        for (key, value) in fields {
            if !value.is_null() {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking and other blocks: not part of the reply.
    #[serde(other)]
    Other,
}

/// What a stream has delivered so far.
#[derive(Default)]
struct StreamState {
    content: String,
    /// Content blocks by their `index`.
    blocks: Vec<StreamBlock>,
    indexes: Vec<usize>,
    stop_reason: Option<String>,
    usage: Map<String, Value>,
    events: usize,
    done: bool,
}

enum StreamBlock {
    Text,
    ToolUse { id: String, name: String, json: String },
    Other,
}

impl StreamState {
    fn put(&mut self, index: usize, block: StreamBlock) {
        match self.indexes.iter().position(|&i| i == index) {
            Some(at) => self.blocks[at] = block,
            None => {
                self.indexes.push(index);
                self.blocks.push(block);
            }
        }
    }

    fn at(&mut self, index: usize) -> Option<&mut StreamBlock> {
        let at = self.indexes.iter().position(|&i| i == index)?;
        self.blocks.get_mut(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FunctionSpec, ToolSpec};
    use crate::provider::Sampling;

    fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
        call(id.into(), name.into(), arguments.into())
    }

    #[test]
    fn conversation_becomes_system_and_alternating_blocks() {
        let conversation = [
            Message::System { content: "Be brief.".into() },
            Message::User { content: "Add 2 and 3, reverse abc".into() },
            Message::Assistant {
                content: None,
                tool_calls: vec![tool_call("t1", "add", r#"{"a":2,"b":3}"#), tool_call("t2", "reverse", "not json")],
            },
            Message::Tool { tool_call_id: "t1".into(), content: r#"{"result":5}"#.into() },
            Message::Tool { tool_call_id: "t2".into(), content: r#"{"error":"boom"}"#.into() },
            Message::Assistant { content: Some("5, and reverse failed".into()), tool_calls: vec![] },
            Message::User { content: "thanks".into() },
        ];
        let (system, messages) = messages(&conversation);
        assert_eq!(system.as_deref(), Some("Be brief."));
        assert_eq!(
            Value::Array(messages),
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Add 2 and 3, reverse abc"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2, "b": 3}},
                    {"type": "tool_use", "id": "t2", "name": "reverse", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "{\"result\":5}"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "{\"error\":\"boom\"}", "is_error": true}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "5, and reverse failed"}]},
                {"role": "user", "content": [{"type": "text", "text": "thanks"}]}
            ])
        );
    }

    #[test]
    fn request_carries_tools_max_tokens_and_sampling() {
        let tools = [ToolSpec {
            kind: "function",
            function: FunctionSpec {
                name: "add".into(),
                description: "Adds".into(),
                parameters: json!({"type": "object"}),
            },
        }];
        let sampling = Sampling { temperature: Some(0.0), ..Sampling::default() };
        let conversation = [Message::User { content: "hi".into() }];
        let request = CompletionRequest {
            model: "claude-haiku-4-5",
            messages: &conversation,
            tools: &tools,
            sampling: &sampling,
            tool_choice: None,
            on_text: None,
        };
        let body = request_body(&request);
        assert_eq!(body["max_tokens"], json!(DEFAULT_MAX_TOKENS));
        assert_eq!(body["tools"], json!([{"name": "add", "description": "Adds", "input_schema": {"type": "object"}}]));
        assert_eq!(body["temperature"], json!(0.0));
        assert!(
            body.get("system").is_none()
                && body.get("top_p").is_none()
                && body.get("stream").is_none()
                && body.get("tool_choice").is_none()
        );
        // A forced call (a judge's `grade`).
        assert_eq!(
            request_body(&CompletionRequest { tool_choice: Some("add"), ..request })["tool_choice"],
            json!({"type": "tool", "name": "add"})
        );
        let capped = Sampling { max_tokens: Some(50), ..sampling };
        assert_eq!(request_body(&CompletionRequest { sampling: &capped, ..request })["max_tokens"], json!(50));
    }

    #[test]
    fn usage_counts_cache_reads_and_writes_as_input() {
        let usage =
            read_usage(&json!({"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 3000})).unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (4100, 3000, 1000, 20, 4120)
        );
        assert_eq!(usage.uncached_prompt_tokens(), 100);
        assert_eq!(read_usage(&json!({})), None);
        // Counts beyond reason are not believed: the figures are estimated instead.
        for raw in [
            json!({"input_tokens": u64::MAX, "output_tokens": 1, "cache_read_input_tokens": 5}),
            json!({"input_tokens": -3, "output_tokens": 1}),
            json!({"input_tokens": 2.5, "output_tokens": 1}),
            json!({"input_tokens": 1u64 << 54, "output_tokens": 1}),
            json!({"input_tokens": 1, "output_tokens": "7"}),
        ] {
            assert_eq!(read_usage(&raw), None, "{raw}");
        }
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        let mapped: Vec<String> = ["end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", "new_reason"]
            .iter()
            .map(|r| finish_reason(r))
            .collect();
        assert_eq!(mapped, ["stop", "length", "tool_calls", "stop", "content_filter", "new_reason"]);
    }
}
