//! CI and model comparison: budgets, --fail-fast, the summary CSV, --repeat flakiness,
//! shards and `runner report`, --dry-run, --require-prices, `runner schema`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::run::assistant;
use crate::server::{MockServer, text};
use crate::{Test, Workspace, exec, read_csv};

type Row = HashMap<String, String>;

/// `count` scenarios named s1..sN in one file, each saying `user` once.
fn scenarios(count: usize, user: &str, expect: &str) -> String {
    (1..=count).map(|i| format!("name: s{i}\nturns:\n  - user: {user}\n{expect}")).collect::<Vec<_>>().join("---\n")
}

fn run_keys(rows: &[Row]) -> Vec<(String, String, String)> {
    rows.iter().map(|r| (r["scenario"].clone(), r["model"].clone(), r["repetition"].clone())).collect()
}

fn f(row: &Row, column: &str) -> f64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column} = {:?}", row[column]))
}

#[test]
fn budget_stops_starting_runs_and_exits_3() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("s.yaml", &scenarios(6, "hello", ""));
    // 11 prompt tokens at $100,000 per million: $1.10 a run.
    ws.write("prices.yaml", "openai:pricey: {input: 100000, output: 0}\n");
    let out = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:pricey",
        "--prices",
        "prices.yaml",
        "-j",
        "1",
        "--max-cost-usd",
        "2",
        "--junit",
        "junit.xml",
    ]));
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    // $1.10 after the first run, $2.20 after the second: the budget is reached, nothing more starts.
    assert_eq!(server.chat_bodies().len(), 2);
    assert_eq!(ws.logs().len(), 2);
    assert!(
        out.stdout.contains("not started: 4 run(s) (budget of $2 reached: $2.200000 spent (--max-cost-usd))"),
        "{}",
        out.stdout
    );

    let rows = ws.csv_rows();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, ["passed", "passed", "not_started", "not_started", "not_started", "not_started"]);
    let not_started: BTreeSet<&str> =
        rows.iter().filter(|r| r["status"] == "not_started").map(|r| r["scenario"].as_str()).collect();
    assert_eq!(not_started, BTreeSet::from(["s3", "s4", "s5", "s6"]));
    assert!(rows[2]["turn"].is_empty() && rows[2]["total_cost_usd"] == "0" && rows[2]["error"].contains("budget"));

    let summary = ws.summary_rows();
    assert_eq!(
        (summary[0]["runs"].as_str(), summary[0]["passed"].as_str(), summary[0]["not_started"].as_str()),
        ("2", "2", "4")
    );
    assert_eq!(f(&summary[0], "total_cost_usd"), 2.2);
    let junit = std::fs::read_to_string(ws.path().join("junit.xml")).unwrap();
    assert!(junit.contains("tests=\"6\" failures=\"0\" errors=\"0\" skipped=\"4\""), "{junit}");
    assert_eq!(junit.matches("<skipped message=\"not started: budget").count(), 4);
}

#[test]
fn budget_needs_prices_to_be_enforced() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", &scenarios(1, "hello", ""))
        .args(["run", "s.yaml", "-m", "openai:mystery", "--max-cost-usd", "1"])
        .run();
    let server = out.server();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no known price for openai:mystery (--max-cost-usd cannot be enforced)"),
        "{}",
        out.stderr
    );
    assert!(server.requests().is_empty());
}

#[test]
fn fail_fast_stops_after_the_first_run_that_does_not_pass() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", &scenarios(4, "hello", "    expect:\n      contains: goodbye\n"))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "-j", "1", "--fail-fast"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(server.chat_bodies().len(), 1);
    let statuses: Vec<String> = ws.csv_rows().iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses, ["failed", "not_started", "not_started", "not_started"]);
    assert!(
        out.stdout.contains("not started: 3 run(s) (stopped after the first run that did not pass (--fail-fast))"),
        "{}",
        out.stdout
    );
}

#[test]
fn summary_csv_adds_up_and_repeats_find_flaky_scenarios() {
    // "coin" comes up heads on every other call; "hello" always answers the same.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = MockServer::start(move |request| {
        if request.last_user() == "coin" {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            return text(if n.is_multiple_of(2) { "heads" } else { "tails" }, 10, 2);
        }
        assistant(request)
    });
    let ws = Workspace::new();
    ws.write("s.yaml", "name: coin\nturns:\n  - user: coin\n    expect:\n      contains: heads\n---\nname: steady\nturns:\n  - user: hello\n  - user: again\n");
    let out =
        exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "-j", "1", "--repeat", "4"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("coin") && l.contains("2/4") && l.ends_with("flaky")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("steady") && l.contains("4/4") && !l.contains("flaky")),
        "{}",
        out.stdout
    );

    // Every figure of the summary, recomputed from the report's rows.
    let rows = ws.csv_rows();
    let summary = ws.summary_rows();
    assert_eq!(summary.len(), 1);
    let s = &summary[0];
    let cost: f64 = rows.iter().map(|r| f(r, "total_cost_usd")).sum();
    let mut latencies: Vec<u64> = rows.iter().map(|r| r["latency_ms"].parse().unwrap()).collect();
    latencies.sort_unstable();
    assert_eq!(latencies.len(), 12);
    assert_eq!(
        (s["runs"].as_str(), s["passed"].as_str(), s["failed"].as_str(), s["errors"].as_str()),
        ("8", "6", "2", "0")
    );
    assert_eq!(s["pass_rate"], "0.7500");
    assert_eq!(
        s["prompt_tokens"],
        rows.iter().map(|r| r["prompt_tokens"].parse::<u64>().unwrap()).sum::<u64>().to_string()
    );
    assert!((f(s, "total_cost_usd") - cost).abs() < 1e-12);
    assert!((f(s, "cost_per_passing_run_usd") - cost / 6.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s["median_turn_latency_ms"], latencies[5..7].iter().sum::<u64>().div_ceil(2).to_string());
    // Nearest rank: ceil(0.95 x 12) = 12th of 12.
    assert_eq!(s["p95_turn_latency_ms"], latencies[11].to_string());
    assert_eq!((s["unpriced"].as_str(), s["flaky_scenarios"].as_str()), ("false", "1"));
}

#[test]
fn shards_cover_every_run_once_and_merge_into_the_unsharded_summary() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write(
        "s.yaml",
        "name: a\nturns:\n  - user: hello\n---\nname: b\nturns:\n  - user: reverse apple\n    expect:\n      contains: elppa\n---\nname: c\nturns:\n  - user: hello\n    expect:\n      contains: nope\n---\nname: d\nturns:\n  - user: boom\n---\nname: e\nturns:\n  - user: add and reverse\n  - user: hello\n",
    );
    let models = ["-m", "openai:gpt-4o-mini", "-m", "openai:gpt-4.1-nano"];
    let whole =
        exec(ws.runner(&server.url()).args(["run", "s.yaml", "--repeat", "2", "--report", "whole.csv"]).args(models));
    assert_eq!(whole.code, 1, "{}", whole.stderr);
    let whole_rows = read_csv(&ws.path().join("whole.csv"));
    let all: BTreeSet<_> = run_keys(&whole_rows).into_iter().collect();
    assert_eq!(all.len(), 5 * 2 * 2);

    let mut seen = Vec::new();
    for i in 1..=3 {
        let report = format!("shard{i}.csv");
        let out = exec(
            ws.runner(&server.url())
                .args(["run", "s.yaml", "--repeat", "2", "--shard", &format!("{i}/3"), "--report", &report])
                .args(models),
        );
        assert!(out.code <= 1, "{}", out.stderr);
        let runs: BTreeSet<_> = run_keys(&read_csv(&ws.path().join(&report))).into_iter().collect();
        assert!((6..=7).contains(&runs.len()), "shard {i} has {} runs", runs.len());
        seen.extend(runs);
    }
    assert_eq!(seen.len(), all.len(), "no run is in two shards");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), all, "every run is in a shard");

    let merged = exec(ws.runner(&server.url()).args([
        "report",
        "shard1.csv",
        "shard2.csv",
        "shard3.csv",
        "--summary",
        "merged.csv",
    ]));
    assert_eq!(merged.code, 1, "{}", merged.stderr);
    let single = exec(ws.runner(&server.url()).args(["report", "whole.csv", "--summary", "single.csv"]));
    assert_eq!(single.code, 1);
    // Timings differ from run to run; every other figure is the same.
    let comparable = |name: &str| -> Vec<Row> {
        let mut rows = read_csv(&ws.path().join(name));
        for row in &mut rows {
            row.retain(|column, _| !column.contains("latency"));
        }
        rows.sort_by(|a, b| a["model"].cmp(&b["model"]));
        rows
    };
    assert_eq!(comparable("merged.csv"), comparable("single.csv"));
    assert_eq!(
        comparable("merged.csv"),
        comparable("whole.summary.csv"),
        "runner report rebuilds what runner run wrote"
    );
    assert_eq!(comparable("merged.csv")[0]["runs"], "10");

    let overlap = exec(ws.runner(&server.url()).args(["report", "whole.csv", "shard1.csv"]));
    assert_eq!(overlap.code, 2);
    assert!(
        overlap.stderr.contains("shard1.csv:2: run ") && overlap.stderr.contains("is also in whole.csv"),
        "{}",
        overlap.stderr
    );
}

#[test]
fn report_reprices_recorded_tokens_at_another_models_prices() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("s.yaml", &scenarios(3, "add and reverse", ""));
    let out = exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--report", "r.csv"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out =
        exec(ws.runner(&server.url()).args(["report", "r.csv", "--price-as", "openai:gpt-4.1", "--summary", "s.csv"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("re-priced at openai:gpt-4.1's prices (input $2, output $8 per million"),
        "{}",
        out.stdout
    );
    // gpt-4.1: $2 per million input tokens ($0.50 cached), $8 per million output.
    let expected: f64 = read_csv(&ws.path().join("r.csv"))
        .iter()
        .map(|r| {
            let (prompt, cached, completion) =
                (f(r, "prompt_tokens"), f(r, "cached_tokens"), f(r, "completion_tokens"));
            ((prompt - cached) * 2.0 + cached * 0.5 + completion * 8.0) / 1e6
        })
        .sum();
    assert!(expected > 0.0);
    let summary = read_csv(&ws.path().join("s.csv"));
    assert_eq!(summary[0]["model"], "openai:gpt-4o-mini", "figures stay under the model that ran");
    assert!(
        (f(&summary[0], "total_cost_usd") - expected).abs() < 1e-12,
        "{} vs {expected}",
        summary[0]["total_cost_usd"]
    );

    let unknown = exec(ws.runner(&server.url()).args(["report", "r.csv", "--price-as", "openai:mystery"]));
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("no known price for openai:mystery"), "{}", unknown.stderr);
    ws.write("bad.csv", "run_id,scenario\nx,y\n");
    let bad = exec(ws.runner(&server.url()).args(["report", "bad.csv"]));
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("bad.csv:1: expected a runner CSV report; missing column(s): model, repetition"),
        "{}",
        bad.stderr
    );
}

#[test]
fn dry_run_prints_the_matrix_and_a_cost_bound_and_calls_nothing() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", "name: bounded\nmax_tokens: 50\nmax_tool_rounds: 2\ntools: [add_numbers]\nturns:\n  - user: add 2 and 3\n---\nname: open\nturns:\n  - user: hello\n")
        .args(["run", "s.yaml", "--dry-run", "-m", "openai:gpt-4o-mini", "--repeat", "3"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(server.requests().is_empty(), "a dry run sends nothing");
    assert!(!ws.path().join("logs").exists() && !ws.path().join("reports").exists(), "a dry run writes nothing");
    assert!(out.stdout.starts_with("dry run: 6 run(s) of 2 scenario(s) on 1 model(s)"), "{}", out.stdout);

    let row: Vec<&str> = out.stdout.lines().find(|l| l.starts_with("bounded")).unwrap().split_whitespace().collect();
    // scenario, model, runs, requests, input, output, cost
    assert_eq!(&row[..4], ["bounded", "openai:gpt-4o-mini", "3", "9"]);
    let (input, output, cost): (f64, f64, f64) =
        (row[4].parse().unwrap(), row[5].parse().unwrap(), row[6].parse().unwrap());
    assert_eq!(output, 3.0 * 3.0 * 50.0, "3 runs x 3 requests x max_tokens");
    assert!((cost - (input * 0.15 + output * 0.60) / 1e6).abs() < 1e-6);
    let open = out.stdout.lines().find(|l| l.starts_with("open")).unwrap();
    assert!(open.contains("no bound") && open.contains("no max_tokens"), "{open}");
    assert!(out.stdout.contains("tokens of openai:gpt-4o-mini: counted with o200k_base\n"));
    assert!(
        out.stdout.contains(&format!("cost upper bound: ${cost:.6} for the scenarios that set max_tokens")),
        "{}",
        out.stdout
    );
}

#[test]
fn require_prices_refuses_unpriced_models() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("s.yaml", &scenarios(1, "hello", ""));
    let out = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "-m",
        "openai:mystery",
        "--require-prices",
    ]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no known price for openai:mystery (--require-prices)"), "{}", out.stderr);
    assert!(server.requests().is_empty());
    let priced = exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--require-prices"]));
    assert_eq!(priced.code, 0, "{}", priced.stderr);
}

#[test]
fn schema_command_prints_the_scenario_schema() {
    let ws = Workspace::new();
    let out = exec(ws.runner("http://127.0.0.1:9").arg("schema"));
    assert_eq!(out.code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    // Scripted turns, or a simulated user (or both).
    let either: Vec<&serde_json::Value> = schema["anyOf"].as_array().unwrap().iter().map(|a| &a["required"]).collect();
    assert_eq!(either, [&serde_json::json!(["turns"]), &serde_json::json!(["simulate"])]);
    assert_eq!(schema["additionalProperties"], false);
}
