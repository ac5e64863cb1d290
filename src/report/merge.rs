//! CSV reports read back (`runner report`): the runs their rows describe, merged across
//! files. The shards of one run merge into the summary an unsharded run would have printed; a
//! price entry given re-prices every recorded token count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::summary::{RunFacts, Summary};
use crate::pricing::PriceEntry;
use crate::provider::ModelSpec;
use crate::record::{NOT_STARTED, Status};
use crate::settings::UsageError;
use crate::usage::Usage;

/// Columns a report must have for its runs to be rebuilt.
const REQUIRED: &[&str] =
    &["run_id", "scenario", "model", "repetition", "turn", "status", "prompt_tokens", "completion_tokens", "total_cost_usd", "latency_ms"];

/// One run as its rows describe it.
struct Run {
    file: PathBuf,
    run_id: String,
    facts: RunFacts,
    rows: Vec<csv::StringRecord>,
}

/// Runs read from reports, merged; keyed by (scenario, model, repetition).
#[derive(Default)]
pub(crate) struct Merged {
    runs: Vec<Run>,
    index: HashMap<(String, ModelSpec, u32), usize>,
    header: Option<csv::StringRecord>,
}

impl Merged {
    /// Adds every row of the report at `path`. A run found in two reports is an error, except
    /// that rows of a finished run replace a `not_started` row (a run completed later).
    /// Returns `false` for a per-model summary (`*.summary.csv`, which a glob such as
    /// `reports/shard-*.csv` also matches): it holds no runs and is skipped.
    pub(crate) fn read(&mut self, path: &Path, price_as: Option<&PriceEntry>) -> Result<bool, UsageError> {
        let file = path.display();
        let mut reader = csv::Reader::from_path(path).map_err(|e| UsageError(format!("{file}: cannot read: {e}")))?;
        let header = reader.headers().map_err(|e| UsageError(format!("{file}:1: cannot read the header: {e}")))?.clone();
        if header.iter().eq(super::summary::CSV_COLUMNS.iter().copied()) {
            return Ok(false);
        }
        let column = |name: &str| header.iter().position(|h| h == name);
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| column(c).is_none()).collect();
        if !missing.is_empty() {
            return Err(UsageError(format!("{file}:1: expected a runner CSV report; missing column(s): {}", missing.join(", "))));
        }
        let at = |name: &str| column(name).expect("checked above");
        let (cached, written, unpriced) = (column("cached_tokens"), column("cache_write_tokens"), column("unpriced"));
        let (hits, requests, judge) = (column("cache_hits"), column("requests"), column("judge_cost_usd"));
        self.header.get_or_insert_with(|| header.clone());
        for record in reader.records() {
            let record = record.map_err(|e| UsageError(format!("{file}: {e}")))?;
            let line = record.position().map_or(0, csv::Position::line);
            let field = |i: usize| record.get(i).unwrap_or("");
            let number = |name: &str| -> Result<u64, UsageError> {
                let text = field(at(name));
                text.parse().map_err(|_| UsageError(format!("{file}:{line}: expected a whole number in `{name}`, found `{text}`")))
            };
            let status_text = field(at("status"));
            let status = match Status::parse(status_text) {
                Some(status) => Some(status),
                None if status_text == NOT_STARTED => None,
                None => return Err(UsageError(format!("{file}:{line}: expected status passed, failed, error or not_started, found `{status_text}`"))),
            };
            let model_text = field(at("model"));
            let model = ModelSpec::from_key(model_text)
                .ok_or_else(|| UsageError(format!("{file}:{line}: expected a model as PROVIDER:MODEL, found `{model_text}`")))?;
            let repetition = u32::try_from(number("repetition")?).map_err(|_| UsageError(format!("{file}:{line}: repetition out of range")))?;
            let count = |column: Option<usize>| column.map_or(0, |i| field(i).parse().unwrap_or(0));
            let usage = Usage {
                cached_tokens: count(cached),
                cache_write_tokens: count(written),
                ..Usage::new(number("prompt_tokens")?, number("completion_tokens")?)
            };
            let (cost_usd, row_unpriced) = match price_as {
                Some(entry) => (entry.price.cost(&usage).total_usd, false),
                None => {
                    let text = field(at("total_cost_usd"));
                    let cost = text.parse::<f64>().map_err(|_| UsageError(format!("{file}:{line}: expected an amount in `total_cost_usd`, found `{text}`")))?;
                    (cost, unpriced.is_some_and(|i| field(i) == "true"))
                }
            };
            let has_turn = !field(at("turn")).is_empty();
            let judge_usd = judge.map_or(0.0, |i| field(i).parse().unwrap_or(0.0));
            let row = Run {
                file: path.to_path_buf(),
                run_id: field(at("run_id")).to_owned(),
                facts: RunFacts {
                    scenario: field(at("scenario")).to_owned(),
                    model,
                    repetition,
                    status,
                    usage,
                    cost_usd,
                    // A turn whose every request the cache answered spent nothing; the CSV
                    // does not split a turn's cost by request, so any other turn counts whole.
                    spent_usd: judge_usd + if count(hits) > 0 && count(hits) == count(requests) { 0.0 } else { cost_usd },
                    cache_hits: count(hits) as usize,
                    judge_usd,
                    unpriced: row_unpriced,
                    turn_latencies_ms: if has_turn { vec![number("latency_ms")?] } else { Vec::new() },
                },
                rows: vec![record.clone()],
            };
            self.add(row).map_err(|message| UsageError(format!("{file}:{line}: {message}")))?;
        }
        Ok(true)
    }

    fn add(&mut self, row: Run) -> Result<(), String> {
        let key = (row.facts.scenario.clone(), row.facts.model.clone(), row.facts.repetition);
        let Some(&index) = self.index.get(&key) else {
            self.index.insert(key, self.runs.len());
            self.runs.push(row);
            return Ok(());
        };
        let run = &mut self.runs[index];
        if row.facts.status.is_none() {
            // A run that finished elsewhere (or later) keeps its result.
            return Ok(());
        }
        if run.facts.status.is_none() {
            *run = row;
            return Ok(());
        }
        if run.file != row.file || run.run_id != row.run_id {
            return Err(format!(
                "run {} / {} / repetition {} is also in {} (run {}); merge the shards of one run, not overlapping runs",
                key.0,
                key.1,
                key.2,
                run.file.display(),
                run.run_id
            ));
        }
        // Another turn of the same run.
        let facts = &mut run.facts;
        facts.status = match (facts.status, row.facts.status) {
            (Some(a), Some(b)) => Some(a.worst(b)),
            (a, b) => a.or(b),
        };
        facts.usage += row.facts.usage;
        facts.cost_usd += row.facts.cost_usd;
        facts.spent_usd += row.facts.spent_usd;
        facts.cache_hits += row.facts.cache_hits;
        facts.judge_usd += row.facts.judge_usd;
        facts.unpriced |= row.facts.unpriced;
        facts.turn_latencies_ms.extend(row.facts.turn_latencies_ms);
        run.rows.extend(row.rows);
        Ok(())
    }

    /// The runs that did not pass: failed, errored, or never started.
    pub(crate) fn not_passed(&self) -> std::collections::HashSet<(String, ModelSpec, u32)> {
        self.runs
            .iter()
            .filter(|run| run.facts.status != Some(Status::Passed))
            .map(|run| (run.facts.scenario.clone(), run.facts.model.clone(), run.facts.repetition))
            .collect()
    }

    /// Every run read, with the id of the batch it belongs to.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (&str, &RunFacts)> {
        self.runs.iter().map(|run| (run.run_id.as_str(), &run.facts))
    }

    /// The summary of every run read.
    pub(crate) fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for run in &self.runs {
            summary.add(run.facts.clone());
        }
        summary
    }

    /// Every row, a run's rows together, under the first report's header.
    pub(crate) fn write_rows(&self, path: &Path) -> anyhow::Result<()> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        if let Some(header) = &self.header {
            writer.write_record(header)?;
        }
        for run in &self.runs {
            for row in &run.rows {
                writer.write_record(row)?;
            }
        }
        let bytes = writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::files::write_atomically(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
    }
}
