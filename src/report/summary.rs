//! The comparison summary: per model, runs passed / failed / errored / not started, pass
//! rate, tokens, cost, cost per passing run, median and p95 turn latency; per scenario, how
//! many of its repetitions passed. Built from finished runs as they arrive, or from the rows
//! of CSV reports (`runner report`), with the same arithmetic.

use std::collections::HashMap;

use super::confidence::{Asked, Confidence};
use crate::model::ModelSpec;
use crate::record::{Reporter, RunOutcome, Status};
use crate::usage::Usage;

/// What is summed over runs: per run, per model, across merged reports. One fold
/// ([`AddAssign`](std::ops::AddAssign)) that the summary, `runner report` and the HTML page share.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Tally {
    pub usage: Usage,
    pub cost_usd: f64,
    /// What was actually spent: the cost less what the request cache answered
    /// ([`crate::pricing::spent_usd`]).
    pub spent_usd: f64,
    /// Requests the cache answered.
    pub cache_hits: usize,
    /// What the judges of `expect.judge` checks cost (apart from `cost_usd`).
    pub judge_usd: f64,
    /// What the simulated users cost (apart from `cost_usd`).
    pub user_usd: f64,
    /// Some run had no known price: its figures count as 0.
    pub unpriced: bool,
    /// Latency of every turn, in the order runs were added.
    pub turn_latencies_ms: Vec<u64>,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.usage += other.usage;
        self.cost_usd += other.cost_usd;
        self.spent_usd += other.spent_usd;
        self.cache_hits += other.cache_hits;
        self.judge_usd += other.judge_usd;
        self.user_usd += other.user_usd;
        self.unpriced |= other.unpriced;
        self.turn_latencies_ms.extend(other.turn_latencies_ms);
    }
}

/// What the summary keeps of one run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunFacts {
    pub scenario: String,
    pub model: ModelSpec,
    pub repetition: u32,
    /// `None`: the run never started.
    pub status: Option<Status>,
    pub tally: Tally,
}

impl RunFacts {
    pub(crate) fn of(outcome: &RunOutcome) -> Self {
        match outcome {
            RunOutcome::Finished(record) => Self {
                scenario: record.scenario.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                model: record.model.spec.clone(),
                repetition: record.repetition,
                status: Some(record.status),
                tally: Tally {
                    usage: record.usage,
                    cost_usd: record.cost.cost.total_usd,
                    spent_usd: record.spent_usd(),
                    cache_hits: record.cache_hits(),
                    judge_usd: record.judge_cost_usd(),
                    user_usd: record.user_cost_usd(),
                    unpriced: record.cost.unpriced,
                    turn_latencies_ms: record.turns.iter().map(|t| t.latency_ms).collect(),
                },
            },
            RunOutcome::NotStarted(run) => Self {
                scenario: run.scenario.name.clone(),
                model: run.model.clone(),
                repetition: run.repetition,
                status: None,
                tally: Tally { unpriced: run.unpriced, ..Tally::default() },
            },
        }
    }
}

/// Figures of one model across its runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelStats {
    pub model: ModelSpec,
    /// Runs that finished: passed + failed + errors.
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub not_started: usize,
    /// The finished runs' figures summed (and whether any run, started or not, was unpriced).
    pub tally: Tally,
}

impl ModelStats {
    fn new(model: ModelSpec) -> Self {
        Self { model, runs: 0, passed: 0, failed: 0, errors: 0, not_started: 0, tally: Tally::default() }
    }

    /// Passed runs over finished runs.
    pub(crate) fn pass_rate(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.passed as f64 / self.runs as f64)
    }

    /// Total cost over passed runs: what one passing run costs, failures included.
    pub(crate) fn cost_per_pass(&self) -> Option<f64> {
        (self.passed > 0).then(|| self.tally.cost_usd / self.passed as f64)
    }

    pub(crate) fn median_latency_ms(&self) -> Option<u64> {
        median(&self.tally.turn_latencies_ms)
    }

    pub(crate) fn p95_latency_ms(&self) -> Option<u64> {
        percentile(&self.tally.turn_latencies_ms, 95)
    }

    /// What a finished run cost on average.
    pub(crate) fn mean_cost_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.tally.cost_usd / self.runs as f64)
    }
}

/// How one scenario fared on one model across its repetitions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScenarioStats {
    pub scenario: String,
    pub model: ModelSpec,
    /// Repetitions that finished.
    pub runs: usize,
    pub passed: usize,
    pub not_started: usize,
    /// What its finished repetitions cost.
    pub cost_usd: f64,
}

impl ScenarioStats {
    /// Some repetitions passed and some did not.
    pub(crate) fn flaky(&self) -> bool {
        self.passed > 0 && self.passed < self.runs
    }

    /// The fraction of its finished repetitions that passed (0 with none).
    pub(crate) fn pass_fraction(&self) -> f64 {
        if self.runs == 0 { 0.0 } else { self.passed as f64 / self.runs as f64 }
    }

    /// What one of its finished repetitions cost on average (0 with none).
    pub(crate) fn cost_per_run(&self) -> f64 {
        if self.runs == 0 { 0.0 } else { self.cost_usd / self.runs as f64 }
    }
}

/// The median of `values` (the mean of the middle two, rounded up, for an even count).
pub(crate) fn median(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]).div_ceil(2) } else { sorted[mid] })
}

/// The `p`th percentile of `values` by the nearest-rank method: the smallest value with at
/// least p% of the values at or below it.
pub(crate) fn percentile(values: &[u64], p: usize) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// The columns of `<report>.summary.csv`, one row per model.
pub(crate) const CSV_COLUMNS: &[&str] = &[
    "model",
    "runs",
    "passed",
    "failed",
    "errors",
    "not_started",
    "pass_rate",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_cost_usd",
    "cost_per_passing_run_usd",
    "median_turn_latency_ms",
    "p95_turn_latency_ms",
    "unpriced",
    "flaky_scenarios",
    "spent_usd",
    "cache_hits",
    "judge_cost_usd",
    "pass_rate_low",
    "pass_rate_high",
    "repetitions",
    "pass_at_n",
    "pass_all_n",
    "compared_to",
    "pass_diff",
    "pass_diff_low",
    "pass_diff_high",
    "pass_diff_p",
    "cost_diff_usd",
    "cost_diff_p",
    "scenarios_paired",
];

/// Collects per-model and per-scenario figures as runs arrive.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    models: Vec<ModelStats>,
    scenarios: Vec<ScenarioStats>,
    scenario_index: HashMap<(String, ModelSpec), usize>,
    /// Why runs were not started (the first reason given).
    not_started_reason: Option<String>,
    /// The reference model and the target pass rate of the comparison.
    asked: Asked,
}

impl Summary {
    pub(crate) fn models(&self) -> &[ModelStats] {
        &self.models
    }

    pub(crate) fn scenarios(&self) -> &[ScenarioStats] {
        &self.scenarios
    }

    /// Puts the models and the per-scenario rows in the order of `cells` (the plan's scenario
    /// on model order) rather than the order runs finished in; what `cells` lacks goes after.
    pub(crate) fn arrange(&mut self, cells: &[(&str, &ModelSpec)]) {
        let mut models: HashMap<&ModelSpec, usize> = HashMap::new();
        let mut places: HashMap<(&str, &ModelSpec), usize> = HashMap::new();
        for (i, &(scenario, model)) in cells.iter().enumerate() {
            models.entry(model).or_insert(i);
            places.entry((scenario, model)).or_insert(i);
        }
        self.models.sort_by_key(|m| models.get(&m.model).copied().unwrap_or(usize::MAX));
        self.scenarios.sort_by_key(|s| places.get(&(s.scenario.as_str(), &s.model)).copied().unwrap_or(usize::MAX));
        self.scenario_index =
            self.scenarios.iter().enumerate().map(|(i, s)| ((s.scenario.clone(), s.model.clone()), i)).collect();
    }

    /// Sets what the comparison is asked: the reference model, the target pass rate.
    pub(crate) fn ask(&mut self, asked: Asked) {
        self.asked = asked;
    }

    /// The intervals, the paired comparisons, pass@k and the target, as the runs so far say.
    pub(crate) fn confidence(&self) -> Confidence {
        Confidence::of(self, &self.asked)
    }

    /// Finished runs of every model.
    pub(crate) fn total_runs(&self) -> usize {
        self.models.iter().map(|m| m.runs).sum()
    }

    pub(crate) fn not_started(&self) -> usize {
        self.models.iter().map(|m| m.not_started).sum()
    }

    /// The models whose pass rate is below `min` (a model with no finished run among them),
    /// with their rate.
    pub(crate) fn below(&self, min: f64) -> Vec<(&ModelSpec, Option<f64>)> {
        self.models
            .iter()
            .filter(|m| m.pass_rate().is_none_or(|rate| rate < min))
            .map(|m| (&m.model, m.pass_rate()))
            .collect()
    }

    /// Every finished run passed (runs not started do not count against it).
    pub(crate) fn all_passed(&self) -> bool {
        self.models.iter().all(|m| m.passed == m.runs)
    }

    /// Adds one run.
    pub(crate) fn add(&mut self, run: RunFacts) {
        let model = match self.models.iter().position(|m| m.model == run.model) {
            Some(index) => index,
            None => {
                self.models.push(ModelStats::new(run.model.clone()));
                self.models.len() - 1
            }
        };
        let key = (run.scenario.clone(), run.model.clone());
        let scenario = *self.scenario_index.entry(key).or_insert_with(|| {
            self.scenarios.push(ScenarioStats {
                scenario: run.scenario.clone(),
                model: run.model.clone(),
                runs: 0,
                passed: 0,
                not_started: 0,
                cost_usd: 0.0,
            });
            self.scenarios.len() - 1
        });
        let stats = &mut self.models[model];
        let per_scenario = &mut self.scenarios[scenario];
        match run.status {
            None => {
                // A run that never started counts for nothing, but may say its model is unpriced.
                stats.tally.unpriced |= run.tally.unpriced;
                stats.not_started += 1;
                per_scenario.not_started += 1;
                return;
            }
            Some(Status::Passed) => stats.passed += 1,
            Some(Status::Failed) => stats.failed += 1,
            Some(Status::Error) => stats.errors += 1,
        }
        stats.runs += 1;
        per_scenario.runs += 1;
        per_scenario.cost_usd += run.tally.cost_usd;
        if run.status == Some(Status::Passed) {
            per_scenario.passed += 1;
        }
        stats.tally += run.tally;
    }

    /// Scenarios of `model` that passed some repetitions and failed others.
    pub(crate) fn flaky_scenarios(&self, model: &ModelSpec) -> usize {
        self.scenarios.iter().filter(|s| s.model == *model && s.flaky()).count()
    }

    /// Records why runs were not started (kept once).
    pub(crate) fn set_not_started_reason(&mut self, reason: &str) {
        self.not_started_reason.get_or_insert_with(|| reason.to_owned());
    }

    /// Whether some scenario ran more than once on some model (`--repeat`).
    fn repeated(&self) -> bool {
        self.scenarios.iter().any(|s| s.runs + s.not_started > 1)
    }

    /// The table printed at the end of `runner run` and by `runner report`, every column.
    #[cfg(test)]
    pub(crate) fn render(&self) -> String {
        self.render_within(None)
    }

    /// The same, its model table narrowed to fit `width` columns (a terminal's) when the full
    /// one would not: passes, pass rate with its interval, cost and the median turn.
    pub(crate) fn render_within(&self, width: Option<usize>) -> String {
        let header = [
            "model",
            "runs",
            "passed",
            "failed",
            "errors",
            "pass_rate",
            "95% interval",
            "prompt_tok",
            "completion_tok",
            "cached_tok",
            "cost_usd",
            "usd/pass",
            "median_ms",
            "p95_ms",
        ];
        let confidence = self.confidence();
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(std::string::ToString::to_string).collect()];
        for m in &self.models {
            let money = |value| money_cell(m, value);
            rows.push(vec![
                m.model.to_string(),
                m.runs.to_string(),
                m.passed.to_string(),
                m.failed.to_string(),
                m.errors.to_string(),
                percent_cell(m.pass_rate()),
                interval_cell(&confidence, &m.model),
                m.tally.usage.prompt_tokens.to_string(),
                m.tally.usage.completion_tokens.to_string(),
                m.tally.usage.cached_tokens.to_string(),
                money(Some(m.tally.cost_usd)),
                money(m.cost_per_pass()),
                optional(m.median_latency_ms()),
                optional(m.p95_latency_ms()),
            ]);
        }
        let mut out = super::render_table(&rows, &[0]);
        let widest = out.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        if let Some(width) = width.filter(|w| widest > *w) {
            out = self.narrow_table(&confidence, width);
        }
        if self.repeated() {
            out.push('\n');
            let mut rows = vec![["scenario", "model", "passed", ""].map(String::from).to_vec()];
            for s in &self.scenarios {
                rows.push(vec![
                    s.scenario.escape_debug().to_string(),
                    s.model.to_string().escape_debug().to_string(),
                    format!("{}/{}", s.passed, s.runs),
                    if s.flaky() { "flaky".into() } else { String::new() },
                ]);
            }
            out.push_str(&super::render_table(&rows, &[0, 1, 3]));
        }
        let passed: usize = self.models.iter().map(|m| m.passed).sum();
        let failed: usize = self.models.iter().map(|m| m.failed).sum();
        let errors: usize = self.models.iter().map(|m| m.errors).sum();
        out.push_str(&format!(
            "\nresult: {passed} of {} runs passed ({failed} failed, {errors} with errors)\n",
            self.total_runs()
        ));
        let flaky = self.scenarios.iter().filter(|s| s.flaky()).count();
        if flaky > 0 {
            out.push_str(&format!("flaky: {flaky} scenario(s) passed some repetitions and failed others\n"));
        }
        out.push_str(&confidence.render());
        if self.not_started() > 0 {
            let reason = self.not_started_reason.as_deref().unwrap_or("stopped");
            out.push_str(&format!("not started: {} run(s) ({reason})\n", self.not_started()));
        }
        for m in self.models.iter().filter(|m| m.tally.cache_hits > 0) {
            let money = |value| money_cell(m, Some(value));
            out.push_str(&format!(
                "cache: {}: {} request(s) answered from the cache; recorded cost {}, spent by this run {}\n",
                m.model,
                m.tally.cache_hits,
                money(m.tally.cost_usd),
                money(m.tally.spent_usd)
            ));
        }
        for m in self.models.iter().filter(|m| m.tally.judge_usd > 0.0) {
            out.push_str(&format!(
                "judge: grading {}'s replies cost ${:.6} (not in its cost_usd)\n",
                m.model, m.tally.judge_usd
            ));
        }
        for m in self.models.iter().filter(|m| m.tally.user_usd > 0.0) {
            out.push_str(&format!(
                "simulated users: playing the user against {} cost ${:.6} (not in its cost_usd)\n",
                m.model, m.tally.user_usd
            ));
        }
        if self.models.iter().any(|m| m.tally.unpriced) {
            out.push_str(
                "unpriced: models without a known price count as $0; add prices with --prices FILE or runner.yaml\n",
            );
        }
        if self.models.iter().any(|m| m.model.provider == "local" && m.runs > 1) {
            out.push_str(
                "latency: a turn's wall time; concurrent conversations share the embedded model's passes, so each also waits on the others (-j 1 shows its own time)\n",
            );
        }
        out
    }

    /// The model table in few columns, for a terminal narrower than the full one.
    fn narrow_table(&self, confidence: &Confidence, width: usize) -> String {
        let mut rows = vec![
            ["model", "passed", "rate", "95% interval", "cost", "usd/pass", "turn p50"].map(String::from).to_vec(),
        ];
        for m in &self.models {
            rows.push(vec![
                m.model.to_string(),
                format!("{}/{}", m.passed, m.runs),
                percent_cell(m.pass_rate()),
                interval_cell(confidence, &m.model),
                short_usd(m, Some(m.tally.cost_usd)),
                short_usd(m, m.cost_per_pass()),
                short_ms(m.median_latency_ms()),
            ]);
        }
        let mut out = super::render_table(&rows, &[0]);
        // Still too wide (long model names): the cost per pass goes first.
        if out.lines().any(|l| l.chars().count() > width) {
            for row in &mut rows {
                row.remove(5);
            }
            out = super::render_table(&rows, &[0]);
        }
        out
    }

    /// The summary as Markdown tables (for `GITHUB_STEP_SUMMARY`).
    pub(crate) fn render_markdown(&self) -> String {
        let mut out = String::from(
            "### runner\n\n| model | runs | passed | failed | errors | not started | pass rate | 95% interval | prompt tokens | completion tokens | cost (USD) | USD per pass | median turn (ms) | p95 turn (ms) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let confidence = self.confidence();
        for m in &self.models {
            // `$` escaped: two in a row would be GitHub's inline math.
            let money = |value| money_cell(m, value).replace('$', "\\$");
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                super::markdown_code(&m.model.to_string()),
                m.runs,
                m.passed,
                m.failed,
                m.errors,
                m.not_started,
                percent_cell(m.pass_rate()),
                interval_cell(&confidence, &m.model),
                m.tally.usage.prompt_tokens,
                m.tally.usage.completion_tokens,
                money(Some(m.tally.cost_usd)),
                money(m.cost_per_pass()),
                optional(m.median_latency_ms()),
                optional(m.p95_latency_ms()),
            ));
        }
        let flaky: Vec<&ScenarioStats> = self.scenarios.iter().filter(|s| s.flaky()).collect();
        if !flaky.is_empty() {
            out.push_str("\n**Flaky** (passed some repetitions, failed others):\n\n| scenario | model | passed |\n|---|---|---:|\n");
            for s in flaky {
                out.push_str(&format!(
                    "| {} | {} | {}/{} |\n",
                    super::markdown_cell(&s.scenario),
                    super::markdown_code(&s.model.to_string()),
                    s.passed,
                    s.runs
                ));
            }
        }
        out.push('\n');
        out.push_str(&confidence.render_markdown());
        out
    }

    /// The per-model figures as CSV ([`CSV_COLUMNS`]), one [`SummaryRow`] per model.
    pub(crate) fn to_csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        writer.write_record(CSV_COLUMNS)?;
        let confidence = self.confidence();
        for m in &self.models {
            let figures = confidence.of_model(&m.model);
            let versus = figures.and_then(|f| f.versus.as_ref());
            let pass = versus.and_then(|v| v.pass);
            let cost = versus.and_then(|v| v.cost);
            let pass_k = figures.and_then(super::confidence::ModelConfidence::pass_k_at_n);
            writer.serialize(SummaryRow {
                model: m.model.clone(),
                runs: m.runs,
                passed: m.passed,
                failed: m.failed,
                errors: m.errors,
                not_started: m.not_started,
                pass_rate: m.pass_rate().map(|rate| format!("{rate:.4}")),
                prompt_tokens: m.tally.usage.prompt_tokens,
                completion_tokens: m.tally.usage.completion_tokens,
                cached_tokens: m.tally.usage.cached_tokens,
                total_cost_usd: m.tally.cost_usd,
                cost_per_passing_run_usd: m.cost_per_pass(),
                median_turn_latency_ms: m.median_latency_ms(),
                p95_turn_latency_ms: m.p95_latency_ms(),
                unpriced: m.tally.unpriced,
                flaky_scenarios: self.flaky_scenarios(&m.model),
                spent_usd: m.tally.spent_usd,
                cache_hits: m.tally.cache_hits,
                judge_cost_usd: m.tally.judge_usd,
                pass_rate_low: figures.and_then(|f| f.interval).map(|i| fraction(i.low)),
                pass_rate_high: figures.and_then(|f| f.interval).map(|i| fraction(i.high)),
                repetitions: pass_k.map(|(n, ..)| n),
                pass_at_n: pass_k.map(|(_, at, _)| fraction(at)),
                pass_all_n: pass_k.map(|(.., all)| fraction(all)),
                compared_to: versus.map(|v| v.reference.to_string()),
                pass_diff: pass.map(|p| fraction(p.mean)),
                pass_diff_low: pass.and_then(|p| p.interval).map(|i| fraction(i.low)),
                pass_diff_high: pass.and_then(|p| p.interval).map(|i| fraction(i.high)),
                pass_diff_p: pass.and_then(|p| p.p).map(fraction),
                cost_diff_usd: cost.map(|c| c.mean),
                cost_diff_p: cost.and_then(|c| c.p).map(fraction),
                scenarios_paired: versus.map(|v| v.pass.map_or(0, |p| p.n)),
            })?;
        }
        writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// One row of `<report>.summary.csv`: one model's figures. Its fields are [`CSV_COLUMNS`], in
/// order (a test holds them together); an undefined figure is an empty cell.
#[derive(Debug, serde::Serialize)]
pub(crate) struct SummaryRow {
    #[serde(serialize_with = "super::csv::cell::model::serialize")]
    pub model: ModelSpec,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub not_started: usize,
    /// Four decimals.
    pub pass_rate: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    #[serde(serialize_with = "super::csv::cell::usd::serialize")]
    pub total_cost_usd: f64,
    #[serde(serialize_with = "optional_usd")]
    pub cost_per_passing_run_usd: Option<f64>,
    pub median_turn_latency_ms: Option<u64>,
    pub p95_turn_latency_ms: Option<u64>,
    pub unpriced: bool,
    pub flaky_scenarios: usize,
    #[serde(serialize_with = "super::csv::cell::usd::serialize")]
    pub spent_usd: f64,
    pub cache_hits: usize,
    #[serde(serialize_with = "super::csv::cell::usd::serialize")]
    pub judge_cost_usd: f64,
    /// The 95% Wilson interval of `pass_rate` (four decimals).
    pub pass_rate_low: Option<String>,
    pub pass_rate_high: Option<String>,
    /// n of pass@n and pass^n: the fewest finished repetitions of a scenario (empty below 2).
    pub repetitions: Option<usize>,
    pub pass_at_n: Option<String>,
    pub pass_all_n: Option<String>,
    /// The reference model of the paired comparison (empty on its own row).
    pub compared_to: Option<String>,
    /// This model's pass fraction less the reference's, the mean over paired scenarios.
    pub pass_diff: Option<String>,
    pub pass_diff_low: Option<String>,
    pub pass_diff_high: Option<String>,
    pub pass_diff_p: Option<String>,
    /// This model's mean cost per run less the reference's, the mean over paired scenarios.
    #[serde(serialize_with = "optional_usd")]
    pub cost_diff_usd: Option<f64>,
    pub cost_diff_p: Option<String>,
    pub scenarios_paired: Option<usize>,
}

/// A fraction in a CSV cell: four decimals.
fn fraction(value: f64) -> String {
    let text = format!("{value:.4}");
    if text == "-0.0000" { "0.0000".to_owned() } else { text }
}

/// The 95% interval of a model's pass rate as shown in tables: `[64.0, 94.8]`.
fn interval_cell(confidence: &Confidence, model: &ModelSpec) -> String {
    confidence
        .of_model(model)
        .and_then(|m| m.interval)
        .map_or_else(|| "-".to_owned(), |i| format!("[{:.1}, {:.1}]", i.low * 100.0, i.high * 100.0))
}

fn optional_usd<S: serde::Serializer>(usd: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match usd {
        Some(usd) => super::csv::cell::usd::serialize(usd, serializer),
        None => serializer.serialize_str(""),
    }
}

/// Dollars as shown in tables: `unpriced` for a model without a price, `-` when undefined.
pub(crate) fn money_cell(m: &ModelStats, value: Option<f64>) -> String {
    if m.tally.unpriced { "unpriced".to_owned() } else { usd_cell(value) }
}

/// Dollars as shown in tables (text, Markdown, HTML): six decimals, `$0` for nothing at all
/// (a free model), `-` when undefined.
pub(crate) fn usd_cell(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(0.0) => "$0".to_owned(),
        Some(usd) => format!("{usd:.6}"),
    }
}

/// Dollars in few characters: `$0`, `$0.0047`, `$12.35`.
fn short_usd(m: &ModelStats, value: Option<f64>) -> String {
    if m.tally.unpriced {
        return "unpriced".to_owned();
    }
    match value {
        None => "-".to_owned(),
        Some(0.0) => "$0".to_owned(),
        Some(usd) if usd >= 1.0 => format!("${usd:.2}"),
        Some(usd) => {
            let text = format!("{usd:.6}");
            format!("${}", text.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

/// Milliseconds in few characters: `850ms`, `7.4s`, `2m05s`.
fn short_ms(value: Option<u64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A rate as shown in tables: `85.0%`, `-` when undefined.
pub(crate) fn percent_cell(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |rate| format!("{:.1}%", rate * 100.0))
}

pub(crate) fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Reporter for Summary {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        if let RunOutcome::NotStarted(run) = outcome {
            self.set_not_started_reason(&run.reason);
        }
        self.add(RunFacts::of(outcome));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, model: &str, status: Status, cost_usd: f64, latencies: &[u64]) -> RunFacts {
        RunFacts {
            scenario: scenario.into(),
            model: ModelSpec::from_key(model).unwrap(),
            repetition: 1,
            status: Some(status),
            tally: Tally {
                usage: Usage { cached_tokens: 3, ..Usage::new(10, 2) },
                cost_usd,
                spent_usd: cost_usd,
                turn_latencies_ms: latencies.to_vec(),
                ..Tally::default()
            },
        }
    }

    #[test]
    fn the_summary_row_is_its_columns() {
        let mut summary = Summary::default();
        summary.add(run("a", "m:x", Status::Passed, 0.25, &[100]));
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .serialize(SummaryRow {
                model: ModelSpec::from_key("m:x").unwrap(),
                runs: 1,
                passed: 1,
                failed: 0,
                errors: 0,
                not_started: 0,
                pass_rate: None,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                total_cost_usd: 0.0,
                cost_per_passing_run_usd: None,
                median_turn_latency_ms: None,
                p95_turn_latency_ms: None,
                unpriced: false,
                flaky_scenarios: 0,
                spent_usd: 0.0,
                cache_hits: 0,
                judge_cost_usd: 0.0,
                pass_rate_low: None,
                pass_rate_high: None,
                repetitions: None,
                pass_at_n: None,
                pass_all_n: None,
                compared_to: None,
                pass_diff: None,
                pass_diff_low: None,
                pass_diff_high: None,
                pass_diff_p: None,
                cost_diff_usd: None,
                cost_diff_p: None,
                scenarios_paired: None,
            })
            .unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next(), Some(CSV_COLUMNS.join(",").as_str()));
        assert_eq!(text.lines().nth(1), Some("m:x,1,1,0,0,0,,0,0,0,0,,,,false,0,0,0,0,,,,,,,,,,,,,"));
    }

    #[test]
    fn a_tally_sums_every_figure_and_any_unpriced_run_marks_it() {
        let mut tally = Tally { cost_usd: 1.0, cache_hits: 1, turn_latencies_ms: vec![5], ..Tally::default() };
        tally += Tally {
            usage: Usage::new(3, 4),
            cost_usd: 0.5,
            spent_usd: 0.25,
            cache_hits: 2,
            judge_usd: 0.125,
            user_usd: 0.0625,
            unpriced: true,
            turn_latencies_ms: vec![7, 9],
        };
        tally += Tally::default();
        assert_eq!(
            tally,
            Tally {
                usage: Usage::new(3, 4),
                cost_usd: 1.5,
                spent_usd: 0.25,
                cache_hits: 3,
                judge_usd: 0.125,
                user_usd: 0.0625,
                unpriced: true,
                turn_latencies_ms: vec![5, 7, 9],
            }
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 2, 3, 10]), Some(3));
    }

    #[test]
    fn p95_is_nearest_rank() {
        assert_eq!(percentile(&[], 95), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&hundred, 95), Some(95));
        assert_eq!(percentile(&hundred, 50), Some(50));
        // 20 values: rank ceil(19) = 19th smallest.
        let twenty: Vec<u64> = (1..=20).map(|v| v * 10).collect();
        assert_eq!(percentile(&twenty, 95), Some(190));
        // 10 values: rank ceil(9.5) = 10th, the largest.
        assert_eq!(percentile(&(1..=10).collect::<Vec<_>>(), 95), Some(10));
    }

    #[test]
    fn cost_per_passing_run_counts_every_run_cost() {
        let mut summary = Summary::default();
        summary.add(run("a", "m:x", Status::Passed, 0.25, &[100]));
        summary.add(run("b", "m:x", Status::Failed, 0.5, &[300, 200]));
        summary.add(run("c", "m:x", Status::Passed, 0.25, &[400]));
        summary.add(run("d", "m:x", Status::Error, 0.0, &[]));
        summary.add(RunFacts { status: None, ..run("e", "m:x", Status::Passed, 0.0, &[]) });
        let m = &summary.models()[0];
        assert_eq!((m.runs, m.passed, m.failed, m.errors, m.not_started), (4, 2, 1, 1, 1));
        assert_eq!(m.pass_rate(), Some(0.5));
        assert_eq!(m.cost_per_pass(), Some(0.5));
        assert_eq!(m.tally.usage.prompt_tokens, 40);
        assert_eq!(m.tally.usage.cached_tokens, 12);
        assert_eq!(m.median_latency_ms(), Some(250));
        assert_eq!(m.p95_latency_ms(), Some(400));
        let csv = String::from_utf8(summary.to_csv().unwrap()).unwrap();
        assert_eq!(
            csv.lines().nth(1),
            Some("m:x,4,2,1,1,1,0.5000,40,8,12,1,0.5,250,400,false,0,1,0,0,0.1500,0.8500,,,,,,,,,,,")
        );
    }

    #[test]
    fn the_table_and_its_markdown() {
        let mut summary = Summary::default();
        summary.add(run("a", "openai:gpt-4o-mini", Status::Passed, 0.25, &[100]));
        summary.add(run("b", "openai:gpt-4o-mini", Status::Failed, 0.5, &[300, 200]));
        summary.add(run("a", "anthropic:claude-haiku-4-5", Status::Error, 0.0, &[]));
        insta::assert_snapshot!(summary.render(), @r"
        model                       runs  passed  failed  errors  pass_rate  95% interval  prompt_tok  completion_tok  cached_tok  cost_usd  usd/pass  median_ms  p95_ms
        openai:gpt-4o-mini             2       1       1       0      50.0%   [9.5, 90.5]          20               4           6  0.750000  0.750000        200     300
        anthropic:claude-haiku-4-5     1       0       0       1       0.0%   [0.0, 79.3]          10               2           3        $0         -          -       -

        result: 1 of 3 runs passed (1 failed, 1 with errors)
        compared (paired by scenario; 95% intervals):
          anthropic:claude-haiku-4-5 vs openai:gpt-4o-mini: pass rate -100.0 points on 1 scenario: too few to tell noise from a difference; cost per run -$0.250000
        ");
        insta::assert_snapshot!(summary.render_markdown(), @r"
        ### runner

        | model | runs | passed | failed | errors | not started | pass rate | 95% interval | prompt tokens | completion tokens | cost (USD) | USD per pass | median turn (ms) | p95 turn (ms) |
        |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
        | `openai:gpt-4o-mini` | 2 | 1 | 1 | 0 | 0 | 50.0% | [9.5, 90.5] | 20 | 4 | 0.750000 | 0.750000 | 200 | 300 |
        | `anthropic:claude-haiku-4-5` | 1 | 0 | 0 | 1 | 0 | 0.0% | [0.0, 79.3] | 10 | 2 | \$0 | - | - | - |

        **Compared** (paired by scenario; 95% intervals):

        - anthropic:claude-haiku-4-5 vs openai:gpt-4o-mini: pass rate -100.0 points on 1 scenario: too few to tell noise from a difference; cost per run -\$0.250000
        ");
    }

    #[test]
    fn no_pass_no_cost_per_pass() {
        let mut summary = Summary::default();
        summary.add(run("a", "m:x", Status::Failed, 0.1, &[1]));
        assert_eq!(summary.models()[0].cost_per_pass(), None);
        assert!(summary.render().contains("  -  "), "{}", summary.render());
    }

    #[test]
    fn flaky_scenarios_passed_some_repetitions_and_failed_others() {
        let mut summary = Summary::default();
        for status in [Status::Passed, Status::Failed, Status::Passed] {
            summary.add(run("wobbly", "m:x", status, 0.0, &[1]));
        }
        for _ in 0..3 {
            summary.add(run("steady", "m:x", Status::Passed, 0.0, &[1]));
            summary.add(run("broken", "m:x", Status::Error, 0.0, &[1]));
        }
        let by_name = |name: &str| summary.scenarios().iter().find(|s| s.scenario == name).unwrap().clone();
        assert_eq!((by_name("wobbly").passed, by_name("wobbly").runs, by_name("wobbly").flaky()), (2, 3, true));
        assert!(!by_name("steady").flaky());
        assert!(!by_name("broken").flaky());
        assert_eq!(summary.flaky_scenarios(&ModelSpec::from_key("m:x").unwrap()), 1);
        let text = summary.render();
        assert!(text.lines().any(|l| l.starts_with("wobbly") && l.contains("2/3") && l.ends_with("flaky")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("steady") && l.contains("3/3") && !l.contains("flaky")), "{text}");
        assert!(summary.render_markdown().contains("| wobbly | `m:x` | 2/3 |"));
    }
}
