//! `runner chat` and `runner ask` through the binary, against the test server streaming.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::server::{MockServer, api_error, as_stream};
use crate::{KEY, Outcome, Workspace, exec, outcome};

fn assistant(request: &crate::server::Request) -> crate::server::Reply {
    as_stream(request, crate::run::assistant(request))
}

/// Runs `command` with `stdin` piped in.
fn piped(command: &mut Command, stdin: &str) -> Outcome {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    outcome(child.wait_with_output().unwrap())
}

#[test]
fn piped_chat_streams_calls_tools_and_sums_usage() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    let out =
        piped(ws.runner(&server.url()).args(["chat", "-m", "openai:gpt-4o-mini"]), "reverse apple\nhello\nquit\n");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("You: reverse apple\nAssistant: Tool said: {\"result\":\"elppa\"}\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Assistant: Hello there!\n"), "{}", out.stdout);
    // Server usage: 20 + 40 (tool round and answer) + 11 input, 8 + 10 + 3 output.
    assert!(out.stdout.contains("input tokens: 71\noutput tokens: 21\ntotal tokens: 92\n"), "{}", out.stdout);
    let cost = (71.0 * 0.15 + 21.0 * 0.60) / 1e6;
    assert!(out.stdout.contains(&format!("total cost: ${cost:.6}")), "{}", out.stdout);

    let bodies = server.chat_bodies();
    assert!(bodies.iter().all(|b| b["stream"] == true && b["stream_options"]["include_usage"] == true));
    // The call was put together from its streamed pieces and answered by id.
    assert_eq!(bodies[1]["messages"][1]["tool_calls"][0]["function"]["arguments"], "{\"text\":\"apple\"}");
    assert_eq!(bodies[1]["messages"][2]["tool_call_id"], "call_rev");
    // The second turn carries the first one.
    assert_eq!(bodies[2]["messages"].as_array().unwrap().len(), 5);

    let logs = ws.conversation_logs();
    assert_eq!(logs.len(), 1);
    let log = &logs[0];
    assert_eq!(log["model"]["name"], "gpt-4o-mini");
    assert_eq!(log["messages"].as_array().unwrap().len(), 6);
    let call = &log["turns"][0]["tool_calls"][0];
    assert_eq!(
        (call["name"].as_str(), &call["arguments"], &call["result"]),
        (Some("reverse_text"), &json!({"text": "apple"}), &json!({"result": "elppa"}))
    );
    assert!(call["duration_ms"].is_u64());
    assert_eq!(log["usage"]["total_tokens"], 92);
    assert_eq!(log["turns"][0]["requests"].as_array().unwrap().len(), 2);
    assert!(!serde_json::to_string(log).unwrap().contains(KEY));
}

#[test]
fn saved_chat_replays_with_runner_run() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    let out = piped(
        ws.runner(&server.url()).args(["chat", "-m", "openai:gpt-4o-mini"]),
        "add and reverse\n/save saved.yaml\nexit\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let saved = std::fs::read_to_string(ws.path().join("saved.yaml")).unwrap();
    assert!(saved.contains("add_numbers") && saved.contains("reverse_text"), "{saved}");
    let out = exec(ws.runner(&server.url()).args(["check", "saved.yaml"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = exec(ws.runner(&server.url()).args(["run", "saved.yaml"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (_, log) = ws.logs().remove(0);
    let calls = log["turns"][0]["tool_calls"].as_array().unwrap();
    assert!(calls.iter().all(|c| c["pinned"] == true), "results come from the saved tool_results");
    assert_eq!(log["turns"][0]["checks"][0]["check"], "tool_calls");
    assert_eq!(log["turns"][0]["checks"][0]["passed"], true);
}

#[test]
fn ask_takes_the_argument_stdin_or_both_and_prints_only_the_answer() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    let out = exec(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini", "hello"]).stdin(Stdio::null()));
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello there!\n"), "{}", out.stderr);
    assert!(out.stderr.contains("11 input + 3 output = 14 tokens"), "{}", out.stderr);

    let out = piped(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini"]), "hello\n");
    assert_eq!(out.stdout, "Hello there!\n");

    let out = piped(
        ws.runner(&server.url()).args(["ask", "-q", "-m", "openai:gpt-4o-mini", "summarise this"]),
        "line one\nline two\n",
    );
    assert_eq!(out.stdout, "You said: summarise this\n\nline one\nline two\n");
    assert_eq!(out.stderr, "");
    let last = server.chat_bodies().pop().unwrap();
    assert_eq!(last["messages"][0]["content"], "summarise this\n\nline one\nline two");

    let out = piped(ws.runner(&server.url()).args(["ask", "--json", "-m", "openai:gpt-4o-mini"]), "reverse apple");
    assert_eq!(out.code, 0);
    // The same record as a run's log: a run without a scenario.
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(record["scenario"], Value::Null);
    assert_eq!(record["status"], "passed");
    assert_eq!(record["model"]["name"], "gpt-4o-mini");
    assert_eq!(record["turns"][0]["reply"], "Tool said: {\"result\":\"elppa\"}");
    assert_eq!(record["turns"][0]["tool_calls"][0]["name"], "reverse_text");
    assert_eq!(record["usage"]["total_tokens"], 78);
    assert_eq!(record["cost"]["unpriced"], false);
}

#[test]
fn ask_errors_go_to_stderr_with_a_non_zero_exit() {
    let server = MockServer::start(|_| api_error(500, "down for maintenance"));
    let ws = Workspace::new();
    let out = exec(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini", "hello"]).stdin(Stdio::null()));
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("HTTP 500") && out.stderr.contains("down for maintenance"), "{}", out.stderr);

    let out = exec(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini"]).stdin(Stdio::null()));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("nothing to ask"), "{}", out.stderr);
}

#[test]
fn a_stream_without_done_is_an_error() {
    let server = MockServer::start(|request| {
        let full = as_stream(request, crate::server::text("partial answer", 5, 2));
        let text = String::from_utf8(full.body).unwrap().replace("data: [DONE]\n\n", "");
        crate::server::Reply::bytes(200, text.into_bytes())
    });
    let ws = Workspace::new();
    let out = exec(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini", "hello"]).stdin(Stdio::null()));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("the stream ended before [DONE]"), "{}", out.stderr);
}

#[test]
fn each_chat_turn_records_the_model_that_played_it() {
    let run = crate::Test::new()
        .server(assistant)
        .args(["chat", "-m", "openai:gpt-4o-mini"])
        .stdin("hello\n/model openai:gpt-4.1-nano\nhello\n/save s.yaml\nquit\n")
        .run();
    run.success();
    let log = &run.ws.conversation_logs()[0];
    assert_eq!(log["turns"][0]["model"], json!({"provider": "openai", "name": "gpt-4o-mini"}));
    assert_eq!(log["turns"][1]["model"], json!({"provider": "openai", "name": "gpt-4.1-nano"}));
    let bodies = run.server().chat_bodies();
    assert_eq!((bodies[0]["model"].as_str(), bodies[1]["model"].as_str()), (Some("gpt-4o-mini"), Some("gpt-4.1-nano")));
    // The saved scenario names the model of its first turn, not the last one switched to.
    let saved = std::fs::read_to_string(run.path().join("s.yaml")).unwrap();
    assert!(saved.contains("model: openai:gpt-4o-mini"), "{saved}");
}

#[test]
fn chat_shows_each_tool_call_and_its_error_on_stderr_and_ask_with_v() {
    let server = MockServer::start(|request| {
        if request.last_user() == "broken call" && request.last_message()["role"] == "user" {
            return as_stream(request, crate::server::tool_calls(&[("call_b", "reverse_text", json!({}))], 5, 5));
        }
        assistant(request)
    });
    let ws = Workspace::new();
    let out = piped(
        ws.runner(&server.url()).args(["chat", "-m", "openai:gpt-4o-mini"]),
        "reverse apple\nbroken call\nquit\n",
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("[tool] reverse_text({\"text\":\"apple\"}) -> {\"result\":\"elppa\"}"),
        "{}",
        out.stderr
    );
    let failed = out
        .stderr
        .lines()
        .find(|l| l.contains("[tool] reverse_text({}) failed: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(failed.contains("text"), "the error names what is missing: {failed}");
    // Standard output stays the conversation.
    assert!(!out.stdout.contains("[tool]"), "{}", out.stdout);

    let quiet = exec(ws.runner(&server.url()).args(["ask", "-m", "openai:gpt-4o-mini", "reverse apple"]));
    assert!(!quiet.stderr.contains("[tool]"), "{}", quiet.stderr);
    let shown = exec(ws.runner(&server.url()).args(["-v", "ask", "-m", "openai:gpt-4o-mini", "reverse apple"]));
    assert!(shown.stderr.contains("[tool] reverse_text({\"text\":\"apple\"}) -> "), "{}", shown.stderr);
    assert_eq!(shown.stdout, "Tool said: {\"result\":\"elppa\"}\n");
}
