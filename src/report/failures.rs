//! What failed: after the summary, each run that did not pass (scenario, model, repetition,
//! the turn, the first failed check's detail or the error), at most [`SHOWN`] of them, the
//! rest as a count.

use crate::model::ModelSpec;
use crate::record::{Reporter, RunOutcome, RunRecord, Status};

/// Runs listed; the others are counted.
pub(crate) const SHOWN: usize = 20;

/// One run that did not pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub scenario: String,
    pub model: ModelSpec,
    pub repetition: u32,
    pub status: Status,
    /// The turn where it went wrong, when one did.
    pub turn: Option<usize>,
    /// The first failed check (`check: detail`) or the error.
    pub what: String,
}

/// Collects the runs that did not pass, in the order they ended.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    shown: Vec<Failure>,
    more: usize,
}

impl Failures {
    pub(crate) fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    /// The list, each run with the path of its log (`log_path`), sorted by scenario, model
    /// and repetition (the order runs end in varies).
    pub(crate) fn render(&self, log_path: impl Fn(&Failure) -> String) -> String {
        let mut shown = self.shown.clone();
        shown.sort_by(|a, b| (&a.scenario, &a.model, a.repetition).cmp(&(&b.scenario, &b.model, b.repetition)));
        let mut out = String::from("\ndid not pass:\n");
        for failure in &shown {
            let turn = failure.turn.map_or_else(String::new, |t| format!(" turn {t}"));
            out.push_str(&format!(
                "  {} on {} #{}{turn}: {} {}\n    log: {}\n",
                failure.scenario.escape_debug(),
                failure.model,
                failure.repetition,
                failure.status.as_str(),
                one_line(&failure.what),
                log_path(failure)
            ));
        }
        if self.more > 0 {
            out.push_str(&format!("  ... and {} more (the CSV report and the logs have every run)\n", self.more));
        }
        out.push('\n');
        out
    }
}

/// Where a run that did not pass went wrong: the turn and its first failed check (`check:
/// detail`), else the first turn error, else the first failed check over the whole
/// conversation (no turn), else the run's error.
pub(crate) fn first_problem(record: &RunRecord) -> (Option<usize>, String) {
    let failed_check = record
        .turns
        .iter()
        .find_map(|t| t.checks.iter().find(|c| !c.passed).map(|c| (t.index, format!("{}: {}", c.check, c.detail))));
    let turn_error = record.turns.iter().find_map(|t| t.error.as_ref().map(|e| (t.index, e.clone())));
    let whole = record.checks.iter().find(|c| !c.passed).map(|c| format!("conversation: {}: {}", c.check, c.detail));
    match (failed_check, turn_error, whole) {
        (Some((turn, what)), _, _) | (None, Some((turn, what)), _) => (Some(turn), what),
        (None, None, Some(what)) if record.error.is_none() => (None, what),
        _ => (None, record.error.clone().unwrap_or_else(|| "no reason recorded".to_owned())),
    }
}

/// `text` on one line, cut at 200 characters.
pub(crate) fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &flat[..at]),
        None => flat,
    }
}

impl Reporter for Failures {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        let RunOutcome::Finished(record) = outcome else { return Ok(()) };
        if record.status == Status::Passed {
            return Ok(());
        }
        if self.shown.len() >= SHOWN {
            self.more += 1;
            return Ok(());
        }
        let (turn, what) = first_problem(record);
        self.shown.push(Failure {
            scenario: record.scenario.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            model: record.model.spec.clone(),
            repetition: record.repetition,
            status: record.status,
            turn,
            what,
        });
        Ok(())
    }
}
