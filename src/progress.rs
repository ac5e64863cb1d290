//! The progress bar on standard error, shown only when standard error is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::record::{RunRecord, Status};
use crate::report::Reporter;

/// Counts finished runs on a bar; a no-op when standard error is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    counts: [usize; 3],
}

impl Progress {
    pub fn new() -> Self {
        Self { bar: None, counts: [0; 3] }
    }

    /// Removes the bar so the summary prints on a clean screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Progress {
    fn plan(&mut self, total_runs: usize) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total_runs as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn run_finished(&mut self, record: &RunRecord, _log: &Path) -> anyhow::Result<()> {
        let slot = match record.status {
            Status::Passed => 0,
            Status::Failed => 1,
            Status::Error | Status::NotStarted => 2,
        };
        self.counts[slot] += 1;
        if let Some(bar) = &self.bar {
            let [passed, failed, errors] = self.counts;
            bar.set_message(format!("{passed} passed · {failed} failed · {errors} errors"));
            bar.inc(1);
        }
        Ok(())
    }
}
