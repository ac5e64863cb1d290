//! Reliability: a server that fails on purpose, malformed replies, interrupts, kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::run::assistant;
use crate::server::{Cut, MockServer, Reply, api_error};
use crate::{KEY, Test, Workspace, exec, signal};

/// The kinds of fault the server injects, in turn.
const FAULTS: [&str; 5] = ["429", "500", "stall", "drop", "truncate"];

#[test]
fn thirty_percent_faults_lose_no_run() {
    let requests = Arc::new(AtomicUsize::new(0));
    let injected: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
    let (count, faults) = (requests.clone(), injected.clone());
    let server = MockServer::start(move |request| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        // 3 requests in 10 fail, spread by a multiplicative hash of the request number.
        let roll = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
        if roll * 10 >= 3 * 1024 {
            return assistant(request);
        }
        let kind = n % FAULTS.len();
        faults[kind].fetch_add(1, Ordering::SeqCst);
        match FAULTS[kind] {
            "429" => api_error(429, "Rate limit reached, try again").header("retry-after", "1"),
            "500" => api_error(500, "The server had an error"),
            "stall" => assistant(request).after(Duration::from_secs(3)),
            "drop" => assistant(request).cut(Cut::Drop),
            _ => assistant(request).cut(Cut::Truncate),
        }
    });
    let ws = Workspace::new();
    let scenarios: Vec<String> = (1..=20)
        .map(|i| {
            format!("name: f{i}\nturns:\n  - user: reverse apple\n    expect:\n      contains: elppa\n  - user: hello\n    expect:\n      contains: hello\n")
        })
        .collect();
    ws.write("s.yaml", &scenarios.join("---\n"));
    let started = std::time::Instant::now();
    let out = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--repeat",
        "10",
        "-j",
        "50",
        "--timeout",
        "1",
        "--max-retries",
        "3",
    ]));
    let wall = started.elapsed();
    assert!(out.code == 0 || out.code == 1, "{}\n{}", out.stdout, out.stderr);

    let logs = crate::Workspace::logs(&ws);
    assert_eq!(logs.len(), 200, "every run has its log");
    let (mut attempts, mut model_requests, mut passed, mut errors) = (0, 0, 0, 0);
    for (name, log) in &logs {
        match log["status"].as_str() {
            Some("passed") => passed += 1,
            Some("error") => {
                errors += 1;
                let reason = log["error"].as_str().unwrap_or_default();
                assert!(reason.starts_with("turn ") && reason.contains("model request failed"), "{name}: {reason}");
            }
            other => panic!("{name}: status {other:?}: {}", log["error"]),
        }
        for turn in log["turns"].as_array().unwrap() {
            for request in turn["requests"].as_array().unwrap() {
                let tries = request["attempts"].as_array().unwrap();
                assert!((1..=4).contains(&tries.len()), "{name}: {} attempts, limit 1 + 3 retries", tries.len());
                for (i, attempt) in tries.iter().enumerate() {
                    assert_eq!(attempt["attempt"], i + 1);
                    let last = i + 1 == tries.len();
                    assert_eq!(
                        attempt["retry_in_ms"].is_null(),
                        last,
                        "{name}: only a retried attempt says when the next one comes"
                    );
                    if attempt["status"] == 429 && !last {
                        assert_eq!(attempt["retry_in_ms"], 1000, "{name}: Retry-After is honoured");
                    }
                }
                attempts += tries.len();
                model_requests += 1;
            }
        }
    }
    let sent = requests.load(Ordering::SeqCst);
    assert_eq!(attempts, sent, "every request the server saw is an attempt in some log, and no more");

    // Report rows match the runs: the same runs, a row per played turn.
    let rows = ws.csv_rows();
    let row_runs: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r["scenario"].clone(), r["repetition"].clone())).collect();
    let log_runs: BTreeSet<(String, String)> = logs
        .iter()
        .map(|(_, l)| (l["scenario"]["name"].as_str().unwrap().to_owned(), l["repetition"].to_string()))
        .collect();
    assert_eq!(row_runs, log_runs);
    let turns: usize = logs.iter().map(|(_, l)| l["turns"].as_array().unwrap().len()).sum();
    assert_eq!(rows.len(), turns);
    let by_status = rows.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, r| {
        *m.entry(r["status"].as_str()).or_default() += 1;
        m
    });

    let injected: Vec<usize> = injected.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let total_injected: usize = injected.iter().sum();
    assert!(total_injected * 100 >= sent * 25, "about 30% of requests fail: {total_injected} of {sent}");
    assert!(passed >= 190, "retries rescue nearly every run: {passed} passed, {errors} errors");
    println!(
        "fault figures: runs 200, passed {passed}, errors {errors} (recorded with reasons), runs lost 0; requests {model_requests}, \
         attempts {sent}, retries {}, injected faults {total_injected} ({}); rows {by_status:?}; wall {:.1} s",
        sent - model_requests,
        FAULTS.iter().zip(&injected).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
        wall.as_secs_f64()
    );
}

#[test]
fn quota_exhaustion_and_bad_requests_are_not_retried() {
    let out = Test::new()
        .server(|request| match request.last_user().as_str() {
            "quota" => {
                Reply::json(429, json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}))
            }
            _ => api_error(400, "Invalid 'messages'"),
        })
        .file("s.yaml", "name: q\nturns:\n  - user: quota\n---\nname: b\nturns:\n  - user: bad\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 1);
    assert_eq!(server.chat_bodies().len(), 2, "one attempt each");
    for (_, log) in ws.logs() {
        assert_eq!(log["turns"][0]["requests"][0]["attempts"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn repeated_429s_lower_the_requests_in_flight() {
    // Accepts 4 requests at once; the rest get 429 with a short retry-after-ms.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let busy = in_flight.clone();
    let server = MockServer::start(move |request| {
        let now = busy.fetch_add(1, Ordering::SeqCst);
        let reply = if now >= 4 {
            api_error(429, "Rate limit reached").header("retry-after-ms", "50")
        } else {
            assistant(request).after(Duration::from_millis(100))
        };
        // The handler runs before the delay; count the request out when its reply would be sent.
        let out = busy.clone();
        let delay = reply.delay;
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            out.fetch_sub(1, Ordering::SeqCst);
        });
        reply
    });
    let ws = Workspace::new();
    let scenarios: Vec<String> = (1..=60).map(|i| format!("name: r{i}\nturns:\n  - user: hello\n")).collect();
    ws.write("s.yaml", &scenarios.join("---\n"));
    let out = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "-j",
        "30",
        "--max-retries",
        "10",
    ]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let throttled = |log: &Value| -> usize {
        log["turns"][0]["requests"][0]["attempts"].as_array().unwrap().iter().filter(|a| a["status"] == 429).count()
    };
    let logs = ws.logs();
    let total: usize = logs.iter().map(|(_, l)| throttled(l)).sum();
    // Without a bound, 30 in flight against room for 4 would draw about 26 429s per 100 ms
    // for the whole run; halving the bound at each round of 429s converges within a few.
    assert!(total < 120, "{total} 429s for 60 runs");
    println!("adaptive concurrency: 60 runs, -j 30, endpoint accepting 4: {total} 429s in all");
}

#[test]
fn malformed_replies_become_recorded_errors() {
    let out = Test::new()
        .server(|request| match request.last_user().as_str() {
        _ if request.last_message()["role"] == "tool" => crate::server::text("done", 1, 1),
        "invalid json" => Reply::bytes(200, b"{\"choices\": [oops ]}".to_vec()),
        "no choices" => Reply::json(200, json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}})),
        "not json args" => Reply::json(200, json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add_numbers", "arguments": "{x: 1,"}}]}, "finish_reason": "tool_calls"}]})),
        "html" => Reply::bytes(502, b"<html>Bad gateway</html>".to_vec()),
        other => crate::server::text(other, 1, 1),
    })
        .file(
        "s.yaml",
        "name: a\nturns:\n  - user: invalid json\n---\nname: b\nturns:\n  - user: no choices\n---\nname: c\nturns:\n  - user: not json args\n---\nname: d\nturns:\n  - user: html\n",
    )
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--max-retries", "0"])
        .run();
    let ws = &out.ws;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let logs: BTreeMap<String, Value> =
        ws.logs().into_iter().map(|(_, l)| (l["scenario"]["name"].as_str().unwrap().to_owned(), l)).collect();
    let error = |name: &str| logs[name]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error("a").contains("not a Chat Completions response"), "{}", error("a"));
    assert!(error("b").contains("response has no choices"), "{}", error("b"));
    assert!(error("d").contains("HTTP 502: <html>Bad gateway</html>"), "{}", error("d"));
    // Arguments that are not JSON go back to the model as a tool error; the run goes on.
    assert_eq!(logs["c"]["status"], "passed", "{}", logs["c"]);
    let call = &logs["c"]["turns"][0]["tool_calls"][0];
    assert!(call["error"].as_str().unwrap().contains("not valid JSON"), "{call}");
    let tool_message = &logs["c"]["messages"][2];
    assert_eq!(tool_message["role"], "tool");
    assert!(tool_message["content"].as_str().unwrap().contains("error"));
}

#[test]
fn nothing_reaches_any_output_with_the_key_even_when_the_server_echoes_it() {
    // A server that echoes the Authorization header in its errors and in its replies' text.
    let server = MockServer::start(|request| {
        let auth = request.header("authorization").unwrap_or_default().to_owned();
        match request.last_user().as_str() {
            "fail" => api_error(401, &format!("Incorrect API key provided: {auth}")),
            _ => crate::server::text(&format!("you sent {auth}"), 3, 3),
        }
    });
    let ws = Workspace::new();
    ws.write("s.yaml", "name: a\nturns:\n  - user: fail\n---\nname: b\nturns:\n  - user: echo\n");
    let out = exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--junit", "j.xml"]));
    assert_eq!(out.code, 1);
    for (path, bytes) in ws.all_files() {
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY), "{} holds the key", path.display());
    }
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));
    let logs = ws.logs();
    assert!(logs.iter().any(|(_, l)| l.to_string().contains("[redacted]")), "the echo is kept, with the key replaced");
}

/// `runner run` started in the background on `count` single-turn scenarios.
fn spawn_run(ws: &Workspace, server: &MockServer, count: usize, extra: &[&str]) -> std::process::Child {
    let scenarios: Vec<String> =
        (1..=count).map(|i| format!("name: k{i:03}\nturns:\n  - user: hello\n  - user: again\n")).collect();
    ws.write("s.yaml", &scenarios.join("---\n"));
    ws.runner(&server.url())
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The only run directory under logs/runs, and its id.
fn run_dir(ws: &Workspace) -> (String, std::path::PathBuf) {
    let dirs: Vec<_> = std::fs::read_dir(ws.path().join("logs/runs")).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1);
    (dirs[0].file_name().to_string_lossy().into_owned(), dirs[0].path())
}

#[test]
fn ctrl_c_keeps_what_finished_and_resume_completes_the_run() {
    let server = MockServer::start(|request| assistant(request).after(Duration::from_millis(150)));
    let ws = Workspace::new();
    let child = spawn_run(&ws, &server, 30, &["-j", "2", "--report", "r.csv"]);
    // Two runs at a time, 300 ms each: about 8 runs finish in the first 1.2 s.
    std::thread::sleep(Duration::from_millis(1200));
    signal(&child, libc::SIGINT);
    let out = crate::outcome(child.wait_with_output().unwrap());
    assert_eq!(out.code, 130, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("interrupted: no new run starts"), "{}", out.stderr);
    let logs = ws.logs();
    let finished = logs.len();
    assert!((2..30).contains(&finished), "{finished} runs finished");
    for (_, log) in &logs {
        assert_eq!(log["status"], "passed", "runs in flight were let finish");
    }
    let rows = ws.csv_rows_of("r.csv");
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "passed").count(),
        finished * 2,
        "a row per turn of every finished run"
    );
    assert_eq!(rows.iter().filter(|r| r["status"] == "not_started").count(), 30 - finished);
    assert!(out.stdout.contains(&format!("result: {finished} of {finished} runs passed")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("not started: {} run(s) (interrupted)", 30 - finished)), "{}", out.stdout);
    let requests_before = server.chat_bodies().len();
    assert_eq!(requests_before, finished * 2, "no run was left half-played");

    let (run_id, _) = run_dir(&ws);
    let resumed = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "-j",
        "8",
        "--report",
        "r.csv",
        "--resume",
        &run_id,
    ]));
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    assert_eq!(server.chat_bodies().len(), 60, "only the runs that had not finished were played");
    assert_eq!(ws.logs().len(), 30);
    let rows = ws.csv_rows_of("r.csv");
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|r| r["status"] == "passed" && r["run_id"] == run_id));
    let runs: BTreeSet<&str> = rows.iter().map(|r| r["scenario"].as_str()).collect();
    assert_eq!(runs.len(), 30);
    assert!(resumed.stdout.contains("result: 30 of 30 runs passed"), "{}", resumed.stdout);

    let unknown = exec(ws.runner(&server.url()).args(["run", "s.yaml", "--resume", "no-such-run"]));
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("--resume no-such-run: no such run under logs/runs"), "{}", unknown.stderr);
}

#[test]
fn a_second_ctrl_c_aborts_the_runs_in_flight() {
    let server = MockServer::start(|request| assistant(request).after(Duration::from_secs(20)));
    let ws = Workspace::new();
    let child = spawn_run(&ws, &server, 4, &["-j", "2"]);
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let started = std::time::Instant::now();
    let out = crate::outcome(child.wait_with_output().unwrap());
    assert!(started.elapsed() < Duration::from_secs(10), "the second Ctrl-C does not wait for the runs");
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(ws.logs().is_empty(), "an aborted run leaves no log");
    let rows = ws.csv_rows();
    let reasons: Vec<&str> = rows.iter().map(|r| r["error"].as_str()).collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["status"] == "not_started"));
    assert_eq!(reasons.iter().filter(|r| r.contains("aborted by a second Ctrl-C")).count(), 2, "{reasons:?}");
}

#[test]
fn kill_9_at_any_moment_leaves_whole_logs_and_whole_rows() {
    // 400 runs of two 25 ms requests, 32 at a time: about 0.7 s in all, killed part way.
    let server = MockServer::start(|request| assistant(request).after(Duration::from_millis(25)));
    let mut interrupted = 0;
    for (round, delay_ms) in [150u64, 300, 450, 600].into_iter().enumerate() {
        let ws = Workspace::new();
        let child = spawn_run(&ws, &server, 400, &["-j", "32", "--report", "r.csv"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(&child, libc::SIGKILL);
        let _ = child.wait_with_output();
        // Every log that exists parses (temporary files are named NAME.json.PID-N.tmp).
        let mut logs = 0;
        if let Ok(dirs) = std::fs::read_dir(ws.path().join("logs/runs")) {
            for file in dirs.flatten().flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten()) {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    let text = std::fs::read_to_string(file.path()).unwrap();
                    let log: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("round {round}: {name} is not whole: {e}"));
                    assert_eq!(log["status"], "passed");
                    logs += 1;
                } else {
                    assert!(name.contains(".json.") && name.ends_with(".tmp"), "{name}");
                }
            }
        }
        // Every row but the last is whole.
        let text = std::fs::read_to_string(ws.path().join("r.csv")).unwrap_or_default();
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
        let width = reader.headers().map_or(0, csv::StringRecord::len);
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        for (i, row) in rows.iter().enumerate() {
            if i + 1 < rows.len() || text.ends_with('\n') {
                assert_eq!(row.len(), width, "round {round}: row {} is cut: {row:?}", i + 2);
            }
        }
        println!("kill -9 after {delay_ms} ms: {logs} whole logs, {} rows", rows.len());
        if logs < 400 {
            interrupted += 1;
        }
    }
    assert!(interrupted >= 2, "the kills must land while runs are being written");
}

#[test]
fn hostile_scenario_names_stay_inside_the_run_directory() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", "name: \"../../../escaped\\x01\\n.\"\nturns:\n  - user: hello\n---\nname: \"/abs/path\"\nturns:\n  - user: hello\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let ws = &out.ws;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, dir) = run_dir(ws);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["_.__.__.__escaped__.__openai_gpt-4o-mini__1.json", "_abs_path__openai_gpt-4o-mini__1.json"]);
    let everything: Vec<_> = ws.all_files().into_iter().map(|(p, _)| p).collect();
    assert!(everything.iter().all(|p| p.starts_with(ws.path())));
    assert!(!ws.path().parent().unwrap().join("escaped").exists());
}
