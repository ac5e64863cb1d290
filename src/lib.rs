//! runner: replays scripted conversations with language models, checks what they answer,
//! and records every request, tool call, token and cent.
//!
//! Data flows one way: scenario -> runner -> agent -> provider/tools -> run record ->
//! reporters.

pub mod agent;
pub mod chat;
pub mod check;
pub mod cli;
pub mod pricing;
pub mod progress;
pub mod provider;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
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
    let settings = Settings::load(config, args.prices.as_deref(), args.timeout)?;
    let mut scenarios = load(&settings, &args.paths)?;
    if let Some(filter) = &args.filter {
        scenarios.retain(|s| s.name.contains(filter.as_str()));
        if scenarios.is_empty() {
            return Err(UsageError(format!("no scenario name contains `{filter}`")).into());
        }
    }

    // Every model is resolved before any request, so a bad name or a missing key runs nothing.
    let http = provider::openai::http_client()?;
    let default_model = settings.default_model();
    let wanted = |scenario: &scenario::Scenario| -> Vec<String> {
        if args.models.is_empty() {
            vec![scenario.model.clone().unwrap_or_else(|| default_model.clone())]
        } else {
            args.models.clone()
        }
    };
    let mut models = ModelCache { settings: &settings, http: http.clone(), targets: HashMap::new() };
    let mut jobs = Vec::new();
    for scenario in scenarios.into_iter().map(Arc::new) {
        for text in wanted(&scenario) {
            let target = models.resolve(&text).await?;
            for repetition in 1..=args.repeat {
                jobs.push(runner::Job { scenario: scenario.clone(), target: target.clone(), repetition });
            }
        }
    }

    let (run_id, run_dir) = runner::create_run_dir(&args.logs_dir)
        .with_context(|| format!("cannot create the log directory under {}", args.logs_dir.display()))?;
    let report_path = args.report.clone().unwrap_or_else(|| std::path::PathBuf::from("reports").join(format!("{run_id}.csv")));
    let csv = report::csv::CsvReport::create(&report_path)?;
    let shared = Arc::new(runner::Shared {
        run_id,
        run_dir: run_dir.clone(),
        registry: ToolRegistry::builtin(),
        http,
        weather: Arc::new(settings.weather.clone()),
        seed: args.seed.unwrap_or_else(random_seed),
        sampling_seed: args.seed,
    });
    let mut summary = report::summary::Summary::default();
    let mut progress = progress::Progress::new();
    let mut csv = csv;
    let concurrency = settings.concurrency(args.concurrency.map(|n| n as usize));
    let mut junit = report::junit::Junit::default();
    let outcome = {
        let mut reporters = (&mut summary, (&mut progress, (&mut csv, &mut junit)));
        runner::run_all(jobs, concurrency, shared, &mut reporters as &mut dyn Reporter).await
    };
    progress.finish();
    if let Some(path) = &args.junit {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        report::json::write_atomically(path, junit.render().trim_end().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY")
        && !path.is_empty()
    {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot open {path}"))?;
        file.write_all(summary.render_markdown().as_bytes()).with_context(|| format!("cannot write {path}"))?;
    }
    print!("{}", summary.render());
    println!("logs: {}", run_dir.display());
    println!("report: {}", report_path.display());
    let not_passed = outcome?;
    Ok(if not_passed == 0 { EXIT_PASSED } else { EXIT_FAILED })
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
    let rows: Vec<Vec<String>> = std::iter::once(["model", "input", "cached", "output", "source"].map(String::from).to_vec())
        .chain(settings.prices.iter().map(|(key, entry)| {
            let p = &entry.price;
            vec![key.to_owned(), format!("{:.3}", p.input), p.cached_input.map_or("-".into(), |c| format!("{c:.3}")), format!("{:.3}", p.output), entry.source.clone()]
        }))
        .collect();
    out.push_str(&report::render_table(&rows, &[0, 4]));
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
