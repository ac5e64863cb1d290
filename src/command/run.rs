//! `runner run`: load → plan → run → report → exit code.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{EXIT_BUDGET, EXIT_FAILED, EXIT_PASSED};
use crate::cli::RunArgs;
use crate::files::{is_file_or_absent, write_atomically};
use crate::http::http_client;
use crate::plan::{CacheLookup, Cell, MatrixOptions, Plan};
use crate::progress::{DownloadBar, Progress};
use crate::provider::{ModelSpec, Models};
use crate::record::{Reporter, RunOutcome, RunRecord, Status};
use crate::report::baseline::Comparison;
use crate::report::csv::CsvReport;
use crate::report::failures::Failures;
use crate::report::html::{HtmlReport, Page};
use crate::report::json::{JsonLogs, read_log};
use crate::report::junit::Junit;
use crate::report::summary::Summary;
use crate::report::summary_path;
use crate::rng::random_seed;
use crate::runner::{self, Control, Job, Limits, Shared, StopReason, Totals};
use crate::settings::{Flags, Settings, UsageError};

pub(crate) async fn run(config: Option<&Path>, args: RunArgs) -> anyhow::Result<u8> {
    let flags = Flags {
        config,
        prices: args.prices.as_deref(),
        timeout_secs: args.timeout,
        max_retries: args.max_retries,
        concurrency: args.concurrency,
        judge_model: args.judge_model.as_deref(),
    };
    let settings = Settings::load(flags)?;

    // Load: every file validated before anything is sent.
    let scenarios = super::load(&settings, &args.paths)?;

    // Plan: the matrix, the shard, the price gate; a dry run ends here.
    let matrix =
        MatrixOptions { models: &args.models, repeat: args.repeat, filter: args.filter.as_deref(), shard: args.shard };
    let plan = Plan::new(&settings, scenarios, matrix)?;
    plan.check_prices(args.require_prices, args.max_cost_usd.is_some())?;
    let cache = settings.request_cache(args.cache.cache.as_deref(), args.cache.mode())?;
    if args.dry_run {
        let lookup = cache.as_ref().map(|cache| CacheLookup { cache, providers: &settings.providers, seed: args.seed });
        super::print(&super::dry_run::render(&plan, &settings.prices, &settings.tools, lookup.as_ref()))?;
        return Ok(EXIT_PASSED);
    }

    // Every model is resolved before any request, so a bad name or a missing key runs nothing.
    let fetch = DownloadBar::new();
    let mut models = Models::new(&settings.providers, &settings.prices, http_client()?, &fetch).with_cache(cache);
    let mut targets = Vec::with_capacity(plan.cells.len());
    for cell in &plan.cells {
        targets.push(models.target(&cell.spec).await.map_err(UsageError)?);
    }
    let mut judges = HashMap::new();
    for spec in &plan.judges {
        let judge = models.target(spec).await.map_err(|e| UsageError(format!("judge model: {e}")))?;
        judges.insert(spec.clone(), judge);
    }

    // Run: a new batch, or the rest of an interrupted one. Jobs are made as they start.
    let mut logs = open_logs(&args)?;
    let (finished, done) = if args.resume.is_some() { read_finished(&logs, &plan) } else { Default::default() };
    let wanted = only_failed(args.only_failed.as_deref())?;
    let plays = |&(cell, repetition): &(usize, u32)| {
        let Cell { scenario, spec } = &plan.cells[cell];
        !done.contains(&(cell, repetition))
            && wanted.as_ref().is_none_or(|w| w.contains(&(scenario.name.clone(), spec.clone(), repetition)))
    };
    // Counting needs a pass over the matrix only when --only-failed picks runs from it.
    let total = match &wanted {
        None => usize::try_from(plan.len()).unwrap_or(usize::MAX) - done.len(),
        Some(wanted) => {
            let path = args.only_failed.as_deref().unwrap_or(Path::new("")).display();
            let in_plan: HashSet<(String, ModelSpec, u32)> = plan
                .runs()
                .map(|(cell, repetition)| {
                    (plan.cells[cell].scenario.name.clone(), plan.cells[cell].spec.clone(), repetition)
                })
                .collect();
            let mut unmatched: Vec<&(String, ModelSpec, u32)> =
                wanted.iter().filter(|run| !in_plan.contains(*run)).collect();
            unmatched.sort();
            let named = |runs: &[&(String, ModelSpec, u32)]| {
                let mut text: Vec<String> = runs
                    .iter()
                    .take(10)
                    .map(|(scenario, model, repetition)| {
                        format!("{} on {model} #{repetition}", crate::report::printable(scenario))
                    })
                    .collect();
                if runs.len() > 10 {
                    text.push(format!("and {} more", runs.len() - 10));
                }
                text.join("; ")
            };
            if !wanted.is_empty() && unmatched.len() == wanted.len() {
                return Err(UsageError(format!(
                    "--only-failed {path}: none of its {} run(s) that did not pass is in this batch (renamed scenarios? other models?): {}",
                    wanted.len(),
                    named(&unmatched)
                ))
                .into());
            }
            if !unmatched.is_empty() {
                eprintln!(
                    "warning: --only-failed {path}: {} of its {} run(s) that did not pass match nothing here: {}",
                    unmatched.len(),
                    wanted.len(),
                    named(&unmatched)
                );
            }
            let count = plan.runs().filter(plays).count();
            eprintln!("--only-failed {path}: playing {count} run(s) that did not pass there");
            count
        }
    };
    let jobs = plan.runs().filter(plays).map(|(cell, repetition)| Job {
        scenario: plan.cells[cell].scenario.clone(),
        target: targets[cell].clone(),
        repetition,
    });
    let report_path =
        args.report.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{}.csv", logs.run_id())));
    let html = args.html.as_deref().map(|path| HtmlReport::create(path, Some(logs.dir()))).transpose()?;
    let mut reports = Reports::create(&report_path, html, args.junit.is_some(), &finished)?;
    let shared = Arc::new(Shared {
        run_id: logs.run_id().to_owned(),
        registry: settings.tools.clone(),
        http: models.http().clone(),
        weather: Arc::new(settings.weather.clone()),
        seed: args.seed.unwrap_or_else(random_seed),
        sampling_seed: args.seed,
        mcp: Default::default(),
        repeated: plan.repeat > 1,
        judges,
        secrets: settings.secrets.clone(),
    });
    let mut concurrency = settings.concurrency;
    if let Some((bound, limit)) = crate::tools::runs_within_open_files_limit()
        && concurrency > bound
    {
        eprintln!(
            "warning: -j {concurrency} needs up to {} open files and the limit is {limit} (ulimit -n): running {bound} at once",
            concurrency * crate::tools::FILES_PER_RUN
        );
        concurrency = bound;
    }
    let limits = Limits { max_cost_usd: args.max_cost_usd, fail_fast: args.fail_fast };
    let control = Control::new();
    let listener = tokio::spawn(interrupts(control.clone()));
    let mut progress = Progress::default();
    let mut totals = {
        let mut reporters = (&mut logs, (&mut progress, &mut reports));
        runner::run_all(
            jobs,
            total,
            concurrency,
            limits,
            control.clone(),
            shared.clone(),
            &mut reporters as &mut dyn Reporter,
        )
        .await
    };
    shared.mcp.shutdown().await;
    listener.abort();
    progress.finish();

    // Report: the summary beside the CSV (not beside /dev/stdout), JUnit, the step summary,
    // the table. Every log or row that could not be written is named.
    let summary_path = is_file_or_absent(&report_path).then(|| summary_path(&report_path));
    reports.write(summary_path.as_deref(), args.junit.as_deref())?;
    let comparison = super::compare_with(args.baseline.as_deref(), &reports.summary)?;
    if let Some(html) = reports.html.take() {
        let page = Page { title: logs.run_id(), summary: &reports.summary, comparison: comparison.as_ref() };
        if let Err(err) = html.finish(&page) {
            totals.write_errors.push(err);
        }
    }
    if let Some(path) = &settings.step_summary
        && let Err(err) = reports.append_step_summary(path, comparison.as_ref())
    {
        eprintln!("warning: {err:#}");
    }
    for err in &totals.write_errors {
        eprintln!("error: {err:#}");
    }
    let summary = &reports.summary;
    let mut out = summary.render();
    if let Some(min) = args.min_pass_rate {
        out.push_str(&pass_rate_gate(summary, min));
    }
    if let Some(comparison) = &comparison {
        out.push_str(&comparison.render());
    }
    if !reports.failures.is_empty() {
        out.push_str(
            &reports.failures.render(|f| logs.path(&f.scenario, &f.model, f.repetition).display().to_string()),
        );
    }
    out.push_str(&format!("logs: {}\nreport: {}\n", logs.dir().display(), report_path.display()));
    if let Some(path) = &summary_path {
        out.push_str(&format!("summary: {}\n", path.display()));
    }
    if let Some(path) = &args.html {
        out.push_str(&format!("html: {}\n", path.display()));
    }
    if control.interrupted().is_some() {
        out.push_str(&format!(
            "resume: runner run ... --resume {} (the same paths and flags) plays what did not finish\n",
            logs.run_id()
        ));
    }
    // A reader that went away (`runner run | head -1`) does not change what the batch did.
    super::print(&out).or_else(super::closed_pipe_is_fine)?;
    let regressed = comparison.as_ref().is_some_and(|c| !c.regressions.is_empty());
    Ok(exit_code(&totals, &control, summary, args.min_pass_rate, regressed))
}

/// The `--min-pass-rate` line of the summary.
fn pass_rate_gate(summary: &Summary, min: f64) -> String {
    let below = summary.below(min);
    let pct = |rate: f64| format!("{:.1}%", rate * 100.0);
    if below.is_empty() {
        return format!(
            "pass-rate gate: every model passed at least {} of its runs (--min-pass-rate {min})\n",
            pct(min)
        );
    }
    let models: Vec<String> = below
        .iter()
        .map(|(model, rate)| format!("{model} ({})", rate.map_or_else(|| "no finished run".to_owned(), pct)))
        .collect();
    format!("pass-rate gate: below {} (--min-pass-rate {min}): {}\n", pct(min), models.join(", "))
}

/// The batch's log directory: a new one, or the one `--resume` names.
fn open_logs(args: &RunArgs) -> anyhow::Result<JsonLogs> {
    match &args.resume {
        Some(run_id) => JsonLogs::resume(&args.logs_dir, run_id).ok_or_else(|| {
            UsageError(format!("--resume {run_id}: no such run under {}", args.logs_dir.display())).into()
        }),
        None => JsonLogs::create(&args.logs_dir)
            .with_context(|| format!("cannot create the log directory under {}", args.logs_dir.display())),
    }
}

/// `--only-failed REPORT.csv`: the runs that report says did not pass.
fn only_failed(report: Option<&Path>) -> anyhow::Result<Option<HashSet<(String, ModelSpec, u32)>>> {
    let Some(report) = report else {
        return Ok(None);
    };
    let mut merged = crate::report::merge::Merged::default();
    if !merged.read(report, None)? {
        return Err(UsageError(format!(
            "--only-failed {}: a per-model summary, not a report (give the report beside it)",
            report.display()
        ))
        .into());
    }
    Ok(Some(merged.not_passed()))
}

/// Resuming: the runs of the plan with a whole log that passed or failed are done; their
/// records, and which runs they are. A run that ended in an error is played again: errors are
/// mostly passing trouble (the network, a rate limit, an interrupt), not the model's answer.
fn read_finished(logs: &JsonLogs, plan: &Plan) -> (Vec<RunRecord>, HashSet<(usize, u32)>) {
    let mut finished = Vec::new();
    let mut done = HashSet::new();
    for (cell, repetition) in plan.runs() {
        let Cell { scenario, spec } = &plan.cells[cell];
        if let Some(record) =
            read_log(&logs.path(&scenario.name, spec, repetition)).filter(|r| r.status != Status::Error)
        {
            finished.push(record);
            done.insert((cell, repetition));
        }
    }
    (finished, done)
}

/// The reports built as runs end: the CSV rows, the summary and JUnit.
struct Reports {
    csv: CsvReport<std::io::BufWriter<std::fs::File>>,
    summary: Summary,
    junit: Option<Junit>,
    failures: Failures,
    html: Option<HtmlReport>,
}

impl Reports {
    /// Creates the CSV report at `path`. Resumed runs (`finished`) go in first; their report
    /// is rebuilt beside the old one and replaces it whole.
    fn create(path: &Path, html: Option<HtmlReport>, junit: bool, finished: &[RunRecord]) -> anyhow::Result<Self> {
        let staging = path
            .with_file_name(format!(".{}.partial", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        let csv = CsvReport::create(if finished.is_empty() { path } else { &staging })?;
        // JUnit's cases are kept only when a file will hold them.
        let junit = junit.then(Junit::default);
        let mut reports = Self { csv, summary: Summary::default(), junit, failures: Failures::default(), html };
        if !finished.is_empty() {
            for record in finished {
                reports.run_ended(&RunOutcome::Finished(Box::new(record.clone())))?;
            }
            std::fs::rename(&staging, path).with_context(|| format!("cannot replace {}", path.display()))?;
        }
        Ok(reports)
    }

    /// The per-model summary CSV and JUnit, when they have a place.
    fn write(&self, summary_path: Option<&Path>, junit: Option<&Path>) -> anyhow::Result<()> {
        if let Some(path) = summary_path {
            write_atomically(path, &self.summary.to_csv()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let (Some(path), Some(cases)) = (junit, &self.junit) {
            write_atomically(path, cases.render().trim_end().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// The Markdown summary appended to GitHub's step summary file.
    fn append_step_summary(&self, path: &Path, comparison: Option<&Comparison>) -> anyhow::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| {
            format!("cannot open GITHUB_STEP_SUMMARY={}; the step summary is left out", path.display())
        })?;
        let mut text = self.summary.render_markdown();
        if let Some(comparison) = comparison {
            text.push_str(&comparison.render_markdown());
        }
        file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Reporter for Reports {
    fn plan(&mut self, total_runs: usize) {
        (&mut self.csv, (&mut self.summary, (&mut self.junit, (&mut self.failures, &mut self.html)))).plan(total_runs);
    }

    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        (&mut self.csv, (&mut self.summary, (&mut self.junit, (&mut self.failures, &mut self.html)))).run_ended(outcome)
    }
}

/// 130 (143 for SIGTERM) when interrupted, 3 when the budget left runs unstarted, 1 when a
/// run did not pass (with `--min-pass-rate`: when a model's pass rate is below it), a scenario
/// regressed against `--baseline`, or a log or row could not be written.
fn exit_code(totals: &Totals, control: &Control, summary: &Summary, min_pass_rate: Option<f64>, regressed: bool) -> u8 {
    if let Some(code) = control.interrupted() {
        return code;
    }
    // With a pass-rate gate, failures below it are tolerated; without one, none is.
    let failed = regressed
        || match min_pass_rate {
            Some(min) => !summary.below(min).is_empty(),
            None => !summary.all_passed(),
        };
    match totals.stopped {
        Some(StopReason::Budget { .. }) if totals.not_started > 0 => EXIT_BUDGET,
        _ if failed || !totals.write_errors.is_empty() => EXIT_FAILED,
        _ => EXIT_PASSED,
    }
}

/// Ctrl-C or SIGTERM (what CI sends on cancel) during `runner run`: the first stops new
/// runs, the second aborts those in flight.
async fn interrupts(control: Arc<Control>) {
    let mut signals = super::Signals::all();
    while let Some(code) = signals.next().await {
        if control.interrupt(code) == 1 {
            eprintln!("\ninterrupted: no new run starts; the runs in flight finish (Ctrl-C again to abort them)");
        } else {
            eprintln!("\naborting the runs in flight");
        }
    }
}
