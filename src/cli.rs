//! The command line. Parsed here, turned into settings in `settings`; nothing else sees clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::Shard;

/// Examples and exit codes, after `runner --help`.
const AFTER_HELP: &str = "Examples:
  runner run scenarios/                              every scenario on the default model
  runner run scenarios/ -m openai:gpt-4o-mini -m anthropic:claude-haiku-4-5 --repeat 3
  runner run scenarios/ --cache .runner-cache --replay   answered from a committed cache
  runner run scenarios/ --baseline reports/main.csv --min-pass-rate 0.9
  runner run scenarios/ --html report.html --judge-model openai:gpt-4o   a page to look at
  echo 'What is 2 plus 3?' | runner ask
  runner chat -m local:smollm2-135m

Exit codes: 0 every run passed (or every model met --min-pass-rate); 1 a run failed or ended in
an error, or a scenario regressed against --baseline; 2 bad command line, config or scenario
file (nothing was run); 3 the --max-cost-usd budget left runs unstarted; 130 interrupted (143 on
SIGTERM)";

/// Replay scripted conversations with language models, check what they answer, and record
/// tokens and cost.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, max_term_width = 100, after_help = AFTER_HELP)]
pub struct Cli {
    /// Config file [default: ./runner.yaml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Show diagnostics on standard error (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Play scenarios against models, check expectations, write logs and a CSV report
    Run(Box<RunArgs>),
    /// Validate scenario files without calling any model
    Check {
        /// Scenario files, directories (every *.yaml / *.yml within) or - for standard input
        #[arg(value_name = "PATHS", default_value = "scenarios")]
        paths: Vec<String>,

        /// The judge of `expect.judge` checks that name no model [default: runner.yaml's
        /// judge_model]
        #[arg(long, value_name = "MODEL")]
        judge_model: Option<String>,

        /// The simulated user's model where `simulate:` names none [default: runner.yaml's
        /// user_model]
        #[arg(long, value_name = "MODEL")]
        user_model: Option<String>,
    },
    /// Chat interactively; a token and cost summary at the end
    Chat {
        /// Model as PROVIDER:MODEL [default: RUNNER_MODEL, else runner.yaml, else
        /// openai:gpt-4o-mini with OPENAI_API_KEY, else the embedded model]
        #[arg(short = 'm', long = "model", value_name = "MODEL")]
        model: Option<String>,
        /// Where conversations are saved
        #[arg(long, value_name = "DIR", default_value = "logs/conversations")]
        logs_dir: PathBuf,
        /// Seconds to wait for a reply to start, and then between two pieces of it [default:
        /// runner.yaml's timeout_secs, else 120]
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        #[command(flatten)]
        offer: OfferArgs,
    },
    /// Answer one prompt (the argument, standard input, or both) and exit
    Ask(AskArgs),
    /// Rebuild the comparison summary from CSV reports: merge shards, re-price at another model
    Report(ReportArgs),
    /// Print the JSON Schema of scenario files
    Schema,
    /// List the tools scenarios can offer (built-in, runner.yaml's, and those the given
    /// scenario files declare) with their JSON schemas
    Tools {
        /// Scenario files or directories whose declared tools to list too
        #[arg(value_name = "PATHS")]
        paths: Vec<String>,

        /// Every tool with its description and whole JSON schema, as JSON
        #[arg(long)]
        json: bool,
    },
    /// Look after a request cache directory
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output: `runner man > runner.1`
    Man,
    /// List the models runner knows, with provider and prices
    Models {
        /// Price file that adds or overrides prices (YAML: PROVIDER:MODEL: {input, cached_input, cache_write_input, output})
        #[arg(long, value_name = "FILE")]
        prices: Option<PathBuf>,
    },
}

/// `runner cache ...`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size, age and models of a cache directory
    Stats {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Delete the entries recorded longer ago than AGE
    Prune {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// An age: 30d, 12h, 90m, 2w
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: std::time::Duration,
    },
}

/// A flag's value that is not what the flag takes.
#[derive(Debug, thiserror::Error)]
enum BadValue {
    /// `text` is not `what` (which ends with an example).
    #[error("`{text}` is not {what}")]
    Not { text: String, what: &'static str },
    #[error("`{0}` is older than anything a cache holds: give an age of at most 1000 years (e.g. 30d)")]
    TooOld(String),
}

fn parse_age(text: &str) -> Result<std::time::Duration, BadValue> {
    let not_an_age = || BadValue::Not { text: text.trim().to_owned(), what: "an age (e.g. 30d, 12h, 90m, 2w)" };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| not_an_age())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(not_an_age()),
    };
    // An age past a thousand years is a typo, and past the calendar's range.
    const MAX_AGE_SECS: u64 = 1000 * 366 * 86_400;
    match number.checked_mul(seconds) {
        Some(secs) if secs <= MAX_AGE_SECS => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(BadValue::TooOld(text.to_owned())),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files, directories (every *.yaml / *.yml within) or - for standard input
    #[arg(value_name = "PATHS", default_value = "scenarios")]
    pub paths: Vec<String>,

    /// Play every scenario K times per model
    #[arg(help_heading = "Selection", long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub repeat: u32,

    /// Only scenarios whose name contains TEXT
    #[arg(help_heading = "Selection", long, value_name = "TEXT")]
    pub filter: Option<String>,

    /// Seed for get_random_number and, where a scenario sets none, the model's sampling seed
    #[arg(help_heading = "Selection", long, value_name = "N")]
    pub seed: Option<u64>,

    /// Run only the I-th of N deterministic slices of the run matrix (CI matrices); merge the
    /// shards' reports with `runner report`
    #[arg(help_heading = "Selection", long, value_name = "I/N")]
    pub shard: Option<Shard>,

    /// Validate, print the run matrix and an upper bound of its cost, and call no model
    #[arg(long, help_heading = "Selection")]
    pub dry_run: bool,

    /// Finish an interrupted run: play only the runs of RUN_ID's matrix that have no finished
    /// log in its directory, and complete its report (give the same PATHS and flags)
    #[arg(help_heading = "Selection", long, value_name = "RUN_ID")]
    pub resume: Option<String>,

    /// Play only the runs (scenario, model, repetition) that did not pass in this CSV report
    #[arg(help_heading = "Selection", long, value_name = "REPORT.csv")]
    pub only_failed: Option<PathBuf>,

    /// Model as PROVIDER:MODEL; repeat to run every scenario on each [default: the scenario's
    /// model, else RUNNER_MODEL, else runner.yaml, else openai:gpt-4o-mini with OPENAI_API_KEY,
    /// else the embedded local:smollm2-135m]
    #[arg(help_heading = "Models", short = 'm', long = "model", value_name = "MODEL")]
    pub models: Vec<String>,

    /// Price file that adds or overrides prices (YAML: PROVIDER:MODEL: {input, cached_input, cache_write_input, output})
    #[arg(help_heading = "Models", long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Seconds to wait for a reply to start, and then between two pieces of it [default:
    /// runner.yaml's timeout_secs, else 120]
    #[arg(help_heading = "Models", long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Retries of a failed model request (429, 5xx, lost connections, timeouts, cut bodies)
    /// [default: runner.yaml's max_retries, else 3]
    #[arg(help_heading = "Models", long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retries: Option<u32>,

    /// Refuse to run (exit 2) when a model has no known price
    #[arg(long, help_heading = "Models")]
    pub require_prices: bool,

    /// The judge of `expect.judge` checks that name no model (PROVIDER:MODEL) [default:
    /// runner.yaml's judge_model]
    #[arg(help_heading = "Models", long, value_name = "MODEL")]
    pub judge_model: Option<String>,

    /// The simulated user's model where a scenario's `simulate:` names none (PROVIDER:MODEL)
    /// [default: runner.yaml's user_model]
    #[arg(help_heading = "Models", long, value_name = "MODEL")]
    pub user_model: Option<String>,

    /// Where run logs go: DIR/<run-id>/<scenario>__<model>__<repetition>.json
    #[arg(help_heading = "Outputs", long, value_name = "DIR", default_value = "logs/runs")]
    pub logs_dir: PathBuf,

    /// CSV report path [default: reports/<run-id>.csv]
    #[arg(help_heading = "Outputs", long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Also write a JUnit XML report: a test suite per model, a test case per run
    #[arg(help_heading = "Outputs", long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Also write a self-contained HTML report to FILE: the summary, cost against pass rate,
    /// latency, the scenario x model matrix, and every run's conversation
    #[arg(help_heading = "Outputs", long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Export each run as an OpenTelemetry trace to this OTLP/HTTP collector (URL/v1/traces)
    /// [default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(help_heading = "Outputs", long, value_name = "URL")]
    pub otlp: Option<String>,

    /// Put the messages, tool arguments and tool results into the traces too (they are
    /// left out otherwise)
    #[arg(help_heading = "Outputs", long)]
    pub otlp_content: bool,

    /// Runs in flight at once [default: runner.yaml's concurrency, else 8]
    #[arg(help_heading = "Limits", short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,

    /// Start no new run once the finished runs cost X USD; the rest are reported as not
    /// started and runner exits with 3
    #[arg(help_heading = "Limits", long, value_name = "X", value_parser = parse_usd)]
    pub max_cost_usd: Option<f64>,

    /// Start no new run after the first one that does not pass
    #[arg(long, help_heading = "Limits")]
    pub fail_fast: bool,

    #[command(flatten, next_help_heading = "Cache")]
    pub cache: CacheArgs,

    /// Compare with an earlier CSV report: pass rate and cost per model before and after,
    /// regressions and fixes per scenario; a regression makes the exit code 1
    #[arg(help_heading = "Gates and comparisons", long, value_name = "REPORT.csv")]
    pub baseline: Option<PathBuf>,

    /// Exit 0 when every model's pass rate is at least P (0 to 1), even with failures; 1
    /// otherwise
    #[arg(help_heading = "Gates and comparisons", long, value_name = "P", value_parser = parse_rate)]
    pub min_pass_rate: Option<f64>,

    #[command(flatten, next_help_heading = "Gates and comparisons")]
    pub confidence: ConfidenceArgs,
}

/// How sure a comparison is (`run`, `report`).
#[derive(Debug, Args, Default)]
pub struct ConfidenceArgs {
    /// Compare every other model with MODEL, scenario by scenario [default: the first model]
    #[arg(long, value_name = "MODEL")]
    pub compare_to: Option<String>,

    /// Name the cheapest model whose pass rate reaches P (0 to 1) with 95% confidence (the
    /// lower bound of its interval)
    #[arg(long, value_name = "P", value_parser = parse_rate)]
    pub target_pass_rate: Option<f64>,
}

/// The request cache (`run`, `ask`, `chat`).
#[derive(Debug, Args, Default)]
pub struct CacheArgs {
    /// Answer requests seen before from DIR and store new ones there [default: runner.yaml's
    /// cache]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// Answer only from the cache: a request not in it is that run's error; nothing is sent
    /// and no key is needed
    #[arg(long, conflicts_with = "refresh")]
    pub replay: bool,

    /// Send every request and overwrite what the cache held
    #[arg(long)]
    pub refresh: bool,
}

impl CacheArgs {
    /// How the request cache is used: `--replay`, `--refresh`, or read and written.
    pub(crate) fn mode(&self) -> crate::provider::cache::CacheMode {
        use crate::provider::cache::CacheMode;
        match (self.replay, self.refresh) {
            (true, _) => CacheMode::Replay,
            (_, true) => CacheMode::Refresh,
            _ => CacheMode::Use,
        }
    }
}

fn parse_rate(text: &str) -> Result<f64, BadValue> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(BadValue::Not { text: text.to_owned(), what: "a pass rate between 0 and 1 (e.g. 0.9)" }),
    }
}

fn parse_usd(text: &str) -> Result<f64, BadValue> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(BadValue::Not { text: text.to_owned(), what: "an amount in USD (e.g. 0.50)" }),
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// CSV reports written by `runner run` (the shards of one run, or several runs)
    #[arg(value_name = "FILES", required = true)]
    pub files: Vec<PathBuf>,

    /// Compare with an earlier CSV report: pass rate and cost per model before and after,
    /// regressions and fixes per scenario; a regression makes the exit code 1
    #[arg(long, value_name = "REPORT.csv")]
    pub baseline: Option<PathBuf>,

    #[command(flatten)]
    pub confidence: ConfidenceArgs,

    /// Re-price every recorded token count at this model's prices (PROVIDER:MODEL)
    #[arg(long, value_name = "MODEL")]
    pub price_as: Option<String>,

    /// Price file that adds or overrides prices (YAML: PROVIDER:MODEL: {input, cached_input, cache_write_input, output})
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Also write the per-model summary as CSV to FILE
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Write the merged rows (one report, as `runner run` writes it) to FILE
    #[arg(long, value_name = "FILE")]
    pub merged: Option<PathBuf>,

    /// Also write a self-contained HTML report to FILE, with each run's conversation read
    /// from its log under --logs-dir
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Where the runs' logs are, for the HTML report's conversations
    #[arg(long, value_name = "DIR", default_value = "logs/runs")]
    pub logs_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The prompt; piped standard input is appended after it
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<String>,

    /// Model as PROVIDER:MODEL [default: as for chat]
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<String>,

    /// Print no usage and cost on standard error
    #[arg(short, long)]
    pub quiet: bool,

    /// Print the whole record (reply, requests, tool calls, usage, cost) as JSON instead
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for a reply to start, and then between two pieces of it [default:
    /// runner.yaml's timeout_secs, else 120]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    #[command(flatten)]
    pub offer: OfferArgs,
}

/// What `ask` and `chat` offer the model, and how they ask.
#[derive(Debug, Args)]
pub struct OfferArgs {
    /// Tools offered: comma-separated names, or `none` [default: every built-in tool]
    #[arg(long, value_name = "NAMES|none")]
    pub tools: Option<String>,

    /// Ask for the whole reply at once instead of streaming it
    #[arg(long)]
    pub no_stream: bool,

    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Diagnostics (`tracing` events from the core) on standard error: `RUST_LOG` when set, else
/// runner's warnings, `-v` its debug events (and the libraries' warnings: the MCP SDK's
/// own, say), `-vv` its trace events. Colour only on a terminal, and never under `NO_COLOR`.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "runner=warn",
        1 => "warn,runner=debug",
        _ => "info,runner=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    // Without -v only warnings show: as plain lines, without time and module.
    let _ = if verbose == 0 && std::env::var_os("RUST_LOG").is_none() {
        builder.without_time().with_target(false).try_init()
    } else {
        builder.try_init()
    };
}
