//! Integration tests: the `runner` binary against real HTTP servers on 127.0.0.1.

#[cfg(feature = "local")]
mod local;
mod chat;
mod compare;
mod faults;
mod run;
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The API key the tests use; it must never appear in any output or file.
pub const KEY: &str = "sk-test-4f9a7c1e-this-key-must-never-be-written";

/// A temporary working directory for one invocation of runner.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `runner ARGS` in this directory, pointed at `base_url` with the test key, and with
    /// nothing from the developer's environment that could change the outcome.
    pub fn runner(&self, base_url: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
        command
            .current_dir(self.path())
            .env("OPENAI_BASE_URL", format!("{base_url}/v1"))
            .env("OPENAI_API_KEY", KEY)
            .env("RUNNER_GEOCODING_URL", "http://127.0.0.1:9")
            .env("RUNNER_FORECAST_URL", "http://127.0.0.1:9")
            .env_remove("RUNNER_MODEL")
            .env_remove("RUNNER_CACHE_DIR");
        command
    }

    /// Every JSON log under `logs/runs`, parsed, sorted by file name.
    pub fn logs(&self) -> Vec<(String, Value)> {
        let mut logs = Vec::new();
        let root = self.path().join("logs/runs");
        for run in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(run.path()).unwrap().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(file.path()).unwrap();
                logs.push((name, serde_json::from_str(&text).unwrap()));
            }
        }
        logs.sort_by(|a, b| a.0.cmp(&b.0));
        logs
    }

    /// The only file under `reports/` that is a per-model summary (`summary`) or a report.
    pub fn report_file(&self, summary: bool) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(self.path().join("reports"))
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".summary.csv") == summary)
            .map(|entry| entry.path())
            .collect();
        assert_eq!(files.len(), 1, "expected one {} under reports/", if summary { "summary" } else { "report" });
        files.into_iter().next().unwrap()
    }

    /// The rows of the only CSV report under `reports/`, as (header -> value) maps.
    pub fn csv_rows(&self) -> Vec<std::collections::HashMap<String, String>> {
        read_csv(&self.report_file(false))
    }

    /// The rows of the report at `name` (relative to the workspace).
    pub fn csv_rows_of(&self, name: &str) -> Vec<std::collections::HashMap<String, String>> {
        read_csv(&self.path().join(name))
    }

    /// The only per-model summary under `reports/`.
    pub fn summary_rows(&self) -> Vec<std::collections::HashMap<String, String>> {
        read_csv(&self.report_file(true))
    }

    /// Every file under the directory, with its contents.
    pub fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }
}

/// Exit code, stdout and stderr of a finished command.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn outcome(output: Output) -> Outcome {
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn exec(command: &mut Command) -> Outcome {
    outcome(command.output().expect("runner starts"))
}

/// A CSV file's rows as (header -> value) maps.
pub fn read_csv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader.records().map(|r| headers.iter().map(str::to_owned).zip(r.unwrap().iter().map(str::to_owned)).collect()).collect()
}
