//! What the embedded model is shown: the chat template with or without tool instructions,
//! tool calls in SmolLM2's own format, and tool results folded into readable facts.

use serde_json::{Value, json};

use super::Engine;
use super::LocalError;
use crate::message::{Message, ToolCall, ToolSpec};

/// SmolLM2's function-calling instructions, with the offered tools as JSON.
pub(super) fn tools_prompt(tools: &[ToolSpec]) -> String {
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
pub(super) fn tool_call_text(calls: &[ToolCall]) -> String {
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
pub(super) const CALL_OPEN: &str = "<tool_call>[\n";

/// JSON as the model writes it: `{"a": 1, "b": "x"}`.
pub(super) fn compact_json(value: &Value) -> String {
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

/// A tool result as a small model reads it best: `{"result": x}` as x, other objects as
/// `key: value` pairs, anything else as it is.
/// The results of this turn's tool calls (the messages after its user message), as sent.
pub(super) fn turn_results(messages: &[Message]) -> Vec<&str> {
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
pub(super) fn facts(content: &str) -> Vec<String> {
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

pub(super) fn readable_result(content: &str) -> String {
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

impl Engine {
    /// The prompt a text answer is written from: no tool instructions (they only confuse a
    /// model this small), each tool call's result folded into the user message it answers.
    pub(super) fn render_plain(&self, messages: &[Message]) -> Result<String, LocalError> {
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

    pub(super) fn apply_template(&self, rendered: Vec<Value>) -> Result<String, LocalError> {
        let template = self.templates.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! { messages => rendered, add_generation_prompt => true })
            .map_err(|e| LocalError::Invalid(format!("cannot render the chat template: {e}")))
    }

    pub(super) fn render(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<String, LocalError> {
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
}
