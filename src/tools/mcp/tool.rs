//! One tool an MCP server lists: its name made legal for a model where it is not, its call
//! with a time-out, and its result as JSON (non-text blocks as placeholders).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{Peer, RoleClient};
use serde_json::Value;

use super::server::LineWatch;
use crate::record::ToolSource;
use crate::tools::declared::MAX_OUTPUT;
use crate::tools::process::{Tail, stderr_note};
use crate::tools::schema_problems;
use crate::tools::{Tool, ToolContext, ToolError};

/// Whether `name` may go to a model as a tool name: 1 to 64 letters, digits, `_` or `-`, as
/// OpenAI and Anthropic require.
pub(super) fn is_legal_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The name a listed tool is offered under: its own when legal, else every other character
/// as `_`, cut to 64, with `_2`, `_3`, ... where that meets a name already `taken`.
pub(super) fn legal_name(original: &str, taken: &[String]) -> String {
    if is_legal_name(original) {
        return original.to_owned();
    }
    let mut base: String = original
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    if base.is_empty() {
        base = "tool".to_owned();
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        let suffix = format!("_{n}");
        name = format!("{}{suffix}", &base[..base.len().min(64 - suffix.len())]);
        n += 1;
    }
    name
}

/// One tool of a started server.
pub(crate) struct McpTool {
    /// The name the model is offered: the listed one, or a legal name made from it.
    pub(super) name: String,
    /// The name the server lists, when it is not legal as a model's tool name.
    pub(super) original: Option<String>,
    pub(super) description: String,
    pub(super) parameters: Value,
    pub(super) validator: Option<jsonschema::Validator>,
    pub(super) peer: Peer<RoleClient>,
    pub(super) server: String,
    pub(super) stderr: Arc<Mutex<Tail>>,
    pub(super) stderr_closed: tokio::sync::watch::Receiver<bool>,
    /// Counts the server's messages too long for the SDK, which drops them unanswered.
    pub(super) oversized: tokio::sync::watch::Receiver<u64>,
    pub(super) timeout: Duration,
}

impl McpTool {
    pub(super) async fn answer(&self, arguments: Value) -> Result<Value, ToolError> {
        let mut params = CallToolRequestParams::new(self.original.clone().unwrap_or_else(|| self.name.clone()));
        if let Value::Object(arguments) = arguments {
            params.arguments = Some(arguments);
        }
        // A message too long for the SDK is dropped, and the call would wait for nothing: such
        // a message ends the wait.
        let mut oversized = self.oversized.clone();
        let seen = *oversized.borrow_and_update();
        let dropped = async move {
            if oversized.wait_for(|count| *count > seen).await.is_err() {
                // The reader is gone (a URL server has none): nothing more can be dropped.
                std::future::pending::<()>().await;
            }
        };
        let call = tokio::time::timeout(self.timeout, self.peer.call_tool(params));
        let outcome = tokio::select! {
            outcome = call => outcome,
            () = dropped => {
                return Err(ToolError::Failed(format!(
                    "MCP server `{}` sent a message longer than {} MiB while `{}` ran (its answer, most likely), which the MCP SDK does not read; a tool result may be {} MiB",
                    self.server,
                    LineWatch::<tokio::process::ChildStdout>::LIMIT >> 20,
                    self.name,
                    MAX_OUTPUT >> 20
                )));
            }
        };
        match outcome {
            Ok(Ok(result)) => content(result),
            Ok(Err(err)) => {
                // A server that died says why on stderr: let the reader reach its end.
                if matches!(err, rmcp::ServiceError::TransportClosed) {
                    let mut closed = self.stderr_closed.clone();
                    let _ = tokio::time::timeout(Duration::from_secs(1), closed.wait_for(|closed| *closed)).await;
                }
                Err(ToolError::Failed(format!("MCP server `{}`: {err}{}", self.server, stderr_note(&self.stderr))))
            }
            Err(_) => Err(ToolError::Failed(format!(
                "MCP server `{}` did not answer `{}` within {:?}",
                self.server, self.name, self.timeout
            ))),
        }
    }
}

impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    fn source(&self) -> ToolSource {
        ToolSource::Mcp
    }
    fn original_name(&self) -> Option<&str> {
        self.original.as_deref()
    }
    fn check(&self, arguments: &Value) -> Vec<String> {
        self.validator.as_ref().map(|v| schema_problems(v, arguments)).unwrap_or_default()
    }
    fn call<'a>(&'a self, arguments: Value, _context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(self.answer(arguments))
    }
}

/// A call's content blocks as the tool message: text blocks as their text, every other
/// block as a short placeholder naming its kind and size (`[image: image/png, 12 KiB]`),
/// joined by newlines; structured content when there are no blocks. `isError` makes it a
/// tool error with that text. A result past [`MAX_OUTPUT`] is an error, as for `command`
/// and `http` tools.
pub(super) fn content(result: CallToolResult) -> Result<Value, ToolError> {
    let size = serde_json::to_string(&result.content).map_or(0, |t| t.len())
        + result.structured_content.as_ref().map_or(0, |v| v.to_string().len());
    if size > MAX_OUTPUT {
        return Err(ToolError::Failed(format!(
            "the MCP server's result is {} KiB, past the {} MiB a tool result may be",
            size >> 10,
            MAX_OUTPUT >> 20
        )));
    }
    let value = if result.content.is_empty() {
        result.structured_content.clone().unwrap_or(Value::Null)
    } else {
        Value::String(result.content.iter().map(placeholder_or_text).collect::<Vec<_>>().join("\n"))
    };
    if result.is_error == Some(true) {
        return Err(ToolError::Failed(match value {
            Value::String(text) => text,
            other => other.to_string(),
        }));
    }
    Ok(value)
}

/// A content block as the model reads it: text as it is, anything else named.
pub(super) fn placeholder_or_text(block: &rmcp::model::ContentBlock) -> String {
    if let Some(text) = block.as_text() {
        return text.text.clone();
    }
    let json = serde_json::to_value(block).unwrap_or(Value::Null);
    let kind = json.get("type").and_then(Value::as_str).unwrap_or("content");
    let mime = json
        .get("mimeType")
        .and_then(Value::as_str)
        .or_else(|| json.pointer("/resource/mimeType").and_then(Value::as_str));
    // Base64 data is 4 characters for 3 bytes.
    let data =
        json.get("data").and_then(Value::as_str).or_else(|| json.pointer("/resource/blob").and_then(Value::as_str));
    let bytes =
        data.map(|d| d.len() / 4 * 3).or_else(|| json.pointer("/resource/text").and_then(Value::as_str).map(str::len));
    let uri = json.get("uri").and_then(Value::as_str).or_else(|| json.pointer("/resource/uri").and_then(Value::as_str));
    let mut parts = vec![kind.to_owned()];
    parts.extend(mime.map(str::to_owned));
    parts.extend(bytes.map(|b| if b >= 1024 { format!("{} KiB", b / 1024) } else { format!("{b} bytes") }));
    parts.extend(uri.map(str::to_owned));
    format!("[{}: {}]", parts[0], parts[1..].join(", "))
}
