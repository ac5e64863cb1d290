//! Figures a user decides on are right or absent, never wrapped: usage beyond reason from
//! either protocol is kept raw and estimated; `runner report` refuses impossible values,
//! duplicated rows and a file given twice, with the right line; names that a spreadsheet or
//! Markdown would read as code go through the CSV and the step summary inert, and come back
//! as they were. Also: `--only-failed` that matches nothing, a silent empty answer, and
//! time-outs to a local server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{MockServer, Reply, Request, text};
use crate::{Test, Workspace, exec};

/// A Chat Completions reply "ok" with `usage` as given.
fn with_usage(usage: Value) -> Reply {
    Reply::json(
        200,
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], "usage": usage}),
    )
}

#[test]
fn usage_beyond_reason_is_kept_raw_and_estimated_on_both_protocols() {
    let absurd = [
        json!({"prompt_tokens": 1u64 << 63, "completion_tokens": 1u64 << 63, "total_tokens": 0}),
        json!({"prompt_tokens": -5, "completion_tokens": 2, "total_tokens": -3}),
        json!({"prompt_tokens": 1.5, "completion_tokens": 2, "total_tokens": 3.5}),
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 3}),
    ];
    for usage in absurd {
        for stream in [false, true] {
            let reply = usage.clone();
            let run = Test::new()
                .server(move |request: &Request| crate::server::as_stream(request, with_usage(reply.clone())))
                .file("s.yaml", "name: s\nturns:\n  - user: hi\n")
                .args(["ask", "-m", "openai:gpt-4o-mini", "--tools", "none", "--json", "hi"])
                .args(if stream { vec![] } else { vec!["--no-stream"] })
                .run();
            run.success();
            let record: Value = serde_json::from_str(&run.stdout).unwrap();
            let request = &record["turns"][0]["requests"][0];
            assert_eq!(request["usage_source"], "estimated", "{usage}: {request}");
            assert_eq!(request["raw_usage"], usage, "kept raw");
            let prompt = request["prompt_tokens"].as_u64().unwrap();
            assert!((1..1000).contains(&prompt), "{usage}: {prompt} prompt tokens");
        }
    }
    // Anthropic: input 2^64-1 plus 5 cache reads is not 4 prompt tokens.
    let server = MockServer::start(|_| {
        Reply::json(
            200,
            json!({"id": "m", "type": "message", "role": "assistant", "model": "c", "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": u64::MAX, "output_tokens": 1, "cache_read_input_tokens": 5}}),
        )
    });
    let ws = Workspace::new();
    let out = exec(
        ws.runner(&server.url())
            .env("ANTHROPIC_BASE_URL", server.url())
            .env("ANTHROPIC_API_KEY", "sk-ant-test-0000000000")
            .args(["ask", "-m", "anthropic:claude-haiku-4-5", "--tools", "none", "--json", "--no-stream", "hi"]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    let request = &record["turns"][0]["requests"][0];
    assert_eq!(request["usage_source"], "estimated", "{request}");
    assert!(
        request["prompt_tokens"].as_u64().unwrap() > 4 && request["prompt_tokens"].as_u64().unwrap() < 1000,
        "{request}"
    );
}

/// A report with one run's rows, `rows` being the CSV lines after the header.
fn report(rows: &[&str]) -> String {
    let header = "run_id,scenario,model,repetition,turn,status,prompt_tokens,completion_tokens,total_tokens,input_cost_usd,output_cost_usd,total_cost_usd,requests,tool_calls,latency_ms";
    format!("{header}\n{}\n", rows.join("\n"))
}

#[test]
fn report_refuses_impossible_values_and_double_counting_at_the_right_line() {
    let ws = Workspace::new();
    let good = "r1,s,openai:gpt-4o-mini,1,1,passed,10,5,15,0.1,0.1,0.2,1,0,100";
    for (cost, why) in
        [("NaN", "total_cost_usd"), ("inf", "total_cost_usd"), ("-0.5", "total_cost_usd"), ("1e308", "total_cost_usd")]
    {
        ws.write("r.csv", &report(&[good, &format!("r1,s,openai:gpt-4o-mini,1,2,passed,10,5,15,0,0,{cost},1,0,100")]));
        let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "r.csv"]));
        assert_eq!(out.code, 2, "{cost}: {}", out.stdout);
        assert!(out.stderr.contains("r.csv:3:") && out.stderr.contains(why), "{cost}: {}", out.stderr);
    }
    for (tokens, line) in [("18446744073709551615", 2), ("-1", 2)] {
        ws.write("r.csv", &report(&[&format!("r1,s,openai:gpt-4o-mini,1,1,passed,{tokens},5,15,0,0,0.2,1,0,100")]));
        let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "r.csv"]));
        assert_eq!(out.code, 2, "{tokens}");
        assert!(
            out.stderr.contains(&format!("r.csv:{line}:")) && out.stderr.contains("prompt_tokens"),
            "{}",
            out.stderr
        );
    }
    // Lines as an editor counts them, also after a cell that spans two lines.
    let two_lines = "r1,s,openai:gpt-4o-mini,1,1,passed,10,5,15,0.1,0.1,0.2,1,0,100,\"first\nsecond\"";
    let header = "run_id,scenario,model,repetition,turn,status,prompt_tokens,completion_tokens,total_tokens,input_cost_usd,output_cost_usd,total_cost_usd,requests,tool_calls,latency_ms,error";
    ws.write("r.csv", &format!("{header}\n{two_lines}\nr1,s,openai:gpt-4o-mini,1,2,passed,10,5,15,0,0,NaN,1,0,100,\n"));
    let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "r.csv"]));
    assert!(out.stderr.contains("r.csv:4:"), "{}", out.stderr);
    // A duplicated row, and one file named twice (by two spellings).
    ws.write("r.csv", &report(&[good, good]));
    let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "r.csv"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("r.csv:3:") && out.stderr.contains("appears twice"), "{}", out.stderr);
    ws.write("r.csv", &report(&[good]));
    for pair in [["r.csv", "r.csv"], ["r.csv", "./r.csv"]] {
        let out = exec(ws.runner("http://127.0.0.1:9").args(["report", pair[0], pair[1]]));
        assert_eq!(out.code, 2, "{pair:?}: {}", out.stdout);
        assert!(out.stderr.contains("given twice"), "{}", out.stderr);
    }
    // A field of 8 MiB is refused quickly, without holding it.
    let huge = format!("r1,s,openai:gpt-4o-mini,1,1,passed,10,5,15,0,0,0.2,1,0,100,{}", "x".repeat(8 << 20));
    ws.write("r.csv", &report(&[&huge]));
    let started = std::time::Instant::now();
    let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "r.csv"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("longer than 1 MiB"), "{}", out.stderr);
    // The same spread over short lines inside one quoted field.
    let quoted =
        format!("r1,s,openai:gpt-4o-mini,1,1,passed,10,5,15,0,0,0.2,1,0,100,\"{}\"", "a line\n".repeat(1 << 20));
    ws.write("r.csv", &report(&[&quoted]));
    let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "r.csv"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("longer than 1 MiB"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn hostile_names_go_through_the_csv_and_markdown_inert_and_come_back_whole() {
    let names = [
        "=HYPERLINK(\"http://x\")",
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "a|b",
        "![img](http://x/i.png)",
        "'quoted",
        "x\\n# heading",
    ];
    let docs: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "name: \"{}\"\nturns:\n  - user: hello\n    expect: {{not_contains: Hello}}\n",
                name.replace('"', "\\\"")
            )
        })
        .collect();
    let ws = Workspace::new();
    ws.write("s.yaml", &docs.join("---\n"));
    // Passing first (the model says "nope"), then failing (it says "Hello there!"): a
    // regression of every scenario, listed by name in the step summary.
    let passing = MockServer::start(|_| text("nope", 1, 1));
    let out =
        exec(ws.runner(&passing.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--report", "before.csv"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let failing = MockServer::start(crate::run::assistant);
    let out = exec(ws.runner(&failing.url()).env("GITHUB_STEP_SUMMARY", "step.md").args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--report",
        "after.csv",
        "--baseline",
        "before.csv",
    ]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    // In the CSV no cell begins like a formula.
    let csv = std::fs::read_to_string(ws.path().join("after.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let mut scenarios = Vec::new();
    for row in reader.records() {
        let row = row.unwrap();
        for cell in &row {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t']), "a formula cell: {cell}");
        }
        scenarios.push(row[1].to_owned());
    }
    assert_eq!(scenarios.len(), names.len());
    // Read back, every name is itself again: --only-failed finds every run it names.
    let out = exec(ws.runner(&failing.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--only-failed",
        "after.csv",
        "--report",
        "again.csv",
    ]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        !out.stderr.contains("match nothing") && out.stderr.contains(&format!("playing {} run(s)", names.len())),
        "{}",
        out.stderr
    );
    let out = exec(ws.runner("http://127.0.0.1:9").args(["report", "after.csv", "--baseline", "before.csv"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    // The step summary: every table row keeps its cells; no heading, image or link appears.
    let step = std::fs::read_to_string(ws.path().join("step.md")).unwrap();
    assert!(
        !step.contains("![img](") && step.contains("\\!\\[img\\]") && !step.lines().any(|l| l.starts_with("# heading")),
        "{step}"
    );
    let cells = |line: &str| line.char_indices().filter(|&(i, c)| c == '|' && !line[..i].ends_with('\\')).count();
    let mut table = 0;
    for line in step.lines() {
        if line.starts_with("| scenario") {
            table = cells(line);
        } else if !line.starts_with('|') {
            table = 0;
        } else if table > 0 {
            assert_eq!(cells(line), table, "{line}");
        }
    }
    assert!(step.contains("a\\|b"), "{step}");
}

#[test]
fn only_failed_that_matches_nothing_is_a_usage_error() {
    let ws = Workspace::new();
    ws.write("old.csv", &report(&["r1,renamed-scenario,openai:gpt-4o-mini,1,1,failed,10,5,15,0,0,0.2,1,0,100"]));
    ws.write("s.yaml", "name: current\nturns:\n  - user: hello\n");
    let server = MockServer::start(crate::run::assistant);
    let out =
        exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--only-failed", "old.csv"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("none of its 1 run(s) that did not pass is in this batch")
            && out.stderr.contains("renamed-scenario on openai:gpt-4o-mini #1"),
        "{}",
        out.stderr
    );
    assert!(server.chat_bodies().is_empty());
}

#[test]
fn a_silent_empty_answer_is_named() {
    let empty = |_: &Request| {
        Reply::json(
            200,
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}}),
        )
    };
    let ask = Test::new()
        .server(empty)
        .args(["ask", "-m", "openai:gpt-4o-mini", "--tools", "none", "--no-stream", "hi"])
        .run();
    ask.success();
    assert!(
        ask.stderr.contains("warning: the model's answer was empty: no text and no tool call (finish_reason stop)"),
        "{}",
        ask.stderr
    );
    let run = Test::new()
        .server(empty)
        .file("s.yaml", "name: s\nturns:\n  - user: hi\n    expect: {contains: hello}\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.code(1);
    let detail = run.logs()[0].1["turns"][0]["checks"][0]["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("the model's answer was empty"), "{detail}");
}

#[test]
fn a_time_out_to_a_local_server_is_not_retried_unless_asked() {
    let slow = |request: &Request| {
        text("late", 1, 1).after(if request.last_user() == "hi" { Duration::from_secs(3) } else { Duration::ZERO })
    };
    let run = Test::new()
        .server(slow)
        .args(["ask", "-m", "openai:gpt-4o-mini", "--tools", "none", "--no-stream", "--timeout", "1", "hi"])
        .run();
    run.code(1);
    assert_eq!(run.server().chat_bodies().len(), 1, "retried: {}", run.stderr);
    assert!(run.stderr.contains("--timeout SECS") && run.stderr.contains("--max-retries 0"), "{}", run.stderr);
    let run = Test::new()
        .server(slow)
        .file("s.yaml", "name: s\nturns:\n  - user: hi\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--timeout", "1", "--max-retries", "1"])
        .run();
    run.code(1);
    assert_eq!(run.server().chat_bodies().len(), 2, "asked for one retry: {}", run.stderr);
}
