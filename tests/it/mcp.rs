//! MCP tools: a real server this project did not write (`@modelcontextprotocol/server-everything`,
//! over stdio and streamable HTTP) and a test server built with rmcp for the failures (one
//! that cannot start, starts slowly, crashes mid-call, lacks a tool); servers per run and
//! shared; every started server ended, Ctrl-C included.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::declared::model;
use crate::server::MockServer;
use crate::{Ran, Test, Workspace, pids, running, signal, test_server, wait_for};

/// server-everything's entry point, installed by `.ci/run` (`npm install --prefix target/npm`).
fn everything() -> String {
    let path = std::env::var("RUNNER_TEST_MCP_EVERYTHING").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: install it as .ci/run does (npm install --prefix target/npm @modelcontextprotocol/server-everything)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A scenario offering `entry` (the YAML of one `mcp:` tools entry, indented under `tools:`)
/// with one turn per user line.
fn scenario(entry: &str, users: &[&str]) -> String {
    let turns: String = users.iter().map(|user| format!("  - user: '{user}'\n")).collect();
    format!("name: s\ntools:\n{entry}\nturns:\n{turns}")
}

fn run(yaml: &str, args: &[&str]) -> Ran {
    Test::new().server(model).file("s.yaml", yaml).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"]).args(args).run()
}

fn calls(log: &Value) -> Vec<Value> {
    log["turns"].as_array().unwrap().iter().flat_map(|turn| turn["tool_calls"].as_array().unwrap().clone()).collect()
}

fn all_ended(ws: &Workspace) {
    let pids = pids(ws);
    assert!(!pids.is_empty(), "the server started");
    wait_for(|| pids.iter().all(|&pid| !running(pid)));
}

#[test]
fn a_real_server_over_stdio_answers_the_tools_include_picks() {
    let entry = format!("  - mcp:\n      command: [node, '{}', stdio]\n      include: [echo, get-sum]", everything());
    let ran =
        run(&scenario(&entry, &[r#"call echo {"message": "hello there"}"#, r#"call get-sum {"a": 2, "b": 3.5}"#]), &[]);
    ran.success();
    let (_, log) = &ran.logs()[0];
    let calls = calls(log);
    assert_eq!(calls[0]["result"], "Echo: hello there", "{}", calls[0]);
    assert_eq!(calls[0]["source"], "mcp");
    assert!(calls[1]["result"].as_str().unwrap().contains("5.5"), "{}", calls[1]);
    // Only the included tools were offered, with the schemas the server gave.
    let offered = &ran.server().chat_bodies()[0]["tools"];
    let names: Vec<&str> =
        offered.as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "get-sum"]);
    assert_eq!(offered[1]["function"]["parameters"]["properties"]["a"]["type"], "number");
    // The content blocks became the tool message.
    let messages = log["messages"].as_array().unwrap();
    assert!(messages.iter().any(|m| m["role"] == "tool" && m["content"] == "Echo: hello there"));
    // Its stderr is in the log.
    let servers = log["mcp_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    assert!(servers[0]["server"].as_str().unwrap().starts_with("node "), "{}", servers[0]);
    assert!(servers[0]["stderr"].as_str().unwrap().contains("STDIO"), "{}", servers[0]);
}

#[test]
fn a_real_server_over_streamable_http() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut node = std::process::Command::new("node")
        .args([&everything(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let entry = format!("  - mcp:\n      url: http://127.0.0.1:{port}/mcp\n      include: [echo]");
    let ran = run(&scenario(&entry, &[r#"call echo {"message": "over http"}"#]), &[]);
    let _ = node.kill();
    let _ = node.wait();
    ran.success();
    let call = &calls(&ran.logs()[0].1)[0];
    assert_eq!((call["result"].as_str(), call["source"].as_str()), (Some("Echo: over http"), Some("mcp")), "{call}");
}

#[test]
fn a_server_per_run_keeps_no_state_between_runs_and_a_shared_one_does() {
    let entry = |shared: bool| {
        format!(
            "  - mcp:\n      command: ['{}', --pid-file, pids.txt, --with-child]\n      shared: {shared}",
            test_server()
        )
    };
    let counts = |ran: &Ran| -> Vec<String> {
        let mut counts: Vec<String> =
            ran.logs().iter().map(|(_, log)| calls(log)[0]["result"].as_str().unwrap().to_owned()).collect();
        counts.sort();
        counts
    };
    let per_run = run(&scenario(&entry(false), &["call count {}"]), &["--repeat", "3", "-j", "3"]);
    per_run.success();
    assert_eq!(counts(&per_run), ["1", "1", "1"], "each run counts on a server of its own");
    assert_eq!(pids(&per_run).len(), 6, "three servers, each with a child");
    all_ended(&per_run);
    assert!(per_run.logs()[0].1["mcp_servers"][0]["stderr"].as_str().unwrap().contains("test server: started"));
    assert_eq!(per_run.logs()[0].1["mcp_servers"][0]["shared"], false);

    let shared = run(&scenario(&entry(true), &["call count {}"]), &["--repeat", "3", "-j", "3"]);
    shared.success();
    assert_eq!(counts(&shared), ["1", "2", "3"], "one server counted every run's call");
    assert_eq!(pids(&shared).len(), 2);
    all_ended(&shared);
    assert_eq!(shared.logs()[0].1["mcp_servers"][0]["shared"], true);
}

#[test]
fn a_server_that_cannot_start_fails_only_the_runs_that_need_it() {
    let yaml = |flags: &str, extra: &str| {
        scenario(
            &format!("  - mcp:\n      command: ['{}', --pid-file, pids.txt{flags}]{extra}", test_server()),
            &["call echo {\"message\": \"x\"}"],
        )
    };
    let fine = "name: fine\ntools: [reverse_text]\nturns:\n  - user: 'call reverse_text {\"text\": \"abc\"}'\n";
    let ran = Test::new()
        .server(model)
        .file("s.yaml", &yaml(", --exit-at-start", ""))
        .file("fine.yaml", fine)
        .args(["run", "s.yaml", "fine.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    ran.code(1);
    let logs = ran.logs();
    let broken = logs.iter().find(|(_, log)| log["scenario"]["name"] == "s").unwrap();
    let error = broken.1["error"].as_str().unwrap();
    assert!(error.contains("could not start") && error.contains("cannot open the orders database"), "{error}");
    assert_eq!(broken.1["status"], "error");
    let other = logs.iter().find(|(_, log)| log["scenario"]["name"] == "fine").unwrap();
    assert_eq!(other.1["status"], "passed", "the other scenario went on");
    assert_eq!(ran.server().chat_bodies().len(), 2, "nothing was sent for the run whose server did not start");

    // Slower than its start-up time-out: the run fails with that reason; the server is ended.
    let started = Instant::now();
    let ran = run(&yaml(", --slow-start, '30', --with-child", "\n      startup_timeout_secs: 1"), &[]);
    ran.code(1);
    assert!(started.elapsed() < Duration::from_secs(20));
    let error = ran.logs()[0].1["error"].as_str().unwrap().to_owned();
    assert!(error.contains("did not start within 1s"), "{error}");
    all_ended(&ran);

    // A tool named in `include` that the server does not list.
    let ran = run(&yaml("", "\n      include: [echo, refund]"), &[]);
    ran.code(1);
    let error = ran.logs()[0].1["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("does not list tool `refund` named in `include`") && error.contains("echo, add, count"),
        "{error}"
    );
    all_ended(&ran);
}

#[test]
fn failing_and_crashing_calls_are_tool_errors_and_the_run_goes_on() {
    let entry = format!("  - mcp:\n      command: ['{}', --pid-file, pids.txt]\n      timeout_secs: 1", test_server());
    let ran = run(
        &scenario(
            &entry,
            &["call fail {}", r#"call sleep {"secs": 20}"#, "call crash {}", r#"call echo {"message": "after"}"#],
        ),
        &[],
    );
    ran.success();
    let (_, log) = &ran.logs()[0];
    let calls = calls(log);
    assert_eq!(calls[0]["error"], "the order service is down", "an isError result: {}", calls[0]);
    assert!(calls[1]["error"].as_str().unwrap().contains("did not answer `sleep` within 1s"), "{}", calls[1]);
    let crash = calls[2]["error"].as_str().unwrap();
    assert!(crash.contains("crashing on purpose"), "the error carries the server's last words: {crash}");
    assert!(calls[3]["error"].is_string(), "the crashed server answers no more: {}", calls[3]);
    // Every turn reached the model with its tool's error, and the model answered.
    assert_eq!(log["turns"].as_array().unwrap().len(), 4);
    assert!(log["mcp_servers"][0]["stderr"].as_str().unwrap().contains("crashing on purpose"));
    all_ended(&ran);
}

#[test]
fn checks_may_name_tools_the_server_lists_and_arguments_are_validated() {
    let entry = format!("  - mcp:\n      command: ['{}']", test_server());
    let yaml = format!(
        "{}\n    expect:\n      tool_calls: [{{name: add, arguments: {{a: 2}}}}]\n      not_called: [crash]\n",
        scenario(&entry, &[r#"call add {"a": 2, "b": "three"}"#]).trim_end()
    );
    let ran = run(&yaml, &[]);
    ran.success();
    let call = &calls(&ran.logs()[0].1)[0];
    // The server's schema says `b` is a number: the call never reached it.
    assert!(call["error"].as_str().unwrap().contains("/b"), "{call}");
    assert_eq!(ran.logs()[0].1["turns"][0]["checks"][0]["passed"], true);
}

#[test]
fn a_second_ctrl_c_ends_the_servers_of_the_runs_it_aborts() {
    let server = MockServer::start(model);
    let ws = Workspace::new();
    let entry = format!("  - mcp:\n      command: ['{}', --pid-file, pids.txt, --with-child]", test_server());
    ws.write("s.yaml", &scenario(&entry, &[r#"call sleep {"secs": 25}"#]));
    let child = ws
        .runner(&server.url())
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--repeat", "2", "-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| pids(&ws).len() == 4 && server.chat_bodies().len() == 2);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let out = crate::outcome(child.wait_with_output().unwrap());
    assert_eq!(out.code, 130, "{}", out.stderr);
    all_ended(&ws);
}

#[test]
fn mcp_entries_with_problems_are_load_errors() {
    for (entry, expected) in [
        ("  - mcp: {command: 'node server.js'}", "a list of strings"),
        ("  - mcp: {command: [node], url: 'http://127.0.0.1:1/mcp'}", "found both"),
        ("  - mcp: {command: [node], shared: maybe}", "shared"),
        ("  - mcp: {command: [node]}\n    name: x", "unknown field `name`"),
    ] {
        let ran = Test::new()
            .file("s.yaml", &scenario(entry, &["hi"]))
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
            .run();
        ran.code(2);
        assert!(ran.stderr.contains("s.yaml:3:5") && ran.stderr.contains(expected), "{entry}: {}", ran.stderr);
    }
}

#[test]
fn runner_tools_starts_the_servers_to_list_their_tools() {
    let entry = format!(
        "  - mcp:\n      command: ['{}', --pid-file, pids.txt, --with-child]\n      include: [echo, add]",
        test_server()
    );
    let ran = Test::new().file("s.yaml", &scenario(&entry, &["hi"])).args(["tools", "s.yaml"]).run();
    ran.success();
    let row = |name: &str| ran.stdout.lines().find(|l| l.starts_with(&format!("{name} "))).map(str::to_owned);
    let echo = row("echo").unwrap_or_else(|| panic!("{}", ran.stdout));
    assert!(echo.contains(" mcp, s in s.yaml ") && echo.ends_with("Echoes the message back."), "{echo}");
    assert!(row("add").is_some_and(|l| l.contains(" mcp, s in s.yaml ")), "{}", ran.stdout);
    assert!(row("count").is_none(), "only the included tools: {}", ran.stdout);
    all_ended(&ran);
    // --json: every tool with its whole schema.
    let json = Test::new().file("s.yaml", &scenario(&entry, &["hi"])).args(["tools", "--json", "s.yaml"]).run();
    json.success();
    let listed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let echo = listed.as_array().unwrap().iter().find(|t| t["name"] == "echo").unwrap();
    assert_eq!((echo["source"].as_str(), echo["declared_by"].as_str()), (Some("mcp"), Some("s in s.yaml")));
    assert_eq!(echo["parameters"]["type"], "object", "{echo}");
    all_ended(&json);
}

#[test]
fn illegal_names_are_mapped_collisions_refused_and_names_printed_inert() {
    // Names no model API takes go out mapped; the call reaches the server by its own name and
    // the log keeps it.
    let entry = format!("  - mcp:\n      command: ['{}', --odd-names]", test_server());
    let ran = run(&scenario(&entry, &[r#"call math_add {"a": 2, "b": 3}"#]), &[]);
    ran.success();
    let offered: Vec<String> = ran.server().chat_bodies()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    for name in &offered {
        assert!(
            (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name}"
        );
    }
    assert!(
        offered.contains(&"math_add".to_owned())
            && offered.contains(&"fs_read".to_owned())
            && offered.contains(&"fs_read_2".to_owned()),
        "{offered:?}"
    );
    let call = &calls(&ran.logs()[0].1)[0];
    assert_eq!(
        (call["name"].as_str(), call["listed_as"].as_str(), call["result"].as_str()),
        (Some("math_add"), Some("math.add"), Some("5")),
        "{call}"
    );
    // `runner tools` shows the escape sequences escaped.
    let tools = Test::new().file("s.yaml", &scenario(&entry, &["hi"])).args(["tools", "s.yaml"]).run();
    tools.success();
    assert!(!tools.stdout.contains('\u{1b}'), "{:?}", tools.stdout);
    assert!(
        tools
            .stdout
            .lines()
            .any(|l| l.starts_with("math_add ") && l.contains(" mcp (listed as `math.add`), s in s.yaml")),
        "{}",
        tools.stdout
    );
    // Two servers listing one name: the run is an error, nothing is sent.
    let two = format!(
        "  - mcp:\n      command: ['{}']\n      include: [echo]\n  - mcp:\n      command: ['{}', --only-echo]",
        test_server(),
        test_server()
    );
    let ran = run(&scenario(&two, &["hi"]), &[]);
    ran.code(1);
    let error = ran.logs()[0].1["error"].as_str().unwrap().to_owned();
    assert!(error.contains("two MCP servers list a tool named `echo`"), "{error}");
    assert!(ran.server().chat_bodies().is_empty());
}

#[test]
fn results_are_capped_and_mixed_content_is_text_with_placeholders() {
    let entry = format!("  - mcp:\n      command: ['{}']\n      include: [chart, big]", test_server());
    let ran = run(
        &scenario(&entry, &["call chart {}", r#"call big {"bytes": 15000000}"#, r#"call big {"bytes": 20000000}"#]),
        &[],
    );
    ran.success();
    let calls = calls(&ran.logs()[0].1);
    assert_eq!(calls[0]["result"], "Sales by month:\n[image: image/png, 6 KiB]\n(up 4%)", "{}", calls[0]);
    assert!(calls[1]["error"].as_str().unwrap().contains("past the 1 MiB a tool result may be"), "{}", calls[1]);
    // Past what the SDK's transport takes in one message: said, not a time-out.
    let error = calls[2]["error"].as_str().unwrap();
    assert!(error.contains("sent a message longer than 16 MiB while `big` ran"), "{error}");
    assert!(calls[2]["duration_ms"].as_u64().unwrap() < 20_000, "found before the 30 s time-out: {}", calls[2]);
    let log_size = std::fs::metadata(ran.path().join("logs/runs"))
        .map(|_| ran.all_files().iter().map(|(_, b)| b.len()).sum::<usize>())
        .unwrap();
    assert!(log_size < 1 << 20, "the workspace holds {log_size} bytes");
}

#[test]
fn an_unreachable_or_wrong_server_is_said_in_words() {
    let not_mcp = MockServer::start(|_| crate::server::Reply::bytes(404, b"Not Found".to_vec()));
    for (url, expected) in
        [("http://127.0.0.1:9/mcp".to_owned(), "connection refused"), (format!("{}/wrong", not_mcp.url()), "404")]
    {
        let entry = format!("  - mcp:\n      url: '{url}'\n      startup_timeout_secs: 5");
        let ran = run(&scenario(&entry, &["hi"]), &[]);
        ran.code(1);
        let error = ran.logs()[0].1["error"].as_str().unwrap().to_owned();
        assert!(error.contains(expected), "{url}: {error}");
        for debug in ["Error {", "kind:", "Some(", "source:", "StreamableHttpError"] {
            assert!(!error.contains(debug), "{url}: Rust's debug text: {error}");
        }
        assert!(
            !ran.stderr.contains("ERROR") && !ran.stderr.contains("rmcp"),
            "the library's own log lines: {}",
            ran.stderr
        );
    }
}
