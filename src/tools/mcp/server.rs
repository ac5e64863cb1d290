//! A running MCP server: started as a process group (stdio) or reached at a URL, its tools
//! listed, its stderr kept (the last 64 KiB), its failures said in words, and its end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::ServiceExt;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::tool::{McpTool, is_legal_name, legal_name};
use super::{EXIT_GRACE, McpError, McpServerSpec, Transport};
use crate::record::ServerLog;
use crate::secret::Secrets;
use crate::text::printable;
use crate::tools::Tool;
use crate::tools::process::{ProcessGroup, Tail, own_group, stderr_note};

/// A started server: its session, the tools it listed and (for stdio) its process group
/// and stderr.
pub(crate) struct McpServer {
    pub(super) label: String,
    pub(super) shared: bool,
    pub(super) secrets: Secrets,
    pub(super) session: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    pub(super) listed: Vec<Arc<McpTool>>,
    pub(super) stderr: Arc<Mutex<Tail>>,
    /// Killed when dropped: an aborted run drops its servers without stopping them.
    pub(super) group: Mutex<Option<ProcessGroup>>,
    /// The stdio server's process, held so that it is reaped.
    pub(super) child: Mutex<Option<tokio::process::Child>>,
}

impl McpServer {
    /// Starts the server and lists its tools, within the entry's start-up time-out.
    pub(crate) async fn start(spec: &McpServerSpec, http: &reqwest::Client) -> Result<Arc<Self>, McpError> {
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
                let spawning = crate::tools::process::spawning();
                let mut spawned = command.spawn().map_err(|err| {
                    McpError::Spawn(crate::tools::process::spawn_error(&argv[0], dir, &err).to_string())
                })?;
                // From here on, whatever happens, the server's processes end with `group`.
                group = Some(ProcessGroup::of(spawned.id()));
                drop(spawning);
                let (Some(stdin), Some(stdout), pipe) =
                    (spawned.stdin.take(), spawned.stdout.take(), spawned.stderr.take())
                else {
                    return Err(McpError::Pipes(spec.label.clone()));
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
                        .map_err(|err| McpError::HeaderName { name: name.clone(), why: err.to_string() })?;
                    let mut value = reqwest::header::HeaderValue::try_from(value.expose())
                        .map_err(|_| McpError::HeaderValue(name.to_string()))?;
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
                let why = spec.secrets.redact(&format!("{why}{}", stderr_note(&stderr)));
                return Err(McpError::Start { label: spec.secrets.redact(&spec.label), why });
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
    pub(crate) fn tools(&self, include: Option<&[String]>) -> Result<Vec<Arc<dyn Tool>>, McpError> {
        let Some(include) = include else {
            return Ok(self.listed.iter().map(|t| t.clone() as Arc<dyn Tool>).collect());
        };
        include
            .iter()
            .map(|name| match self.listed.iter().find(|t| t.name == *name || t.original.as_ref() == Some(name)) {
                Some(tool) => Ok(tool.clone() as Arc<dyn Tool>),
                None => {
                    let listed: Vec<String> = self.listed.iter().map(|t| printable(&t.name)).collect();
                    Err(McpError::NotListed {
                        label: self.label.clone(),
                        name: printable(name),
                        listed: listed.join(", "),
                    })
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

/// Why the MCP handshake failed, in words: the transport's own cause (connection refused, an
/// HTTP status), which the SDK's error keeps out of its text and its source chain.
pub(super) fn handshake_in_words(err: &rmcp::service::ClientInitializeError, spec: &McpServerSpec) -> String {
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
pub(super) fn in_words(err: &(dyn std::error::Error + 'static), spec: &McpServerSpec) -> String {
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
                let why = crate::http::error_chain(http);
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
    let text = crate::http::error_chain(err);
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

/// A stdio server's output on its way to the SDK, watched for lines longer than the SDK
/// reads (it drops them and keeps waiting): each such line is counted in `oversized`.
pub(super) struct LineWatch<R> {
    pub(super) inner: R,
    pub(super) since_newline: usize,
    pub(super) oversized: Arc<tokio::sync::watch::Sender<u64>>,
}

impl<R> LineWatch<R> {
    /// What the SDK's stdio transport reads in one message.
    pub(super) const LIMIT: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
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
