//! A hostile Chat Completions server: one route per fault, chosen by the last user message
//! (`fault:NAME`). Each test drives runner into one fault and asserts what must hold: no key
//! anywhere, no corrupted data, errors recorded as errors, nothing unbounded.

use serde_json::{Value, json};

use crate::server::{Reply, Request, as_stream, text, tool_calls};
use crate::{KEY, Ran, Test};

/// A stream made of `events` (each a `data:` value), joined with `end` between lines.
fn stream(events: &[Value], end: &str) -> Reply {
    let mut body = String::new();
    for event in events {
        body.push_str(&format!("data: {event}{end}{end}"));
    }
    body.push_str(&format!("data: [DONE]{end}{end}"));
    Reply::bytes(200, body.into_bytes())
}

fn delta(delta: Value) -> Value {
    json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

fn finish(reason: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

/// The last tool message's content, for the answer after a tool round.
fn tool_result(request: &Request) -> Option<String> {
    let last = request.last_message();
    (last["role"] == "tool").then(|| last["content"].as_str().unwrap_or_default().to_owned())
}

/// The hostile server: a plain reply of a route goes out as a stream when one was asked for.
pub fn hostile(request: &Request) -> Reply {
    let reply = route(request);
    let plain = serde_json::from_slice::<Value>(&reply.body).is_ok_and(|v| v.get("choices").is_some());
    if plain { as_stream(request, reply) } else { reply }
}

/// The routes, one per fault.
fn route(request: &Request) -> Reply {
    let streaming = request.json()["stream"] == true;
    if let Some(result) = tool_result(request) {
        let reply = format!("result: {result}");
        return if streaming {
            stream(&[delta(json!({"content": reply})), finish("stop"), usage(5, 5)], "\n")
        } else {
            text(&reply, 5, 5)
        };
    }
    let user = request.last_user();
    let fault = user.strip_prefix("fault:").unwrap_or(&user);
    match fault {
        // Tool arguments that contain the digits of a short key.
        "short-key" => tool_calls(&[("call_1", "add_numbers", json!({"x": 12, "y": 30}))], 5, 5),
        "short-key-text" => text("some text", 5, 5),
        // The key split across stream pieces.
        "split-key" => {
            let reply = format!("the key is {KEY}, see?");
            let pieces: Vec<Value> =
                reply.as_bytes().chunks(5).map(|c| delta(json!({"content": String::from_utf8_lossy(c)}))).collect();
            stream(&[pieces, vec![finish("stop"), usage(5, 5)]].concat(), "\n")
        }
        // The key in the model's structured values.
        "key-in-call" => {
            let call = json!({"id": format!("call_{KEY}"), "type": "function", "function": {"name": format!("add_{KEY}"), "arguments": format!("{{\"x\": \"{KEY}\"}}")}});
            Reply::json(
                200,
                json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]}, "finish_reason": format!("stop {KEY}")}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
                }),
            )
        }
        // An error body whose 16 KiB cut falls inside the key.
        "long-error" => {
            let body = format!("{}Bearer {KEY} {}", "x".repeat(16 * 1024 - 40), "y".repeat(4096));
            Reply::bytes(400, body.into_bytes())
        }
        // The key echoed with JSON escapes.
        "escaped-key" => {
            let escaped: String = KEY.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
            Reply::bytes(400, format!("{{\"error\": {{\"message\": \"bad key {escaped}\"}}}}").into_bytes())
        }
        // An error inside a stream, before and after some text.
        "stream-error" => {
            stream(&[json!({"error": {"message": "the model is overloaded", "type": "server_error"}})], "\n")
        }
        "stream-error-late" => stream(
            &[delta(json!({"content": "half an ans"})), json!({"error": {"message": "connection to the model lost"}})],
            "\n",
        ),
        // A tool call index far beyond the calls seen.
        "huge-index" => stream(
            &[
                delta(
                    json!({"tool_calls": [{"index": 10_000_000, "id": "call_h", "type": "function", "function": {"name": "add_numbers", "arguments": ""}}]}),
                ),
                delta(json!({"tool_calls": [{"index": 10_000_000, "function": {"arguments": "{\"x\":1,\"y\":2}"}}]})),
                finish("tool_calls"),
                usage(5, 5),
            ],
            "\n",
        ),
        // Server-sent events with bare `\r` line endings and a multi-line `data:` field.
        "bare-cr" => stream(&[delta(json!({"content": "carriage"})), finish("stop"), usage(5, 5)], "\r"),
        "multi-line" => Reply::bytes(
            200,
            b"data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"joined\"}}]}\n\ndata: [DONE]\n\n"
                .to_vec(),
        ),
        // A chunk that is not JSON: the same would come again.
        "bad-chunk" => Reply::bytes(200, b"data: {not json\n\ndata: [DONE]\n\n".to_vec()),
        // Parallel calls without `index`, `tool_calls: null`, names repeated in every piece.
        "no-index" => stream(
            &[
                delta(
                    json!({"tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "add_numbers", "arguments": "{\"x\":1,"}}]}),
                ),
                delta(json!({"tool_calls": [{"function": {"arguments": "\"y\":2}"}}]})),
                delta(
                    json!({"tool_calls": [{"id": "call_b", "type": "function", "function": {"name": "add_numbers", "arguments": "{\"x\":3,\"y\":4}"}}]}),
                ),
                delta(json!({"content": null, "tool_calls": null})),
                finish("tool_calls"),
                usage(5, 5),
            ],
            "\n",
        ),
        "repeated-name" => stream(
            &[
                delta(
                    json!({"tool_calls": [{"index": 0, "id": "call_r", "type": "function", "function": {"name": "reverse_text", "arguments": "{\"text\":"}}]}),
                ),
                delta(
                    json!({"tool_calls": [{"index": 0, "function": {"name": "reverse_text", "arguments": "\"abc\"}"}}]}),
                ),
                finish("tool_calls"),
                usage(5, 5),
            ],
            "\n",
        ),
        // A tool that was never offered, and arguments that are not JSON.
        "unknown-tool" => tool_calls(&[("call_t", "teleport", json!({"to": "Mars"}))], 5, 5),
        "not-json" => Reply::json(
            200,
            json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_n", "type": "function", "function": {"name": "add_numbers", "arguments": "{x: 1"}}
                ]}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
            }),
        ),
        // A server that cannot stream a reply that may call tools: 200 and an empty body.
        "no-streamed-tools" if streaming && request.json()["tools"].is_array() => Reply::bytes(200, Vec::new()),
        "no-streamed-tools" => text("answered without streaming", 5, 5),
        // No usage anywhere.
        "no-usage" => stream(&[delta(json!({"content": "twelve bytes"})), finish("stop")], "\n"),
        other => text(&format!("You said: {other}"), 5, 5),
    }
}

/// `runner ask PROMPT` against the hostile server (streamed).
fn ask(prompt: &str) -> Ran {
    Test::new().server(hostile).args(["ask", "-m", "openai:gpt-4o-mini", prompt]).run()
}

/// `runner run` of a one-turn scenario saying `user`, offering add_numbers and reverse_text.
fn run(user: &str) -> Ran {
    Test::new()
        .server(hostile)
        .file("s.yaml", &format!("name: s\ntools: [add_numbers, reverse_text]\nturns:\n  - user: \"{user}\"\n"))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run()
}

/// Every byte runner left behind or printed, as text.
fn everything(run: &Ran) -> String {
    let mut all = format!("{}\n{}\n", run.stdout, run.stderr);
    for (_, bytes) in run.all_files() {
        all.push_str(&String::from_utf8_lossy(&bytes));
    }
    all
}

#[test]
fn a_short_key_rewrites_nothing() {
    let run = Test::new()
        .server(hostile)
        .env("OPENAI_API_KEY", "1")
        .file("s.yaml", "name: s\ntools: [add_numbers]\nturns:\n  - user: fault:short-key\n    expect:\n      tool_calls: [{name: add_numbers, arguments: {x: 12, y: 30}}]\n      contains: \"42\"\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let (_, log) = &run.logs()[0];
    assert_eq!(log["turns"][0]["tool_calls"][0]["arguments"], json!({"x": 12, "y": 30}));

    let run = Test::new()
        .server(hostile)
        .env("OPENAI_API_KEY", "e")
        .args(["ask", "-m", "openai:gpt-4o-mini", "fault:short-key-text"])
        .run();
    run.success();
    assert_eq!(run.stdout, "some text\n");
}

#[test]
fn a_key_split_across_stream_pieces_never_reaches_the_terminal() {
    let run = ask("fault:split-key");
    run.success();
    assert_eq!(run.stdout, "the key is [redacted], see?\n");
    assert!(!everything(&run).contains(KEY));
}

#[test]
fn a_key_in_ids_names_and_finish_reasons_is_replaced_whole() {
    let run = run("fault:key-in-call");
    run.success();
    let all = everything(&run);
    assert!(!all.contains(KEY), "the key reached an output");
    let (_, log) = &run.logs()[0];
    let call = &log["turns"][0]["tool_calls"][0];
    assert!(call["name"].as_str().unwrap().contains("held the API key"), "{call}");
    // The call is answered as an unknown tool: the run goes on.
    assert!(call["error"].as_str().unwrap().contains("unknown tool"), "{call}");
}

#[test]
fn error_bodies_are_redacted_before_they_are_cut() {
    for fault in ["fault:long-error", "fault:escaped-key"] {
        let run = run(fault);
        run.code(1);
        let all = everything(&run);
        // Not the key, not its first 12 characters, not its escaped spelling.
        assert!(!all.contains(&KEY[..12]), "{fault}: part of the key reached an output");
        assert!(!all.contains("\\u0073\\u006b\\u002d"), "{fault}: the escaped key reached an output");
        let (_, log) = &run.logs()[0];
        assert!(log["error"].as_str().unwrap().contains("[redacted]"), "{fault}: {}", log["error"]);
    }
}

#[test]
fn an_error_in_a_stream_is_an_error() {
    let run = ask("fault:stream-error");
    run.code(1);
    assert!(run.stderr.contains("the model is overloaded"), "{}", run.stderr);

    // After part of the answer: still an error, the part is not taken as the answer.
    let run = ask("fault:stream-error-late");
    run.code(1);
    assert!(run.stderr.contains("connection to the model lost"), "{}", run.stderr);
    // One request: the text shown cannot be taken back, so it is not retried.
    assert_eq!(run.server().chat_bodies().len(), 1);

    let run = Test::new()
        .server(hostile)
        .args(["chat", "-m", "openai:gpt-4o-mini"])
        .stdin("fault:stream-error\nquit\n")
        .run();
    run.success();
    let log = run.conversation_log();
    assert_eq!(log["turns"][0]["status"], "error");

    // Text shown before a failure was paid for: its tokens count, marked as estimated.
    let run = Test::new()
        .server(hostile)
        .args(["chat", "-m", "openai:gpt-4o-mini"])
        .stdin("fault:stream-error-late\nquit\n")
        .run();
    run.success();
    let log = run.conversation_log();
    let request = &log["turns"][0]["requests"][0];
    assert_eq!(request["usage_source"], "estimated");
    assert!(request["completion_tokens"].as_u64().unwrap() > 0, "{request}");
    assert!(run.stdout.contains("output tokens: ~"), "{}", run.stdout);
}

#[test]
fn a_huge_tool_call_index_allocates_nothing() {
    let started = std::time::Instant::now();
    let run =
        Test::new().server(hostile).args(["chat", "-m", "openai:gpt-4o-mini"]).stdin("fault:huge-index\nquit\n").run();
    run.success();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(run.stdout.contains("result: {\"result\":3}"), "{}", run.stdout);
}

#[test]
fn server_sent_events_are_read_as_the_spec_writes_them() {
    let run = ask("fault:bare-cr");
    run.success();
    assert_eq!(run.stdout, "carriage\n");
    let run = ask("fault:multi-line");
    run.success();
    assert_eq!(run.stdout, "joined\n");

    // Invalid JSON in a stream is not retried.
    let run = ask("fault:bad-chunk");
    run.code(1);
    assert!(run.stderr.contains("not a Chat Completions stream chunk"), "{}", run.stderr);
    assert_eq!(run.server().chat_bodies().len(), 1);
}

#[test]
fn streamed_calls_without_index_null_fields_and_repeated_names() {
    let run = Test::new()
        .server(hostile)
        .args(["chat", "-m", "openai:gpt-4o-mini"])
        .stdin("fault:no-index\nfault:repeated-name\nquit\n")
        .run();
    run.success();
    let bodies = run.server().chat_bodies();
    // Two calls, answered in order.
    let calls = &bodies[1]["messages"][1]["tool_calls"];
    assert_eq!(calls.as_array().unwrap().len(), 2, "{calls}");
    assert_eq!(calls[0]["function"], json!({"name": "add_numbers", "arguments": "{\"x\":1,\"y\":2}"}));
    assert_eq!(calls[1]["id"], "call_b");
    assert!(run.stdout.contains("result: {\"result\":7}"), "{}", run.stdout);
    // The name sent in every piece is the name once.
    let last = bodies.last().unwrap();
    let renamed = last["messages"].as_array().unwrap().iter().rev().find(|m| m["tool_calls"].is_array()).unwrap();
    assert_eq!(renamed["tool_calls"][0]["function"]["name"], "reverse_text");
    assert!(run.stdout.contains("result: {\"result\":\"cba\"}"), "{}", run.stdout);
}

#[test]
fn tool_call_messages_carry_a_string_content_on_the_wire() {
    let run = run("fault:short-key");
    run.success();
    let bodies = run.server().chat_bodies();
    assert_eq!(bodies[1]["messages"][1]["content"], "", "servers that want a string get one");
    // The log keeps the API's own shape.
    assert_eq!(run.logs()[0].1["messages"][1]["content"], Value::Null);
}

#[test]
fn a_saved_chat_passes_check_whatever_the_model_called() {
    let run = Test::new()
        .server(hostile)
        .args(["chat", "-m", "openai:gpt-4o-mini"])
        .stdin("fault:unknown-tool\nfault:not-json\nfault:repeated-name\n/save saved.yaml\nquit\n")
        .run();
    run.success();
    assert!(run.stdout.contains("(saved saved.yaml)"), "{}", run.stdout);
    let check = crate::exec(run.runner("http://127.0.0.1:9").args(["check", "saved.yaml"]));
    assert_eq!(check.code, 0, "{}\n{}", check.stderr, std::fs::read_to_string(run.path().join("saved.yaml")).unwrap());
    // The valid call is still expected and pinned.
    let saved = std::fs::read_to_string(run.path().join("saved.yaml")).unwrap();
    assert!(saved.contains("reverse_text"), "{saved}");
    assert!(!saved.contains("teleport"), "{saved}");
}

#[test]
fn ask_falls_back_to_a_plain_request_when_streamed_tools_are_refused() {
    let run = ask("fault:no-streamed-tools");
    run.success();
    assert_eq!(run.stdout, "answered without streaming\n");
    let bodies = run.server().chat_bodies();
    assert_eq!(bodies.len(), 2, "a streamed request, then the same one plain");
    assert_eq!((bodies[0]["stream"].clone(), bodies[1]["stream"].clone()), (json!(true), Value::Null));
}

#[test]
fn ask_and_chat_take_no_stream_and_tools() {
    let run = Test::new()
        .server(hostile)
        .args(["ask", "-m", "openai:gpt-4o-mini", "--no-stream", "--tools", "reverse_text,add_numbers", "hi"])
        .run();
    run.success();
    assert_eq!(run.stdout, "You said: hi\n");
    let body = &run.server().chat_bodies()[0];
    assert_eq!(body["stream"], Value::Null);
    let offered: Vec<&str> =
        body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["reverse_text", "add_numbers"]);

    let run = Test::new()
        .server(hostile)
        .args(["chat", "-m", "openai:gpt-4o-mini", "--tools", "none"])
        .stdin("hi\nquit\n")
        .run();
    run.success();
    assert_eq!(run.server().chat_bodies()[0]["tools"], Value::Null, "no tools offered");

    let run = Test::new().server(hostile).args(["ask", "-m", "openai:gpt-4o-mini", "--tools", "teleport", "hi"]).run();
    run.code(2);
    assert!(run.stderr.contains("unknown tool `teleport`"), "{}", run.stderr);
}

#[test]
fn estimated_tokens_are_marked_as_estimates() {
    let run = ask("fault:no-usage");
    run.success();
    assert!(run.stderr.contains("~") && run.stderr.contains("estimated"), "{}", run.stderr);
    let run =
        Test::new().server(hostile).args(["chat", "-m", "openai:gpt-4o-mini"]).stdin("fault:no-usage\nquit\n").run();
    run.success();
    assert!(run.stdout.contains("input tokens: ~") && run.stdout.contains("(estimated"), "{}", run.stdout);
    // Measured figures carry no mark.
    let run = ask("hello");
    assert!(!run.stderr.contains('~'), "{}", run.stderr);
}
