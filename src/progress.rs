//! What the person waiting sees on standard error: the batch's progress bar and the embedded
//! model's download, drawn only when standard error is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::provider::FetchProgress;
use crate::record::{Reporter, RunOutcome, Status};

/// Counts finished runs on a bar; a no-op when standard error is not a terminal.
#[derive(Default)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    counts: [usize; 3],
}

impl Progress {
    /// Removes the bar so the summary prints on a clean screen.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
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

    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        // Runs never started are reported after the last finished one; the bar is done.
        let Some(status) = outcome.status() else { return Ok(()) };
        let slot = match status {
            Status::Passed => 0,
            Status::Failed => 1,
            Status::Error => 2,
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

/// Weight downloads: a line per step, and a byte bar on a terminal.
pub(crate) struct DownloadBar {
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl DownloadBar {
    pub(crate) fn new() -> Self {
        Self { terminal: std::io::stderr().is_terminal(), bar: Mutex::new(None) }
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FetchProgress for DownloadBar {
    fn note(&self, text: &str) {
        eprintln!("runner: {text}");
    }

    fn started(&self, what: &str, total: Option<u64>) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}") {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        *self.bar() = Some(bar);
    }

    fn advanced(&self, bytes: u64) {
        if let Some(bar) = self.bar().as_ref() {
            bar.inc(bytes);
        }
    }

    fn finished(&self) {
        if let Some(bar) = self.bar().take() {
            bar.finish_and_clear();
        }
    }

    fn watched(&self) -> bool {
        self.terminal
    }
}
