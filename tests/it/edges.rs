//! The edges of the machine: signals, pipes, odd files, a disk that stops taking writes, two
//! runners at once, out-of-range flags.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::run::assistant;
use crate::server::MockServer;
use crate::{Test, Workspace, read_csv, signal, wait_for};

/// `count` one-turn scenarios named s1..sN in one file.
fn scenarios(count: usize) -> String {
    (1..=count).map(|i| format!("name: s{i}\nturns:\n  - user: hello\n")).collect::<Vec<_>>().join("---\n")
}

/// A server that answers `hello` after `delay`.
fn slow(delay: Duration) -> MockServer {
    MockServer::start(move |request| assistant(request).after(delay))
}

fn spawn(ws: &Workspace, server: &MockServer, args: &[&str]) -> std::process::Child {
    ws.runner(&server.url())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn logs_written(ws: &Workspace) -> usize {
    std::fs::read_dir(ws.path().join("logs/runs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|run| std::fs::read_dir(run.path()).unwrap().count())
        .sum()
}

#[test]
fn sigterm_is_handled_like_the_first_ctrl_c() {
    let server = slow(Duration::from_millis(300));
    let ws = Workspace::new();
    ws.write("s.yaml", &scenarios(8));
    let child = spawn(&ws, &server, &["run", "s.yaml", "-m", "openai:gpt-4o-mini", "-j", "1", "--report", "r.csv"]);
    wait_for(|| logs_written(&ws) >= 1);
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(143), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("not started:") && stdout.contains("resume:"), "{stdout}");
    let rows = read_csv(&ws.path().join("r.csv"));
    assert_eq!(rows.len(), 8, "a row for every run, finished or not");
    assert!(rows.iter().any(|r| r["status"] == "not_started"));
    assert!(ws.path().join("r.summary.csv").is_file());
}

/// `runner chat` started, with `hello` typed; its standard input stays open.
fn chat_saying_hello(ws: &Workspace, server: &MockServer) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = spawn(ws, server, &["chat", "-m", "openai:gpt-4o-mini"]);
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"hello\n").unwrap();
    (child, stdin)
}

#[test]
fn chat_saves_its_conversation_on_sigterm() {
    let server = MockServer::start(|request| crate::server::as_stream(request, assistant(request)));
    let ws = Workspace::new();
    let (child, stdin) = chat_saying_hello(&ws, &server);
    wait_for(|| server.chat_bodies().len() == 1);
    // The turn ends; the chat waits for the next line.
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(output.status.code(), Some(143), "{}", String::from_utf8_lossy(&output.stderr));
    let log = ws.conversation_log();
    assert_eq!(log["turns"][0]["reply"], "Hello there!");
}

#[test]
fn a_disk_that_stops_taking_logs_stops_the_batch_and_names_every_lost_log() {
    let server = slow(Duration::from_millis(150));
    let ws = Workspace::new();
    ws.write("s.yaml", &scenarios(10));
    let child = spawn(&ws, &server, &["run", "s.yaml", "-m", "openai:gpt-4o-mini", "-j", "2", "--report", "r.csv"]);
    wait_for(|| logs_written(&ws) >= 1);
    // The run directory goes away: every later log write fails.
    let run_dir = std::fs::read_dir(ws.path().join("logs/runs")).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_dir_all(&run_dir).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lost = stderr.lines().filter(|l| l.starts_with("error: cannot write") && l.contains(".json")).count();
    assert!(lost >= 1, "{stderr}");
    // It stopped starting runs: at most the runs in flight finished after the failure.
    assert!(server.chat_bodies().len() <= 1 + 2 + lost, "{} requests", server.chat_bodies().len());
    let rows = read_csv(&ws.path().join("r.csv"));
    assert!(
        rows.iter().any(|r| r["status"] == "not_started" && r["error"].contains("could not be written")),
        "{rows:?}"
    );
}

#[test]
fn two_runners_on_one_report_the_second_is_refused() {
    let server = slow(Duration::from_millis(400));
    let ws = Workspace::new();
    ws.write("s.yaml", &scenarios(3));
    let first = spawn(&ws, &server, &["run", "s.yaml", "-m", "openai:gpt-4o-mini", "-j", "1", "--report", "same.csv"]);
    wait_for(|| !server.chat_bodies().is_empty());
    let second = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(ws.path())
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", crate::KEY)
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--report", "same.csv"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(String::from_utf8_lossy(&second.stderr).contains("being written by another runner"));
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0));
    let rows = read_csv(&ws.path().join("same.csv"));
    assert_eq!(rows.len(), 3, "the first runner's report is whole");
}

#[test]
fn a_closed_stdout_keeps_the_batchs_exit_code() {
    let ws = Workspace::new();
    let server = MockServer::start(assistant);
    ws.write("s.yaml", "name: f\nturns:\n  - user: hello\n    expect:\n      contains: goodbye\n");
    let out = crate::with_closed_stdout(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"]));
    assert_eq!(out.code, 1, "the failed check still fails the batch: {}", out.stderr);
    assert_eq!(out.stderr, "");
}

#[test]
fn out_of_range_timeouts_are_usage_errors() {
    for args in [
        &["run", "s.yaml", "--timeout", "1e20"][..],
        &["ask", "--timeout", "1e20", "hi"],
        &["run", "s.yaml", "--timeout", "0"],
    ] {
        let run = Test::new().file("s.yaml", "turns:\n  - user: hi\n").args(args).run();
        run.code(2);
        assert!(run.stderr.contains("timeout must be more than 0"), "{}", run.stderr);
    }
    let run = Test::new()
        .file("runner.yaml", "timeout_secs: 1e20\n")
        .file("s.yaml", "turns:\n  - user: hi\n")
        .args(["run", "s.yaml"])
        .run();
    run.code(2);
}

#[test]
fn a_bad_step_summary_path_is_a_warning() {
    let run = Test::new()
        .server(assistant)
        .env("GITHUB_STEP_SUMMARY", "/nonexistent/dir/summary.md")
        .file("s.yaml", "turns:\n  - user: hello\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    assert!(run.stderr.contains("warning: cannot open GITHUB_STEP_SUMMARY"), "{}", run.stderr);
    assert!(run.stdout.contains("report: "), "{}", run.stdout);
}

#[test]
fn links_loops_and_fifos_among_scenario_files() {
    let ws = Workspace::new();
    ws.write("dir/a.yaml", "turns:\n  - user: hi\n");
    std::os::unix::fs::symlink(".", ws.path().join("dir/self")).unwrap();
    let fifo = std::ffi::CString::new(ws.path().join("dir/pipe.yaml").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path.
    #[allow(unsafe_code)]
    let made = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
    assert_eq!(made, 0);
    let started = std::time::Instant::now();
    let out = crate::exec(ws.runner("http://127.0.0.1:9").args(["check", "dir"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1 scenario(s) in 1 file(s)"), "{}", out.stdout);
    // Named directly, a FIFO is refused rather than waited on.
    let out = crate::exec(ws.runner("http://127.0.0.1:9").args(["check", "dir/pipe.yaml"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn names_that_would_share_a_log_file_are_refused() {
    let run = Test::new()
        .file("s.yaml", "name: a/b\nturns:\n  - user: hi\n---\nname: a:b\nturns:\n  - user: hi\n")
        .args(["check", "s.yaml"])
        .run();
    run.code(2);
    assert!(run.stderr.contains("make the same log file name `a_b`"), "{}", run.stderr);
    let run = Test::new()
        .server(assistant)
        .file("s.yaml", "turns:\n  - user: hello\n")
        .args(["run", "s.yaml", "-m", "openai:x:y", "-m", "openai:x_y"])
        .run();
    run.code(2);
    assert!(run.stderr.contains("make the same log file name"), "{}", run.stderr);
}

#[test]
fn runner_report_skips_summary_files_a_glob_also_matches() {
    let first = Test::new()
        .server(assistant)
        .file("s.yaml", "turns:\n  - user: hello\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--report", "reports/shard-1.csv"])
        .run();
    first.success();
    let out = crate::exec(first.runner("http://127.0.0.1:9").args([
        "report",
        "reports/shard-1.csv",
        "reports/shard-1.summary.csv",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("skipped reports/shard-1.summary.csv"), "{}", out.stderr);
    assert!(out.stdout.contains("result: 1 of 1 runs passed"), "{}", out.stdout);
}

#[test]
fn a_huge_matrix_is_never_built() {
    // 10,000 scenarios x --repeat 1000: ten million runs, counted but never materialised.
    let mut test = Test::new();
    for file in 0..10 {
        let body: Vec<String> =
            (0..1000).map(|i| format!("name: f{file}s{i}\nmax_tokens: 5\nturns:\n  - user: hi\n")).collect();
        test = test.file(&format!("many/f{file}.yaml"), &body.join("---\n"));
    }
    let started = std::time::Instant::now();
    let run = test.args(["run", "many", "-m", "openai:gpt-4o-mini", "--repeat", "1000", "--dry-run"]).run();
    run.success();
    assert!(
        run.stdout.starts_with("dry run: 10000000 run(s) of 10000 scenario(s) on 1 model(s)"),
        "{}",
        &run.stdout[..200.min(run.stdout.len())]
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn rough_edges_say_what_is_wrong() {
    // A near miss of a known model: a warning, and the run still goes to the server.
    let run = Test::new()
        .server(assistant)
        .file("s.yaml", "turns:\n  - user: hello\n")
        .args(["run", "s.yaml", "-m", "openai:gpt4o-mini"])
        .run();
    run.success();
    assert!(run.stderr.contains("did you mean `openai:gpt-4o-mini`?"), "{}", run.stderr);
    // A base URL without a scheme: said before anything is sent.
    let run = Test::new()
        .env("OPENAI_BASE_URL", " localhost:8080/v1")
        .file("s.yaml", "turns:\n  - user: hello\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.code(2);
    assert!(run.stderr.contains("is not an http:// or https:// URL"), "{}", run.stderr);
    // A limit breached: a sentence, not a debug dump.
    let docs: Vec<&str> = (0..10_001).map(|_| "turns:\n  - user: hi\n").collect();
    let run = Test::new().file("docs.yaml", &docs.join("---\n")).args(["check", "docs.yaml"]).run();
    run.code(2);
    assert!(run.stderr.contains("this file goes past it: 10001 documents"), "{}", run.stderr);
    assert!(!run.stderr.contains('{'), "{}", run.stderr);
    // /modelx is not /model x; an unwritable --logs-dir is said at once.
    let run = Test::new().server(assistant).args(["chat", "-m", "openai:gpt-4o-mini"]).stdin("/modelx\nquit\n").run();
    run.success();
    assert!(run.stderr.contains("unknown command /modelx"), "{}", run.stderr);
    let run = Test::new()
        .file("blocked", "a file where a directory should be")
        .args(["chat", "-m", "openai:gpt-4o-mini", "--logs-dir", "blocked/conversations"])
        .stdin("hello\nquit\n")
        .run();
    run.code(2);
    assert!(run.stderr.contains("cannot save conversations under blocked/conversations"), "{}", run.stderr);
}

#[test]
fn a_chat_answer_stopped_with_ctrl_c_still_counts() {
    let server = MockServer::start(|request| {
        crate::server::as_stream(request, assistant(request)).after(Duration::from_secs(3))
    });
    let ws = Workspace::new();
    let (child, mut stdin) = chat_saying_hello(&ws, &server);
    wait_for(|| server.requests().len() == 1);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut stdin, b"quit\n").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("input tokens: ~"), "the stopped turn is in the totals: {stdout}");
    let log = ws.conversation_log();
    assert_eq!(log["turns"][0]["error"], "answer stopped (Ctrl-C)");
    assert!(log["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(log["messages"][0]["content"], "hello", "the stopped turn's user message stays");
}

#[test]
fn the_timeout_bounds_waits_not_a_stream_that_keeps_coming() {
    // A streamed answer in 8 pieces, one every 400 ms: 3.2 s in all, against --timeout 1.
    let server = MockServer::start(|request| {
        crate::server::as_stream(request, assistant(request))
            .after(Duration::from_millis(400))
            .cut(crate::server::Cut::Drip(8))
    });
    let ws = Workspace::new();
    let out = crate::exec(
        ws.runner(&server.url())
            .args(["ask", "-m", "openai:gpt-4o-mini", "--timeout", "1", "hello"])
            .stdin(Stdio::null()),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "Hello there!\n");
    // A stall longer than the timeout is cut, and says so.
    let stalled = MockServer::start(|request| {
        crate::server::as_stream(request, assistant(request))
            .after(Duration::from_millis(1500))
            .cut(crate::server::Cut::Drip(2))
    });
    ws.write("runner.yaml", "max_retries: 0\n");
    let out = crate::exec(
        ws.runner(&stalled.url())
            .args(["ask", "-m", "openai:gpt-4o-mini", "--timeout", "1", "hello"])
            .stdin(Stdio::null()),
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("stalled"), "{}", out.stderr);
}

#[test]
fn ask_into_a_closed_pipe_ends_quietly() {
    let server = MockServer::start(|request| crate::server::as_stream(request, assistant(request)));
    let ws = Workspace::new();
    let out = crate::with_closed_stdout(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini", "hello"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
}
