//! The per-run JSON logs: `<logs-dir>/<run-id>/<scenario>__<model>__<repetition>.json`, each
//! written whole or not at all as its run finishes. The run directory names the batch: its
//! name is the run id.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::files::{self, safe_file_name};
use crate::model::ModelSpec;
use crate::record::{Reporter, RunOutcome, RunRecord, run_id};

/// Writes each finished run's log into the batch's directory.
pub(crate) struct JsonLogs {
    run_id: String,
    dir: PathBuf,
}

impl JsonLogs {
    /// A new batch under `logs_dir`: a sortable run id (UTC, millisecond precision) and its
    /// directory, created here; a clash with an existing directory gets a numeric suffix.
    pub(crate) fn create(logs_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(logs_dir)?;
        let base = run_id(Utc::now());
        let mut n = 1;
        loop {
            let run_id = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            let dir = logs_dir.join(&run_id);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Self { run_id, dir }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// The batch `run_id` under `logs_dir`, to finish it (`--resume`); `None` when there is no
    /// such batch.
    pub(crate) fn resume(logs_dir: &Path, run_id: &str) -> Option<Self> {
        let dir = logs_dir.join(run_id);
        (safe_file_name(run_id) == run_id && dir.is_dir()).then(|| Self { run_id: run_id.to_owned(), dir })
    }

    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the log of `scenario` on `model`, repetition `repetition`, goes.
    pub(crate) fn path(&self, scenario: &str, model: &ModelSpec, repetition: u32) -> PathBuf {
        self.dir.join(log_name(scenario, model, repetition))
    }
}

impl Reporter for JsonLogs {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        let RunOutcome::Finished(record) = outcome else { return Ok(()) };
        let name = record.scenario.as_ref().map_or("conversation", |s| s.name.as_str());
        let path = self.path(name, &record.model.spec, record.repetition);
        let bytes = serde_json::to_vec_pretty(record)?;
        // The run directory exists already: no directory check per log.
        files::replace(&path, &bytes).map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))
    }
}

/// The file name of a run's log in its batch's directory.
pub(crate) fn log_name(scenario: &str, model: &ModelSpec, repetition: u32) -> String {
    format!("{}.json", crate::record::run_name(scenario, model, repetition))
}

/// The run record in the log at `path`, when there is one and it is whole.
pub(crate) fn read_log(path: &Path) -> Option<RunRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}
