//! The interactive face (`runner chat`) and the one-shot pipe (`runner ask`), over the same
//! agent loop, tools, usage and cost as `runner run`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::agent::{Agent, TurnOutcome};
use crate::pricing::{Cost, Price};
use crate::provider::wire::{Message, ToolSpec};
use crate::record::TurnRecord;
use crate::report::json::write_atomically;
use crate::runner::Target;
use crate::scenario::{DEFAULT_MAX_TOOL_ROUNDS, Sampling};
use crate::tools::{ToolContext, ToolRegistry, WeatherConfig};
use crate::usage::Usage;

/// One conversation: its messages, what each turn did, and the running totals.
pub struct Session {
    pub target: Arc<Target>,
    registry: ToolRegistry,
    specs: Vec<ToolSpec>,
    context: ToolContext,
    pub messages: Vec<Message>,
    pub turns: Vec<TurnRecord>,
    pub usage: Usage,
    pub cost: Cost,
    pub started_at: DateTime<Utc>,
}

/// The saved conversation (`logs/conversations/<timestamp>.json`).
#[derive(Serialize)]
struct ConversationLog<'a> {
    runner_version: &'static str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    model: ModelConfig<'a>,
    messages: &'a [Message],
    turns: &'a [TurnRecord],
    usage: Usage,
    cost: Cost,
    prices: Option<Price>,
    unpriced: bool,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelConfig<'a> {
    provider: &'a str,
    name: &'a str,
    base_url: Option<&'a str>,
    tools: Vec<&'a str>,
}

impl Session {
    pub fn new(target: Arc<Target>, http: reqwest::Client, weather: WeatherConfig, seed: u64) -> Self {
        let registry = ToolRegistry::builtin();
        let names: Vec<String> = registry.names().map(str::to_owned).collect();
        let specs = registry.specs(&names);
        let context = ToolContext::new(http, Arc::new(weather), seed);
        Self {
            target,
            registry,
            specs,
            context,
            messages: Vec::new(),
            turns: Vec::new(),
            usage: Usage::default(),
            cost: Cost::default(),
            started_at: Utc::now(),
        }
    }

    /// Plays one user turn; text is handed to `on_text` as it arrives.
    pub async fn turn(&mut self, user: &str, on_text: Option<crate::provider::TextSink<'_>>) -> TurnRecord {
        let no_results = BTreeMap::new();
        let sampling = Sampling::default();
        let agent = Agent {
            provider: self.target.provider.as_ref(),
            model: &self.target.spec.name,
            sampling: &sampling,
            tools: &self.specs,
            registry: &self.registry,
            tool_results: &no_results,
            max_tool_rounds: DEFAULT_MAX_TOOL_ROUNDS,
            context: &self.context,
            price: self.target.price.as_ref().map(|p| &p.price),
            on_text,
        };
        let before = self.messages.len();
        let outcome: TurnOutcome = agent.run_turn(&mut self.messages, user).await;
        if outcome.error.is_some() {
            // A turn that did not finish leaves the conversation as it was before it.
            self.messages.truncate(before);
        }
        self.usage += outcome.usage;
        self.cost += outcome.cost;
        let record = outcome.into_record(self.turns.len() + 1, user, Vec::new());
        self.turns.push(record.clone());
        record
    }

    /// Forgets the conversation (totals are kept).
    pub fn reset(&mut self) {
        self.messages.clear();
    }

    /// The token and cost summary printed at the end of a session.
    pub fn summary(&self) -> String {
        let cost = if self.target.price.is_some() {
            format!("${:.6}", self.cost.total_usd)
        } else {
            "$0 (unpriced: no known price for this model)".to_owned()
        };
        format!(
            "input tokens: {}\noutput tokens: {}\ntotal tokens: {}\ntotal cost: {cost}\n",
            self.usage.prompt_tokens, self.usage.completion_tokens, self.usage.total_tokens
        )
    }

    /// Writes the conversation log into `dir` (`<timestamp>.json`), atomically.
    pub fn save_log(&self, dir: &Path, error: Option<&str>) -> std::io::Result<PathBuf> {
        let path = dir.join(format!("{}.json", self.started_at.format("%Y%m%dT%H%M%S%.3fZ")));
        let log = ConversationLog {
            runner_version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            finished_at: Utc::now(),
            model: ModelConfig {
                provider: &self.target.spec.provider,
                name: &self.target.spec.name,
                base_url: self.target.provider.base_url(),
                tools: self.specs.iter().map(|s| s.function.name.as_str()).collect(),
            },
            messages: &self.messages,
            turns: &self.turns,
            usage: self.usage,
            cost: self.cost,
            prices: self.target.price.as_ref().map(|p| p.price),
            unpriced: self.target.price.is_none(),
            error,
        };
        let bytes = serde_json::to_vec_pretty(&log).map_err(std::io::Error::other)?;
        write_atomically(&path, &bytes)?;
        Ok(path)
    }

    /// The conversation so far as a scenario file: its user turns, the tools that were
    /// called with their results pinned, and `tool_calls` expectations matching what happened.
    pub fn to_scenario(&self, name: &str) -> Result<String, String> {
        #[derive(Serialize)]
        struct SavedScenario {
            name: String,
            model: String,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            tool_results: BTreeMap<String, Value>,
            turns: Vec<SavedTurn>,
        }
        #[derive(Serialize)]
        struct SavedTurn {
            user: String,
            expect: SavedExpect,
        }
        #[derive(Serialize)]
        struct SavedExpect {
            tool_calls: Vec<SavedCall>,
        }
        #[derive(Serialize)]
        struct SavedCall {
            name: String,
            arguments: Value,
        }
        let mut tool_results = BTreeMap::new();
        let mut turns = Vec::new();
        for turn in self.turns.iter().filter(|t| t.error.is_none()) {
            let mut calls = Vec::new();
            for call in &turn.tool_calls {
                if let Some(result) = &call.result {
                    // One pinned result per tool: the first one seen.
                    tool_results.entry(call.name.clone()).or_insert_with(|| result.clone());
                }
                calls.push(SavedCall { name: call.name.clone(), arguments: call.arguments.clone() });
            }
            turns.push(SavedTurn { user: turn.user.clone(), expect: SavedExpect { tool_calls: calls } });
        }
        if turns.is_empty() {
            return Err("nothing to save yet: no finished turn".to_owned());
        }
        let scenario = SavedScenario { name: name.to_owned(), model: self.target.spec.to_string(), tool_results, turns };
        serde_saphyr::to_string(&scenario).map_err(|e| e.to_string())
    }
}

const HELP: &str = "commands:
  /help          this text
  /model NAME    switch to another model (PROVIDER:MODEL)
  /reset         start the conversation over
  /usage         tokens and cost so far
  /save FILE     write the conversation as a scenario file (runner run replays it)
  quit, exit     end the session (as does end of input)
";

/// What the chat loop asks of the outside: a model by name.
pub trait Models {
    fn target<'a>(&'a mut self, name: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<Target>, String>>;
}

/// Lines typed or piped in.
enum Input {
    Terminal(Box<rustyline::DefaultEditor>),
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    fn new() -> Self {
        if std::io::stdin().is_terminal()
            && let Ok(editor) = rustyline::DefaultEditor::new()
        {
            return Input::Terminal(Box::new(editor));
        }
        Input::Piped(std::io::stdin().lock())
    }

    /// The next line, `None` at end of input.
    fn read(&mut self, prompt: &str) -> Option<String> {
        match self {
            Input::Terminal(editor) => loop {
                match editor.readline(prompt) {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        return Some(line);
                    }
                    // Ctrl-C at the prompt clears the line; Ctrl-D ends the session.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(_) => return None,
                }
            },
            Input::Piped(stdin) => {
                print!("{prompt}");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                match std::io::BufRead::read_line(stdin, &mut line) {
                    Ok(0) | Err(_) => {
                        println!();
                        None
                    }
                    Ok(_) => {
                        // Echo piped input so the transcript reads like a session.
                        println!("{}", line.trim_end());
                        Some(line)
                    }
                }
            }
        }
    }
}

/// Runs the interactive loop until quit, exit or end of input; prints the summary and saves
/// the conversation log under `log_dir`. Returns the exit code.
pub async fn chat(mut session: Session, models: &mut dyn Models, log_dir: &Path) -> u8 {
    let mut input = Input::new();
    let mut last_error: Option<String> = None;
    if std::io::stdin().is_terminal() {
        println!("runner chat with {} — /help for commands, quit to end", session.target.spec);
    }
    while let Some(line) = tokio::task::block_in_place(|| input.read("You: ")) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line {
            "quit" | "exit" => break,
            "/help" => print!("{HELP}"),
            "/reset" => {
                session.reset();
                println!("(conversation reset)");
            }
            "/usage" => print!("{}", session.summary()),
            _ if line.starts_with("/model") => {
                let name = line["/model".len()..].trim();
                if name.is_empty() {
                    println!("model: {}", session.target.spec);
                    continue;
                }
                match models.target(name).await {
                    Ok(target) => {
                        session.target = target;
                        println!("(model: {})", session.target.spec);
                    }
                    Err(err) => eprintln!("error: {err}"),
                }
            }
            _ if line.starts_with("/save") => {
                let file = line["/save".len()..].trim();
                if file.is_empty() {
                    eprintln!("error: /save needs a file name");
                    continue;
                }
                let name = Path::new(file).file_stem().map_or("chat".into(), |s| s.to_string_lossy().into_owned());
                match session.to_scenario(&name).and_then(|yaml| write_atomically(Path::new(file), yaml.trim_end().as_bytes()).map_err(|e| e.to_string())) {
                    Ok(()) => println!("(saved {file})"),
                    Err(err) => eprintln!("error: cannot save {file}: {err}"),
                }
            }
            _ if line.starts_with('/') => eprintln!("unknown command {line}; /help lists them"),
            user => {
                print!("Assistant: ");
                let _ = std::io::stdout().flush();
                let print = |text: &str| {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                };
                let turn = tokio::select! {
                    turn = session.turn(user, Some(&print)) => Some(turn),
                    _ = tokio::signal::ctrl_c() => None,
                };
                println!();
                match turn {
                    None => {
                        // The turn's future was dropped; take its half-written messages back.
                        if let Some(at) = session.messages.iter().rposition(|m| matches!(m, Message::User { content } if content == user)) {
                            session.messages.truncate(at);
                        }
                        eprintln!("(answer stopped)");
                    }
                    Some(turn) => {
                        if let Some(err) = &turn.error {
                            eprintln!("error: {err}");
                            last_error = Some(err.clone());
                        }
                    }
                }
            }
        }
    }
    print!("{}", session.summary());
    match session.save_log(log_dir, last_error.as_deref()) {
        Ok(path) => {
            println!("conversation saved to {}", path.display());
            0
        }
        Err(err) => {
            eprintln!("error: cannot save the conversation under {}: {err}", log_dir.display());
            1
        }
    }
}
