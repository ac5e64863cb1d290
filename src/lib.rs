//! runner: replays scripted conversations with language models, checks what they answer,
//! and records every request, tool call, token and cent.
//!
//! Data flows one way: scenario -> runner -> agent -> provider/tools -> run record ->
//! reporters.

pub mod agent;
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

use cli::{Cli, Command, RunArgs};
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
    let mut targets: HashMap<String, Arc<runner::Target>> = HashMap::new();
    for text in scenarios.iter().flat_map(wanted) {
        let spec = settings.parse_model(&text).map_err(UsageError)?;
        if targets.contains_key(&spec.to_string()) {
            continue;
        }
        let provider = settings.provider(&spec, &http).await.map_err(UsageError)?;
        let price = settings.prices.get(&spec.provider, &spec.name).cloned();
        targets.insert(spec.to_string(), Arc::new(runner::Target { spec, provider, price }));
    }
    let mut jobs = Vec::new();
    for scenario in scenarios.into_iter().map(Arc::new) {
        for text in wanted(&scenario) {
            let key = settings.parse_model(&text).map_err(UsageError)?.to_string();
            let target = &targets[&key];
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
    let outcome = {
        let mut reporters = (&mut summary, (&mut progress, &mut csv));
        runner::run_all(jobs, concurrency, shared, &mut reporters as &mut dyn Reporter).await
    };
    progress.finish();
    print!("{}", summary.render());
    println!("logs: {}", run_dir.display());
    println!("report: {}", report_path.display());
    let not_passed = outcome?;
    Ok(if not_passed == 0 { EXIT_PASSED } else { EXIT_FAILED })
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
    let rows: Vec<[String; 5]> = std::iter::once(["model".into(), "input".into(), "cached".into(), "output".into(), "source".into()])
        .chain(settings.prices.iter().map(|(key, entry)| {
            let p = &entry.price;
            [key.to_owned(), format!("{:.3}", p.input), p.cached_input.map_or("-".into(), |c| format!("{c:.3}")), format!("{:.3}", p.output), entry.source.clone()]
        }))
        .collect();
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for row in &rows {
        out.push_str(&format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}\n",
            row[0], row[1], row[2], row[3], row[4],
            w0 = widths[0], w1 = widths[1], w2 = widths[2], w3 = widths[3]
        ));
    }
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
