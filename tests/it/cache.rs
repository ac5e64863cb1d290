//! The request cache: recorded against the test server, answered from files on the next run
//! (nothing sent, the same tokens and cost), `--replay` with no server and no key, a changed
//! turn missing under `--replay`, `--refresh`, `--repeat`, streaming hits, no secret in a
//! cache file, `runner cache stats` and `prune`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::run::assistant;
use crate::server::{MockServer, as_stream};
use crate::{KEY, Workspace, exec};

const SUITE: &str = "name: greet
system: Be brief.
temperature: 0
turns:
  - user: hello
    expect: {contains: Hello}
  - user: how are you
---
name: reverse
tools: [reverse_text]
turns:
  - user: reverse apple
    expect:
      tool_calls: [{name: reverse_text}]
";

/// Every entry file under `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            files.push(file.path());
        }
    }
    files.sort();
    files
}

/// The logs of the newest batch, by file name.
fn newest_logs(ws: &Workspace) -> Vec<(String, Value)> {
    let runs = ws.path().join("logs/runs");
    let mut batches: Vec<PathBuf> = std::fs::read_dir(&runs).unwrap().flatten().map(|e| e.path()).collect();
    batches.sort();
    let batch = batches.last().unwrap();
    let mut logs: Vec<(String, Value)> = std::fs::read_dir(batch)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap(),
            )
        })
        .collect();
    logs.sort_by(|a, b| a.0.cmp(&b.0));
    logs
}

fn request_caches(log: &Value) -> Vec<String> {
    log["turns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["requests"].as_array().unwrap().iter().map(|r| r["cache"].as_str().unwrap().to_owned()))
        .collect()
}

/// (usage, cost) of every log, for comparing two batches.
fn figures(logs: &[(String, Value)]) -> Vec<(String, Value, Value)> {
    logs.iter().map(|(name, log)| (name.clone(), log["usage"].clone(), log["cost"]["total_usd"].clone())).collect()
}

fn runner_run(ws: &Workspace, server: &MockServer, args: &[&str]) -> crate::Outcome {
    let mut command = ws.runner(&server.url());
    command.args(["run", "suite.yaml", "-m", "openai:gpt-4o-mini", "--cache", "cache"]).args(args);
    exec(&mut command)
}

#[test]
fn a_second_run_is_answered_from_the_cache_and_replay_needs_no_server_or_key() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("suite.yaml", SUITE);
    let first = runner_run(&ws, &server, &[]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let sent = server.chat_bodies().len();
    assert_eq!(sent, 4, "hello, how are you, reverse apple and its answer");
    let recorded = newest_logs(&ws);
    assert!(recorded.iter().all(|(_, log)| request_caches(log).iter().all(|c| c == "stored")));
    assert_eq!(entries(&ws.path().join("cache")).len(), 4);

    // The dry run knows what the cache holds: every turn's first request.
    let dry = runner_run(&ws, &server, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("cache: 3 of 3 turn-opening requests are in cache"), "{}", dry.stdout);

    // Again: nothing reaches the server; the same tokens and cost; every request a hit.
    let second = runner_run(&ws, &server, &[]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert_eq!(server.chat_bodies().len(), sent);
    let replayed = newest_logs(&ws);
    assert_eq!(figures(&replayed), figures(&recorded));
    assert!(replayed.iter().all(|(_, log)| request_caches(log).iter().all(|c| c == "hit")));
    assert!(
        second.stdout.contains("cache: openai:gpt-4o-mini: 4 request(s) answered from the cache"),
        "{}",
        second.stdout
    );
    assert!(second.stdout.contains("spent by this run $0"), "{}", second.stdout);
    let mut reports: Vec<PathBuf> = std::fs::read_dir(ws.path().join("reports"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(".summary.csv"))
        .collect();
    reports.sort();
    let rows = crate::read_csv(reports.last().unwrap());
    assert!(rows.iter().all(|r| r["cache_hits"] != "0"), "{rows:?}");

    // The server gone and no key: --replay passes all the same.
    let url = server.url();
    drop(server);
    let out = exec(ws.runner(&url).env_remove("OPENAI_API_KEY").args([
        "run",
        "suite.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--cache",
        "cache",
        "--replay",
    ]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(figures(&newest_logs(&ws)), figures(&recorded));

    // A changed turn: that run is an error naming the missing key; the other passes.
    ws.write("suite.yaml", &SUITE.replace("how are you", "how are you today"));
    let dry =
        exec(ws.runner(&url).args(["run", "suite.yaml", "-m", "openai:gpt-4o-mini", "--cache", "cache", "--dry-run"]));
    assert!(dry.stdout.contains("cache: 2 of 3 turn-opening requests"), "{}", dry.stdout);
    let out = exec(ws.runner(&url).env_remove("OPENAI_API_KEY").args([
        "run",
        "suite.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--cache",
        "cache",
        "--replay",
    ]));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let logs = newest_logs(&ws);
    let status: Vec<(&str, &str)> = logs.iter().map(|(n, l)| (n.as_str(), l["status"].as_str().unwrap())).collect();
    assert_eq!(
        status,
        [("greet__openai_gpt-4o-mini__1.json", "error"), ("reverse__openai_gpt-4o-mini__1.json", "passed")]
    );
    let error = logs[0].1["error"].as_str().unwrap();
    assert!(error.contains("not in the cache: "), "{error}");
    assert!(
        error.contains("the cache holds other requests of openai:gpt-4o-mini at ")
            && error.contains("the conversation, tools or sampling differ from what was recorded"),
        "{error}"
    );
    assert_eq!(request_caches(&logs[0].1), ["hit", "miss"]);

    // Another model asked: the miss names the model the request was recorded for.
    ws.write("suite.yaml", SUITE);
    let out = exec(ws.runner(&url).env_remove("OPENAI_API_KEY").args([
        "run",
        "suite.yaml",
        "-m",
        "openai:gpt-4.1-nano",
        "--cache",
        "cache",
        "--replay",
    ]));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let error = newest_logs(&ws)[0].1["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&format!(
            "this request was recorded for openai:gpt-4o-mini at {url}/v1; this run asked openai:gpt-4.1-nano at {url}/v1"
        )),
        "{error}"
    );

    // No secret in any cache file.
    for file in entries(&ws.path().join("cache")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(KEY), "{}", file.display());
        let entry: Value = serde_json::from_str(&text).unwrap();
        for field in ["key", "request", "response", "usage", "model", "recorded_at"] {
            assert!(entry.get(field).is_some(), "{field} missing from {}", file.display());
        }
    }
}

#[test]
fn refresh_sends_again_and_repeats_have_their_own_entries() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("suite.yaml", "name: one\nturns:\n  - user: hello\n");
    assert_eq!(runner_run(&ws, &server, &[]).code, 0);
    assert_eq!(server.chat_bodies().len(), 1);
    let out = runner_run(&ws, &server, &["--refresh"]);
    assert_eq!(out.code, 0);
    assert_eq!(server.chat_bodies().len(), 2, "--refresh sends");
    assert_eq!(request_caches(&newest_logs(&ws)[0].1), ["stored"]);
    assert_eq!(entries(&ws.path().join("cache")).len(), 1, "overwritten, not added");

    // --repeat 3: three keys, so repeats still measure flakiness.
    let out = runner_run(&ws, &server, &["--repeat", "3"]);
    assert_eq!(out.code, 0);
    assert_eq!(server.chat_bodies().len(), 5);
    assert_eq!(entries(&ws.path().join("cache")).len(), 4);
    // --replay or --refresh without a cache directory is a usage error.
    let out = exec(ws.runner(&server.url()).args(["run", "suite.yaml", "-m", "openai:gpt-4o-mini", "--replay"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--cache DIR"), "{}", out.stderr);
}

#[test]
fn ask_streams_a_cached_answer_and_stats_and_prune_keep_the_cache_tidy() {
    let server = MockServer::start(|request| as_stream(request, assistant(request)));
    let ws = Workspace::new();
    let ask = |ws: &Workspace| {
        exec(ws.runner(&server.url()).args([
            "ask",
            "-m",
            "openai:gpt-4o-mini",
            "--tools",
            "none",
            "--cache",
            "cache",
            "hello",
        ]))
    };
    let first = ask(&ws);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = ask(&ws);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(server.chat_bodies().len(), 1);
    assert_eq!(second.stdout, first.stdout);
    assert!(second.stdout.contains("Hello there!"));

    let out = exec(ws.runner(&server.url()).args(["cache", "stats", "cache"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1 entries") && out.stdout.contains("openai:gpt-4o-mini: 1"), "{}", out.stdout);

    // An entry recorded 40 days ago goes; today's stays.
    let old = entries(&ws.path().join("cache"))[0].clone();
    let mut entry: Value = serde_json::from_slice(&std::fs::read(&old).unwrap()).unwrap();
    let key = entry["key"].as_str().unwrap().to_owned();
    let aged = format!("{}{}", &key[..key.len() - 1], if key.ends_with('0') { '1' } else { '0' });
    entry["key"] = Value::String(aged.clone());
    entry["recorded_at"] = Value::String((chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339());
    let aged_path = ws.path().join("cache").join(&aged[..2]).join(format!("{aged}.json"));
    std::fs::write(&aged_path, entry.to_string()).unwrap();
    let out = exec(ws.runner(&server.url()).args(["cache", "prune", "cache", "--older-than", "30d"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("removed 1 entries"), "{}", out.stdout);
    assert!(!aged_path.exists() && old.exists());
}

#[test]
fn the_budget_counts_only_what_is_actually_spent() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("suite.yaml", "name: a\nturns:\n  - user: hello\n---\nname: b\nturns:\n  - user: hello again\n---\nname: c\nturns:\n  - user: hi\n");
    // 11 or 7 prompt tokens at $100,000 per million: about $1 a run.
    ws.write("prices.yaml", "openai:pricey: {input: 100000, output: 0}\n");
    let run = |extra: &[&str]| {
        let mut command = ws.runner(&server.url());
        command
            .args([
                "run",
                "suite.yaml",
                "-m",
                "openai:pricey",
                "--prices",
                "prices.yaml",
                "-j",
                "1",
                "--cache",
                "cache",
                "--max-cost-usd",
                "1",
            ])
            .args(extra);
        exec(&mut command)
    };
    // Recording stops after the first run: $1.10 spent.
    let out = run(&[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.chat_bodies().len(), 1);
    // Now the first run costs nothing (counted as spent, its $1.10 would stop the batch
    // again); the other two are sent.
    let out = run(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.chat_bodies().len(), 3);
    // All from the cache: every run starts, the recorded cost is kept, nothing is spent.
    let out = run(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.chat_bodies().len(), 3);
    assert!(out.stdout.contains("spent by this run $0"), "{}", out.stdout);
}
