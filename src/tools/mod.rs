//! Tools the model may call: a [`Tool`] trait, the registry that runs calls by name, and
//! the built-ins.

mod builtin;
pub(crate) mod declared;
pub(crate) mod mcp;
pub(crate) mod process;
mod weather;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::message::{FunctionSpec, ToolSpec};
use crate::record::ToolSource;
use builtin::Checked;
pub use weather::WeatherConfig;

/// Makes runner the reaper of every process its tools start, however they detach
/// (see `process`): call once, before any tool starts.
pub(crate) fn contain_children() {
    if !process::contain() {
        tracing::debug!("cannot become a child subreaper: a tool process that detaches itself may outlive its run");
    }
}

/// File descriptors one run in flight may hold at most: its model connection, a command
/// tool's three pipes, an MCP server's pipes and connection, its log.
pub(crate) const FILES_PER_RUN: usize = 16;
/// Kept for everything else (the reports, the runtime, the embedded model's files).
const FILES_KEPT: usize = 64;

/// Raises the soft limit of open files to the hard one; returns how many runs may be in
/// flight at once within it (`None`: no bound known).
pub(crate) fn runs_within_open_files_limit() -> Option<(usize, u64)> {
    let limit = process::raise_open_files_limit()?;
    let usable = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(FILES_KEPT);
    Some(((usable / FILES_PER_RUN).max(1), limit))
}

/// Ends every process a tool left behind.
pub(crate) fn sweep_children() {
    process::sweep();
}

/// Why a tool call produced no result. Sent back to the model as `{"error": "..."}`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool `{0}`")]
    Unknown(String),
    #[error("invalid arguments: {0}")]
    BadArguments(String),
    #[error("{0}")]
    Failed(String),
    /// The machine, not the model, stopped the call (no file descriptors or processes left):
    /// the turn ends in an error, which `--resume` plays again.
    #[error("{0}")]
    Environment(String),
}

/// A function the model can call.
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON schema of the arguments object.
    fn parameters(&self) -> Value;
    /// How a call is answered, as the log says it.
    fn source(&self) -> ToolSource {
        ToolSource::Builtin
    }
    /// The name its server lists it under, where that is not legal as a model's tool name
    /// and the model is offered another (MCP tools only).
    fn original_name(&self) -> Option<&str> {
        None
    }
    /// What is wrong with `arguments` by the tool's schema (empty: nothing), as
    /// [`schema_problems`] says it.
    fn check(&self, arguments: &Value) -> Vec<String>;
    /// Runs the tool on already-decoded arguments.
    fn call<'a>(&'a self, arguments: Value, context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>>;
}

/// Every way `arguments` break the schema, each as `PATH: RULE` (PATH a JSON Pointer, `/` for
/// the whole object).
pub(crate) fn schema_problems(validator: &jsonschema::Validator, arguments: &Value) -> Vec<String> {
    validator
        .iter_errors(arguments)
        .map(|err| {
            let path = err.instance_path().as_str();
            format!("{}: {err}", if path.is_empty() { "/" } else { path })
        })
        .collect()
}

impl std::fmt::Debug for dyn Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tool({}, {})", self.name(), self.source())
    }
}

/// What tools may use during one run: the shared HTTP pool, service endpoints, the run's
/// random stream, and the batch's secrets (redacted from every result and error).
pub struct ToolContext {
    pub http: reqwest::Client,
    pub weather: Arc<WeatherConfig>,
    rng_state: AtomicU64,
    pub(crate) secrets: crate::secret::Secrets,
}

impl ToolContext {
    /// A context whose random stream starts from `seed`: the same seed, the same numbers.
    pub fn new(http: reqwest::Client, weather: Arc<WeatherConfig>, seed: u64) -> Self {
        Self { http, weather, rng_state: AtomicU64::new(seed), secrets: Default::default() }
    }

    /// This context with the batch's secrets.
    pub(crate) fn with_secrets(mut self, secrets: crate::secret::Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// The next number of the run's random stream (SplitMix64).
    pub fn next_random(&self) -> u64 {
        let state =
            self.rng_state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        crate::rng::mix64(state)
    }
}

/// Decodes `arguments` into the tool's typed arguments, or says what is wrong with them.
pub(crate) fn parse_arguments<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments).map_err(|err| ToolError::BadArguments(err.to_string()))
}

/// The tools runner knows, by name.
#[derive(Clone)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn Tool>>,
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl ToolRegistry {
    /// The built-in tools.
    pub fn builtin() -> Self {
        let tools: Vec<Arc<dyn Tool>> = vec![
            Checked::tool(builtin::AddNumbers),
            Checked::tool(builtin::ReverseText),
            Checked::tool(builtin::GetCurrentTime),
            Checked::tool(weather::GetWeather),
            Checked::tool(builtin::GetRandomNumber),
        ];
        Self { tools }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|tool| tool.name() == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tools.iter().map(|tool| tool.name())
    }

    /// This registry with `tools` added; one with a name already here shadows it.
    pub(crate) fn with(&self, tools: &[Arc<dyn Tool>]) -> Self {
        let mut all: Vec<Arc<dyn Tool>> =
            self.tools.iter().filter(|t| !tools.iter().any(|d| d.name() == t.name())).cloned().collect();
        all.extend(tools.iter().cloned());
        Self { tools: all }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.iter()
    }

    /// The specs offered to the model for `names`, in the given order.
    pub fn specs(&self, names: &[String]) -> Vec<ToolSpec> {
        names.iter().filter_map(|name| self.get(name)).map(|tool| spec_of(tool.as_ref())).collect()
    }

    /// Runs a call as the model wrote it: decodes the JSON arguments, finds the tool, runs it.
    /// Returns the decoded arguments (or the raw text when they are not JSON) and the outcome.
    pub async fn call(
        &self,
        name: &str,
        raw_arguments: &str,
        context: &ToolContext,
    ) -> (Value, Result<Value, ToolError>) {
        let arguments = match decode_arguments(raw_arguments) {
            Ok(arguments) => arguments,
            Err(err) => return (Value::String(raw_arguments.to_owned()), Err(err)),
        };
        let Some(tool) = self.get(name) else {
            return (arguments, Err(ToolError::Unknown(name.to_owned())));
        };
        // The tool runs only on arguments its schema accepts; the model is told what is wrong.
        let problems = tool.check(&arguments);
        if !problems.is_empty() {
            return (arguments, Err(ToolError::BadArguments(problems.join("; "))));
        }
        let result = tool.call(arguments.clone(), context).await;
        (arguments, result)
    }
}

/// The model's argument text as a JSON object; an empty text means no arguments.
pub fn decode_arguments(raw: &str) -> Result<Value, ToolError> {
    if raw.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(ToolError::BadArguments(format!("expected a JSON object, got {other}"))),
        Err(err) => Err(ToolError::BadArguments(format!("not valid JSON ({err})"))),
    }
}

fn spec_of(tool: &dyn Tool) -> ToolSpec {
    ToolSpec {
        kind: "function",
        function: FunctionSpec {
            name: tool.name().to_owned(),
            description: tool.description().to_owned(),
            parameters: tool.parameters(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(seed: u64) -> ToolContext {
        ToolContext::new(crate::http::http_client().unwrap(), Arc::new(WeatherConfig::default()), seed)
    }

    #[tokio::test]
    async fn bad_calls_become_errors() {
        let registry = ToolRegistry::builtin();
        let ctx = context(1);
        let (args, result) = registry.call("add_numbers", "{not json", &ctx).await;
        assert_eq!(args, json!("{not json"));
        assert!(matches!(result, Err(ToolError::BadArguments(m)) if m.contains("not valid JSON")));
        let (_, result) = registry.call("nope", "{}", &ctx).await;
        assert!(matches!(result, Err(ToolError::Unknown(n)) if n == "nope"));
        let (_, result) = registry.call("add_numbers", r#"{"x": "a", "y": 1}"#, &ctx).await;
        assert!(matches!(result, Err(ToolError::BadArguments(_))));
        let (_, result) = registry.call("add_numbers", r#"{"x": 2, "y": 3.5}"#, &ctx).await;
        assert_eq!(result.unwrap(), json!({"result": 5.5}));
    }

    #[tokio::test]
    async fn arguments_are_checked_against_the_schema_before_the_tool_runs() {
        let registry = ToolRegistry::builtin();
        let ctx = context(1);
        let (_, result) = registry.call("add_numbers", r#"{"x": 2}"#, &ctx).await;
        let Err(ToolError::BadArguments(message)) = result else { panic!("{result:?}") };
        assert_eq!(message, "/: \"y\" is a required property");
        let (_, result) = registry.call("reverse_text", r#"{"text": 42}"#, &ctx).await;
        let Err(ToolError::BadArguments(message)) = result else { panic!("{result:?}") };
        assert_eq!(message, "/text: 42 is not of type \"string\"");
        let (_, result) = registry.call("get_random_number", r#"{"min": 1.5, "max": 3}"#, &ctx).await;
        assert!(
            matches!(result, Err(ToolError::BadArguments(m)) if m.contains("/min: 1.5 is not of type \"integer\""))
        );
    }

    #[test]
    fn random_stream_is_reproducible() {
        let a: Vec<u64> = (0..4)
            .map({
                let c = context(42);
                move |_| c.next_random()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let c = context(42);
                move |_| c.next_random()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let c = context(43);
                move |_| c.next_random()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_tool_has_an_object_schema() {
        let registry = ToolRegistry::builtin();
        let names: Vec<_> = registry.names().collect();
        assert_eq!(names, ["add_numbers", "reverse_text", "get_current_time", "get_weather", "get_random_number"]);
        for tool in registry.iter() {
            assert_eq!(tool.parameters()["type"], "object", "{}", tool.name());
        }
    }
}
