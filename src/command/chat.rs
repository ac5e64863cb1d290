//! `runner chat`: the interactive face. `You: ` / `Assistant: `, rustyline on a terminal and
//! plain lines when piped, slash commands, and the token and cost summary at the end; the
//! conversation is saved as a run record under `logs/conversations/`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::UsageError;
use crate::chat::Session;
use crate::cli::OfferArgs;
use crate::files::write_atomically;
use crate::http::http_client;
use crate::progress::DownloadBar;
use crate::provider::{Models, TextSink};
use crate::record::RunRecord;
use crate::settings::{Flags, Settings};

const HELP: &str = "commands:
  /help          this text
  /model NAME    switch to another model (PROVIDER:MODEL)
  /reset         start the conversation over
  /usage         tokens and cost so far
  /save FILE     write the conversation as a scenario file (runner run replays it)
  quit, exit     end the session (as does end of input)
";

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

/// `runner chat`: the model named (else the default), then the loop.
pub(crate) async fn chat(
    config: Option<&Path>,
    model: Option<String>,
    log_dir: &Path,
    timeout_secs: Option<f64>,
    offer: &OfferArgs,
) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, timeout_secs, ..Flags::default() })?;
    let tools = super::offered_tools(offer.tools.as_deref(), &settings.tools)?;
    // Said now, not after the conversation it could not save.
    check_writable(log_dir)?;
    let fetch = DownloadBar::new();
    let cache = settings.request_cache(offer.cache.cache.as_deref(), offer.cache.mode())?;
    let mut models = Models::new(&settings.providers, &settings.prices, http_client()?, &fetch).with_cache(cache);
    let target = models.resolve(model.as_deref().unwrap_or(&settings.default_model)).await?;
    let session = super::session(&settings, target, tools.as_deref(), models.http());
    Ok(converse(session, &mut models, log_dir, !offer.no_stream).await)
}

/// Runs the interactive loop until quit, exit or end of input; prints the summary and saves
/// the conversation log under `log_dir`. Returns the exit code.
async fn converse(mut session: Session, models: &mut Models<'_>, log_dir: &Path, stream: bool) -> u8 {
    let mut input = Input::new();
    let mut last_error: Option<String> = None;
    if std::io::stdin().is_terminal() {
        println!("runner chat with {} — /help for commands, quit to end", session.target.spec);
    }
    // SIGTERM or SIGHUP (a closed terminal) saves the conversation as it stands after its
    // last finished turn, then ends the process.
    let saved = Arc::new(Mutex::new(session.record(None)));
    let guard = tokio::spawn(save_on_termination(saved.clone(), session.log_path(log_dir)));
    loop {
        *saved.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = session.record(last_error.as_deref());
        let Some(line) = tokio::task::block_in_place(|| input.read("You: ")) else {
            break;
        };
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
            _ if line == "/model" || line.starts_with("/model ") => {
                let name = line["/model".len()..].trim();
                if name.is_empty() {
                    println!("model: {}", session.target.spec);
                    continue;
                }
                match models.resolve(name).await {
                    Ok(target) => {
                        session.target = target;
                        println!("(model: {})", session.target.spec);
                    }
                    Err(err) => eprintln!("error: {err}"),
                }
            }
            _ if line == "/save" || line.starts_with("/save ") => {
                let file = line["/save".len()..].trim();
                if file.is_empty() {
                    eprintln!("error: /save needs a file name");
                    continue;
                }
                let name = Path::new(file).file_stem().map_or("chat".into(), |s| s.to_string_lossy().into_owned());
                let saved = session
                    .to_scenario(&name)
                    .map_err(anyhow::Error::from)
                    .and_then(|yaml| Ok(write_atomically(Path::new(file), yaml.trim_end().as_bytes())?));
                match saved {
                    Ok(()) => println!("(saved {file})"),
                    Err(err) => eprintln!("error: cannot save {file}: {err}"),
                }
            }
            _ if line.starts_with('/') => eprintln!("unknown command {line}; /help lists them"),
            user => {
                print!("Assistant: ");
                let _ = std::io::stdout().flush();
                let shown = Mutex::new(String::new());
                let print = |text: &str| {
                    shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_str(text);
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                };
                let turn = tokio::select! {
                    turn = session.turn(user, stream.then_some(&print as TextSink<'_>), Some(&super::show_tool_call)) => Some(turn),
                    _ = tokio::signal::ctrl_c() => None,
                };
                if let Some(reply) = turn.as_ref().and_then(|t| t.reply.as_deref()).filter(|_| !stream) {
                    print!("{reply}");
                }
                println!();
                match turn {
                    None => {
                        // The turn's future was dropped: what it showed still counts.
                        let shown = shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                        session.stopped(user, &shown);
                        eprintln!("(answer stopped)");
                    }
                    Some(turn) => {
                        if let Some(err) = &turn.error {
                            eprintln!("error: {err}");
                            last_error = Some(err.clone());
                        }
                        if let Some(empty) = turn.empty_reply() {
                            eprintln!("warning: {empty}");
                        }
                    }
                }
            }
        }
    }
    print!("{}", session.summary());
    guard.abort();
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

/// Waits for SIGTERM or SIGHUP, then writes `saved` to `path` and exits with the signal's code.
async fn save_on_termination(saved: Arc<Mutex<RunRecord>>, path: PathBuf) {
    let Some(code) = super::Signals::terminations().next().await else {
        return;
    };
    let record = saved.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    match serde_json::to_vec_pretty(&record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| write_atomically(&path, &bytes))
    {
        Ok(()) => eprintln!("\nconversation saved to {}", path.display()),
        Err(err) => eprintln!("\nerror: cannot save the conversation to {}: {err}", path.display()),
    }
    std::process::exit(i32::from(code));
}

/// Whether conversations can be saved under `dir` (created if needed).
fn check_writable(dir: &Path) -> Result<(), UsageError> {
    let probe = crate::files::temp_path(&dir.join(".write-check"));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|err| UsageError(format!("cannot save conversations under {}: {err} (--logs-dir)", dir.display())))
}
