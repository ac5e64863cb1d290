//! `runner run`: load → plan → run → report → exit code.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::UsageError;
use super::{EXIT_BUDGET, EXIT_FAILED, EXIT_PASSED};
use crate::cli::RunArgs;
use crate::files::{is_file_or_absent, write_atomically};
use crate::http::http_client;
use crate::plan::{CacheLookup, Cell, Plan};
use crate::program::Endpoint;
use crate::progress::{DownloadBar, Progress};
use crate::provider::{ModelSpec, Models, Target};
use crate::record::{Reporter, RunOutcome, RunRecord, Status};
use crate::report::baseline::Comparison;
use crate::report::csv::CsvReport;
use crate::report::failures::Failures;
use crate::report::html::{HtmlReport, Page};
use crate::report::json::{JsonLogs, read_log};
use crate::report::junit::Junit;
use crate::report::summary::Summary;
use crate::report::summary_path;
use crate::report::trace::{Delivery, Traces};
use crate::rng::random_seed;
use crate::runner::{self, Control, Job, Limits, Shared, StopReason, Totals};
use crate::settings::Settings;
use options::RunOptions;

mod options;

pub(crate) async fn run(config: Option<&Path>, args: RunArgs) -> anyhow::Result<u8> {
    let options = RunOptions::from_args(args)?;
    let settings = Settings::load(options.flags(config))?;
    // Load: every file validated before anything is sent.
    let scenarios = super::load(&settings, &options.paths)?;
    // Plan: the matrix, the shard, the price gate; a dry run ends here.
    let plan = Plan::new(&settings, scenarios, options.matrix())?;
    plan.check_prices(options.require_prices, options.limits.max_cost_usd.is_some())?;
    let mut models: Vec<ModelSpec> = Vec::new();
    for cell in &plan.cells {
        if !models.contains(&cell.spec) {
            models.push(cell.spec.clone());
        }
    }
    let asked = super::asked(&settings, &options.confidence, &models, models.first())?;
    let traces = settings.traces(options.traces.0.as_deref(), options.traces.1)?;
    let cache = settings.request_cache(options.cache.0.as_deref(), options.cache.1)?;
    if options.dry_run {
        let seed = options.seed;
        let lookup = cache.as_ref().map(|cache| CacheLookup { cache, providers: &settings.providers, seed });
        super::print(&super::dry_run::render(&plan, &settings.prices, &settings.tools, lookup.as_ref()))?;
        return Ok(EXIT_PASSED);
    }
    // Every model is resolved before any request, so a bad name or a missing key runs nothing.
    let fetch = DownloadBar::new();
    let mut models = Models::new(&settings.providers, &settings.prices, http_client()?, &fetch).with_cache(cache);
    let (targets, helpers) = resolve(&plan, &mut models).await?;
    // An exporter that cannot be built from the settings (an endpoint its HTTP stack cannot
    // parse) is the user's to fix, like any setting: refused before anything is written.
    let traces = traces
        .map(|config| Traces::start(&config, models.http().clone(), settings.secrets.clone()))
        .transpose()
        .map_err(|err| UsageError(format!("{err:#}")))?;
    // Run: a new batch, or the rest of an interrupted one; every output open before it starts.
    let logs = open_logs(&options)?;
    let batch = Batch::select(&plan, &targets, &logs, &options)?;
    let mut outputs = Outputs::open(&options, logs, &batch.finished)?;
    outputs.summary.ask(asked);
    outputs.traces = traces;
    let endpoint = agents_endpoint(&plan).await?;
    let shared = shared(&settings, &options, &plan, &outputs.logs, models.http(), helpers, endpoint);
    let (totals, control) = play(batch, shared, &settings, options.limits, &mut outputs).await;
    // Report: every output finished (the tables in the plan's order), the table printed, the exit code.
    let cells: Vec<(&str, &ModelSpec)> = plan.cells.iter().map(|c| (c.scenario.name.as_str(), &c.spec)).collect();
    outputs.summary.arrange(&cells);
    outputs.finish(&options, &settings, totals, &control)
}

/// The target of every cell of the plan, and of every judge and simulated user its scenarios
/// name.
async fn resolve(
    plan: &Plan,
    models: &mut Models<'_>,
) -> anyhow::Result<(Vec<Arc<Target>>, HashMap<ModelSpec, Arc<Target>>)> {
    let mut targets = Vec::with_capacity(plan.cells.len());
    for cell in &plan.cells {
        targets.push(models.target(&cell.spec).await?);
    }
    let mut helpers = HashMap::new();
    for spec in &plan.helpers {
        let helper =
            models.target(spec).await.map_err(|e| UsageError(format!("judge or simulated user's model: {e}")))?;
        helpers.insert(spec.clone(), helper);
    }
    Ok((targets, helpers))
}

/// The runs this batch plays: the plan's, less those a resumed batch finished (`--resume`)
/// and, with `--only-failed`, those that passed there.
struct Batch {
    jobs: Vec<Job>,
    /// The records of the runs a resumed batch already finished.
    finished: Vec<RunRecord>,
}

impl Batch {
    fn select(plan: &Plan, targets: &[Arc<Target>], logs: &JsonLogs, options: &RunOptions) -> anyhow::Result<Self> {
        let (finished, done) = if options.resume.is_some() { read_finished(logs, plan) } else { Default::default() };
        let wanted = only_failed(options.only_failed.as_deref())?;
        let plays = |&(cell, repetition): &(usize, u32)| {
            let Cell { scenario, spec } = &plan.cells[cell];
            !done.contains(&(cell, repetition))
                && wanted.as_ref().is_none_or(|w| w.contains(&(scenario.name.clone(), spec.clone(), repetition)))
        };
        if let (Some(wanted), Some(path)) = (&wanted, &options.only_failed) {
            check_only_failed(plan, wanted, &path.display().to_string())?;
        }
        let jobs: Vec<Job> = plan
            .runs()
            .filter(plays)
            .map(|(cell, repetition)| Job {
                scenario: plan.cells[cell].scenario.clone(),
                target: targets[cell].clone(),
                repetition,
            })
            .collect();
        if let Some(path) = &options.only_failed {
            eprintln!("--only-failed {}: playing {} run(s) that did not pass there", path.display(), jobs.len());
        }
        Ok(Self { jobs, finished })
    }
}

/// `--only-failed`: a report none of whose runs is in this batch is an error; one with some
/// runs that match nothing here is worth a warning.
fn check_only_failed(plan: &Plan, wanted: &HashSet<(String, ModelSpec, u32)>, path: &str) -> anyhow::Result<()> {
    let in_plan: HashSet<(String, ModelSpec, u32)> = plan
        .runs()
        .map(|(cell, repetition)| (plan.cells[cell].scenario.name.clone(), plan.cells[cell].spec.clone(), repetition))
        .collect();
    let mut unmatched: Vec<&(String, ModelSpec, u32)> = wanted.iter().filter(|run| !in_plan.contains(*run)).collect();
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
    Ok(())
}

/// What every run of the batch shares.
fn shared(
    settings: &Settings,
    options: &RunOptions,
    plan: &Plan,
    logs: &JsonLogs,
    http: &reqwest::Client,
    helpers: HashMap<ModelSpec, Arc<Target>>,
    endpoint: Option<Endpoint>,
) -> Arc<Shared> {
    Arc::new(Shared {
        run_id: logs.run_id().to_owned(),
        registry: settings.tools.clone(),
        http: http.clone(),
        weather: Arc::new(settings.weather.clone()),
        seed: options.seed.unwrap_or_else(random_seed),
        sampling_seed: options.seed,
        mcp: Default::default(),
        repeated: plan.repeat > 1,
        helpers,
        secrets: settings.secrets.clone(),
        endpoint: endpoint.map(Arc::new),
    })
}

/// The endpoint agent programs call their models through, when a scenario of the plan names
/// an agent.
async fn agents_endpoint(plan: &Plan) -> anyhow::Result<Option<Endpoint>> {
    if !plan.cells.iter().any(|cell| cell.scenario.agent.is_some()) {
        return Ok(None);
    }
    let endpoint = Endpoint::start().await.context("cannot start the agents' endpoint on 127.0.0.1")?;
    Ok(Some(endpoint))
}

/// Plays the batch at `-j` (bounded by the open-files limit), every run's outcome recorded by
/// `outputs` as it ends, Ctrl-C and SIGTERM heard.
async fn play(
    batch: Batch,
    shared: Arc<Shared>,
    settings: &Settings,
    limits: Limits,
    outputs: &mut Outputs,
) -> (Totals, Arc<Control>) {
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
    let control = Control::new();
    let listener = tokio::spawn(interrupts(control.clone()));
    let total = batch.jobs.len();
    let totals =
        runner::run_all(batch.jobs.into_iter(), total, concurrency, limits, control.clone(), shared.clone(), outputs)
            .await;
    shared.mcp.shutdown().await;
    listener.abort();
    outputs.progress.finish();
    (totals, control)
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
fn open_logs(options: &RunOptions) -> anyhow::Result<JsonLogs> {
    let dir = &options.logs_dir;
    match &options.resume {
        Some(run_id) => JsonLogs::resume(dir, run_id)
            .ok_or_else(|| UsageError(format!("--resume {run_id}: no such run under {}", dir.display())).into()),
        None => {
            JsonLogs::create(dir).with_context(|| format!("cannot create the log directory under {}", dir.display()))
        }
    }
}

/// `--only-failed REPORT.csv`: the runs that report says did not pass.
fn only_failed(report: Option<&Path>) -> anyhow::Result<Option<HashSet<(String, ModelSpec, u32)>>> {
    let Some(report) = report else {
        return Ok(None);
    };
    Ok(Some(super::read_report("--only-failed", report)?.not_passed()))
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

/// Everything a batch writes, opened before the first run: the JSON logs, the progress bar,
/// the traces, the CSV report, the summary, JUnit, the failures and the HTML page. Each run is
/// recorded as it ends ([`Reporter`]); [`Outputs::finish`] writes what waits for the end.
struct Outputs {
    logs: JsonLogs,
    progress: Progress,
    /// `--otlp` (or the OTLP variables): each run as a trace.
    traces: Option<Traces>,
    report_path: PathBuf,
    csv: CsvReport<std::io::BufWriter<std::fs::File>>,
    summary: Summary,
    junit: Option<Junit>,
    failures: Failures,
    html: Option<HtmlReport>,
}

impl Outputs {
    /// Opens every output `options` asks for. Resumed runs (`finished`) go in first; their CSV
    /// report is rebuilt beside the old one and replaces it whole.
    fn open(options: &RunOptions, logs: JsonLogs, finished: &[RunRecord]) -> anyhow::Result<Self> {
        let paths = &options.outputs;
        let report_path =
            paths.report.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{}.csv", logs.run_id())));
        let html = paths.html.as_deref().map(|path| HtmlReport::create(path, Some(logs.dir()))).transpose()?;
        let staging = report_path.with_file_name(format!(
            ".{}.partial",
            report_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        let csv = CsvReport::create(if finished.is_empty() { &report_path } else { &staging })?;
        // JUnit's cases are kept only when a file will hold them.
        let junit = paths.junit.is_some().then(Junit::default);
        let mut outputs = Self {
            logs,
            progress: Progress::default(),
            traces: None,
            report_path,
            csv,
            summary: Summary::default(),
            junit,
            failures: Failures::default(),
            html,
        };
        if !finished.is_empty() {
            for record in finished {
                let outcome = RunOutcome::Finished(Box::new(record.clone()));
                // Not the logs, the bar and the traces: a resumed run has its log (and its
                // trace, from the batch that played it), and the bar counts this batch.
                for reporter in outputs.reporters().into_iter().skip(3) {
                    reporter.run_ended(&outcome)?;
                }
            }
            std::fs::rename(&staging, &outputs.report_path)
                .with_context(|| format!("cannot replace {}", outputs.report_path.display()))?;
        }
        Ok(outputs)
    }

    /// The outputs built from every run's outcome, in order: the logs, the bar, the traces,
    /// then the reports.
    fn reporters(&mut self) -> [&mut dyn Reporter; 8] {
        let Self { logs, progress, traces, csv, summary, junit, failures, html, .. } = self;
        [logs, progress, traces, csv, summary, junit, failures, html]
    }

    /// After the last run: the summary beside the CSV (not beside /dev/stdout), JUnit, the HTML
    /// page, the step summary, the table; every log or row that could not be written named.
    /// Returns the exit code.
    fn finish(
        mut self,
        options: &RunOptions,
        settings: &Settings,
        mut totals: Totals,
        control: &Control,
    ) -> anyhow::Result<u8> {
        // The collector first (at most 5 s), so the last lines can say what it took.
        let delivery = self.traces.take().map(|traces| tokio::task::block_in_place(|| traces.finish()));
        let summary_path = is_file_or_absent(&self.report_path).then(|| summary_path(&self.report_path));
        if let Some(path) = &summary_path {
            write_atomically(path, &self.summary.to_csv()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            super::write_pass_k(path, &self.summary)?;
        }
        if let (Some(path), Some(cases)) = (&options.outputs.junit, &self.junit) {
            write_atomically(path, cases.render().trim_end().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let comparison = super::compare_with(options.baseline.as_deref(), &self.summary)?;
        if let Some(html) = self.html.take() {
            let page = Page { title: self.logs.run_id(), summary: &self.summary, comparison: comparison.as_ref() };
            if let Err(err) = html.finish(&page) {
                totals.write_errors.push(err);
            }
        }
        if let Some(path) = &settings.step_summary
            && let Err(err) = self.append_step_summary(path, comparison.as_ref())
        {
            eprintln!("warning: {err:#}");
        }
        for err in &totals.write_errors {
            eprintln!("error: {err:#}");
        }
        let mut out = self.summary.render_within(super::terminal_width());
        if let Some(min) = options.min_pass_rate {
            out.push_str(&pass_rate_gate(&self.summary, min));
        }
        if let Some(comparison) = &comparison {
            out.push_str(&comparison.render());
        }
        let logs = &self.logs;
        if !self.failures.is_empty() {
            out.push_str(
                &self.failures.render(|f| logs.path(&f.scenario, &f.model, f.repetition).display().to_string()),
            );
        }
        out.push_str(&format!("logs: {}\nreport: {}\n", logs.dir().display(), self.report_path.display()));
        if let Some(path) = &summary_path {
            out.push_str(&format!("summary: {}\n", path.display()));
        }
        if let Some(path) = &options.outputs.html {
            out.push_str(&format!("html: {}\n", path.display()));
        }
        if let Some(sent @ Delivery::Sent { .. }) = &delivery {
            out.push_str(&format!("{sent}\n"));
        }
        if control.interrupted().is_some() {
            out.push_str(&format!(
                "resume: runner run ... --resume {} (the same paths and flags) plays what did not finish\n",
                logs.run_id()
            ));
        }
        if let Some(width) = super::terminal_width() {
            out = crate::text::wrap(&out, width);
        }
        // A reader that went away (`runner run | head -1`) does not change what the batch did.
        super::print(&out).or_else(super::closed_pipe_is_fine)?;
        // A collector that is down costs this line, never the batch or its exit code.
        if let Some(lost @ Delivery::Lost { .. }) = &delivery {
            eprintln!("warning: {lost}");
        }
        let regressed = comparison.as_ref().is_some_and(|c| !c.regressions.is_empty());
        Ok(exit_code(&totals, control, &self.summary, options.min_pass_rate, regressed))
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

/// The logs first (a run's log exists before its row), then the bar, then the reports; each
/// hears every run even when one before it failed to write, and the first failure is returned.
impl Reporter for Outputs {
    fn plan(&mut self, total_runs: usize) {
        for reporter in self.reporters() {
            reporter.plan(total_runs);
        }
    }

    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        let mut first = Ok(());
        for reporter in self.reporters() {
            let result = reporter.run_ended(outcome);
            if first.is_ok() {
                first = result;
            }
        }
        first
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
