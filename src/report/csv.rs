//! The CSV token and cost report: one row per turn, appended and flushed as each run finishes.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;

use super::{Reporter, Unstarted};
use crate::record::{RunRecord, Status};

/// The report's columns, in order. The first fifteen are the contract; the rest add detail.
pub const COLUMNS: &[&str] = &[
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
];

/// Appends rows to a CSV file.
pub struct CsvReport {
    writer: csv::Writer<BufWriter<File>>,
}

impl CsvReport {
    /// Creates `path` (and its directory) and writes the header.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer.write_record(COLUMNS)?;
        writer.flush()?;
        Ok(Self { writer })
    }
}

impl Reporter for CsvReport {
    fn run_finished(&mut self, record: &RunRecord, _log: &Path) -> anyhow::Result<()> {
        let repetition = record.repetition.to_string();
        let model = format!("{}:{}", record.model.provider, record.model.name);
        for turn in &record.turns {
            self.writer.write_record([
                record.run_id.as_str(),
                record.scenario.name.as_str(),
                model.as_str(),
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
                turn.error.as_deref().unwrap_or(""),
            ])?;
        }
        if record.turns.is_empty() {
            // A run that ended before its first turn still has its row, turn left empty.
            let error = record.error.as_deref().unwrap_or("");
            self.no_turn_row(&record.run_id, &record.scenario.name, &model, record.repetition, record.status, record.cost.unpriced, error)?;
        }
        // A run's rows reach the file together, before the next run is reported.
        self.writer.flush()?;
        Ok(())
    }

    fn run_not_started(&mut self, run: &Unstarted<'_>) -> anyhow::Result<()> {
        self.no_turn_row(run.run_id, run.scenario, run.model, run.repetition, Status::NotStarted, run.unpriced, run.reason)?;
        self.writer.flush()?;
        Ok(())
    }
}

impl CsvReport {
    /// The one row of a run without turns: zero tokens, zero cost, `turn` empty.
    #[allow(clippy::too_many_arguments)]
    fn no_turn_row(&mut self, run_id: &str, scenario: &str, model: &str, repetition: u32, status: Status, unpriced: bool, error: &str) -> csv::Result<()> {
        let repetition = repetition.to_string();
        let unpriced = if unpriced { "true" } else { "false" };
        self.writer.write_record([
            run_id, scenario, model, &repetition, "", status.as_str(), "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", unpriced, error,
        ])
    }
}

/// A dollar amount with 10 decimals, trailing zeros dropped (`0.000046`, `0`).
pub fn usd(value: f64) -> String {
    let text = format!("{value:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::usd;

    #[test]
    fn dollars_are_exact_enough_and_short() {
        assert_eq!(usd(0.0), "0");
        assert_eq!(usd(46e-6), "0.000046");
        assert_eq!(usd(0.1 + 0.2), "0.3");
        assert_eq!(usd(12.5), "12.5");
    }
}
