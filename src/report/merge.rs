//! CSV reports read back (`runner report`): the runs their rows describe, merged across
//! files. The shards of one run merge into the summary an unsharded run would have printed; a
//! price entry given re-prices every recorded token count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::csv::{REQUIRED, ReportRow, read_row};
use super::summary::{RunFacts, Summary, Tally};
use super::{ReportError, RowError};
use crate::model::ModelSpec;
use crate::pricing::{PriceEntry, spent_usd};
use crate::record::Status;

/// One run as its rows describe it.
struct Run {
    file: PathBuf,
    run_id: String,
    /// The turn numbers of its rows: a turn seen twice is a duplicated row.
    turns: Vec<u64>,
    facts: RunFacts,
    rows: Vec<ReportRow>,
}

/// Runs read from reports, merged; keyed by (scenario, model, repetition).
#[derive(Default)]
pub(crate) struct Merged {
    runs: Vec<Run>,
    index: HashMap<(String, ModelSpec, u32), usize>,
    /// Every file read, by its canonical path: one file named twice is refused.
    files: std::collections::HashSet<PathBuf>,
}

/// The largest row a report may have: far past any row runner writes (its text cells are
/// cut at 4 KiB), and a bound on what a hostile file makes `runner report` hold.
const MAX_ROW: usize = 1 << 20;

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
    pub(crate) fn read(&mut self, path: &Path, price_as: Option<&PriceEntry>) -> Result<bool, ReportError> {
        let file = path.display().to_string();
        let canonical =
            std::fs::canonicalize(path).map_err(|e| ReportError::Usage(format!("{file}: cannot read: {e}")))?;
        if !self.files.insert(canonical) {
            return Err(ReportError::Usage(format!("{file} is given twice (its runs would count twice)")));
        }
        let opened = std::fs::File::open(path).map_err(|e| ReportError::Usage(format!("{file}: cannot read: {e}")))?;
        let mut reader = csv::Reader::from_reader(Bounded::new(std::io::BufReader::new(opened)));
        let header =
            reader.headers().map_err(|e| ReportError::Usage(format!("{file}:1: cannot read the header: {e}")))?.clone();
        if header.iter().eq(super::summary::CSV_COLUMNS.iter().copied()) {
            return Ok(false);
        }
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| !header.iter().any(|h| h == *c)).collect();
        if !missing.is_empty() {
            return Err(ReportError::Usage(format!(
                "{file}:1: expected a runner CSV report; missing column(s): {}",
                missing.join(", ")
            )));
        }
        for record in reader.records() {
            let record = record.map_err(|e| ReportError::Usage(format!("{file}: {e}")))?;
            let line = record.position().map_or(0, csv::Position::line);
            let row = read_row(&record, &header).map_err(|why| ReportError::Row {
                file: file.clone(),
                line,
                why: Box::new(why),
            })?;
            let usage = row.usage();
            let (cost_usd, unpriced) = match price_as {
                Some(entry) => (entry.price.cost(&usage).total_usd, false),
                None => (row.total_cost_usd, row.unpriced),
            };
            // A turn whose every request the cache answered spent nothing; the CSV does not
            // split a turn's cost by request, so any other turn counts whole.
            let answered_by_cache = row.cache_hits > 0 && row.cache_hits == row.requests;
            let tally = Tally {
                usage,
                cost_usd,
                spent_usd: spent_usd(
                    cost_usd,
                    row.judge_cost_usd + row.user_cost_usd,
                    if answered_by_cache { cost_usd } else { 0.0 },
                ),
                cache_hits: usize::try_from(row.cache_hits).unwrap_or(usize::MAX),
                judge_usd: row.judge_cost_usd,
                user_usd: row.user_cost_usd,
                unpriced,
                turn_latencies_ms: row.turn.map(|_| row.latency_ms).into_iter().collect(),
            };
            let run = Run {
                file: path.to_path_buf(),
                run_id: row.run_id.clone(),
                turns: row.turn.into_iter().collect(),
                facts: RunFacts {
                    scenario: row.scenario.clone(),
                    model: row.model.clone(),
                    repetition: row.repetition,
                    status: row.status,
                    tally,
                },
                rows: vec![row],
            };
            self.add(run).map_err(|why| ReportError::Row { file: file.clone(), line, why: Box::new(why) })?;
        }
        Ok(true)
    }

    fn add(&mut self, row: Run) -> Result<(), RowError> {
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
            return Err(RowError::Overlap {
                scenario: key.0,
                model: key.1,
                repetition: key.2,
                other: run.file.clone(),
                run_id: run.run_id.clone(),
            });
        }
        // Another turn of the same run, never one already read.
        if let Some(turn) = row.turns.iter().find(|turn| run.turns.contains(turn)) {
            return Err(RowError::Twice { turn: *turn, scenario: key.0, model: key.1, repetition: key.2 });
        }
        run.turns.extend(row.turns.iter().copied());
        let facts = &mut run.facts;
        facts.status = match (facts.status, row.facts.status) {
            (Some(a), Some(b)) => Some(a.worst(b)),
            (a, b) => a.or(b),
        };
        facts.tally += row.facts.tally;
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

    /// Every row, a run's rows together, as `runner run` writes a report.
    pub(crate) fn write_rows(&self, path: &Path) -> anyhow::Result<()> {
        let mut writer = super::csv::writer(Vec::new())?;
        for row in self.runs.iter().flat_map(|run| &run.rows) {
            writer.serialize(row)?;
        }
        let bytes = writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::files::write_atomically(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
    }
}
