//! CI gates and what a failed batch says: `--min-pass-rate`, and the list of the runs that
//! did not pass after the summary.

use crate::Test;
use crate::run::assistant;

/// `passing` scenarios that pass and `failing` that fail their check.
fn suite(passing: usize, failing: usize) -> String {
    let pass =
        (0..passing).map(|i| format!("name: ok{i:02}\nturns:\n  - user: hello\n    expect: {{contains: Hello}}\n"));
    let fail =
        (0..failing).map(|i| format!("name: bad{i:02}\nturns:\n  - user: hello\n    expect: {{contains: Goodbye}}\n"));
    pass.chain(fail).collect::<Vec<_>>().join("---\n")
}

#[test]
fn min_pass_rate_lets_a_mostly_passing_batch_through() {
    let run = |rate: &str| {
        Test::new()
            .server(assistant)
            .file("s.yaml", &suite(3, 1))
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--min-pass-rate", rate])
            .run()
    };
    let out = run("0.7");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("pass-rate gate: every model passed at least 70.0% of its runs"), "{}", out.stdout);
    let out = run("0.8");
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("pass-rate gate: below 80.0% (--min-pass-rate 0.8): openai:gpt-4o-mini (75.0%)"),
        "{}",
        out.stdout
    );
    let out = run("1.5");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("between 0 and 1"), "{}", out.stderr);
    // Without the gate, one failure fails the batch.
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", &suite(3, 1))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    assert_eq!(out.code, 1);
}

#[test]
fn a_failed_batch_names_each_run_that_did_not_pass() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", &format!("{}---\nname: broken\nturns:\n  - user: boom\n", suite(1, 2)))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    assert_eq!(out.code, 1);
    let listed = out.stdout.split("did not pass:\n").nth(1).unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        listed.contains("bad00 on openai:gpt-4o-mini #1 turn 1: failed contains: reply does not contain \"Goodbye\""),
        "{listed}"
    );
    assert!(listed.contains("bad01 on openai:gpt-4o-mini #1 turn 1: failed"), "{listed}");
    assert!(
        listed.contains("broken on openai:gpt-4o-mini #1 turn 1: error model request failed: HTTP 500"),
        "{listed}"
    );
    assert!(!listed.contains("ok00"), "{listed}");
    // Each with the path of its log, which exists.
    for line in listed.lines().filter_map(|l| l.trim().strip_prefix("log: ")) {
        assert!(out.ws.path().join(line).is_file(), "{line}");
    }

    // At most 20, the rest counted.
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", &suite(0, 25))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let listed = out.stdout.split("did not pass:\n").nth(1).unwrap();
    assert_eq!(listed.matches(" #1 turn 1: failed").count(), 20, "{listed}");
    assert!(listed.contains("... and 5 more"), "{listed}");
}

#[test]
fn only_failed_plays_just_the_runs_that_did_not_pass() {
    let yaml = format!("{}---\nname: broken\nturns:\n  - user: boom\n", suite(2, 1));
    let first = Test::new()
        .server(assistant)
        .file("s.yaml", &yaml)
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--report", "first.csv"])
        .run();
    assert_eq!(first.code, 1);
    let report = std::fs::read_to_string(first.ws.path().join("first.csv")).unwrap();
    let again = Test::new()
        .server(assistant)
        .file("s.yaml", &yaml)
        .file("first.csv", &report)
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--only-failed", "first.csv", "--report", "second.csv"])
        .run();
    assert_eq!(again.code, 1);
    let mut played: Vec<String> =
        crate::read_csv(&again.ws.path().join("second.csv")).iter().map(|r| r["scenario"].clone()).collect();
    played.sort();
    assert_eq!(played, ["bad00", "broken"]);
    // (The 500 is retried: the same request several times.)
    let mut asked: Vec<String> = again.server().requests().iter().map(crate::server::Request::last_user).collect();
    asked.sort();
    asked.dedup();
    assert_eq!(asked, ["boom", "hello"]);
}

#[test]
fn resume_plays_again_the_runs_that_ended_in_an_error() {
    let server = crate::server::MockServer::start(assistant);
    let ws = crate::Workspace::new();
    ws.write("s.yaml", "name: fine\nturns:\n  - user: hello\n---\nname: broken\nturns:\n  - user: boom\n");
    let first = crate::exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--max-retries",
        "0",
        "--report",
        "r.csv",
    ]));
    assert_eq!(first.code, 1);
    assert_eq!(server.chat_bodies().len(), 2);
    let run_id = std::fs::read_dir(ws.path().join("logs/runs"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let resumed = crate::exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--max-retries",
        "0",
        "--report",
        "r.csv",
        "--resume",
        &run_id,
    ]));
    assert_eq!(resumed.code, 1);
    // The passed run is kept; the errored one is sent again.
    let mut asked: Vec<String> = server.requests().iter().map(crate::server::Request::last_user).collect();
    asked.sort();
    assert_eq!(asked, ["boom", "boom", "hello"]);
    let rows = ws.csv_rows_of("r.csv");
    let statuses: Vec<(&str, &str)> = rows.iter().map(|r| (r["scenario"].as_str(), r["status"].as_str())).collect();
    assert_eq!(statuses, [("fine", "passed"), ("broken", "error")]);
}

#[test]
fn baseline_names_regressions_and_fixes_and_a_regression_fails() {
    let server = crate::server::MockServer::start(assistant);
    let ws = crate::Workspace::new();
    let scenarios = |a: &str, b: &str| {
        format!(
            "name: a\nturns:\n  - user: hello\n    expect: {{contains: {a}}}\n---\nname: b\nturns:\n  - user: hello\n    expect: {{contains: {b}}}\n"
        )
    };
    ws.write("s.yaml", &scenarios("Hello", "Goodbye"));
    let first = crate::exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--report",
        "first.csv",
    ]));
    assert_eq!(first.code, 1);

    // a now fails, b now passes.
    ws.write("s.yaml", &scenarios("Goodbye", "Hello"));
    let out = crate::exec(ws.runner(&server.url()).env("GITHUB_STEP_SUMMARY", ws.path().join("step.md")).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--report",
        "second.csv",
        "--baseline",
        "first.csv",
        "--min-pass-rate",
        "0.5",
    ]));
    assert_eq!(out.code, 1, "a regression fails the batch even above the pass-rate gate:\n{}", out.stdout);
    assert!(out.stdout.contains("baseline: first.csv"), "{}", out.stdout);
    assert!(
        out.stdout.contains("regressions (passed before, not now): 1\n  a on openai:gpt-4o-mini (1/1 -> 0/1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("fixes (did not pass before, pass now): 1\n  b on openai:gpt-4o-mini (0/1 -> 1/1)"),
        "{}",
        out.stdout
    );
    let model_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("openai:gpt-4o-mini") && l.contains("50.0%  50.0%"))
        .map(str::to_owned);
    assert!(model_line.is_some(), "pass rate before and after: {}", out.stdout);
    let step = std::fs::read_to_string(ws.path().join("step.md")).unwrap();
    assert!(step.contains("**Regressions**: 1") && step.contains("| a | `openai:gpt-4o-mini` | 1/1 | 0/1 |"), "{step}");

    // The same from the reports alone.
    let out = crate::exec(ws.runner(&server.url()).args(["report", "second.csv", "--baseline", "first.csv"]));
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("regressions (passed before, not now): 1"), "{}", out.stdout);
    // Against itself: nothing changed; the exit code is the batch's own.
    let out = crate::exec(ws.runner(&server.url()).args(["report", "first.csv", "--baseline", "first.csv"]));
    assert!(
        out.stdout.contains("regressions (passed before, not now): 0")
            && out.stdout.contains("fixes (did not pass before, pass now): 0"),
        "{}",
        out.stdout
    );
}
