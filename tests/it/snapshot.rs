//! Snapshots of what users read: the CSV report, the summary table (text and Markdown), one
//! JSON log, `runner --help`, `runner run --help` and `runner models`. Timestamps, run ids,
//! durations and ports are filtered out; everything else must stay as it is.

use crate::run::assistant;
use crate::{Ran, Test};

/// Filters for what differs from run to run.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d{8}T\d{6}\.\d{3}Z(-\d+)?", "[RUN_ID]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", "[TIME]"),
        (r#""(duration_ms|latency_ms)": \d+"#, r#""$1": "[MS]""#),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        // The latency columns of the summary table and its Markdown form.
        (r"(?m)^(openai:\S+.*?)\s+\d+\s+\d+$", "$1  [MS]  [MS]"),
        (r"(?m)\| \d+ \| \d+ \|$", "| [MS] | [MS] |"),
    ]
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ filters => filters(), prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

const SCENARIOS: &str = "\
name: greet
system: Be brief.
turns:
  - user: hello
    expect:
      contains: hello
---
name: reverse
tools: [reverse_text, add_numbers]
turns:
  - user: reverse apple
    expect:
      tool_calls: [{name: reverse_text, arguments: {text: apple}}]
      contains: elppa
  - user: add and reverse
    expect:
      not_contains: Tool said
";

/// Two scenarios (one with a tool round and a failing check) on two priced models, one at a
/// time so rows come in a fixed order.
fn comparison() -> Ran {
    let run = Test::new()
        .server(assistant)
        .file("s.yaml", SCENARIOS)
        .env("GITHUB_STEP_SUMMARY", "step.md")
        .args([
            "run",
            "s.yaml",
            "-m",
            "openai:gpt-4o-mini",
            "-m",
            "openai:gpt-4.1-nano",
            "-j",
            "1",
            "--seed",
            "7",
            "--report",
            "report.csv",
        ])
        .run();
    run.code(1);
    run
}

/// The CSV with its latency column replaced (it is wall time).
fn redacted_csv(path: &std::path::Path) -> String {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let latency = headers.iter().position(|h| h == "latency_ms");
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&headers).unwrap();
    for record in reader.records() {
        let record = record.unwrap();
        let row: Vec<&str> = record
            .iter()
            .enumerate()
            .map(|(i, v)| if Some(i) == latency && !v.is_empty() { "[MS]" } else { v })
            .collect();
        writer.write_record(row).unwrap();
    }
    String::from_utf8(writer.into_inner().unwrap()).unwrap()
}

#[test]
fn csv_report() {
    let run = comparison();
    snapshot!("csv_report", redacted_csv(&run.path().join("report.csv")));
}

#[test]
fn summary_table_and_markdown() {
    let run = comparison();
    snapshot!("summary_text", &run.stdout);
    snapshot!("summary_markdown", std::fs::read_to_string(run.path().join("step.md")).unwrap());
}

#[test]
fn json_log() {
    let run = comparison();
    let logs = run.logs();
    let (_, log) = logs
        .iter()
        .find(|(name, _)| name == "reverse__openai_gpt-4o-mini__1.json")
        .expect("the log of reverse on gpt-4o-mini");
    snapshot!("json_log", serde_json::to_string_pretty(log).unwrap());
}

#[test]
fn help_texts() {
    let help = Test::new().env("COLUMNS", "100").args(["--help"]).run();
    help.success();
    snapshot!("help", &help.stdout);
    let run_help = Test::new().env("COLUMNS", "100").args(["run", "--help"]).run();
    run_help.success();
    snapshot!("run_help", &run_help.stdout);
}

#[test]
fn models_table() {
    let models = Test::new().args(["models"]).run();
    models.success();
    snapshot!("models", &models.stdout);
}
