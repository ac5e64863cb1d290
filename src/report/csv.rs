//! The CSV token and cost report: one row per turn, appended and flushed as each run finishes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use crate::record::{NOT_STARTED, Reporter, RunOutcome, RunRecord};
use crate::settings::UsageError;

/// The report's columns, in order. The first fifteen are the contract; the rest add detail.
pub(crate) const COLUMNS: &[&str] = &[
    "run_id",
    "scenario",
    "model",
    "repetition",
    "turn",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_cost_usd",
    "output_cost_usd",
    "total_cost_usd",
    "requests",
    "tool_calls",
    "latency_ms",
    "cached_tokens",
    "reasoning_tokens",
    "unpriced",
    "error",
    "cache_write_tokens",
    "cache_hits",
    "judge_cost_usd",
];

/// Writes report rows to any writer, a run's rows together, flushed as each run ends.
pub(crate) struct CsvReport<W: Write> {
    writer: csv::Writer<W>,
}

impl CsvReport<BufWriter<File>> {
    /// Creates `path` (and its directory) and writes the header. The file is locked while
    /// the report is written: a second runner writing the same report is refused instead of
    /// tearing its rows.
    pub(crate) fn create(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Opened without truncating: the lock must be held before anything is cut.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            return Err(UsageError(format!(
                "{} is being written by another runner; give this run its own --report",
                path.display()
            ))
            .into());
        }
        if file.metadata().is_ok_and(|meta| meta.is_file()) {
            file.set_len(0).with_context(|| format!("cannot truncate {}", path.display()))?;
        }
        Self::new(BufWriter::new(file))
    }
}

impl<W: Write> CsvReport<W> {
    /// A report over `out`, its header written.
    pub(crate) fn new(out: W) -> anyhow::Result<Self> {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(COLUMNS)?;
        writer.flush()?;
        Ok(Self { writer })
    }

    /// The row of a run without turns: zero tokens, zero cost, `turn` empty.
    fn no_turn_row(&mut self, row: [&str; 4], status: &str, unpriced: bool, error: &str) -> csv::Result<()> {
        let [run_id, scenario, model, repetition] = row.map(text_cell);
        let unpriced = if unpriced { "true" } else { "false" };
        let error = text_cell(error);
        self.writer.write_record([
            &*run_id,
            &scenario,
            &model,
            &repetition,
            "",
            status,
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            unpriced,
            &error,
            "0",
            "0",
            "0",
        ])
    }
}

impl<W: Write> Reporter for CsvReport<W> {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        match outcome {
            RunOutcome::Finished(record) => self.finished(record)?,
            RunOutcome::NotStarted(run) => {
                let (model, repetition) = (run.model.to_string(), run.repetition.to_string());
                self.no_turn_row(
                    [&run.run_id, &run.scenario.name, &model, &repetition],
                    NOT_STARTED,
                    run.unpriced,
                    &run.reason,
                )?;
            }
        }
        // A run's rows reach the file together, before the next run is reported.
        self.writer.flush()?;
        Ok(())
    }
}

impl<W: Write> CsvReport<W> {
    fn finished(&mut self, record: &RunRecord) -> csv::Result<()> {
        let repetition = record.repetition.to_string();
        let model = record.model.spec.to_string();
        let scenario = record.scenario.as_ref().map_or("", |s| s.name.as_str());
        let (run_id, scenario_cell, model_cell) = (text_cell(&record.run_id), text_cell(scenario), text_cell(&model));
        for turn in &record.turns {
            self.writer.write_record([
                &*run_id,
                &scenario_cell,
                &model_cell,
                repetition.as_str(),
                &turn.index.to_string(),
                turn.status.as_str(),
                &turn.usage.prompt_tokens.to_string(),
                &turn.usage.completion_tokens.to_string(),
                &turn.usage.total_tokens.to_string(),
                &usd(turn.cost.input_usd),
                &usd(turn.cost.output_usd),
                &usd(turn.cost.total_usd),
                &turn.requests.len().to_string(),
                &turn.tool_calls.len().to_string(),
                &turn.latency_ms.to_string(),
                &turn.usage.cached_tokens.to_string(),
                &turn.usage.reasoning_tokens.to_string(),
                if record.cost.unpriced { "true" } else { "false" },
                &text_cell(turn.error.as_deref().unwrap_or("")),
                &turn.usage.cache_write_tokens.to_string(),
                &turn.cache_hits().to_string(),
                &usd(turn.judge_cost_usd()),
            ])?;
        }
        if record.turns.is_empty() {
            // A run that ended before its first turn still has its row, turn left empty.
            let error = record.error.as_deref().unwrap_or("");
            self.no_turn_row(
                [&record.run_id, scenario, &model, &repetition],
                record.status.as_str(),
                record.cost.unpriced,
                error,
            )?;
        }
        Ok(())
    }
}

/// The most of a text a cell holds (an error's); past it the text is cut and marked.
pub(crate) const MAX_CELL: usize = 4096;

/// Text from outside (a scenario or model name, an error) as a CSV cell: one that a
/// spreadsheet would run as a formula (a leading `=`, `+`, `-`, `@`, tab or carriage return)
/// gets a leading `'`, as OWASP advises, and so does one that already begins with `'`, so that
/// [`text_from_cell`] gives back exactly what was written. Cut at [`MAX_CELL`] bytes.
pub(crate) fn text_cell(text: &str) -> std::borrow::Cow<'_, str> {
    let text: std::borrow::Cow<'_, str> = if text.len() > MAX_CELL {
        let mut end = MAX_CELL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes in all)", &text[..end], text.len()).into()
    } else {
        text.into()
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) { format!("'{text}").into() } else { text }
}

/// A text cell as [`text_cell`] wrote it, read back.
pub(crate) fn text_from_cell(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// A dollar amount with 10 decimals, trailing zeros dropped (`0.000046`, `0`).
pub(crate) fn usd(value: f64) -> String {
    let text = format!("{value:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_never_started_is_one_row_with_its_reason() {
        use crate::provider::ModelSpec;
        use crate::record::{NotStarted, ScenarioRef};
        let mut report = CsvReport::new(Vec::new()).unwrap();
        let run = NotStarted {
            run_id: "r1".into(),
            scenario: ScenarioRef { name: "s".into(), file: "s.yaml".into() },
            model: ModelSpec::from_key("openai:gpt-4o-mini").unwrap(),
            repetition: 2,
            unpriced: false,
            reason: "budget, reached".into(),
        };
        report.run_ended(&RunOutcome::NotStarted(run)).unwrap();
        let text = String::from_utf8(report.writer.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "r1,s,openai:gpt-4o-mini,2,,not_started,0,0,0,0,0,0,0,0,0,0,0,false,\"budget, reached\",0,0,0"
        );
    }

    #[test]
    fn formulas_are_neutralised_and_read_back() {
        for text in
            ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "'quoted", "'=both", "plain", "a=b", ""]
        {
            let cell = text_cell(text);
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{text:?} -> {cell:?}");
            assert_eq!(text_from_cell(&cell), text);
        }
        let long = "x".repeat(MAX_CELL * 3);
        let cell = text_cell(&long);
        assert!(
            cell.len() < MAX_CELL + 40 && cell.ends_with(&format!("({} bytes in all)", MAX_CELL * 3)),
            "{}",
            cell.len()
        );
    }

    #[test]
    fn dollars_are_exact_enough_and_short() {
        assert_eq!(usd(0.0), "0");
        assert_eq!(usd(46e-6), "0.000046");
        assert_eq!(usd(0.1 + 0.2), "0.3");
        assert_eq!(usd(12.5), "12.5");
    }
}
