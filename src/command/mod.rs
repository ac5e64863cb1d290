//! The command layer: one file per command, each an outline of its steps. Only this layer,
//! `cli`, `progress` and the interactive chat print; everything below it returns values or
//! emits events to a reporter.

pub(crate) mod ask;
pub(crate) mod cache;
pub(crate) mod chat;
pub(crate) mod check;
mod dry_run;
pub(crate) mod models;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod schema;
pub(crate) mod tools;

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::scenario::{Scenario, ScenarioErrors, Validator, load_scenarios};
use crate::settings::Settings;
use crate::tools::ToolRegistry;

pub use crate::exit::{
    EXIT_BUDGET, EXIT_FAILED, EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_PASSED, EXIT_TERMINATED, EXIT_USAGE,
};

/// Runs the command on a new runtime; its errors are printed here, each with its exit code.
pub(crate) fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    crate::tools::contain_children();
    let outcome = runtime.block_on(run(cli));
    // Whatever a tool left behind (detached from its group) ends with the command.
    drop(runtime);
    crate::tools::sweep_children();
    match outcome {
        Ok(code) => ExitCode::from(code),
        // A closed pipe (`runner tools | head -1`) ends the command quietly.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(errors) = err.downcast_ref::<ScenarioErrors>() {
                for error in &errors.0 {
                    eprintln!("error: {error}");
                }
                return ExitCode::from(EXIT_USAGE);
            }
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// A problem with what the command line asks for that only the command layer sees (flags that
/// contradict each other, a run to resume that is not there): exit code 2, nothing run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// The exit code `err` ends the command with: each boundary's error knows its own; anything
/// else is a failure (1).
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    let codes = [
        err.downcast_ref().map(crate::settings::SettingsError::code),
        err.downcast_ref().map(crate::plan::PlanError::code),
        err.downcast_ref().map(crate::provider::ModelError::code),
        err.downcast_ref().map(crate::report::ReportError::code),
    ];
    codes.into_iter().flatten().next().unwrap_or(EXIT_FAILED)
}

/// Whether `err` (or one of its causes) is a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs one command; the `u8` is the exit code.
async fn run(cli: Cli) -> anyhow::Result<u8> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Run(args) => run::run(config, *args).await,
        Command::Check { paths, judge_model, user_model } => {
            check::check(config, &paths, judge_model.as_deref(), user_model.as_deref())
        }
        Command::Chat { model, logs_dir, timeout, offer } => {
            chat::chat(config, model, &logs_dir, timeout, &offer).await
        }
        Command::Ask(args) => ask::ask(config, args, cli.verbose).await,
        Command::Report(args) => report::report(config, &args),
        Command::Schema => schema::schema(),
        Command::Tools { paths, json } => tools::tools(config, &paths, json).await,
        Command::Models { prices } => models::models(config, prices.as_deref()),
        Command::Cache(command) => cache::cache(&command),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "runner", &mut script);
            print(&String::from_utf8_lossy(&script))?;
            Ok(EXIT_PASSED)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            print(&String::from_utf8_lossy(&page))?;
            Ok(EXIT_PASSED)
        }
    }
}

/// `--baseline REPORT.csv`, compared with `summary`.
fn compare_with(
    baseline: Option<&std::path::Path>,
    summary: &crate::report::summary::Summary,
) -> anyhow::Result<Option<crate::report::baseline::Comparison>> {
    let Some(path) = baseline else {
        return Ok(None);
    };
    let before = read_report("--baseline", path)?;
    Ok(Some(crate::report::baseline::Comparison::new(&path.display().to_string(), &before.summary(), summary)))
}

/// What the comparison is asked (`--compare-to`, `--target-pass-rate`): the reference is the
/// model `--compare-to` names, which must be one of `models`, else `first`.
fn asked(
    settings: &Settings,
    args: &crate::cli::ConfidenceArgs,
    models: &[crate::model::ModelSpec],
    first: Option<&crate::model::ModelSpec>,
) -> anyhow::Result<crate::report::confidence::Asked> {
    let compare_to = match &args.compare_to {
        Some(text) => {
            let spec = settings.parse_model(text)?;
            if !models.contains(&spec) {
                let names: Vec<String> = models.iter().map(ToString::to_string).collect();
                return Err(UsageError(format!(
                    "--compare-to {text}: not a model of these runs (they are {})",
                    names.join(", ")
                ))
                .into());
            }
            Some(spec)
        }
        None => first.cloned(),
    };
    Ok(crate::report::confidence::Asked { compare_to, target: args.target_pass_rate })
}

/// The width of the terminal standard output writes to; `None` when it is not a terminal (a
/// file or a pipe gets every column).
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // console (indicatif's own) asks the terminal (TIOCGWINSZ).
    let columns = console::Term::stdout().size_checked().map_or(0, |(_, columns)| usize::from(columns));
    if columns > 0 { Some(columns) } else { std::env::var("COLUMNS").ok()?.parse().ok() }
}

/// A tool call as `runner chat` (and `ask -v`) shows it when it ends, on standard error (dim
/// on a terminal) so that standard output stays the conversation: its name, its arguments
/// and its result or error, each shortened.
fn show_tool_call(call: &crate::record::ToolCallRecord) {
    use crate::text::{printable, shorten};
    let arguments = shorten(&printable(&call.arguments.to_string()), 80);
    let outcome = match (&call.error, &call.result) {
        (Some(error), _) => format!("failed: {}", shorten(&printable(error), 120)),
        (None, Some(serde_json::Value::String(text))) => format!("-> {}", shorten(&printable(text), 120)),
        (None, Some(result)) => format!("-> {}", shorten(&printable(&result.to_string()), 120)),
        (None, None) => "-> (nothing)".to_owned(),
    };
    let line = format!("  [tool] {}({arguments}) {outcome}", printable(&call.name));
    eprintln!("{}", console::style(line).dim().for_stderr());
}

/// Every pass@k and pass^k as JSON beside the summary CSV at `summary` (`NAME.pass_k.json`),
/// when some model's scenarios were repeated.
fn write_pass_k(summary_path: &std::path::Path, summary: &crate::report::summary::Summary) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Some(json) = summary.confidence().pass_k_json() else {
        return Ok(());
    };
    let path = crate::report::pass_k_path(summary_path);
    let text = serde_json::to_string_pretty(&json)? + "\n";
    crate::files::write_atomically(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// The CSV report `flag` names, read; a per-model summary in its place is a usage error.
fn read_report(flag: &str, path: &std::path::Path) -> anyhow::Result<crate::report::merge::Merged> {
    let mut merged = crate::report::merge::Merged::default();
    if !merged.read(path, None)? {
        return Err(UsageError(format!(
            "{flag} {}: a per-model summary, not a report (give the report beside it)",
            path.display()
        ))
        .into());
    }
    Ok(merged)
}

/// A conversation with `target` for `ask` and `chat`: the configured tools (`offered` of
/// them), the shared HTTP pool, a fresh random seed, the batch's secrets.
fn session(
    settings: &Settings,
    target: std::sync::Arc<crate::provider::Target>,
    offered: Option<&[String]>,
    http: &reqwest::Client,
) -> crate::chat::Session {
    crate::chat::Session::new(
        target,
        settings.tools.clone(),
        offered,
        http.clone(),
        settings.weather.clone(),
        crate::rng::random_seed(),
        settings.secrets.clone(),
    )
}

/// Every scenario of `paths`, validated against the built-in tools and the known models.
fn load(settings: &Settings, paths: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let parse_model = |model: &str| settings.parse_model(model);
    let env = |key: &str| settings.env.var(key);
    let validator = Validator {
        env: &env,
        judge_model: settings.judge_model.as_deref(),
        user_model: settings.user_model.as_deref(),
        secrets: settings.secrets.clone(),
        agent: settings.agent.as_ref(),
        ..Validator::new(&settings.tools, &parse_model)
    };
    Ok(load_scenarios(paths, &validator)?)
}

/// The tools `--tools` names (`None`: every built-in and configured tool), checked against
/// `registry`.
fn offered_tools(flag: Option<&str>, registry: &ToolRegistry) -> Result<Option<Vec<String>>, UsageError> {
    let Some(flag) = flag.map(str::trim) else {
        return Ok(None);
    };
    if flag == "none" {
        return Ok(Some(Vec::new()));
    }
    let names: Vec<String> = flag.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    if let Some(unknown) = names.iter().find(|n| !registry.names().any(|k| k == n.as_str())) {
        let known: Vec<&str> = registry.names().collect();
        return Err(UsageError(format!(
            "--tools: unknown tool `{unknown}`; known tools: {} (or none)",
            known.join(", ")
        )));
    }
    Ok(Some(names))
}

/// Writes `text` to standard output. A closed pipe comes back as an error, which the top
/// level ends on quietly (`runner tools | head -1`).
fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// For `print(..).or_else(closed_pipe_is_fine)`: the reader went away, nothing else is wrong.
fn closed_pipe_is_fine(err: std::io::Error) -> std::io::Result<()> {
    if err.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(err) }
}

/// The signals that stop a command the way Ctrl-C does, each with its exit code: SIGINT
/// (130), SIGTERM (143, what CI sends on cancel or time-out) and SIGHUP (129, a closed
/// terminal).
struct Signals {
    #[cfg(unix)]
    streams: Vec<(tokio::signal::unix::Signal, u8)>,
}

impl Signals {
    /// SIGINT, SIGTERM and SIGHUP.
    fn all() -> Self {
        Self::of(true)
    }

    /// SIGTERM and SIGHUP only (the chat handles Ctrl-C itself, turn by turn).
    fn terminations() -> Self {
        Self::of(false)
    }

    #[cfg_attr(not(unix), allow(unused_variables))]
    fn of(interrupt: bool) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut kinds = vec![(SignalKind::terminate(), EXIT_TERMINATED), (SignalKind::hangup(), EXIT_HANGUP)];
            if interrupt {
                kinds.insert(0, (SignalKind::interrupt(), EXIT_INTERRUPTED));
            }
            Self {
                streams: kinds.into_iter().filter_map(|(kind, code)| signal(kind).ok().map(|s| (s, code))).collect(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The exit code of the next signal; `None` when no signal can arrive.
    async fn next(&mut self) -> Option<u8> {
        #[cfg(unix)]
        {
            if self.streams.is_empty() {
                return None;
            }
            let waits = self.streams.iter_mut().map(|(stream, code)| {
                let code = *code;
                Box::pin(async move { stream.recv().await.map(|()| code) })
            });
            futures::future::select_all(waits).await.0
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.ok().map(|()| EXIT_INTERRUPTED)
        }
    }
}
