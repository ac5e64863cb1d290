//! Other vendors: Anthropic's Messages API (plain and streamed, tool round trips, cache-token
//! pricing, retries, errors), Azure OpenAI's URL and header, the built-in OpenAI-compatible
//! vendors and their keys, endpoint headers from runner.yaml; and no key anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::server::{MockServer, Reply, Request, text};
use crate::{KEY, Workspace, exec};

const ANTHROPIC_KEY: &str = "sk-ant-test-0c1d2e3f-never-written";

const ADD_SCENARIO: &str = "name: add
system: Be brief.
tools: [add_numbers]
turns:
  - user: What is 2 plus 3?
    expect:
      tool_calls: [{name: add_numbers, arguments: {x: 2, y: 3}}]
      contains: '5'
";

/// `runner` pointed at `server` as Anthropic's API, with a key.
fn anthropic(ws: &Workspace, server: &MockServer) -> std::process::Command {
    let mut command = ws.runner(&server.url());
    command.env("ANTHROPIC_BASE_URL", server.url()).env("ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    command
}

fn message(content: Value, stop_reason: &str, usage: Value) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "msg_test", "type": "message", "role": "assistant", "model": "claude-test",
            "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage
        }),
    )
}

/// The Messages API's side of the add-numbers conversation: a `tool_use`, then the answer
/// with what the tool returned.
fn claude(request: &Request) -> Reply {
    let body = request.json();
    let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
    match last["content"][0]["type"].as_str() {
        Some("tool_result") => {
            let result = last["content"][0]["content"].as_str().unwrap_or_default().to_owned();
            message(
                json!([{"type": "text", "text": format!("The sum is {result}")}]),
                "end_turn",
                json!({"input_tokens": 50, "output_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2000}),
            )
        }
        _ => message(
            json!([{"type": "text", "text": "Let me add."}, {"type": "tool_use", "id": "toolu_1", "name": "add_numbers", "input": {"x": 2, "y": 3}}]),
            "tool_use",
            json!({"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 0}),
        ),
    }
}

/// The same reply as a Messages event stream when the request asked for one: text in
/// pieces, a tool call's input in several `input_json_delta` pieces, pings between.
fn as_events(request: &Request, reply: Reply) -> Reply {
    if request.json()["stream"] != true || reply.status != 200 {
        return reply;
    }
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_test", "type": "message", "role": "assistant", "content": [],
        "usage": {"input_tokens": body["usage"]["input_tokens"], "output_tokens": 1,
                  "cache_creation_input_tokens": body["usage"]["cache_creation_input_tokens"], "cache_read_input_tokens": body["usage"]["cache_read_input_tokens"]}}}),
    ];
    events.push(json!({"type": "ping"}));
    for (index, block) in body["content"].as_array().unwrap().iter().enumerate() {
        if block["type"] == "text" {
            events.push(
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            );
            let chars: Vec<char> = block["text"].as_str().unwrap().chars().collect();
            for piece in chars.chunks(3) {
                events.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece.iter().collect::<String>()}}));
            }
        } else {
            events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}));
            let input: Vec<char> = block["input"].to_string().chars().collect();
            for piece in input.chunks(4) {
                events.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece.iter().collect::<String>()}}));
                events.push(json!({"type": "ping"}));
            }
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": body["stop_reason"], "stop_sequence": null}, "usage": {"output_tokens": body["usage"]["output_tokens"]}}));
    events.push(json!({"type": "message_stop"}));
    let text: String =
        events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect();
    Reply::bytes(200, text.into_bytes()).header("content-type", "text/event-stream")
}

/// Every file the run wrote, its standard output and error: none holds `secret`.
fn assert_nowhere(ws: &Workspace, out: &crate::Outcome, secret: &str) {
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "the key reached the terminal");
    for (path, bytes) in ws.all_files() {
        assert!(!String::from_utf8_lossy(&bytes).contains(secret), "the key reached {}", path.display());
    }
}

#[test]
fn anthropic_tool_round_trip_in_messages_api_shape_with_cache_pricing() {
    let server = MockServer::start(claude);
    let ws = Workspace::new();
    ws.write("s.yaml", ADD_SCENARIO);
    // Cache writes at $3.75/M, cache reads at $0.30/M, other input at $3/M, output at $15/M.
    ws.write(
        "runner.yaml",
        "prices:\n  anthropic:claude-test: {input: 3, cached_input: 0.3, cache_write_input: 3.75, output: 15}\n",
    );
    let out = exec(anthropic(&ws, &server).args(["run", "s.yaml", "-m", "anthropic:claude-test"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/messages"));
        assert_eq!(request.header("x-api-key"), Some(ANTHROPIC_KEY));
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(request.header("authorization"), None);
    }
    let first = requests[0].json();
    assert_eq!(first["model"], "claude-test");
    assert_eq!(first["system"], "Be brief.");
    assert_eq!(first["max_tokens"], 4096);
    assert_eq!(
        first["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "What is 2 plus 3?"}]}])
    );
    assert_eq!(first["tools"][0]["name"], "add_numbers");
    assert_eq!(first["tools"][0]["input_schema"]["type"], "object");
    let second = requests[1].json();
    assert_eq!(
        second["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me add."},
            {"type": "tool_use", "id": "toolu_1", "name": "add_numbers", "input": {"x": 2, "y": 3}}
        ]})
    );
    assert_eq!(second["messages"][2]["role"], "user");
    assert_eq!(second["messages"][2]["content"][0]["tool_use_id"], "toolu_1");
    assert!(second["messages"][2]["content"][0].get("is_error").is_none());

    let (_, log) = &ws.logs()[0];
    // The log keeps the Chat Completions shape.
    let messages = log["messages"].as_array().unwrap();
    assert_eq!(messages[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "add_numbers");
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "toolu_1");
    assert_eq!(messages[4]["content"], "The sum is {\"result\":5}");
    let requests = log["turns"][0]["requests"].as_array().unwrap();
    assert_eq!(requests[0]["finish_reason"], "tool_calls");
    assert_eq!(requests[1]["finish_reason"], "stop");
    assert_eq!(requests[0]["raw_usage"]["cache_creation_input_tokens"], 2000);
    // Every input token counted: 100 + 2000 written; 50 + 2000 read.
    assert_eq!(
        (requests[0]["prompt_tokens"].as_u64(), requests[0]["cache_write_tokens"].as_u64()),
        (Some(2100), Some(2000))
    );
    assert_eq!(
        (requests[1]["prompt_tokens"].as_u64(), requests[1]["cached_tokens"].as_u64()),
        (Some(2050), Some(2000))
    );
    // (100 x 3 + 2000 x 3.75 + 50 x 3 + 2000 x 0.3) / 1e6 input, (20 + 10) x 15 / 1e6 output.
    let input = (100.0 * 3.0 + 2000.0 * 3.75 + 50.0 * 3.0 + 2000.0 * 0.3) / 1e6;
    let output = 30.0 * 15.0 / 1e6;
    let cost = &log["cost"];
    assert!((cost["input_usd"].as_f64().unwrap() - input).abs() < 1e-12, "{cost}");
    assert!((cost["total_usd"].as_f64().unwrap() - (input + output)).abs() < 1e-12, "{cost}");
    assert_nowhere(&ws, &out, ANTHROPIC_KEY);
}

#[test]
fn anthropic_streams_text_and_reassembles_tool_input() {
    let server = MockServer::start(|request| as_events(request, claude(request)));
    let ws = Workspace::new();
    let out = exec(anthropic(&ws, &server).args([
        "ask",
        "-m",
        "anthropic:claude-test",
        "--tools",
        "add_numbers",
        "What is 2 plus 3?",
    ]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.json()["stream"] == true));
    // The input arrived in pieces; the call sent back is whole.
    assert_eq!(requests[1].json()["messages"][1]["content"][1]["input"], json!({"x": 2, "y": 3}));
    assert!(out.stdout.contains("The sum is {\"result\":5}"), "{}", out.stdout);
    // Usage from message_start and message_delta: 100 + 2000 and 50 + 2000 in, 20 + 10 out.
    assert!(out.stderr.contains("4150 input + 30 output"), "{}", out.stderr);
    assert_nowhere(&ws, &out, ANTHROPIC_KEY);
}

#[test]
fn anthropic_overloaded_and_rate_limited_are_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let server = MockServer::start(move |request| match seen.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        1 => Reply::json(429, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
            .header("retry-after", "0"),
        _ => claude(request),
    });
    let ws = Workspace::new();
    ws.write("s.yaml", ADD_SCENARIO);
    let out = exec(anthropic(&ws, &server).args(["run", "s.yaml", "-m", "anthropic:claude-test"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (_, log) = &ws.logs()[0];
    let attempts = log["turns"][0]["requests"][0]["attempts"].as_array().unwrap();
    let statuses: Vec<Option<u64>> = attempts.iter().map(|a| a["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(529), Some(429), Some(200)]);
    assert!(attempts[0]["error"].as_str().unwrap().contains("overloaded_error"));
}

#[test]
fn anthropic_errors_are_recorded_with_their_message() {
    // A 400 is not retried; its message is in the log and the run is an error.
    let server = MockServer::start(|_| {
        Reply::json(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: must be positive"}}),
        )
    });
    let ws = Workspace::new();
    ws.write("s.yaml", ADD_SCENARIO);
    let out = exec(anthropic(&ws, &server).args(["run", "s.yaml", "-m", "anthropic:claude-test"]));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.requests().len(), 1);
    let (_, log) = &ws.logs()[0];
    assert_eq!(log["status"], "error");
    assert!(
        log["error"].as_str().unwrap().contains("HTTP 400")
            && log["error"].as_str().unwrap().contains("max_tokens: must be positive"),
        "{}",
        log["error"]
    );

    // An `error` event in the middle of a stream ends the answer with that error.
    let server = MockServer::start(|_| {
        let events = [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partly"}}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded mid-stream"}}),
        ];
        Reply::bytes(
            200,
            events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                .collect::<String>()
                .into_bytes(),
        )
    });
    let ws = Workspace::new();
    let out = exec(anthropic(&ws, &server).args(["ask", "-m", "anthropic:claude-test", "--tools", "none", "hi"]));
    assert_ne!(out.code, 0);
    assert!(out.stdout.contains("Partly"), "{}", out.stdout);
    assert!(out.stderr.contains("overloaded_error: Overloaded mid-stream"), "{}", out.stderr);
    // Text had reached the terminal: not sent again.
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn anthropic_tool_errors_are_sent_as_is_error() {
    let server = MockServer::start(|request| {
        let body = request.json();
        if body["messages"].as_array().unwrap().len() == 1 {
            return message(
                json!([{"type": "tool_use", "id": "toolu_9", "name": "teleport", "input": {}}]),
                "tool_use",
                json!({"input_tokens": 5, "output_tokens": 5}),
            );
        }
        message(
            json!([{"type": "text", "text": "could not"}]),
            "end_turn",
            json!({"input_tokens": 5, "output_tokens": 5}),
        )
    });
    let ws = Workspace::new();
    ws.write("s.yaml", "name: t\ntools: [add_numbers]\nturns:\n  - user: go\n");
    let out = exec(anthropic(&ws, &server).args(["run", "s.yaml", "-m", "anthropic:claude-test"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let result = &server.requests()[1].json()["messages"][2]["content"][0];
    assert_eq!(result["tool_use_id"], "toolu_9");
    assert_eq!(result["is_error"], true);
}

#[test]
fn azure_deployment_url_version_and_api_key_header() {
    let server = MockServer::start(|_| text("Hello from Azure", 7, 3));
    let ws = Workspace::new();
    let azure_key = "azure-key-5b6c7d8e-never-written";
    let out = exec(
        ws.runner(&server.url())
            .env("AZURE_OPENAI_ENDPOINT", server.url())
            .env("AZURE_OPENAI_API_KEY", azure_key)
            .env("AZURE_OPENAI_API_VERSION", "2024-10-21")
            .args(["ask", "--no-stream", "--tools", "none", "-m", "azure:my-gpt4o", "hi"]),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Hello from Azure"));
    let request = &server.requests()[0];
    assert_eq!(request.path, "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
    assert_eq!(request.header("api-key"), Some(azure_key));
    assert_eq!(request.header("authorization"), None);
    assert_nowhere(&ws, &out, azure_key);

    // Without the endpoint: a usage error naming the variable, nothing sent.
    let out = exec(
        ws.runner(&server.url())
            .env_remove("AZURE_OPENAI_ENDPOINT")
            .env("AZURE_OPENAI_API_KEY", azure_key)
            .args(["ask", "-m", "azure:x", "hi"]),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("AZURE_OPENAI_ENDPOINT"), "{}", out.stderr);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn vendor_endpoints_take_their_key_and_runner_yaml_headers() {
    let server = MockServer::start(|_| text("Hi from Groq", 7, 3));
    let ws = Workspace::new();
    let groq_key = "gsk-test-9a8b7c6d-never-written";
    let team = "team-secret-1234abcd";
    ws.write(
        "runner.yaml",
        &format!(
            "endpoints:\n  groq:\n    base_url: {}/openai/v1\n    headers: {{X-Team: '${{TEAM_TOKEN}}'}}\n",
            server.url()
        ),
    );
    ws.write("s.yaml", "name: g\nturns:\n  - user: hi\n    expect: {contains: Groq}\n");
    let out = exec(ws.runner(&server.url()).env("GROQ_API_KEY", groq_key).env("TEAM_TOKEN", team).args([
        "run",
        "s.yaml",
        "-m",
        "groq:llama-3.3-70b-versatile",
    ]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let request = &server.requests()[0];
    assert_eq!(request.path, "/openai/v1/chat/completions");
    assert_eq!(request.header("authorization"), Some(format!("Bearer {groq_key}").as_str()));
    assert_eq!(request.header("x-team"), Some(team));
    // Groq's Llama is in the built-in table.
    let (_, log) = &ws.logs()[0];
    assert!(log["cost"]["total_usd"].as_f64().unwrap() > 0.0, "{}", log["cost"]);
    assert_nowhere(&ws, &out, groq_key);
    assert_nowhere(&ws, &out, team);

    // The key's variable unset: exit 2, the variable named, nothing sent.
    let out = exec(ws.runner(&server.url()).env_remove("GROQ_API_KEY").env("TEAM_TOKEN", team).args([
        "run",
        "s.yaml",
        "-m",
        "groq:llama-3.3-70b-versatile",
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("set GROQ_API_KEY"), "{}", out.stderr);
    // A header's variable unset: the same.
    let out = exec(ws.runner(&server.url()).env("GROQ_API_KEY", groq_key).env_remove("TEAM_TOKEN").args([
        "run",
        "s.yaml",
        "-m",
        "groq:llama-3.3-70b-versatile",
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("TEAM_TOKEN"), "{}", out.stderr);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn openai_organization_and_project_headers() {
    let server = MockServer::start(|_| text("ok", 1, 1));
    let ws = Workspace::new();
    let out =
        exec(ws.runner(&server.url()).env("OPENAI_ORG_ID", "org-123").env("OPENAI_PROJECT_ID", "proj_456").args([
            "ask",
            "--no-stream",
            "--tools",
            "none",
            "-m",
            "openai:gpt-4o-mini",
            "hi",
        ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let request = &server.requests()[0];
    assert_eq!(request.header("openai-organization"), Some("org-123"));
    assert_eq!(request.header("openai-project"), Some("proj_456"));
    assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
}

#[test]
fn unknown_providers_list_the_known_ones_and_models_shows_keys_set_never_values() {
    let ws = Workspace::new();
    let out = exec(ws.runner("http://127.0.0.1:9").args(["ask", "-m", "claude:haiku", "hi"]));
    assert_eq!(out.code, 2);
    for name in [
        "anthropic",
        "azure",
        "deepseek",
        "gemini",
        "groq",
        "local",
        "mistral",
        "ollama",
        "openai",
        "openrouter",
        "together",
    ] {
        assert!(out.stderr.contains(name), "{name} missing from: {}", out.stderr);
    }
    let out = exec(
        ws.runner("http://127.0.0.1:9")
            .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
            .env_remove("GEMINI_API_KEY")
            .args(["models"]),
    );
    assert_eq!(out.code, 0);
    let line =
        |name: &str| out.stdout.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default().to_owned();
    assert!(line("anthropic").contains("ANTHROPIC_API_KEY (set)"), "{}", out.stdout);
    assert!(line("gemini").contains("GEMINI_API_KEY (not set)"), "{}", out.stdout);
    assert!(line("ollama").contains("no key"), "{}", out.stdout);
    assert!(out.stdout.contains("anthropic:claude-haiku-4-5"), "{}", out.stdout);
    assert!(!out.stdout.contains(ANTHROPIC_KEY) && !out.stdout.contains(KEY));

    // Anthropic without a key: exit 2, the variable named.
    let out =
        exec(ws.runner("http://127.0.0.1:9").env_remove("ANTHROPIC_API_KEY").env_remove("ANTHROPIC_BASE_URL").args([
            "ask",
            "-m",
            "anthropic:claude-haiku-4-5",
            "hi",
        ]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("set ANTHROPIC_API_KEY"), "{}", out.stderr);
}
