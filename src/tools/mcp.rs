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
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::declared::{MAX_OUTPUT, expand};
use super::process::{ProcessGroup, own_group};
use super::schema_problems;
use super::{Tool, ToolContext, ToolError};
use crate::record::ServerLog;
use crate::record::ToolSource;
use crate::report::printable;
use crate::secret::{Secret, Secrets};

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
    /// The batch's secrets: a stdio server starts without their variables; what it says is
    /// redacted with them.
    secrets: Secrets,
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
    /// directory), `env` expands `${VAR}` in headers, whose values join `secrets`. The error
    /// says what was expected.
    pub(crate) fn parse(
        entry: &Value,
        dir: PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
        secrets: &Secrets,
    ) -> Result<Self, String> {
        let raw: RawEntry = serde_json::from_value(entry.clone()).map_err(|err| {
            format!("expected an MCP server entry `{{mcp: {{command or url, include, shared}}}}`: {err}")
        })?;
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
                let argv: Option<Vec<String>> =
                    command.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect());
                match argv {
                    Some(argv) if !argv.is_empty() && raw.headers.is_empty() => Transport::Stdio { argv, dir },
                    Some(argv) if !argv.is_empty() => {
                        return Err("`headers` go with `url`, not with `command`".to_owned());
                    }
                    _ => {
                        return Err(format!(
                            "expected the MCP `command` to be a list of strings (program, then arguments), found {command}"
                        ));
                    }
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("expected the MCP `url` to be an http:// or https:// URL, found `{url}`"));
                }
                let mut headers = Vec::new();
                for (name, template) in raw.headers {
                    let value = expand(&template, env)?;
                    secrets.add_header(&name, &template, &value);
                    headers.push((name, Secret::new(value)));
                }
                secrets.add_url(&url);
                Transport::Http { url, headers }
            }
            (Some(_), Some(_)) => {
                return Err("expected one of `command` (stdio) or `url` (streamable HTTP) in an MCP entry, found both"
                    .to_owned());
            }
            (None, None) => {
                return Err("expected `command` (stdio) or `url` (streamable HTTP) in an MCP entry".to_owned());
            }
        };
        if let Some(include) = &raw.include
            && include.is_empty()
        {
            return Err("expected `include` to name at least one tool (leave it out for all)".to_owned());
        }
        let label = match &transport {
            Transport::Stdio { argv, .. } => argv.join(" "),
            Transport::Http { url, .. } => secrets.redact(url),
        };
        Ok(Self {
            label,
            transport,
            include: raw.include,
            shared: raw.shared,
            startup_timeout,
            call_timeout,
            secrets: secrets.clone(),
        })
    }

    /// What makes two entries the same server, for sharing one across a batch. Holds header
    /// values: never shown.
    fn identity(&self) -> String {
        match &self.transport {
            Transport::Stdio { argv, dir } => {
                format!("stdio\0{}\0{}", dir.display(), argv.join("\0"))
            }
            Transport::Http { url, headers } => {
                let headers: Vec<String> =
                    headers.iter().map(|(name, value)| format!("{name}\0{}", value.expose())).collect();
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
    secrets: Secrets,
    session: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    listed: Vec<Arc<McpTool>>,
    stderr: Arc<Mutex<Tail>>,
    /// Killed when dropped: an aborted run drops its servers without stopping them.
    group: Mutex<Option<ProcessGroup>>,
    /// The stdio server's process, held so that it is reaped.
    child: Mutex<Option<tokio::process::Child>>,
}

impl McpServer {
    /// Starts the server and lists its tools, within the entry's start-up time-out.
    pub(crate) async fn start(spec: &McpServerSpec, http: &reqwest::Client) -> Result<Arc<Self>, String> {
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let mut group: Option<ProcessGroup> = None;
        // The server's process (stdio): killed if dropped, reaped by the runtime.
        let mut child: Option<tokio::process::Child> = None;
        // How many messages past what the SDK reads the server has sent (stdio).
        let (oversized_tx, oversized) = tokio::sync::watch::channel(0u64);
        let oversized_tx = Arc::new(oversized_tx);
        let mut reader = None;
        // True once stderr has been read to its end (at once for a server without one).
        let (closed_tx, stderr_closed) =
            tokio::sync::watch::channel(!matches!(spec.transport, Transport::Stdio { .. }));
        let handshake = match &spec.transport {
            Transport::Stdio { argv, dir } => {
                let mut command = tokio::process::Command::new(&argv[0]);
                own_group(command.args(&argv[1..]).current_dir(dir), &spec.secrets);
                let spawning = super::process::spawning();
                let mut spawned = command
                    .spawn()
                    .map_err(|err| format!("MCP server {}", super::process::spawn_error(&argv[0], dir, &err)))?;
                // From here on, whatever happens, the server's processes end with `group`.
                group = Some(ProcessGroup::of(spawned.id()));
                drop(spawning);
                let (Some(stdin), Some(stdout), pipe) =
                    (spawned.stdin.take(), spawned.stdout.take(), spawned.stderr.take())
                else {
                    return Err(format!(
                        "MCP server `{}`: its standard input and output could not be opened",
                        spec.label
                    ));
                };
                child = Some(spawned);
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
                let stdout = LineWatch { inner: stdout, since_newline: 0, oversized: oversized_tx.clone() };
                Box::pin(().serve((stdout, stdin))) as BoxFuture<'_, _>
            }
            Transport::Http { url, headers } => {
                let mut custom = HashMap::new();
                for (name, value) in headers {
                    let name = reqwest::header::HeaderName::try_from(name.as_str())
                        .map_err(|err| format!("header `{name}`: {err}"))?;
                    let mut value = reqwest::header::HeaderValue::try_from(value.expose())
                        .map_err(|_| format!("header `{name}` has a value that is not a valid header value"))?;
                    value.set_sensitive(true);
                    custom.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
                Box::pin(().serve(StreamableHttpClientTransport::with_client(http.clone(), config)))
            }
        };
        // How far it got, for a time-out's message.
        let shook_hands = std::sync::atomic::AtomicBool::new(false);
        let started = async {
            let session = handshake.await.map_err(|err| handshake_in_words(&err, spec))?;
            shook_hands.store(true, std::sync::atomic::Ordering::Relaxed);
            let listed = session
                .peer()
                .list_all_tools()
                .await
                .map_err(|err| format!("cannot list its tools: {}", in_words(&err, spec)))?;
            Ok::<_, String>((session, listed))
        };
        let failed = match tokio::time::timeout(spec.startup_timeout, started).await {
            Ok(Ok(started)) => Ok(started),
            Ok(Err(err)) => Err(format!("could not start: {err}")),
            Err(_) if shook_hands.load(std::sync::atomic::Ordering::Relaxed) => Err(format!(
                "answered the MCP handshake but did not list its tools within {:?} (startup_timeout_secs)",
                spec.startup_timeout
            )),
            Err(_) => Err(format!(
                "did not start within {:?}: no answer to the MCP handshake (initialize){} (startup_timeout_secs)",
                spec.startup_timeout,
                if matches!(spec.transport, Transport::Stdio { .. }) {
                    "; a stdio server must speak JSON-RPC on its stdout and log only to stderr"
                } else {
                    ""
                }
            )),
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
                return Err(spec.secrets.redact(&format!("MCP server `{}` {why}{}", spec.label, stderr_note(&stderr))));
            }
        };
        let peer = session.peer().clone();
        // Legal names keep theirs; a mapped name avoids every name listed or made before it.
        let mut names: Vec<String> =
            listed.iter().map(|tool| tool.name.to_string()).filter(|name| is_legal_name(name)).collect();
        let listed = listed
            .into_iter()
            .map(|tool| {
                let parameters = Value::Object((*tool.input_schema).clone());
                // A schema the validator cannot compile still goes to the model; the server
                // then judges the arguments itself.
                let validator = jsonschema::validator_for(&parameters).ok();
                let original = tool.name.into_owned();
                let name = legal_name(&original, &names);
                if name != original {
                    names.push(name.clone());
                }
                Arc::new(McpTool {
                    original: (name != original).then_some(original),
                    name,
                    description: tool.description.map(std::borrow::Cow::into_owned).unwrap_or_default(),
                    parameters,
                    validator,
                    peer: peer.clone(),
                    server: spec.label.clone(),
                    stderr: stderr.clone(),
                    stderr_closed: stderr_closed.clone(),
                    oversized: oversized.clone(),
                    timeout: spec.call_timeout,
                })
            })
            .collect();
        Ok(Arc::new(Self {
            label: spec.label.clone(),
            shared: spec.shared,
            secrets: spec.secrets.clone(),
            session: tokio::sync::Mutex::new(Some(session)),
            listed,
            stderr,
            group: Mutex::new(group),
            child: Mutex::new(child),
        }))
    }

    /// The tools `include` asks for (all when it is absent), or which one the server lacks.
    /// `include` may name a tool as the server lists it or as the model is offered it.
    pub(crate) fn tools(&self, include: Option<&[String]>) -> Result<Vec<Arc<dyn Tool>>, String> {
        let Some(include) = include else {
            return Ok(self.listed.iter().map(|t| t.clone() as Arc<dyn Tool>).collect());
        };
        include
            .iter()
            .map(|name| match self.listed.iter().find(|t| t.name == *name || t.original.as_ref() == Some(name)) {
                Some(tool) => Ok(tool.clone() as Arc<dyn Tool>),
                None => {
                    let listed: Vec<String> = self.listed.iter().map(|t| printable(&t.name)).collect();
                    Err(format!(
                        "MCP server `{}` does not list tool `{}` named in `include`; it lists: {}",
                        self.label,
                        printable(name),
                        listed.join(", ")
                    ))
                }
            })
            .collect()
    }

    /// What the log keeps of it (its stderr redacted).
    pub(crate) fn log(&self) -> ServerLog {
        ServerLog {
            server: self.label.clone(),
            shared: self.shared,
            stderr: self.secrets.redact(&self.stderr.lock().expect("stderr lock").text()),
        }
    }

    /// Ends the session and the server: asks it to exit (SIGTERM to its process group,
    /// stdin closed), then kills what is left after a grace period.
    pub(crate) async fn stop(&self) {
        let mut group = self.group.lock().expect("group lock").take();
        #[cfg(unix)]
        if let Some(group) = &group {
            group.signal(libc::SIGTERM);
        }
        if let Some(mut session) = self.session.lock().await.take() {
            let _ = session.close_with_timeout(EXIT_GRACE).await;
        }
        // SIGKILL to whatever of the group is still there; the server is reaped before the
        // group is let go, so the sweep that follows finds no child of its own to look into.
        if let Some(group) = &mut group {
            group.kill();
        }
        let child = self.child.lock().expect("child lock").take();
        if let Some(mut child) = child {
            let _ = child.wait().await;
        }
        drop(group);
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

/// Why the MCP handshake failed, in words: the transport's own cause (connection refused, an
/// HTTP status), which the SDK's error keeps out of its text and its source chain.
fn handshake_in_words(err: &rmcp::service::ClientInitializeError, spec: &McpServerSpec) -> String {
    use rmcp::service::ClientInitializeError;
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    match err {
        ClientInitializeError::TransportError { error, .. } => {
            let cause = error.error.as_ref();
            match cause.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
                Some(StreamableHttpError::Client(http)) => in_words(http, spec),
                Some(StreamableHttpError::HttpStatus(status)) => {
                    format!(
                        "{} answered HTTP {} (is the URL the server's MCP endpoint, often /mcp?)",
                        spec.label, status.status
                    )
                }
                _ => in_words(cause, spec),
            }
        }
        ClientInitializeError::ConnectionClosed(why) => {
            format!("closed the connection during the MCP handshake ({why})")
        }
        other => in_words(other, spec),
    }
}

/// Why a server could not be reached or started, in words: the cause that matters
/// (connection refused, an HTTP status) rather than the SDK's nested type names.
fn in_words(err: &(dyn std::error::Error + 'static), spec: &McpServerSpec) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return format!("connection refused at {} (is the server running at that address?)", spec.label);
            }
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return "it closed its standard input before the MCP handshake (is the command an MCP server over stdio?)".to_owned();
            }
            return format!("{io}");
        }
        if let Some(http) = cause.downcast_ref::<reqwest::Error>() {
            if http.is_connect() {
                let why = crate::provider::error_chain(http);
                let why =
                    if why.to_ascii_lowercase().contains("refused") { "connection refused".to_owned() } else { why };
                return format!("cannot connect to {}: {why} (is the server running at that address?)", spec.label);
            }
            if let Some(status) = http.status() {
                return format!(
                    "{} answered HTTP {status} (is the URL the server's MCP endpoint, often /mcp?)",
                    spec.label
                );
            }
            if http.is_timeout() {
                return format!("{} did not answer in time", spec.label);
            }
        }
        source = cause.source();
    }
    let text = crate::provider::error_chain(err);
    // The SDK's status errors name the code in their text.
    for code in ["401", "403", "404", "405", "500", "502", "503"] {
        if text.contains(&format!("HTTP {code}"))
            || text.contains(&format!("status: {code}"))
            || text.contains(&format!("status code {code}"))
        {
            return format!(
                "{} answered HTTP {code} (is the URL the server's MCP endpoint, often /mcp, and are its headers right?)",
                spec.label
            );
        }
    }
    if text.to_ascii_lowercase().contains("connection refused") {
        return format!("connection refused at {} (is the server running at that address?)", spec.label);
    }
    text
}

/// Whether `name` may go to a model as a tool name: 1 to 64 letters, digits, `_` or `-`, as
/// OpenAI and Anthropic require.
fn is_legal_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The name a listed tool is offered under: its own when legal, else every other character
/// as `_`, cut to 64, with `_2`, `_3`, ... where that meets a name already `taken`.
fn legal_name(original: &str, taken: &[String]) -> String {
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

/// A stdio server's output on its way to the SDK, watched for lines longer than the SDK
/// reads (it drops them and keeps waiting): each such line is counted in `oversized`.
struct LineWatch<R> {
    inner: R,
    since_newline: usize,
    oversized: Arc<tokio::sync::watch::Sender<u64>>,
}

impl<R> LineWatch<R> {
    /// What the SDK's stdio transport reads in one message.
    const LIMIT: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for LineWatch<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            let mut since = self.since_newline;
            for &byte in &buf.filled()[before..] {
                if byte == b'\n' {
                    since = 0;
                } else {
                    since += 1;
                    if since == Self::LIMIT + 1 {
                        self.oversized.send_modify(|count| *count += 1);
                    }
                }
            }
            self.since_newline = since;
        }
        polled
    }
}

/// One tool of a started server.
pub(crate) struct McpTool {
    /// The name the model is offered: the listed one, or a legal name made from it.
    name: String,
    /// The name the server lists, when it is not legal as a model's tool name.
    original: Option<String>,
    description: String,
    parameters: Value,
    validator: Option<jsonschema::Validator>,
    peer: Peer<RoleClient>,
    server: String,
    stderr: Arc<Mutex<Tail>>,
    stderr_closed: tokio::sync::watch::Receiver<bool>,
    /// Counts the server's messages too long for the SDK, which drops them unanswered.
    oversized: tokio::sync::watch::Receiver<u64>,
    timeout: Duration,
}

impl McpTool {
    async fn answer(&self, arguments: Value) -> Result<Value, ToolError> {
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
fn content(result: CallToolResult) -> Result<Value, ToolError> {
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
fn placeholder_or_text(block: &rmcp::model::ContentBlock) -> String {
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
    pub(crate) async fn start(
        specs: &[Arc<McpServerSpec>],
        pool: &McpPool,
        http: &reqwest::Client,
    ) -> Result<Self, String> {
        let mut run = Self { servers: Vec::new(), tools: Vec::new() };
        for spec in specs {
            let server = if spec.shared { pool.get(spec, http).await } else { McpServer::start(spec, http).await };
            let tools = server.and_then(|server| {
                let tools = server.tools(spec.include.as_deref());
                run.servers.push(server);
                tools
            });
            let tools = tools.and_then(|tools| {
                // Two tools of one name would go to the model twice, which providers refuse.
                match tools.iter().find(|tool| run.tools.iter().any(|t| t.name() == tool.name())) {
                    Some(tool) => Err(format!(
                        "two MCP servers list a tool named `{}` (the second: `{}`); offer one of them (`include` picks a server's tools)",
                        printable(tool.name()),
                        spec.label
                    )),
                    None => Ok(tools),
                }
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
        McpServerSpec::parse(
            &entry,
            PathBuf::from("."),
            &|var| (var == "TOKEN").then(|| "s3cr3t-value".to_owned()),
            &Secrets::default(),
        )
    }

    #[test]
    fn entries_are_read_or_refused_with_what_was_expected() {
        let spec =
            parse(json!({"mcp": {"command": ["node", "server.js"], "include": ["echo"], "shared": true}})).unwrap();
        assert_eq!(spec.label, "node server.js");
        assert_eq!(spec.include.as_deref(), Some(&["echo".to_owned()][..]));
        assert!(spec.shared);
        let spec =
            parse(json!({"mcp": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}}))
                .unwrap();
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
    fn other_blocks_become_placeholders_and_big_results_errors() {
        use rmcp::model::ContentBlock;
        let image = ContentBlock::image("A".repeat(4096), "image/png");
        let mixed = CallToolResult::success(vec![ContentBlock::text("the chart:"), image, ContentBlock::text("done")]);
        assert_eq!(content(mixed).unwrap(), json!("the chart:\n[image: image/png, 3 KiB]\ndone"));
        let big = CallToolResult::success(vec![ContentBlock::text("x".repeat(MAX_OUTPUT + 1))]);
        assert!(matches!(content(big), Err(ToolError::Failed(m)) if m.contains("past the 1 MiB")));
    }

    #[test]
    fn illegal_names_are_mapped_and_kept_apart() {
        assert_eq!(legal_name("lookup_order", &[]), "lookup_order");
        assert_eq!(legal_name("math.add", &[]), "math_add");
        assert_eq!(legal_name("fs/read", &["fs_read".to_owned()]), "fs_read_2");
        assert_eq!(legal_name("<b>\nx", &[]), "_b__x");
        assert_eq!(legal_name("", &[]), "tool");
        let long = legal_name(&"a.".repeat(50), &["a_".repeat(32)]);
        assert!(is_legal_name(&long) && long.ends_with("_2"), "{long}");
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
