//! The Chat Completions API as the endpoint speaks it to an agent program: its requests read
//! into runner's own messages and tools, runner's completions written back as a response or
//! as the events of a stream.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::message::{FunctionCall, FunctionSpec, Message, ToolCall, ToolSpec};
use crate::model::Sampling;
use crate::provider::Completion;
use crate::usage::Usage;

/// A `POST /v1/chat/completions` body: what runner uses of it (every other field is
/// ignored, as a tolerant server does).
#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub tools: Option<Vec<InTool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// One message as an agent sends it: `content` a string, a list of parts, or null.
#[derive(Debug, Deserialize)]
pub(super) struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: InFunction,
}

#[derive(Debug, Deserialize)]
struct InFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// What an agent's request asks, in runner's terms.
#[derive(Debug)]
pub(super) struct Asked {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// The one tool the model must call (`tool_choice: {type: function, ...}`).
    pub forced: Option<String>,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
}

impl ChatRequest {
    /// The request in runner's terms, or what about it runner cannot take (a 400).
    pub(super) fn asked(self) -> Result<Asked, String> {
        let messages = self.messages.into_iter().map(InMessage::into_message).collect::<Result<Vec<_>, _>>()?;
        let mut tools = Vec::new();
        for tool in self.tools.unwrap_or_default() {
            if tool.kind.as_deref().is_some_and(|kind| kind != "function") {
                return Err(format!(
                    "tools of type `{}` are not served; only `function`",
                    tool.kind.unwrap_or_default()
                ));
            }
            tools.push(ToolSpec {
                kind: "function",
                function: FunctionSpec {
                    name: tool.function.name,
                    description: tool.function.description.unwrap_or_default(),
                    parameters: tool.function.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                },
            });
        }
        let forced = match &self.tool_choice {
            // `none`: the model may not call one, so it is offered none.
            Some(Value::String(choice)) if choice == "none" => {
                tools.clear();
                None
            }
            None | Some(Value::String(_) | Value::Null) => None,
            Some(choice) => match choice.pointer("/function/name").and_then(Value::as_str) {
                Some(name) => Some(name.to_owned()),
                None => {
                    return Err(format!(
                        "expected `tool_choice` to be auto, none, required or a function, found {choice}"
                    ));
                }
            },
        };
        Ok(Asked {
            messages,
            tools,
            forced,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                seed: self.seed,
            },
            stream: self.stream.unwrap_or(false),
            include_usage: self.stream_options.unwrap_or_default().include_usage,
        })
    }
}

impl InMessage {
    fn into_message(self) -> Result<Message, String> {
        let text = match self.content {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(piece)) => text.push_str(piece),
                        (kind, _) => {
                            return Err(format!(
                                "content parts of type `{}` are not served; only text",
                                kind.unwrap_or("?")
                            ));
                        }
                    }
                }
                Some(text)
            }
            Some(other) => return Err(format!("expected a message's `content` to be text, found {other}")),
        };
        Ok(match self.role.as_str() {
            "system" | "developer" => Message::System { content: text.unwrap_or_default() },
            "user" => Message::User { content: text.unwrap_or_default() },
            "assistant" => Message::Assistant { content: text, tool_calls: self.tool_calls.unwrap_or_default() },
            "tool" => Message::Tool {
                tool_call_id: self.tool_call_id.ok_or("a `tool` message needs its `tool_call_id`")?,
                content: text.unwrap_or_default(),
            },
            other => return Err(format!("unknown message role `{other}`")),
        })
    }
}

/// The finish reason in the API's words: `tool_calls` when there are calls, `length` for a
/// reply cut at its token limit, else `stop`.
fn finish_reason(completion: &Completion) -> &'static str {
    if !completion.tool_calls.is_empty() {
        return "tool_calls";
    }
    match completion.finish_reason.as_deref() {
        Some("length" | "max_tokens") => "length",
        Some("content_filter") => "content_filter",
        _ => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

/// Who answered, as every response and chunk says it.
pub(super) struct Header<'a> {
    pub id: &'a str,
    pub created: i64,
    pub model: &'a str,
}

/// A whole (unstreamed) response.
pub(super) fn response(header: &Header<'_>, completion: &Completion, usage: &Usage) -> Value {
    let mut message = json!({"role": "assistant", "content": completion.content});
    if !completion.tool_calls.is_empty() {
        message["tool_calls"] = json!(completion.tool_calls);
    }
    json!({
        "id": header.id,
        "object": "chat.completion",
        "created": header.created,
        "model": header.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(completion), "logprobs": null}],
        "usage": usage_json(usage),
    })
}

/// One `chat.completion.chunk` with `delta` (and `finish_reason` when it ends the choice).
pub(super) fn chunk(header: &Header<'_>, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": header.id,
        "object": "chat.completion.chunk",
        "created": header.created,
        "model": header.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// What ends a stream once the text has gone out: the calls, the finish reason, and the
/// usage chunk when the agent asked for it (`stream_options.include_usage`).
pub(super) fn closing_chunks(
    header: &Header<'_>,
    completion: &Completion,
    usage: &Usage,
    include_usage: bool,
) -> Vec<Value> {
    let mut chunks = Vec::new();
    if !completion.tool_calls.is_empty() {
        let calls: Vec<Value> = completion
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                json!({
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                })
            })
            .collect();
        chunks.push(chunk(header, json!({"tool_calls": calls}), None));
    }
    chunks.push(chunk(header, json!({}), Some(finish_reason(completion))));
    if include_usage {
        chunks.push(json!({
            "id": header.id,
            "object": "chat.completion.chunk",
            "created": header.created,
            "model": header.model,
            "choices": [],
            "usage": usage_json(usage),
        }));
    }
    chunks
}

/// An error body as the API writes one.
pub(super) fn error(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// A call id for a call the model gave none: unique within the run.
pub(super) fn call_id(run: u64, n: u64) -> String {
    format!("call_runner_{run:x}_{n}")
}

/// `FunctionCall`'s arguments as JSON when they parse, else the text.
pub(super) fn arguments(call: &FunctionCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| Value::String(call.arguments.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: Value) -> Result<Asked, String> {
        serde_json::from_value::<ChatRequest>(body).unwrap().asked()
    }

    #[test]
    fn an_sdk_request_reads_as_runner_s_messages_and_tools() {
        let asked = read(json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "add "}, {"type": "text", "text": "2 and 3"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "5"},
            ],
            "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "add"}},
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 50,
            "temperature": 0.2,
            "parallel_tool_calls": false,
        }))
        .unwrap();
        assert_eq!(asked.messages[0], Message::System { content: "be brief".into() });
        assert_eq!(asked.messages[1], Message::User { content: "add 2 and 3".into() });
        assert!(
            matches!(&asked.messages[2], Message::Assistant { content: None, tool_calls } if tool_calls[0].id == "c1")
        );
        assert_eq!(asked.messages[3], Message::Tool { tool_call_id: "c1".into(), content: "5".into() });
        assert_eq!(asked.tools[0].function.name, "add");
        assert_eq!(asked.forced.as_deref(), Some("add"));
        assert!(asked.stream && asked.include_usage);
        assert_eq!(asked.sampling, Sampling { temperature: Some(0.2), top_p: None, max_tokens: Some(50), seed: None });
    }

    #[test]
    fn tool_choice_none_offers_no_tool_and_images_are_refused() {
        let asked = read(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "add"}}],
            "tool_choice": "none",
        }))
        .unwrap();
        assert!(asked.tools.is_empty() && asked.forced.is_none());
        let image = read(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}));
        assert!(image.unwrap_err().contains("`image_url` are not served"));
        let role = read(json!({"messages": [{"role": "narrator", "content": "x"}]}));
        assert!(role.unwrap_err().contains("unknown message role `narrator`"));
    }

    #[test]
    fn responses_and_chunks_are_the_api_s_shape() {
        let header = Header { id: "chatcmpl-1", created: 7, model: "m" };
        let call = ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall { name: "add".into(), arguments: "{}".into() },
        };
        let completion = Completion { tool_calls: vec![call], ..Completion::default() };
        let body = response(&header, &completion, &Usage::new(10, 2));
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "add");
        assert_eq!(body["usage"]["total_tokens"], 12);
        let closing = closing_chunks(&header, &completion, &Usage::new(10, 2), true);
        assert_eq!(closing.len(), 3);
        assert_eq!(closing[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(closing[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(closing[2]["choices"], json!([]));
        assert_eq!(closing[2]["usage"]["prompt_tokens"], 10);
        let text = Completion {
            content: Some("hi".into()),
            finish_reason: Some("max_tokens".into()),
            ..Completion::default()
        };
        assert_eq!(response(&header, &text, &Usage::default())["choices"][0]["finish_reason"], "length");
    }
}
