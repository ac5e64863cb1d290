//! Integration tests: the `runner` binary against real HTTP servers on 127.0.0.1.

// Helpers are `pub` for the modules of this one test binary.
#![allow(unreachable_pub)]

mod agents;
mod cache;
mod cache_tree;
mod chat;
mod cli;
mod compare;
mod confidence;
mod containment;
mod declared;
mod edges;
mod faults;
mod figures;
mod gates;
mod hostile;
mod html;
mod judge;
#[cfg(feature = "local")]
mod local;
mod log;
mod mcp;
mod readme;
mod run;
mod secrets;
mod server;
mod simulate;
mod snapshot;
mod terminal;
mod traces;
mod vendors;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use server::{MockServer, Reply, Request};

/// The API key the tests use; it must never appear in any output or file.
pub const KEY: &str = "sk-test-4f9a7c1e-this-key-must-never-be-written";

/// Sends `signal` to a child that has not been reaped yet.
#[allow(unsafe_code)]
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on the child's pid, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// The rmcp test server (examples/mcp_test_server.rs), built by `cargo test` beside runner.
pub fn test_server() -> String {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_runner"));
    let path = runner.parent().unwrap().join("examples").join("mcp_test_server");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it; alone: cargo build --example mcp_test_server",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The process ids written to `pids.txt` in `ws` (by the test server, or a tool's script).
pub fn pids(ws: &Workspace) -> Vec<i32> {
    std::fs::read_to_string(ws.path().join("pids.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` is a process that has not ended (a zombie has ended).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
}

/// Waits until `what` holds, at most 10 s.
pub fn wait_for(what: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !what() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "timed out waiting");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A temporary working directory for one invocation of runner.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `runner ARGS` in this directory, pointed at `base_url` with the test key, and with
    /// nothing from the developer's environment that could change the outcome.
    pub fn runner(&self, base_url: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
        command
            .current_dir(self.path())
            .env("OPENAI_BASE_URL", format!("{base_url}/v1"))
            .env("OPENAI_API_KEY", KEY)
            .env("RUNNER_GEOCODING_URL", "http://127.0.0.1:9")
            .env("RUNNER_FORECAST_URL", "http://127.0.0.1:9")
            .env_remove("RUNNER_MODEL")
            .env_remove("RUNNER_CACHE_DIR");
        for var in [
            "OPENAI_ORG_ID",
            "OPENAI_PROJECT_ID",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "AZURE_OPENAI_ENDPOINT",
            "AZURE_OPENAI_API_KEY",
            "AZURE_OPENAI_API_VERSION",
            "GEMINI_API_KEY",
            "OPENROUTER_API_KEY",
            "GROQ_API_KEY",
            "MISTRAL_API_KEY",
            "DEEPSEEK_API_KEY",
            "TOGETHER_API_KEY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_SERVICE_NAME",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_SDK_DISABLED",
        ] {
            command.env_remove(var);
        }
        command
    }

    /// Every JSON log under `logs/runs`, parsed, sorted by file name.
    pub fn logs(&self) -> Vec<(String, Value)> {
        let mut logs = Vec::new();
        let root = self.path().join("logs/runs");
        for run in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(run.path()).unwrap().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(file.path()).unwrap();
                logs.push((name, serde_json::from_str(&text).unwrap()));
            }
        }
        logs.sort_by(|a, b| a.0.cmp(&b.0));
        logs
    }

    /// Every JSON log under `logs/runs` read into its typed mirror ([`log::Log`]), sorted by
    /// file name.
    pub fn run_logs(&self) -> Vec<(String, log::Log)> {
        self.logs().into_iter().map(|(name, value)| (name, serde_json::from_value(value).unwrap())).collect()
    }

    /// Every saved conversation under `logs/conversations`, parsed.
    pub fn conversation_logs(&self) -> Vec<Value> {
        std::fs::read_dir(self.path().join("logs/conversations"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one saved conversation.
    pub fn conversation_log(&self) -> Value {
        let mut logs = self.conversation_logs();
        assert_eq!(logs.len(), 1, "expected one saved conversation");
        logs.remove(0)
    }

    /// The only file under `reports/` that is a per-model summary (`summary`) or a report.
    pub fn report_file(&self, summary: bool) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(self.path().join("reports"))
            .unwrap()
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.ends_with(".csv") && name.ends_with(".summary.csv") == summary
            })
            .map(|entry| entry.path())
            .collect();
        assert_eq!(files.len(), 1, "expected one {} under reports/", if summary { "summary" } else { "report" });
        files.into_iter().next().unwrap()
    }

    /// The rows of the only CSV report under `reports/`, as (header -> value) maps.
    pub fn csv_rows(&self) -> Vec<std::collections::HashMap<String, String>> {
        read_csv(&self.report_file(false))
    }

    /// The rows of the report at `name` (relative to the workspace).
    pub fn csv_rows_of(&self, name: &str) -> Vec<std::collections::HashMap<String, String>> {
        read_csv(&self.path().join(name))
    }

    /// The only per-model summary under `reports/`.
    pub fn summary_rows(&self) -> Vec<std::collections::HashMap<String, String>> {
        read_csv(&self.report_file(true))
    }

    /// Every file under the directory, with its contents.
    pub fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }
}

/// Exit code, stdout and stderr of a finished command.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn outcome(output: Output) -> Outcome {
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn exec(command: &mut Command) -> Outcome {
    outcome(command.output().expect("runner starts"))
}

/// Runs `command` with its standard output closed before it writes a byte (`| head -0`):
/// every write meets a closed pipe.
pub fn with_closed_stdout(command: &mut Command) -> Outcome {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("runner starts");
    drop(child.stdout.take());
    outcome(child.wait_with_output().unwrap())
}

/// A CSV file's rows as (header -> value) maps.
pub fn read_csv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| headers.iter().map(str::to_owned).zip(r.unwrap().iter().map(str::to_owned)).collect())
        .collect()
}

/// One invocation of runner, described and then run: a workspace with its files, an optional
/// scripted server, the command line, the environment and standard input. A new test is a
/// few lines:
///
/// ```ignore
/// let run = Test::new().server(assistant).file("a.yaml", "turns:\n  - user: hello\n").args(["run", "a.yaml"]).run();
/// run.success();
/// assert_eq!(run.server().chat_bodies().len(), 1);
/// ```
pub struct Test {
    ws: Workspace,
    server: Option<MockServer>,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    stdin: Option<String>,
    /// The address of a server that was stopped.
    gone: Option<String>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Self {
        Self { ws: Workspace::new(), server: None, args: Vec::new(), env: Vec::new(), stdin: None, gone: None }
    }

    /// A scripted Chat Completions server on 127.0.0.1 that answers with `handler`; runner is
    /// pointed at it with the test key. Without one, requests go to a closed port.
    pub fn server(mut self, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        self.server = Some(MockServer::start(handler));
        self
    }

    /// The scripted server's address (the test gave one), for a variable that names it.
    pub fn url(&self) -> String {
        self.server.as_ref().expect("the test started no server").url()
    }

    /// A file in the workspace (directories created).
    pub fn file(self, name: &str, content: &str) -> Self {
        self.ws.write(name, content);
        self
    }

    /// Command-line arguments, appended.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable for runner.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), Some(value.to_owned())));
        self
    }

    /// An environment variable runner must not see.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// The server stopped: requests go to its address, where nothing answers now (a run
    /// again with the server gone, as `--replay` needs no server).
    pub fn server_gone(mut self) -> Self {
        self.gone = self.server.take().map(|server| server.url());
        self
    }

    /// Standard input (otherwise none).
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    /// Runs runner to its end.
    pub fn run(self) -> Ran {
        let base_url = match (&self.server, &self.gone) {
            (Some(server), _) => server.url(),
            (None, Some(url)) => url.clone(),
            (None, None) => "http://127.0.0.1:9".to_owned(),
        };
        let mut command = self.ws.runner(&base_url);
        command.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("runner starts");
        if let Some(text) = &self.stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            let _ = pipe.write_all(text.as_bytes());
        }
        let Outcome { code, stdout, stderr } = outcome(child.wait_with_output().unwrap());
        Ran { ws: self.ws, server: self.server, gone: self.gone, code, stdout, stderr }
    }
}

/// A finished invocation: its outcome, its workspace and its server.
pub struct Ran {
    pub ws: Workspace,
    server: Option<MockServer>,
    /// The address of the server the invocation was told of, stopped before it.
    gone: Option<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The scripted server (the test gave one).
    pub fn server(&self) -> &MockServer {
        self.server.as_ref().expect("the test started no server")
    }

    /// Asserts the exit code, showing both outputs when it differs.
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts exit code 0.
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    /// Another invocation in the same workspace, against the same server: new arguments,
    /// environment and standard input.
    pub fn then(self) -> Test {
        Test { ws: self.ws, server: self.server, args: Vec::new(), env: Vec::new(), stdin: None, gone: self.gone }
    }
}

impl std::ops::Deref for Ran {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        &self.ws
    }
}
