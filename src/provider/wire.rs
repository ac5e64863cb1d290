//! Chat Completions request and response bodies, with the API's own field names. The
//! messages themselves are [`crate::message`]'s.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::message::{Message, ToolCall, ToolSpec};

/// `POST /chat/completions` body.
#[derive(Debug, Serialize)]
pub(super) struct ChatRequest<'a> {
    pub model: &'a str,
    #[serde(serialize_with = "messages_on_the_wire")]
    pub messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<&'a [ToolSpec]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// `stream_options`: ask for usage in the stream's last chunk.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct StreamOptions {
    pub include_usage: bool,
}

/// The messages as the widest set of servers takes them: an assistant message that only
/// calls tools says `"content": ""` (some servers refuse `null` there, and a missing field
/// too). The log keeps `null`, as the API itself writes it.
fn messages_on_the_wire<S: Serializer>(messages: &&[Message], serializer: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct ToolCallsOnly<'a> {
        role: &'static str,
        content: &'static str,
        tool_calls: &'a [ToolCall],
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum OnWire<'a> {
        AsIs(&'a Message),
        ToolCallsOnly(ToolCallsOnly<'a>),
    }
    serializer.collect_seq(messages.iter().map(|message| match message {
        Message::Assistant { content: None, tool_calls } if !tool_calls.is_empty() => {
            OnWire::ToolCallsOnly(ToolCallsOnly { role: "assistant", content: "", tool_calls })
        }
        other => OnWire::AsIs(other),
    }))
}

/// A field that a server may also send as `null`, meaning the same as leaving it out.
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(deserializer: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One `data:` chunk of a streamed response.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ChatChunk {
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice>,
    /// `usage` as sent: kept whole in the log (`raw_usage`), read by [`WireUsage::read`].
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
    /// An error the server reports inside the stream (`data: {"error": ...}`).
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ChunkChoice {
    #[serde(default, deserialize_with = "null_as_default")]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A piece of a tool call: the first piece of each `index` carries its id and name, the
/// rest carry fragments of its arguments. Some servers leave `index` out.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

/// `POST /chat/completions` response (non-streaming).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ChatResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice>,
    /// `usage` as sent: kept whole in the log (`raw_usage`), read by [`WireUsage::read`].
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Choice {
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ResponseMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub refusal: Option<String>,
}

/// `usage` as the API reports it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// The token counts of a `usage` object; `None` when it is not one, or not one to believe
    /// (a count negative, fractional or past 2^53, parts that contradict the total): the
    /// figures are then estimated and the object kept raw.
    pub(super) fn read(raw: &serde_json::Value) -> Option<crate::usage::Usage> {
        let wire = raw.is_object().then(|| serde_json::from_value::<Self>(raw.clone()).ok()).flatten()?;
        let usage = crate::usage::Usage::from(&wire);
        usage.is_believable().then_some(usage)
    }
}

impl From<&WireUsage> for crate::usage::Usage {
    fn from(wire: &WireUsage) -> Self {
        Self {
            prompt_tokens: wire.prompt_tokens,
            completion_tokens: wire.completion_tokens,
            total_tokens: wire.total_tokens.unwrap_or(wire.prompt_tokens.saturating_add(wire.completion_tokens)),
            cached_tokens: wire.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
            reasoning_tokens: wire.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
            cache_write_tokens: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_call_only_messages_carry_empty_content_on_the_wire() {
        let call = ToolCall {
            id: "c".into(),
            kind: "function".into(),
            function: crate::message::FunctionCall { name: "f".into(), arguments: "{}".into() },
        };
        let messages = [
            Message::Assistant { content: None, tool_calls: vec![call] },
            Message::Assistant { content: None, tool_calls: vec![] },
        ];
        let body = ChatRequest {
            model: "m",
            messages: &messages,
            tools: None,
            tool_choice: None,
            temperature: None,
            top_p: None,
            max_tokens: None,
            max_completion_tokens: None,
            seed: None,
            stream: None,
            stream_options: None,
        };
        let wire = serde_json::to_value(&body).unwrap();
        assert_eq!(
            wire["messages"][0],
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
        assert_eq!(wire["messages"][1], json!({"role": "assistant", "content": null}));
        // The log keeps the API's own shape.
        assert_eq!(serde_json::to_value(&messages[0]).unwrap()["content"], serde_json::Value::Null);
    }

    #[test]
    fn null_lists_read_as_empty() {
        let chunk: ChatChunk = serde_json::from_value(
            json!({"choices": [{"delta": {"content": "a", "tool_calls": null}, "finish_reason": null}]}),
        )
        .unwrap();
        assert!(chunk.choices[0].delta.tool_calls.is_empty());
        let chunk: ChatChunk = serde_json::from_value(json!({"choices": null, "usage": null})).unwrap();
        assert!(chunk.choices.is_empty());
    }

    #[test]
    fn usage_details_are_read() {
        let response: ChatResponse = serde_json::from_value(json!({
            "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                      "prompt_tokens_details": {"cached_tokens": 64},
                      "completion_tokens_details": {"reasoning_tokens": 8}}
        }))
        .unwrap();
        let usage = WireUsage::read(response.usage.as_ref().unwrap()).unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.cached_tokens, usage.reasoning_tokens, usage.total_tokens),
            (100, 64, 8, 120)
        );
    }

    #[test]
    fn usage_beyond_reason_is_not_believed() {
        for raw in [
            json!({"prompt_tokens": 1u64 << 63, "completion_tokens": 1u64 << 63, "total_tokens": 0}),
            json!({"prompt_tokens": -1, "completion_tokens": 2, "total_tokens": 1}),
            json!({"prompt_tokens": 1.5, "completion_tokens": 2, "total_tokens": 3.5}),
            json!({"prompt_tokens": 1u64 << 54, "completion_tokens": 2}),
            json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 3}),
            json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 11}}),
            json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "completion_tokens_details": {"reasoning_tokens": 6}}),
        ] {
            assert_eq!(WireUsage::read(&raw), None, "{raw}");
        }
        // A total past prompt plus completion (hidden thinking counted there) is believed.
        assert!(WireUsage::read(&json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40})).is_some());
    }
}
