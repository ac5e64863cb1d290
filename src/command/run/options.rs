//! `runner run`'s arguments, settled once (hyperfine's `Options::from_cli_arguments`): every
//! later step reads a [`RunOptions`] field, never a flag.

use std::path::{Path, PathBuf};

use super::super::UsageError;
use crate::cli::{ConfidenceArgs, RunArgs};
use crate::files::is_file_or_absent;
use crate::plan::{MatrixOptions, Shard};
use crate::provider::cache::CacheMode;
use crate::runner::Limits;
use crate::settings::Flags;

/// What `runner run` was asked to do.
#[derive(Debug)]
pub(super) struct RunOptions {
    /// Scenario files, directories and globs; `-` is standard input.
    pub paths: Vec<String>,
    pub matrix: Matrix,
    /// What the flags set of the settings (`runner.yaml` and the environment fill the rest).
    settings: SettingsFlags,
    /// `--cache DIR` (else runner.yaml's) and how it is used.
    pub cache: (Option<PathBuf>, CacheMode),
    /// `--seed`: the tools' stream and, where a scenario sets none, the sampling seed.
    pub seed: Option<u64>,
    /// Plan and price the batch, and call no model.
    pub dry_run: bool,
    pub logs_dir: PathBuf,
    /// The batch to finish (`--resume RUN_ID`).
    pub resume: Option<String>,
    /// Play only the runs this report says did not pass.
    pub only_failed: Option<PathBuf>,
    pub require_prices: bool,
    /// `--max-cost-usd` and `--fail-fast`.
    pub limits: Limits,
    pub min_pass_rate: Option<f64>,
    /// `--compare-to` and `--target-pass-rate`.
    pub confidence: ConfidenceArgs,
    pub baseline: Option<PathBuf>,
    pub outputs: OutputPaths,
    /// `--otlp URL` and `--otlp-content`: traces, with the standard variables.
    pub traces: (Option<String>, bool),
}

/// The run matrix asked for: `-m`, `--repeat`, `--filter`, `--shard`.
#[derive(Debug)]
pub(super) struct Matrix {
    models: Vec<String>,
    repeat: u32,
    filter: Option<String>,
    shard: Option<Shard>,
}

#[derive(Debug)]
struct SettingsFlags {
    prices: Option<PathBuf>,
    timeout_secs: Option<f64>,
    max_retries: Option<u32>,
    concurrency: Option<u32>,
    judge_model: Option<String>,
    user_model: Option<String>,
}

/// Where the reports go; no two name the same file.
#[derive(Debug)]
pub(super) struct OutputPaths {
    /// The CSV report [default: `reports/<run-id>.csv`].
    pub report: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

impl RunOptions {
    /// Settles `args`; flags that cannot hold together are a [`UsageError`].
    pub(super) fn from_args(args: RunArgs) -> Result<Self, UsageError> {
        let outputs = OutputPaths { report: args.report, junit: args.junit, html: args.html };
        outputs.check_distinct()?;
        Ok(Self {
            paths: args.paths,
            matrix: Matrix { models: args.models, repeat: args.repeat, filter: args.filter, shard: args.shard },
            settings: SettingsFlags {
                prices: args.prices,
                timeout_secs: args.timeout,
                max_retries: args.max_retries,
                concurrency: args.concurrency,
                judge_model: args.judge_model,
                user_model: args.user_model,
            },
            cache: (args.cache.cache.clone(), args.cache.mode()),
            seed: args.seed,
            dry_run: args.dry_run,
            logs_dir: args.logs_dir,
            resume: args.resume,
            only_failed: args.only_failed,
            require_prices: args.require_prices,
            limits: Limits { max_cost_usd: args.max_cost_usd, fail_fast: args.fail_fast },
            min_pass_rate: args.min_pass_rate,
            confidence: args.confidence,
            baseline: args.baseline,
            outputs,
            traces: (args.otlp, args.otlp_content),
        })
    }

    /// What the flags set of the settings; `config` is `--config`.
    pub(super) fn flags<'a>(&'a self, config: Option<&'a Path>) -> Flags<'a> {
        let flags = &self.settings;
        Flags {
            config,
            prices: flags.prices.as_deref(),
            timeout_secs: flags.timeout_secs,
            max_retries: flags.max_retries,
            concurrency: flags.concurrency,
            judge_model: flags.judge_model.as_deref(),
            user_model: flags.user_model.as_deref(),
        }
    }

    /// What the plan takes of the matrix.
    pub(super) fn matrix(&self) -> MatrixOptions<'_> {
        let matrix = &self.matrix;
        MatrixOptions {
            models: &matrix.models,
            repeat: matrix.repeat,
            filter: matrix.filter.as_deref(),
            shard: matrix.shard,
        }
    }
}

impl OutputPaths {
    /// Two reports written to one file would leave only the last: refused. A path that is
    /// not a regular file (`/dev/stdout`) may be named twice.
    fn check_distinct(&self) -> Result<(), UsageError> {
        let named = [("--report", &self.report), ("--junit", &self.junit), ("--html", &self.html)];
        let named: Vec<(&str, &Path)> =
            named.iter().filter_map(|(flag, path)| Some((*flag, path.as_deref()?))).collect();
        for (i, (first, path)) in named.iter().enumerate() {
            if let Some((second, _)) = named[i + 1..].iter().find(|(_, other)| other == path)
                && is_file_or_absent(path)
            {
                return Err(UsageError(format!(
                    "{first} and {second} both name {}; give each report its own file",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}
