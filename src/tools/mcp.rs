//! Tools an MCP server lists, through `rmcp`, the official Rust SDK: servers started as a
//! command (stdio) or reached at a URL (streamable HTTP), one per run by default or one for
//! the whole batch (`shared: true`), each ended when its run or the batch ends.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::declared::{expand, schema_problems};
use super::process::{ProcessGroup, own_group};
use super::{Tool, ToolContext, ToolError};
use crate::provider::Secret;
use crate::record::ServerLog;

/// How long a server may take to start and list its tools when the entry sets no
/// `startup_timeout_secs`.
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call may take when the entry sets no `timeout_secs`.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most of a server's stderr kept for the log (the end of it).
const STDERR_KEPT: usize = 64 << 10;
/// Lines of stderr a failed call's error carries.
const STDERR_LINES: usize = 5;
/// How long a server may take to exit once asked, before its process group is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// An `mcp:` entry of a scenario's `tools`.
#[derive(Debug)]
pub(crate) struct McpServerSpec {
    /// How errors and the log name the server: its command line or its URL.
    pub label: String,
    transport: Transport,
    /// Only these of the listed tools (`None`: all).
    pub include: Option<Vec<String>>,
    /// One server for the whole batch instead of one per run.
    pub shared: bool,
    startup_timeout: Duration,
    call_timeout: Duration,
}

#[derive(Debug)]
enum Transport {
    Stdio { argv: Vec<String>, dir: PathBuf },
    Http { url: String, headers: Vec<(String, Secret)> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    mcp: RawServer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    command: Option<Value>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    startup_timeout_secs: Option<f64>,
    #[serde(default)]
    timeout_secs: Option<f64>,
}

impl McpServerSpec {
    /// Reads an `{mcp: {...}}` entry; `dir` is where a `command` runs (the scenario file's
    /// directory), `env` expands `${VAR}` in headers. The error says what was expected.
    pub(crate) fn parse(entry: &Value, dir: PathBuf, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let raw: RawEntry = serde_json::from_value(entry.clone())
            .map_err(|err| format!("expected an MCP server entry `{{mcp: {{command or url, include, shared}}}}`: {err}"))?;
        let raw = raw.mcp;
        let seconds = |field: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
            Some(secs) => Err(format!("expected `{field}` between 0 and 86400, found {secs}")),
        };
        let startup_timeout = seconds("startup_timeout_secs", raw.startup_timeout_secs, DEFAULT_STARTUP_TIMEOUT)?;
        let call_timeout = seconds("timeout_secs", raw.timeout_secs, DEFAULT_CALL_TIMEOUT)?;
        let transport = match (raw.command, raw.url) {
            (Some(command), None) => {
                let argv: Option<Vec<String>> = command.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect());
                match argv {
                    Some(argv) if !argv.is_empty() && raw.headers.is_empty() => Transport::Stdio { argv, dir },
                    Some(argv) if !argv.is_empty() => return Err("`headers` go with `url`, not with `command`".to_owned()),
                    _ => return Err(format!("expected the MCP `command` to be a list of strings (program, then arguments), found {command}")),
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("expected the MCP `url` to be an http:// or https:// URL, found `{url}`"));
                }
                let mut headers = Vec::new();
                for (name, template) in raw.headers {
                    headers.push((name, Secret::new(expand(&template, env)?)));
                }
                Transport::Http { url, headers }
            }
            (Some(_), Some(_)) => return Err("expected one of `command` (stdio) or `url` (streamable HTTP) in an MCP entry, found both".to_owned()),
            (None, None) => return Err("expected `command` (stdio) or `url` (streamable HTTP) in an MCP entry".to_owned()),
        };
        if let Some(include) = &raw.include
            && include.is_empty()
        {
            return Err("expected `include` to name at least one tool (leave it out for all)".to_owned());
        }
        let label = match &transport {
            Transport::Stdio { argv, .. } => argv.join(" "),
            Transport::Http { url, .. } => url.clone(),
        };
        Ok(Self { label, transport, include: raw.include, shared: raw.shared, startup_timeout, call_timeout })
    }

    /// What makes two entries the same server, for sharing one across a batch. Holds header
    /// values: never shown.
    fn identity(&self) -> String {
        match &self.transport {
            Transport::Stdio { argv, dir } => format!("stdio\0{}\0{}", dir.display(), argv.join("\0")),
            Transport::Http { url, headers } => {
                let headers: Vec<String> = headers.iter().map(|(name, value)| format!("{name}\0{}", value.expose())).collect();
                format!("http\0{url}\0{}", headers.join("\0"))
            }
        }
    }
}

/// A started server: its session, the tools it listed and (for stdio) its process group
/// and stderr.
pub(crate) struct McpServer {
    label: String,
    shared: bool,
    session: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    listed: Vec<Arc<McpTool>>,
    stderr: Arc<Mutex<Tail>>,
    /// Killed when dropped: an aborted run drops its servers without stopping them.
    group: Mutex<Option<ProcessGroup>>,
}

impl McpServer {
    /// Starts the server and lists its tools, within the entry's start-up time-out.
    pub(crate) async fn start(spec: &McpServerSpec, http: &reqwest::Client) -> Result<Arc<Self>, String> {
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let mut group: Option<ProcessGroup> = None;
        let mut reader = None;
        // True once stderr has been read to its end (at once for a server without one).
        let (closed_tx, stderr_closed) = tokio::sync::watch::channel(!matches!(spec.transport, Transport::Stdio { .. }));
        let handshake = match &spec.transport {
            Transport::Stdio { argv, dir } => {
                let mut command = tokio::process::Command::new(&argv[0]);
                own_group(command.args(&argv[1..]).current_dir(dir));
                let (transport, pipe) = TokioChildProcess::builder(command)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|err| format!("cannot start `{}` in {}: {err}", argv[0], dir.display()))?;
                // From here on, whatever happens, the server's processes end with `group`.
                group = Some(ProcessGroup::of(transport.id()));
                if let Some(mut pipe) = pipe {
                    let stderr = stderr.clone();
                    reader = Some(tokio::spawn(async move {
                        let mut chunk = [0u8; 8192];
                        while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                            stderr.lock().expect("stderr lock").push(&chunk[..n]);
                        }
                        closed_tx.send_replace(true);
                    }));
                }
                Box::pin(().serve(transport)) as BoxFuture<'_, _>
            }
            Transport::Http { url, headers } => {
                let mut custom = HashMap::new();
                for (name, value) in headers {
                    let name = reqwest::header::HeaderName::try_from(name.as_str()).map_err(|err| format!("header `{name}`: {err}"))?;
                    let mut value = reqwest::header::HeaderValue::try_from(value.expose())
                        .map_err(|_| format!("header `{name}` has a value that is not a valid header value"))?;
                    value.set_sensitive(true);
                    custom.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
                Box::pin(().serve(StreamableHttpClientTransport::with_client(http.clone(), config)))
            }
        };
        let started = async {
            let session = handshake.await.map_err(|err| err.to_string())?;
            let listed = session.peer().list_all_tools().await.map_err(|err| format!("cannot list its tools: {err}"))?;
            Ok::<_, String>((session, listed))
        };
        let failed = match tokio::time::timeout(spec.startup_timeout, started).await {
            Ok(Ok(started)) => Ok(started),
            Ok(Err(err)) => Err(format!("could not start: {err}")),
            Err(_) => Err(format!("did not start within {:?}", spec.startup_timeout)),
        };
        let (session, listed) = match failed {
            Ok(started) => started,
            Err(why) => {
                // Its last words say why: end it, then read stderr to its end.
                if let Some(mut group) = group {
                    group.kill();
                }
                if let Some(reader) = reader {
                    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
                }
                return Err(redact_headers(spec, format!("MCP server `{}` {why}{}", spec.label, stderr_note(&stderr))));
            }
        };
        let peer = session.peer().clone();
        let listed = listed
            .into_iter()
            .map(|tool| {
                let parameters = Value::Object((*tool.input_schema).clone());
                // A schema the validator cannot compile still goes to the model; the server
                // then judges the arguments itself.
                let validator = jsonschema::validator_for(&parameters).ok();
                Arc::new(McpTool {
                    name: tool.name.into_owned(),
                    description: tool.description.map(std::borrow::Cow::into_owned).unwrap_or_default(),
                    parameters,
                    validator,
                    peer: peer.clone(),
                    server: spec.label.clone(),
                    stderr: stderr.clone(),
                    stderr_closed: stderr_closed.clone(),
                    timeout: spec.call_timeout,
                })
            })
            .collect();
        Ok(Arc::new(Self {
            label: spec.label.clone(),
            shared: spec.shared,
            session: tokio::sync::Mutex::new(Some(session)),
            listed,
            stderr,
            group: Mutex::new(group),
        }))
    }

    /// The tools `include` asks for (all when it is absent), or which one the server lacks.
    pub(crate) fn tools(&self, include: Option<&[String]>) -> Result<Vec<Arc<dyn Tool>>, String> {
        let Some(include) = include else { return Ok(self.listed.iter().map(|t| t.clone() as Arc<dyn Tool>).collect()) };
        include
            .iter()
            .map(|name| match self.listed.iter().find(|t| t.name == *name) {
                Some(tool) => Ok(tool.clone() as Arc<dyn Tool>),
                None => {
                    let listed: Vec<&str> = self.listed.iter().map(|t| t.name.as_str()).collect();
                    Err(format!("MCP server `{}` does not list tool `{name}` named in `include`; it lists: {}", self.label, listed.join(", ")))
                }
            })
            .collect()
    }

    /// What the log keeps of it.
    pub(crate) fn log(&self) -> ServerLog {
        ServerLog { server: self.label.clone(), shared: self.shared, stderr: self.stderr.lock().expect("stderr lock").text() }
    }

    /// Ends the session and the server: asks it to exit (SIGTERM to its process group,
    /// stdin closed), then kills what is left after a grace period.
    pub(crate) async fn stop(&self) {
        let group = self.group.lock().expect("group lock").take();
        #[cfg(unix)]
        if let Some(group) = &group {
            group.signal(libc::SIGTERM);
        }
        if let Some(mut session) = self.session.lock().await.take() {
            let _ = session.close_with_timeout(EXIT_GRACE).await;
        }
        drop(group); // SIGKILL to whatever of the group is still there.
    }
}

/// The end of a server's stderr, at most [`STDERR_KEPT`] bytes.
#[derive(Default)]
struct Tail {
    bytes: std::collections::VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(STDERR_KEPT);
        self.bytes.drain(..excess);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// `; stderr: ...` with the last lines the server wrote, or nothing.
fn stderr_note(stderr: &Mutex<Tail>) -> String {
    let text = stderr.lock().expect("stderr lock").text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("; stderr: {}", lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n"))
}

fn redact_headers(spec: &McpServerSpec, text: String) -> String {
    match &spec.transport {
        Transport::Http { headers, .. } => headers.iter().fold(text, |text, (_, secret)| secret.redact(&text)),
        Transport::Stdio { .. } => text,
    }
}

/// One tool of a started server.
pub(crate) struct McpTool {
    name: String,
    description: String,
    parameters: Value,
    validator: Option<jsonschema::Validator>,
    peer: Peer<RoleClient>,
    server: String,
    stderr: Arc<Mutex<Tail>>,
    stderr_closed: tokio::sync::watch::Receiver<bool>,
    timeout: Duration,
}

impl McpTool {
    async fn answer(&self, arguments: Value) -> Result<Value, ToolError> {
        let mut params = CallToolRequestParams::new(self.name.clone());
        if let Value::Object(arguments) = arguments {
            params.arguments = Some(arguments);
        }
        match tokio::time::timeout(self.timeout, self.peer.call_tool(params)).await {
            Ok(Ok(result)) => content(result),
            Ok(Err(err)) => {
                // A server that died says why on stderr: let the reader reach its end.
                if matches!(err, rmcp::ServiceError::TransportClosed) {
                    let mut closed = self.stderr_closed.clone();
                    let _ = tokio::time::timeout(Duration::from_secs(1), closed.wait_for(|closed| *closed)).await;
                }
                Err(ToolError::Failed(format!("MCP server `{}`: {err}{}", self.server, stderr_note(&self.stderr))))
            }
            Err(_) => Err(ToolError::Failed(format!("MCP server `{}` did not answer `{}` within {:?}", self.server, self.name, self.timeout))),
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
    fn source(&self) -> &'static str {
        "mcp"
    }
    fn check(&self, arguments: &Value) -> Vec<String> {
        self.validator.as_ref().map(|v| schema_problems(v, arguments)).unwrap_or_default()
    }
    fn call<'a>(&'a self, arguments: Value, _context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(self.answer(arguments))
    }
}

/// A call's content blocks as the tool message: text blocks joined by newlines, other
/// blocks as their JSON, structured content when there are no blocks. `isError` makes it a
/// tool error with that text.
fn content(result: CallToolResult) -> Result<Value, ToolError> {
    let texts: Option<Vec<&str>> = result.content.iter().map(|block| block.as_text().map(|t| t.text.as_str())).collect();
    let value = match texts {
        Some(texts) if !texts.is_empty() => Value::String(texts.join("\n")),
        _ if result.content.is_empty() => result.structured_content.clone().unwrap_or(Value::Null),
        _ => serde_json::to_value(&result.content).unwrap_or(Value::Null),
    };
    if result.is_error == Some(true) {
        return Err(ToolError::Failed(match value {
            Value::String(text) => text,
            other => other.to_string(),
        }));
    }
    Ok(value)
}

/// The servers of one run: those it started and the shared ones it uses, and the tools it
/// offers from them.
pub(crate) struct RunServers {
    servers: Vec<Arc<McpServer>>,
    pub tools: Vec<Arc<dyn Tool>>,
}

impl RunServers {
    /// Starts the run's own servers and fetches the shared ones from `pool`. The first that
    /// cannot start, or lacks a tool in `include`, is the error; those already started are
    /// stopped.
    pub(crate) async fn start(specs: &[Arc<McpServerSpec>], pool: &McpPool, http: &reqwest::Client) -> Result<Self, String> {
        let mut run = Self { servers: Vec::new(), tools: Vec::new() };
        for spec in specs {
            let server = if spec.shared { pool.get(spec, http).await } else { McpServer::start(spec, http).await };
            let tools = server.and_then(|server| {
                let tools = server.tools(spec.include.as_deref());
                run.servers.push(server);
                tools
            });
            match tools {
                Ok(tools) => run.tools.extend(tools),
                Err(err) => {
                    run.finish().await;
                    return Err(err);
                }
            }
        }
        Ok(run)
    }

    /// Stops the run's own servers; returns what the log keeps of every server it used.
    pub(crate) async fn finish(self) -> Vec<ServerLog> {
        let own = self.servers.iter().filter(|s| !s.shared);
        futures::future::join_all(own.map(|server| server.stop())).await;
        self.servers.iter().map(|server| server.log()).collect()
    }
}

/// A shared server: started once, by the first run that needs it.
type Starting = Arc<tokio::sync::OnceCell<Result<Arc<McpServer>, String>>>;

/// The batch's shared servers, each started by the first run that needs it.
#[derive(Default)]
pub(crate) struct McpPool {
    servers: Mutex<HashMap<String, Starting>>,
}

impl McpPool {
    async fn get(&self, spec: &McpServerSpec, http: &reqwest::Client) -> Result<Arc<McpServer>, String> {
        let cell = self.servers.lock().expect("pool lock").entry(spec.identity()).or_default().clone();
        cell.get_or_init(|| McpServer::start(spec, http)).await.clone()
    }

    /// Stops every shared server.
    pub(crate) async fn shutdown(&self) {
        let cells: Vec<_> = self.servers.lock().expect("pool lock").drain().map(|(_, cell)| cell).collect();
        let started = cells.iter().filter_map(|cell| cell.get()?.as_ref().ok());
        futures::future::join_all(started.map(|server| server.stop())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(entry: Value) -> Result<McpServerSpec, String> {
        McpServerSpec::parse(&entry, PathBuf::from("."), &|var| (var == "TOKEN").then(|| "s3cr3t-value".to_owned()))
    }

    #[test]
    fn entries_are_read_or_refused_with_what_was_expected() {
        let spec = parse(json!({"mcp": {"command": ["node", "server.js"], "include": ["echo"], "shared": true}})).unwrap();
        assert_eq!(spec.label, "node server.js");
        assert_eq!(spec.include.as_deref(), Some(&["echo".to_owned()][..]));
        assert!(spec.shared);
        let spec = parse(json!({"mcp": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}})).unwrap();
        assert!(!spec.shared);
        assert!(!format!("{spec:?}").contains("s3cr3t-value"), "{spec:?}");
        for (entry, expected) in [
            (json!({"mcp": {}}), "expected `command` (stdio) or `url`"),
            (json!({"mcp": {"command": ["a"], "url": "http://x"}}), "found both"),
            (json!({"mcp": {"command": "node server.js"}}), "a list of strings"),
            (json!({"mcp": {"url": "ftp://x"}}), "http:// or https://"),
            (json!({"mcp": {"command": ["a"], "inclde": ["x"]}}), "unknown field `inclde`"),
            (json!({"mcp": {"command": ["a"], "include": []}}), "at least one tool"),
            (json!({"mcp": {"url": "http://x", "headers": {"A": "${NOPE}"}}}), "set NOPE"),
            (json!({"mcp": {"command": ["a"]}, "name": "x"}), "unknown field `name`"),
            (json!({"mcp": {"command": ["a"], "timeout_secs": -1}}), "`timeout_secs` between"),
        ] {
            let err = parse(entry.clone()).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }

    #[test]
    fn text_blocks_become_the_message_and_is_error_a_tool_error() {
        use rmcp::model::ContentBlock;
        let two = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        assert_eq!(content(two).unwrap(), json!("a\nb"));
        let failed = CallToolResult::error(vec![ContentBlock::text("no such order")]);
        assert!(matches!(content(failed), Err(ToolError::Failed(m)) if m == "no such order"));
        let structured = CallToolResult::structured(json!({"total": 3}));
        // `structured` also writes the JSON as a text block, which is what the model reads.
        assert_eq!(content(structured).unwrap(), json!(r#"{"total":3}"#));
    }

    #[test]
    fn the_tail_keeps_the_end() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; STDERR_KEPT]);
        tail.push(b"end");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_KEPT);
        assert!(text.ends_with("aend"));
    }
}
