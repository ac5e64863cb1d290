//! runner: replays scripted conversations with language models, checks what they answer,
//! and records every request, tool call, token and cent.
//!
//! Data flows one way: scenario -> runner -> agent -> provider/tools -> run record ->
//! reporters.

pub mod agent;
pub mod chat;
pub mod check;
pub mod cli;
pub mod plan;
pub mod pricing;
pub mod progress;
pub mod provider;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schema;
pub mod settings;
pub mod tools;
pub mod usage;

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use cli::{AskArgs, Cli, Command, RunArgs};
use report::Reporter;
use scenario::{ScenarioErrors, Validator, load_scenarios};
use settings::{Settings, UsageError};
use tools::ToolRegistry;

/// Exit code: every run passed.
pub const EXIT_PASSED: u8 = 0;
/// Exit code: at least one run failed a check or ended in an error.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad command line or invalid scenario file; nothing was run.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the cost budget (`--max-cost-usd`) stopped the batch before every run started.
pub const EXIT_BUDGET: u8 = 3;
/// Exit code: interrupted (Ctrl-C); what finished is kept.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs the command and turns the outcome into the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if let Some(errors) = err.downcast_ref::<ScenarioErrors>() {
                for error in &errors.0 {
                    eprintln!("error: {error}");
                }
                return ExitCode::from(EXIT_USAGE);
            }
            eprintln!("error: {err:#}");
            let usage = err.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILED })
        }
    }
}

/// Runs one command; the `u8` is the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => run_scenarios(cli.config.as_deref(), args).await,
        Command::Check { paths } => {
            let settings = Settings::load(cli.config.as_deref(), None, None)?;
            let scenarios = load(&settings, &paths)?;
            let files: std::collections::HashSet<_> = scenarios.iter().map(|s| s.file.as_str()).collect();
            println!("ok: {} scenario(s) in {} file(s)", scenarios.len(), files.len());
            Ok(EXIT_PASSED)
        }
        Command::Chat { model, logs_dir } => {
            let settings = Settings::load(cli.config.as_deref(), None, None)?;
            let http = provider::openai::http_client()?;
            let mut models = ModelCache { settings: &settings, http: http.clone(), targets: HashMap::new() };
            let name = model.unwrap_or_else(|| settings.default_model());
            let target = models.resolve(&name).await?;
            let session = chat::Session::new(target, http, settings.weather.clone(), random_seed());
            Ok(chat::chat(session, &mut models, &logs_dir).await)
        }
        Command::Ask(args) => ask(cli.config.as_deref(), args).await,
        Command::Report(args) => report::merge::command(cli.config.as_deref(), args),
        Command::Schema => {
            println!("{}", scenario::SCHEMA.trim_end());
            Ok(EXIT_PASSED)
        }
        Command::Tools => {
            let mut out = std::io::stdout().lock();
            for tool in ToolRegistry::builtin().iter() {
                writeln!(out, "{}\n  {}", tool.name(), tool.description())?;
                let schema = serde_json::to_string_pretty(&tool.parameters())?;
                for line in schema.lines() {
                    writeln!(out, "  {line}")?;
                }
                writeln!(out)?;
            }
            Ok(EXIT_PASSED)
        }
        Command::Models { prices } => {
            let settings = Settings::load(cli.config.as_deref(), prices.as_deref(), None)?;
            print!("{}", render_models(&settings));
            Ok(EXIT_PASSED)
        }
    }
}

fn load(settings: &Settings, paths: &[String]) -> anyhow::Result<Vec<scenario::Scenario>> {
    let registry = ToolRegistry::builtin();
    let check_model = |model: &str| settings.parse_model(model).map(|_| ());
    let validator = Validator { tools: &registry, check_model: &check_model };
    Ok(load_scenarios(paths, &validator)?)
}

async fn run_scenarios(config: Option<&std::path::Path>, args: RunArgs) -> anyhow::Result<u8> {
    let mut settings = Settings::load(config, args.prices.as_deref(), args.timeout)?;
    if let Some(max_retries) = args.max_retries {
        settings.retry.max_retries = max_retries;
    }
    let mut scenarios = load(&settings, &args.paths)?;
    if let Some(filter) = &args.filter {
        scenarios.retain(|s| s.name.contains(filter.as_str()));
        if scenarios.is_empty() {
            return Err(UsageError(format!("no scenario name contains `{filter}`")).into());
        }
    }

    // The run matrix, in a fixed order (files, scenarios within them, models, repetitions),
    // so every shard of a CI matrix computes the same one.
    let default_model = settings.default_model();
    let mut matrix = Vec::new();
    for scenario in scenarios.into_iter().map(Arc::new) {
        let models = if args.models.is_empty() { vec![scenario.model.clone().unwrap_or_else(|| default_model.clone())] } else { args.models.clone() };
        for text in models {
            let spec = settings.parse_model(&text).map_err(UsageError)?;
            for repetition in 1..=args.repeat {
                matrix.push(plan::Planned { scenario: scenario.clone(), spec: spec.clone(), repetition });
            }
        }
    }
    if let Some(shard) = args.shard {
        matrix = matrix.into_iter().enumerate().filter(|(position, _)| shard.contains(*position)).map(|(_, run)| run).collect();
    }
    let unpriced = plan::unpriced_models(&matrix, &settings.prices);
    if !unpriced.is_empty() && (args.require_prices || args.max_cost_usd.is_some()) {
        let why = if args.require_prices { "--require-prices" } else { "--max-cost-usd cannot be enforced" };
        return Err(UsageError(format!(
            "no known price for {} ({why}); add prices with --prices FILE or runner.yaml",
            unpriced.join(", ")
        ))
        .into());
    }
    if args.dry_run {
        print!("{}", plan::render_dry_run(&matrix, &settings.prices, &unpriced, args.shard));
        return Ok(EXIT_PASSED);
    }

    // Every model is resolved before any request, so a bad name or a missing key runs nothing.
    let http = provider::openai::http_client()?;
    let mut models = ModelCache { settings: &settings, http: http.clone(), targets: HashMap::new() };
    let mut jobs: Vec<runner::Job> = Vec::with_capacity(matrix.len());
    for run in matrix {
        let target = models.resolve(&run.spec.to_string()).await?;
        jobs.push(runner::Job { scenario: run.scenario, target, repetition: run.repetition });
    }

    let (run_id, run_dir) = match &args.resume {
        Some(run_id) => {
            let dir = args.logs_dir.join(run_id);
            if report::safe_file_name(run_id) != *run_id || !dir.is_dir() {
                return Err(UsageError(format!("--resume {run_id}: no such run under {}", args.logs_dir.display())).into());
            }
            (run_id.clone(), dir)
        }
        None => runner::create_run_dir(&args.logs_dir)
            .with_context(|| format!("cannot create the log directory under {}", args.logs_dir.display()))?,
    };
    // Resuming: runs with a finished log are done; their records go into the new report first.
    let mut finished = Vec::new();
    if args.resume.is_some() {
        jobs.retain(|job| {
            let log = run_dir.join(runner::log_file_name(job));
            match runner::read_log(&log) {
                Some(record) => {
                    finished.push((record, log));
                    false
                }
                None => true,
            }
        });
    }
    let report_path = args.report.clone().unwrap_or_else(|| std::path::PathBuf::from("reports").join(format!("{run_id}.csv")));
    let summary_path = report::summary_path(&report_path);
    // A resumed report is rebuilt beside the old one and replaces it whole.
    let staging = report_path.with_file_name(format!(".{}.partial", report_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    let mut csv = report::csv::CsvReport::create(if finished.is_empty() { &report_path } else { &staging })?;
    let mut summary = report::summary::Summary::default();
    let mut junit = report::junit::Junit::default();
    if !finished.is_empty() {
        let mut reporters = (&mut summary, (&mut csv, &mut junit));
        for (record, log) in &finished {
            reporters.run_finished(record, log)?;
        }
        std::fs::rename(&staging, &report_path).with_context(|| format!("cannot replace {}", report_path.display()))?;
    }
    let shared = Arc::new(runner::Shared {
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        registry: ToolRegistry::builtin(),
        http,
        weather: Arc::new(settings.weather.clone()),
        seed: args.seed.unwrap_or_else(random_seed),
        sampling_seed: args.seed,
    });
    let mut progress = progress::Progress::new();
    let concurrency = settings.concurrency(args.concurrency.map(|n| n as usize));
    let limits = runner::Limits { max_cost_usd: args.max_cost_usd, fail_fast: args.fail_fast };
    let control = runner::Control::new();
    let listener = tokio::spawn(interrupts(control.clone()));
    let outcome = {
        let mut reporters = (&mut summary, (&mut progress, (&mut csv, &mut junit)));
        runner::run_all(jobs, concurrency, limits, control.clone(), shared, &mut reporters as &mut dyn Reporter).await
    };
    listener.abort();
    progress.finish();
    report::json::write_atomically(&summary_path, &summary.to_csv()?).with_context(|| format!("cannot write {}", summary_path.display()))?;
    if let Some(path) = &args.junit {
        report::json::write_atomically(path, junit.render().trim_end().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    append_step_summary(&summary)?;
    print!("{}", summary.render());
    println!("logs: {}", run_dir.display());
    println!("report: {}", report_path.display());
    println!("summary: {}", summary_path.display());
    let totals = outcome?;
    if control.interrupted() {
        println!("resume: runner run ... --resume {run_id} (the same paths and flags) plays what did not finish");
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(match totals.stopped {
        Some(runner::StopReason::Budget { .. }) if totals.not_started > 0 => EXIT_BUDGET,
        _ if !summary.all_passed() => EXIT_FAILED,
        _ => EXIT_PASSED,
    })
}

/// Ctrl-C during `runner run`: the first stops new runs, the second aborts those in flight.
async fn interrupts(control: Arc<runner::Control>) {
    while tokio::signal::ctrl_c().await.is_ok() {
        if control.interrupt() == 1 {
            eprintln!("\ninterrupted: no new run starts; the runs in flight finish (Ctrl-C again to abort them)");
        } else {
            eprintln!("\naborting the runs in flight");
        }
    }
}

/// Appends the Markdown summary to `$GITHUB_STEP_SUMMARY` when it is set.
fn append_step_summary(summary: &report::summary::Summary) -> anyhow::Result<()> {
    if let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY")
        && !path.is_empty()
    {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot open {path}"))?;
        file.write_all(summary.render_markdown().as_bytes()).with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

/// Models resolved so far (the embedded model is loaded once).
struct ModelCache<'a> {
    settings: &'a Settings,
    http: reqwest::Client,
    targets: HashMap<String, Arc<runner::Target>>,
}

impl ModelCache<'_> {
    async fn resolve(&mut self, text: &str) -> anyhow::Result<Arc<runner::Target>> {
        let spec = self.settings.parse_model(text).map_err(UsageError)?;
        if let Some(target) = self.targets.get(&spec.to_string()) {
            return Ok(target.clone());
        }
        let provider = self.settings.provider(&spec, &self.http).await.map_err(UsageError)?;
        let price = self.settings.prices.get(&spec.provider, &spec.name).cloned();
        let target = Arc::new(runner::Target { spec, provider, price });
        self.targets.insert(target.spec.to_string(), target.clone());
        Ok(target)
    }
}

impl chat::Models for ModelCache<'_> {
    fn target<'a>(&'a mut self, name: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<runner::Target>, String>> {
        Box::pin(async move { self.resolve(name).await.map_err(|e| format!("{e:#}")) })
    }
}

/// `runner ask`: the prompt from the argument and/or standard input; only the answer on
/// standard output.
async fn ask(config: Option<&std::path::Path>, args: AskArgs) -> anyhow::Result<u8> {
    use std::io::{IsTerminal, Read};
    let mut prompt = args.prompt.clone().unwrap_or_default();
    if !std::io::stdin().is_terminal() {
        let mut piped = String::new();
        std::io::stdin().read_to_string(&mut piped).context("cannot read standard input")?;
        if !piped.trim().is_empty() {
            if !prompt.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(piped.trim_end());
        }
    }
    if prompt.trim().is_empty() {
        return Err(UsageError("nothing to ask: give a prompt (runner ask \"...\") or pipe one (echo hi | runner ask)".into()).into());
    }
    let settings = Settings::load(config, None, None)?;
    let http = provider::openai::http_client()?;
    let mut models = ModelCache { settings: &settings, http: http.clone(), targets: HashMap::new() };
    let target = models.resolve(&args.model.clone().unwrap_or_else(|| settings.default_model())).await?;
    let mut session = chat::Session::new(target, http, settings.weather.clone(), random_seed());
    let print = |text: &str| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    };
    let turn = session.turn(&prompt, (!args.json).then_some(&print as provider::TextSink<'_>)).await;
    if args.json {
        let record = serde_json::json!({
            "model": session.target.spec.to_string(),
            "prompt": prompt,
            "reply": turn.reply,
            "error": turn.error,
            "latency_ms": turn.latency_ms,
            "requests": turn.requests,
            "tool_calls": turn.tool_calls,
            "usage": turn.usage,
            "cost": turn.cost,
            "unpriced": session.target.price.is_none(),
        });
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else if turn.reply.is_some() {
        println!();
    }
    if let Some(err) = &turn.error {
        eprintln!("error: {err}");
        return Ok(EXIT_FAILED);
    }
    if !args.quiet && !args.json {
        let cost = if session.target.price.is_some() { format!("${:.6}", turn.cost.total_usd) } else { "unpriced".to_owned() };
        eprintln!(
            "{}: {} input + {} output = {} tokens, {cost}",
            session.target.spec, turn.usage.prompt_tokens, turn.usage.completion_tokens, turn.usage.total_tokens
        );
    }
    Ok(EXIT_PASSED)
}

/// A seed that differs from run to run, when `--seed` is not given.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

fn render_models(settings: &Settings) -> String {
    let mut out = String::from("USD per million tokens\n\n");
    let rows: Vec<Vec<String>> = std::iter::once(["model", "input", "cached", "output", "date", "source"].map(String::from).to_vec())
        .chain(settings.prices.iter().map(|(key, entry)| {
            let p = &entry.price;
            vec![
                key.to_owned(),
                format!("{:.3}", p.input),
                p.cached_input.map_or("-".into(), |c| format!("{c:.3}")),
                format!("{:.3}", p.output),
                entry.date.clone().unwrap_or_else(|| "-".into()),
                entry.source.clone(),
            ]
        }))
        .collect();
    out.push_str(&report::render_table(&rows, &[0, 4, 5]));
    if !settings.config.endpoints.is_empty() {
        out.push_str("\nendpoints (runner.yaml)\n");
        for (name, endpoint) in &settings.config.endpoints {
            let key = endpoint.api_key_env.as_deref().map_or("no key".to_owned(), |var| format!("key from {var}"));
            out.push_str(&format!("  {name}: {} ({key})\n", endpoint.base_url));
        }
    }
    out.push_str(&format!("\ndefault model: {}\n", settings.default_model()));
    out
}
