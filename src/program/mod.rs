//! A user's own agent program as the assistant's side of a conversation: one process per
//! run, spoken to in JSON lines on its standard input and output, calling its model through
//! the batch's [`Endpoint`], which measures every request it makes.

mod endpoint;
mod wire;

use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

pub(crate) use endpoint::{Endpoint, Opened, RunLink};

use crate::conversation::Assistant;
use crate::message::Message;
use crate::record::{AgentLog, Status, TurnRecord};
use crate::scenario::agent::AgentSpec;
use crate::secret::Secrets;
use crate::text::shorten;
use crate::tools::process::{ProcessGroup, Tail, own_group, spawning, stderr_note};

/// How long an agent may stay alive once its standard input is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// The longest line an agent may write (a reply of 16 MiB is no reply).
const MAX_LINE: usize = 16 << 20;
/// How much of a line that is not the protocol an error quotes.
const QUOTED: usize = 200;

/// What the agent is told about its run, besides its endpoint and token.
pub(crate) struct RunEnv<'a> {
    /// `PROVIDER:MODEL` of the model under test (`RUNNER_MODEL`).
    pub model: String,
    /// `RUNNER_SCENARIO`.
    pub scenario: &'a str,
    /// `RUNNER_RUN`: the run, as its log is named.
    pub run: String,
}

/// A running agent program.
pub(crate) struct AgentProgram {
    command: String,
    timeout: Duration,
    io: tokio::sync::Mutex<Io>,
    stderr: Arc<Mutex<Tail>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// True once its stderr has been read to its end (it exited, with its whole group).
    stderr_closed: tokio::sync::watch::Receiver<bool>,
    secrets: Secrets,
    /// The run's link to the endpoint: what its requests did.
    link: Arc<RunLink>,
    /// Why it stopped, once it has (a time-out, an early exit).
    ended: Mutex<Option<String>>,
}

struct Io {
    child: Child,
    group: ProcessGroup,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// A line of the agent's answer.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Reply { content: String },
    Error { message: String },
}

impl AgentProgram {
    /// Starts `spec` in its directory, its environment without the batch's secret variables,
    /// with the endpoint (`base_url`, `opened`'s token) and `run` set. The error names the
    /// command and why it could not start.
    pub(crate) fn start(
        spec: &AgentSpec,
        base_url: &str,
        opened: &Opened,
        run: &RunEnv<'_>,
        secrets: &Secrets,
    ) -> Result<Self, String> {
        let mut command = tokio::process::Command::new(&spec.command[0]);
        command.args(&spec.command[1..]).current_dir(&spec.dir);
        own_group(&mut command, secrets);
        for var in ["OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_BASE_URL", "OPENAI_API_BASE", "RUNNER_MODEL"] {
            command.env_remove(var);
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        command
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_API_KEY", &opened.token)
            .env("RUNNER_MODEL", &run.model)
            .env("RUNNER_SCENARIO", run.scenario)
            .env("RUNNER_RUN", &run.run);
        let guard = spawning();
        let mut child = command.spawn().map_err(|err| {
            format!("agent {}", crate::tools::process::spawn_error(&spec.command[0], &spec.dir, &err))
        })?;
        let group = ProcessGroup::of(child.id());
        drop(guard);
        let (Some(stdin), Some(stdout), pipe) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            return Err(format!("agent `{}`: its standard input and output could not be opened", spec.command_line()));
        };
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let (closed, stderr_closed) = tokio::sync::watch::channel(pipe.is_none());
        let reader = pipe.map(|mut pipe| {
            let stderr = stderr.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                    stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(&chunk[..n]);
                }
                closed.send_replace(true);
            })
        });
        Ok(Self {
            command: spec.command_line(),
            timeout: spec.timeout,
            io: tokio::sync::Mutex::new(Io { child, group, stdin: Some(stdin), stdout: BufReader::new(stdout) }),
            stderr,
            reader,
            stderr_closed,
            secrets: secrets.clone(),
            link: opened.link.clone(),
            ended: Mutex::new(None),
        })
    }

    /// The agent's last words on stderr, for an error (`; stderr: ...`), redacted.
    fn last_words(&self) -> String {
        self.secrets.redact(&stderr_note(&self.stderr))
    }

    /// Sends `user` and waits for the agent's answer line.
    async fn exchange(&self, index: usize, user: &str) -> Result<String, String> {
        let mut io = self.io.lock().await;
        if let Some(why) = self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Err(why);
        }
        let mut line =
            serde_json::to_string(&serde_json::json!({"type": "user", "content": user})).expect("a string serializes");
        line.push('\n');
        let io = &mut *io;
        let Some(stdin) = io.stdin.as_mut() else { return Err("the agent's standard input is closed".to_owned()) };
        let sent = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        if sent.await.is_err() {
            let status = wait_briefly(&mut io.child).await;
            return Err(self.stopped(format!("the agent exited ({}) before turn {index}", said(status))).await);
        }
        match tokio::time::timeout(self.timeout, read_line(&mut io.stdout)).await {
            Err(_) => {
                io.group.kill();
                let _ = io.child.wait().await;
                Err(self.stopped(format!(
                    "the agent did not answer turn {index} within {:?} (timeout_secs); its process group was killed",
                    self.timeout
                )).await)
            }
            Ok(Err(err)) => Err(self.stopped(format!("cannot read the agent's answer to turn {index}: {err}")).await),
            Ok(Ok(None)) => {
                let status = wait_briefly(&mut io.child).await;
                Err(self.stopped(format!("the agent exited ({}) before answering turn {index}", said(status))).await)
            }
            Ok(Ok(Some(bytes))) => match serde_json::from_slice::<Line>(&bytes) {
                Ok(Line::Reply { content }) => Ok(content),
                Ok(Line::Error { message }) => Err(format!("the agent reported an error: {message}")),
                Err(_) => {
                    io.group.kill();
                    let _ = io.child.wait().await;
                    Err(self.stopped(format!(
                        "the agent wrote a line that is not the protocol (expected {{\"type\": \"reply\", \"content\": ...}}): {:?}",
                        shorten(&String::from_utf8_lossy(&bytes), QUOTED)
                    )).await)
                }
            },
        }
    }

    /// Remembers why the agent stopped (every later turn fails with it) and says it with its
    /// last words, read to their end (at most a second's wait: a child it left may hold
    /// stderr open).
    async fn stopped(&self, why: String) -> String {
        let mut closed = self.stderr_closed.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), closed.wait_for(|closed| *closed)).await;
        let why = format!("{why}{}", self.last_words());
        *self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
        why
    }

    /// Closes its standard input and gives it [`EXIT_GRACE`] to exit; then its whole process
    /// group is killed. Returns what the log keeps of it.
    pub(crate) async fn finish(self) -> AgentLog {
        let mut io = self.io.into_inner();
        io.stdin = None;
        let exit = match tokio::time::timeout(EXIT_GRACE, io.child.wait()).await {
            Ok(Ok(status)) => Some(said(Some(status))),
            Ok(Err(err)) => Some(format!("cannot wait for it: {err}")),
            Err(_) => {
                io.group.kill();
                let _ = io.child.wait().await;
                Some(format!("killed: still running {EXIT_GRACE:?} after its standard input closed"))
            }
        };
        // Whatever it left behind in its group ends with it.
        io.group.kill();
        if let Some(reader) = self.reader {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let stderr = self.secrets.redact(&self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).text());
        AgentLog { command: self.command, exit, stderr }
    }
}

impl Assistant for AgentProgram {
    async fn answer(&self, messages: &mut Vec<Message>, index: usize, user: &str) -> TurnRecord {
        let started = Instant::now();
        let mut record = TurnRecord::new(index, user);
        messages.push(Message::User { content: user.to_owned() });
        let answer = self.exchange(index, user).await;
        let turn = self.link.take_turn();
        for request in &turn.requests {
            record.usage += request.usage;
            record.cost += request.cost;
        }
        record.requests = turn.requests;
        record.tool_calls = turn.tool_calls;
        messages.extend(turn.messages);
        match answer {
            Ok(reply) => {
                messages.push(Message::Assistant { content: Some(reply.clone()), tool_calls: Vec::new() });
                record.reply = Some(reply);
            }
            Err(why) => {
                record.error = Some(self.secrets.redact(&why));
                record.status = Status::Error;
            }
        }
        record.latency_ms = started.elapsed().as_millis() as u64;
        record
    }
}

/// The next line of `stdout` without its newline; `None` at its end. A line over
/// [`MAX_LINE`] is an error.
async fn read_line(stdout: &mut BufReader<ChildStdout>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = stdout.fill_buf().await?;
        if available.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        stdout.consume(taken);
        if line.len() > MAX_LINE {
            return Err(std::io::Error::other(format!("a line longer than {} MiB", MAX_LINE >> 20)));
        }
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // Blank lines between answers are not answers.
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            return Ok(Some(line));
        }
    }
}

/// Its exit status, waiting at most a second for it.
async fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    tokio::time::timeout(Duration::from_secs(1), child.wait()).await.ok().and_then(Result::ok)
}

fn said(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "still running".to_owned(), |status| status.to_string())
}
