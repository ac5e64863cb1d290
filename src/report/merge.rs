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
const REQUIRED: &[&str] = &[
    "run_id",
    "scenario",
    "model",
    "repetition",
    "turn",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_cost_usd",
    "latency_ms",
];

/// One run as its rows describe it.
struct Run {
    file: PathBuf,
    run_id: String,
    /// The turn numbers of its rows: a turn seen twice is a duplicated row.
    turns: Vec<u64>,
    facts: RunFacts,
    rows: Vec<csv::StringRecord>,
}

/// Runs read from reports, merged; keyed by (scenario, model, repetition).
#[derive(Default)]
pub(crate) struct Merged {
    runs: Vec<Run>,
    index: HashMap<(String, ModelSpec, u32), usize>,
    header: Option<csv::StringRecord>,
    /// Every file read, by its canonical path: one file named twice is refused.
    files: std::collections::HashSet<PathBuf>,
}

/// The largest row a report may have: far past any row runner writes (its text cells are
/// cut at 4 KiB), and a bound on what a hostile file makes `runner report` hold.
const MAX_ROW: usize = 1 << 20;
/// The largest cost a row may carry: a billion dollars is no run's.
const MAX_COST_USD: f64 = 1e9;

/// A file read with no row longer than [`MAX_ROW`]: a huge field fails fast instead of
/// filling memory, also one spread over many lines inside quotes (a row ends only at a line
/// break outside quotes; `""` inside quotes toggles twice and changes nothing).
struct Bounded<R> {
    inner: R,
    since_row: usize,
    quoted: bool,
}

impl<R> Bounded<R> {
    fn new(inner: R) -> Self {
        Self { inner, since_row: 0, quoted: false }
    }
}

impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            match byte {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.since_row = 0,
                _ => {}
            }
            self.since_row += 1;
            if self.since_row > MAX_ROW {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a row longer than {} MiB: not a runner report", MAX_ROW >> 20),
                ));
            }
        }
        Ok(n)
    }
}

impl Merged {
    /// Adds every row of the report at `path`. A run found in two reports is an error, except
    /// that rows of a finished run replace a `not_started` row (a run completed later).
    /// Returns `false` for a per-model summary (`*.summary.csv`, which a glob such as
    /// `reports/shard-*.csv` also matches): it holds no runs and is skipped.
    pub(crate) fn read(&mut self, path: &Path, price_as: Option<&PriceEntry>) -> Result<bool, UsageError> {
        let file = path.display();
        let canonical = std::fs::canonicalize(path).map_err(|e| UsageError(format!("{file}: cannot read: {e}")))?;
        if !self.files.insert(canonical) {
            return Err(UsageError(format!("{file} is given twice (its runs would count twice)")));
        }
        let opened = std::fs::File::open(path).map_err(|e| UsageError(format!("{file}: cannot read: {e}")))?;
        let mut reader = csv::Reader::from_reader(Bounded::new(std::io::BufReader::new(opened)));
        let header =
            reader.headers().map_err(|e| UsageError(format!("{file}:1: cannot read the header: {e}")))?.clone();
        if header.iter().eq(super::summary::CSV_COLUMNS.iter().copied()) {
            return Ok(false);
        }
        let column = |name: &str| header.iter().position(|h| h == name);
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| column(c).is_none()).collect();
        if !missing.is_empty() {
            return Err(UsageError(format!(
                "{file}:1: expected a runner CSV report; missing column(s): {}",
                missing.join(", ")
            )));
        }
        let at = |name: &str| column(name).expect("checked above");
        let (cached, written, unpriced) = (column("cached_tokens"), column("cache_write_tokens"), column("unpriced"));
        let (hits, requests, judge) = (column("cache_hits"), column("requests"), column("judge_cost_usd"));
        self.header.get_or_insert_with(|| header.clone());
        for record in reader.records() {
            let record = record.map_err(|e| UsageError(format!("{file}: {e}")))?;
            let line = record.position().map_or(0, csv::Position::line);
            let field = |i: usize| record.get(i).unwrap_or("");
            let whole = |name: &str, text: &str| -> Result<u64, UsageError> {
                text.parse::<u64>().ok().filter(|&n| n <= crate::usage::MAX_BELIEVED).ok_or_else(|| {
                    UsageError(format!(
                        "{file}:{line}: expected a whole number from 0 to 2^53 in `{name}`, found `{}`",
                        crate::report::printable(text)
                    ))
                })
            };
            let number = |name: &str| whole(name, field(at(name)));
            // An optional column: absent or empty is 0.
            let count = |column: Option<usize>, name: &str| match column.map(field).filter(|t| !t.is_empty()) {
                Some(text) => whole(name, text),
                None => Ok(0),
            };
            let amount = |name: &str, text: &str| -> Result<f64, UsageError> {
                text.parse::<f64>().ok().filter(|usd| usd.is_finite() && (0.0..=MAX_COST_USD).contains(usd)).ok_or_else(
                    || {
                        UsageError(format!(
                            "{file}:{line}: expected an amount in dollars from 0 to 1e9 in `{name}`, found `{}`",
                            crate::report::printable(text)
                        ))
                    },
                )
            };
            let status_text = field(at("status"));
            let status = match Status::parse(status_text) {
                Some(status) => Some(status),
                None if status_text == NOT_STARTED => None,
                None => {
                    return Err(UsageError(format!(
                        "{file}:{line}: expected status passed, failed, error or not_started, found `{status_text}`"
                    )));
                }
            };
            let model_text = super::csv::text_from_cell(field(at("model")));
            let model = ModelSpec::from_key(model_text).ok_or_else(|| {
                UsageError(format!("{file}:{line}: expected a model as PROVIDER:MODEL, found `{model_text}`"))
            })?;
            let repetition = u32::try_from(number("repetition")?)
                .map_err(|_| UsageError(format!("{file}:{line}: repetition out of range")))?;
            let usage = Usage {
                cached_tokens: count(cached, "cached_tokens")?,
                cache_write_tokens: count(written, "cache_write_tokens")?,
                ..Usage::new(number("prompt_tokens")?, number("completion_tokens")?)
            };
            let recorded = amount("total_cost_usd", field(at("total_cost_usd")))?;
            let (cost_usd, row_unpriced) = match price_as {
                Some(entry) => (entry.price.cost(&usage).total_usd, false),
                None => (recorded, unpriced.is_some_and(|i| field(i) == "true")),
            };
            let turn_text = field(at("turn"));
            let has_turn = !turn_text.is_empty();
            let turn = if has_turn { Some(whole("turn", turn_text)?) } else { None };
            let judge_usd = match judge.map(field).filter(|t| !t.is_empty()) {
                Some(text) => amount("judge_cost_usd", text)?,
                None => 0.0,
            };
            let (hits, requests) = (count(hits, "cache_hits")?, count(requests, "requests")?);
            let row = Run {
                file: path.to_path_buf(),
                run_id: super::csv::text_from_cell(field(at("run_id"))).to_owned(),
                turns: turn.into_iter().collect(),
                facts: RunFacts {
                    scenario: super::csv::text_from_cell(field(at("scenario"))).to_owned(),
                    model,
                    repetition,
                    status,
                    usage,
                    cost_usd,
                    // A turn whose every request the cache answered spent nothing; the CSV
                    // does not split a turn's cost by request, so any other turn counts whole.
                    spent_usd: judge_usd + if hits > 0 && hits == requests { 0.0 } else { cost_usd },
                    cache_hits: usize::try_from(hits).unwrap_or(usize::MAX),
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
        // Another turn of the same run, never one already read.
        if let Some(turn) = row.turns.iter().find(|turn| run.turns.contains(turn)) {
            return Err(format!(
                "turn {turn} of run {} / {} / repetition {} appears twice (a duplicated row)",
                key.0, key.1, key.2
            ));
        }
        run.turns.extend(row.turns.iter().copied());
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
