//! `runner run` and `runner check` against a scripted Chat Completions server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::log::Check;
use crate::server::{MockServer, Reply, Request, api_error, text, tool_calls};
use crate::{KEY, Test, Workspace, exec};

/// Answers by the conversation's last user message, so replies do not depend on the order
/// in which concurrent runs arrive.
pub fn assistant(request: &Request) -> Reply {
    let last = request.last_message();
    let user = request.last_user();
    if user == "loop" {
        return tool_calls(&[("call_l", "add_numbers", json!({"x": 1, "y": 1}))], 5, 5);
    }
    if last["role"] == "tool" {
        // Echo every tool result of the round back in the answer.
        let body = request.json();
        let results: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .take_while(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        return text(&format!("Tool said: {}", results.into_iter().rev().collect::<Vec<_>>().join(" | ")), 40, 10);
    }
    match user.as_str() {
        "hello" => text("Hello there!", 11, 3),
        "reverse apple" => tool_calls(&[("call_rev", "reverse_text", json!({"text": "apple"}))], 20, 8),
        "add and reverse" => tool_calls(
            &[
                ("call_add", "add_numbers", json!({"x": 2, "y": 3})),
                ("call_rev", "reverse_text", json!({"text": "abc"})),
            ],
            30,
            12,
        ),
        "weather" => tool_calls(&[("call_w", "get_weather", json!({"city": "Paris"}))], 15, 6),
        "random" => tool_calls(&[("call_r", "get_random_number", json!({"min": 1, "max": 1000000}))], 15, 6),
        "boom" => api_error(500, "the model is on fire"),
        other => text(&format!("You said: {other}"), 7, 2),
    }
}

#[test]
fn text_reply_passes_and_is_logged() {
    let out = Test::new()
        .server(assistant)
        .file(
            "hello.yaml",
            "system: Be brief.\ntemperature: 0\nturns:\n  - user: hello\n    expect:\n      contains: hello THERE\n",
        )
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let bodies = server.chat_bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["model"], "gpt-4o-mini");
    assert_eq!(bodies[0]["temperature"], 0.0);
    assert_eq!(
        bodies[0]["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(bodies[0]["tools"].as_array().unwrap().len(), 5, "every built-in tool is offered by default");
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    let logs = ws.logs();
    assert_eq!(logs.len(), 1);
    let (name, log) = &logs[0];
    assert_eq!(name, "hello__openai_gpt-4o-mini__1.json");
    assert_eq!(log["status"], "passed");
    assert_eq!(log["error"], Value::Null);
    assert_eq!(log["scenario"], json!({"name": "hello", "file": "hello.yaml"}));
    assert_eq!(log["model"]["provider"], "openai");
    assert_eq!(log["model"]["name"], "gpt-4o-mini");
    assert_eq!(log["model"]["base_url"], format!("{}/v1", server.url()));
    assert_eq!(log["runner_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(log["repetition"], 1);
    for field in ["run_id", "started_at", "finished_at", "duration_ms"] {
        assert!(!log[field].is_null(), "{field}");
    }
    assert_eq!(log["messages"].as_array().unwrap().len(), 3);
    assert_eq!(log["messages"][2], json!({"role": "assistant", "content": "Hello there!"}));
    let (_, log) = &ws.run_logs()[0];
    let turn = &log.turns[0];
    assert_eq!(turn.index, 1);
    assert_eq!(turn.reply.as_deref(), Some("Hello there!"));
    assert_eq!(turn.requests[0].prompt_tokens, 11);
    assert_eq!(turn.requests[0].completion_tokens, 3);
    assert_eq!(turn.requests[0].total_tokens, 14);
    assert_eq!(turn.requests[0].attempts.len(), 1);
    assert_eq!(turn.checks, [Check::new("contains", true, "reply contains \"hello THERE\"")]);
    assert_eq!(log.usage.total_tokens, 14);
    assert!(!log.cost.unpriced);
    assert!(out.stdout.contains("openai:gpt-4o-mini"), "{}", out.stdout);
    assert!(out.stdout.contains("result: 1 of 1 runs passed"), "{}", out.stdout);
}

#[test]
fn tool_call_round_trip() {
    let out = Test::new()
        .server(assistant)
        .file(
        "rev.yaml",
        "tools: [reverse_text, add_numbers]\nturns:\n  - user: reverse apple\n    expect:\n      tool_calls: [{name: reverse_text, arguments: {text: apple}}]\n      contains: elppa\n",
    )
        .args(["run", "rev.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let bodies = server.chat_bodies();
    assert_eq!(bodies.len(), 2);
    let offered = |body: &Value| -> Vec<String> {
        body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(offered(&bodies[0]), ["reverse_text", "add_numbers"]);
    assert_eq!(offered(&bodies[1]), ["reverse_text", "add_numbers"], "follow-up offers the same tools");
    assert_eq!(bodies[0]["tool_choice"], "auto");
    let messages = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_rev");
    assert_eq!(messages[2], json!({"role": "tool", "tool_call_id": "call_rev", "content": "{\"result\":\"elppa\"}"}));

    let (_, log) = &ws.run_logs()[0];
    let call = &log.turns[0].tool_calls[0];
    assert_eq!(call.id, "call_rev");
    assert_eq!(call.name, "reverse_text");
    assert_eq!(call.arguments, json!({"text": "apple"}));
    assert_eq!(call.result, Some(json!({"result": "elppa"})));
    assert_eq!(call.error, None);
    assert_eq!(log.turns[0].requests.len(), 2);
    assert_eq!(log.messages.len(), 4);
    assert_eq!(log.usage.prompt_tokens, 60);
}

#[test]
fn several_tool_calls_in_one_reply_run_in_order() {
    let out = Test::new()
        .server(assistant)
        .file(
        "both.yaml",
        "turns:\n  - user: add and reverse\n    expect:\n      tool_calls:\n        - {name: add_numbers, arguments: {x: 2}}\n        - name: reverse_text\n      contains: [\"5\", cba]\n",
    )
        .args(["run", "both.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let bodies = server.chat_bodies();
    let messages = bodies[1]["messages"].as_array().unwrap();
    let tool_messages: Vec<_> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_messages.len(), 2);
    assert_eq!(tool_messages[0]["tool_call_id"], "call_add");
    assert_eq!(tool_messages[0]["content"], "{\"result\":5}");
    assert_eq!(tool_messages[1]["tool_call_id"], "call_rev");
    assert_eq!(tool_messages[1]["content"], "{\"result\":\"cba\"}");
    let (_, log) = &ws.run_logs()[0];
    assert_eq!(log.turns[0].reply.as_deref(), Some("Tool said: {\"result\":5} | {\"result\":\"cba\"}"));
}

#[test]
fn failed_check_exits_1_and_records_why() {
    let out = Test::new()
        .server(assistant)
        .file("f.yaml", "turns:\n  - user: hello\n    expect:\n      contains: goodbye\n      tool_calls: []\n  - user: second turn still plays\n")
        .args(["run", "f.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let ws = &out.ws;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let (_, log) = &ws.run_logs()[0];
    assert_eq!(log.status, "failed");
    let checks = &log.turns[0].checks;
    assert_eq!(checks[0].check, "tool_calls");
    assert!(checks[0].passed);
    assert_eq!(checks[1], Check::new("contains", false, "reply does not contain \"goodbye\""));
    assert_eq!(log.turns[0].status, "failed");
    assert_eq!(log.turns[1].status, "passed");
    assert_eq!(log.turns[1].reply.as_deref(), Some("You said: second turn still plays"));
    let rows = ws.csv_rows();
    assert_eq!(rows.iter().map(|r| r["status"].as_str()).collect::<Vec<_>>(), ["failed", "passed"]);
}

#[test]
fn api_error_is_recorded_and_the_batch_goes_on() {
    let out = Test::new()
        .server(assistant)
        .file(
            "a.yaml",
            "name: broken\nturns:\n  - user: boom\n  - user: never sent\n---\nname: fine\nturns:\n  - user: hello\n",
        )
        .args(["run", "a.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 1);
    let logs = ws.logs();
    assert_eq!(logs.len(), 2);
    let broken = &logs.iter().find(|(n, _)| n.starts_with("broken")).unwrap().1;
    assert_eq!(broken["status"], "error");
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains("HTTP 500") && error.contains("the model is on fire"), "{error}");
    assert_eq!(broken["turns"].as_array().unwrap().len(), 1, "no turn after an error");
    assert_eq!(broken["turns"][0]["requests"][0]["attempts"][0]["status"], 500);
    let fine = &logs.iter().find(|(n, _)| n.starts_with("fine")).unwrap().1;
    assert_eq!(fine["status"], "passed");
    assert!(!server.chat_bodies().iter().any(|b| b.to_string().contains("never sent")));
    assert!(out.stdout.contains("1 with errors"), "{}", out.stdout);
}

#[test]
fn invalid_file_exits_2_and_sends_nothing() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("good.yaml", "turns:\n  - user: hello\n");
    ws.write("bad.yaml", "turns:\n  - user: hello\n    expect:\n      containz: x\n");
    let out = exec(ws.runner(&server.url()).args(["run", "good.yaml", "bad.yaml", "-m", "openai:gpt-4o-mini"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("bad.yaml:4:7: unknown field `containz`"), "{}", out.stderr);
    assert!(server.requests().is_empty());
    assert!(!ws.path().join("logs").exists());

    let out = exec(ws.runner(&server.url()).args(["check", "bad.yaml"]));
    assert_eq!(out.code, 2);
    let out = exec(ws.runner(&server.url()).args(["check", "good.yaml"]));
    assert_eq!((out.code, out.stdout.trim()), (0, "ok: 1 scenario(s) in 1 file(s)"));
    assert!(server.requests().is_empty());
}

#[test]
fn csv_rows_per_turn_sum_to_server_usage_and_cost() {
    // 1000 prompt tokens (400 cached) and 500 completion tokens per request, at gpt-4o-mini's
    // built-in prices: 600 x 0.15 + 400 x 0.075 + 500 x 0.60 per million.
    let out = Test::new()
        .server(|_| {
            Reply::json(
                200,
                json!({
                    "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                              "prompt_tokens_details": {"cached_tokens": 400},
                              "completion_tokens_details": {"reasoning_tokens": 100}}
                }),
            )
        })
        .file("c.yaml", "turns:\n  - user: one\n  - user: two\n  - user: three\n")
        .args(["run", "c.yaml", "-m", "openai:gpt-4o-mini", "--repeat", "2"])
        .run();
    let ws = &out.ws;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = ws.csv_rows();
    assert_eq!(rows.len(), 6, "3 turns x 2 repetitions");
    let sum = |col: &str| rows.iter().map(|r| r[col].parse::<f64>().unwrap()).sum::<f64>();
    assert_eq!(sum("prompt_tokens"), 6000.0);
    assert_eq!(sum("completion_tokens"), 3000.0);
    assert_eq!(sum("total_tokens"), 9000.0);
    assert_eq!(sum("cached_tokens"), 2400.0);
    assert_eq!(sum("reasoning_tokens"), 600.0);
    let input = (600.0 * 0.15 + 400.0 * 0.075) / 1e6;
    let output = 500.0 * 0.60 / 1e6;
    for row in &rows {
        assert!((row["input_cost_usd"].parse::<f64>().unwrap() - input).abs() < 1e-12, "{row:?}");
        assert!((row["output_cost_usd"].parse::<f64>().unwrap() - output).abs() < 1e-12);
        assert!((row["total_cost_usd"].parse::<f64>().unwrap() - (input + output)).abs() < 1e-12);
        assert_eq!(row["requests"], "1");
        assert_eq!(row["unpriced"], "false");
    }
    let header: Vec<_> = std::fs::read_to_string(ws.report_file(false))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header[..15],
        "run_id,scenario,model,repetition,turn,status,prompt_tokens,completion_tokens,total_tokens,input_cost_usd,output_cost_usd,total_cost_usd,requests,tool_calls,latency_ms"
            .split(',')
            .collect::<Vec<_>>()
    );
    let reps: Vec<_> = rows.iter().map(|r| r["repetition"].as_str()).collect();
    assert_eq!(reps.iter().filter(|r| **r == "1").count(), 3);
    assert_eq!(reps.iter().filter(|r| **r == "2").count(), 3);
    let (_, log) = &ws.logs()[0];
    assert!((log["cost"]["total_usd"].as_f64().unwrap() - 3.0 * (input + output)).abs() < 1e-12);
    assert_eq!(log["cost"]["prices"], json!({"input": 0.15, "cached_input": 0.075, "output": 0.6}));
}

#[test]
fn runs_overlap_up_to_the_concurrency_limit() {
    let server = MockServer::start(|_| text("ok", 1, 1).after(Duration::from_millis(400)));
    let ws = Workspace::new();
    let docs: Vec<String> = (0..12).map(|i| format!("name: s{i}\nturns:\n  - user: hi {i}\n")).collect();
    ws.write("many.yaml", &docs.join("---\n"));
    let out = exec(ws.runner(&server.url()).args(["run", "many.yaml", "-m", "openai:gpt-4o-mini", "-j", "4"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.max_in_flight(), 4, "at most -j runs in flight, and really that many");
    assert_eq!(ws.logs().len(), 12);
}

#[test]
fn api_key_is_written_nowhere() {
    // The server echoes the request's headers into an error body, as some proxies do.
    let server = MockServer::start(|request| {
        if request.first_user() == "echo" {
            let headers: Vec<String> = request.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            return api_error(400, &headers.join("; "));
        }
        assistant(request)
    });
    let ws = Workspace::new();
    ws.write("k.yaml", "name: echo\nturns:\n  - user: echo\n---\nname: rev\nturns:\n  - user: reverse apple\n");
    let out = exec(ws.runner(&server.url()).args(["run", "k.yaml", "-m", "openai:gpt-4o-mini"]));
    assert_eq!(out.code, 1);
    assert!(server.requests().iter().all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));
    let files = ws.all_files();
    assert!(files.len() >= 3);
    for (path, bytes) in files {
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY), "key found in {}", path.display());
    }
    let (_, log) = ws.logs().into_iter().find(|(n, _)| n.starts_with("echo")).unwrap();
    assert!(log["error"].as_str().unwrap().contains("Bearer [redacted]"), "{}", log["error"]);
}

#[test]
fn max_tool_rounds_ends_the_turn_with_an_error() {
    let out = Test::new()
        .server(assistant)
        .file("loop.yaml", "max_tool_rounds: 3\nturns:\n  - user: loop\n")
        .args(["run", "loop.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    let (server, ws) = (out.server(), &out.ws);
    assert_eq!(out.code, 1);
    let (_, log) = &ws.run_logs()[0];
    assert_eq!(log.status, "error");
    assert_eq!(log.turns[0].tool_calls.len(), 3);
    assert_eq!(server.chat_bodies().len(), 4);
    assert!(log.error.as_deref().unwrap().contains("after 3 tool round(s)"));
}

#[test]
fn several_models_filter_and_stdin() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("runner.yaml", &format!("endpoints:\n  local-llm:\n    base_url: {}/v1\n", server.url()));
    let scenarios = "name: greet\nturns:\n  - user: hello\n---\nname: other\nturns:\n  - user: hello\n";
    let mut command = ws.runner(&server.url());
    command
        .args(["run", "-", "-m", "openai:gpt-4o-mini", "-m", "local-llm:llama3.2:3b", "--filter", "gre"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(scenarios.as_bytes()).unwrap();
    let out = crate::outcome(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let names: Vec<_> = ws.logs().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["greet__local-llm_llama3.2_3b__1.json", "greet__openai_gpt-4o-mini__1.json"]);
    let models: Vec<_> = server.chat_bodies().iter().map(|b| b["model"].as_str().unwrap().to_owned()).collect();
    assert_eq!(models.len(), 2);
    assert!(models.contains(&"llama3.2:3b".to_owned()));
    // The unknown local model is flagged, never silently $0.
    let line = out.stdout.lines().find(|l| l.starts_with("local-llm:llama3.2:3b")).unwrap();
    assert!(line.contains("unpriced"), "{}", out.stdout);
    let (_, log) = ws.logs().into_iter().find(|(n, _)| n.starts_with("greet__local")).unwrap();
    assert_eq!(log["cost"]["unpriced"], true);
    assert_eq!(log["cost"]["prices"], Value::Null);
}

#[test]
fn seed_makes_random_numbers_reproducible() {
    let server = MockServer::start(assistant);
    let result_of = |seed: &str| {
        let ws = Workspace::new();
        ws.write("r.yaml", "turns:\n  - user: random\n");
        let out = exec(ws.runner(&server.url()).args(["run", "r.yaml", "-m", "openai:gpt-4o-mini", "--seed", seed]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let (_, log) = ws.logs().remove(0);
        assert_eq!(log["model"]["seed"], seed.parse::<u64>().unwrap(), "--seed is also the sampling seed");
        log["turns"][0]["tool_calls"][0]["result"]["result"].as_i64().unwrap()
    };
    let (a, b, c) = (result_of("7"), result_of("7"), result_of("8"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!((1..=1_000_000).contains(&a));
}

#[test]
fn weather_asks_the_service_and_never_invents() {
    let weather = MockServer::start(|request| {
        if request.path.starts_with("/v1/search") {
            assert_eq!(request.query("name").as_deref(), Some("Paris"));
            return Reply::json(
                200,
                json!({"results": [{"name": "Paris", "latitude": 48.85, "longitude": 2.35, "country": "France"}]}),
            );
        }
        assert_eq!(request.query("latitude").as_deref(), Some("48.85"));
        Reply::json(
            200,
            json!({"current": {"time": "2026-11-24T12:00", "temperature_2m": 11.5, "relative_humidity_2m": 80, "weather_code": 61, "wind_speed_10m": 14.2}}),
        )
    });
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write(
        "w.yaml",
        "tools: [get_weather]\nturns:\n  - user: weather\n    expect:\n      contains: [\"11.5\", rain]\n",
    );
    let out = exec(
        ws.runner(&server.url())
            .env("RUNNER_GEOCODING_URL", weather.url())
            .env("RUNNER_FORECAST_URL", weather.url())
            .args(["run", "w.yaml", "-m", "openai:gpt-4o-mini"]),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (_, log) = &ws.logs()[0];
    let result = &log["turns"][0]["tool_calls"][0]["result"];
    assert_eq!(result["city"], "Paris");
    assert_eq!(result["temperature_c"], 11.5);
    assert_eq!(result["conditions"], "rain");
    assert_eq!(weather.requests().len(), 2);

    // Unreachable service: an error result goes back to the model, and the run goes on.
    let ws = Workspace::new();
    ws.write("w.yaml", "tools: [get_weather]\nturns:\n  - user: weather\n");
    let out = exec(ws.runner(&server.url()).args(["run", "w.yaml", "-m", "openai:gpt-4o-mini"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, log) = &ws.logs()[0];
    let call = &log["turns"][0]["tool_calls"][0];
    assert_eq!(call["result"], Value::Null);
    assert!(call["error"].as_str().unwrap().starts_with("weather service unavailable"), "{call}");
    let tool_message = &log["messages"].as_array().unwrap()[2];
    assert!(tool_message["content"].as_str().unwrap().starts_with("{\"error\":\"weather service unavailable"));

    // Pinned results replace the service entirely.
    let ws = Workspace::new();
    ws.write(
        "w.yaml",
        "tools: [get_weather]\ntool_results:\n  get_weather: {city: Paris, temperature_c: 15}\nturns:\n  - user: weather\n    expect: {contains: \"15\"}\n",
    );
    let out = exec(ws.runner(&server.url()).args(["run", "w.yaml", "-m", "openai:gpt-4o-mini"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(ws.run_logs()[0].1.turns[0].tool_calls[0].pinned);
}

#[test]
fn missing_key_and_model_say_what_to_set() {
    let ws = Workspace::new();
    ws.write("s.yaml", "turns:\n  - user: hello\n");
    let out = exec(
        std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .current_dir(ws.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("RUNNER_MODEL")
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"]),
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("set OPENAI_API_KEY"), "{}", out.stderr);

    // A key in .env is found.
    let server = MockServer::start(assistant);
    ws.write(".env", &format!("OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={}/v1\n", server.url()));
    let out = exec(
        std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .current_dir(ws.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("RUNNER_MODEL")
            .args(["run", "s.yaml"]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(server.chat_bodies()[0]["model"], "gpt-4o-mini", "a key makes gpt-4o-mini the default");
}

#[test]
fn shipped_scenarios_are_valid_and_pass_with_a_model_that_calls_the_right_tools() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let server = MockServer::start(|request| {
        if request.last_message()["role"] == "tool" {
            let content = request.last_message()["content"].as_str().unwrap().to_owned();
            return text(&format!("Here you go: {content}"), 30, 10);
        }
        let user = request.last_user();
        let call = if user.contains("Refund") {
            ("refund_order", json!({"order_id": "A1001"}))
        } else if user.contains("order") {
            ("lookup_order", json!({"order_id": "A1001"}))
        } else if user.contains("Paris") {
            ("get_weather", json!({"city": "Paris"}))
        } else if user.contains("Reverse") {
            ("reverse_text", json!({"text": "apple"}))
        } else if user.contains("plus") {
            ("add_numbers", json!({"x": 2, "y": 3}))
        } else if user.contains("random") {
            ("get_random_number", json!({"min": 1, "max": 10}))
        } else {
            ("get_current_time", json!({}))
        };
        tool_calls(&[("call_1", call.0, call.1)], 20, 5)
    });
    let ws = Workspace::new();
    let out = exec(ws.runner(&server.url()).args(["check", shipped]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = exec(ws.runner(&server.url()).args(["run", shipped, "-m", "openai:gpt-4o-mini", "--seed", "1"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(ws.logs().len(), 7);
    // Pinned weather: the service is never asked.
    let (_, weather) = ws.logs().into_iter().find(|(n, _)| n.starts_with("weather-paris")).unwrap();
    assert_eq!(weather["turns"][0]["tool_calls"][0]["pinned"], true);
}

/// The element tree of an XML document: (path of element names, attributes, text).
fn xml_elements(xml: &str) -> Vec<(String, std::collections::HashMap<String, String>, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    // Index in `out` of each open element, innermost last: text belongs to the innermost.
    let mut open: Vec<usize> = Vec::new();
    let mut out: Vec<(String, std::collections::HashMap<String, String>, String)> = Vec::new();
    let attributes = |e: &quick_xml::events::BytesStart| {
        e.attributes()
            .map(|a| {
                let a = a.unwrap();
                (String::from_utf8(a.key.0.to_vec()).unwrap(), a.unescape_value().unwrap().into_owned())
            })
            .collect()
    };
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                path.push(String::from_utf8(e.name().0.to_vec()).unwrap());
                open.push(out.len());
                out.push((path.join("/"), attributes(&e), String::new()));
            }
            Event::Empty(e) => {
                let name = String::from_utf8(e.name().0.to_vec()).unwrap();
                out.push((format!("{}/{name}", path.join("/")), attributes(&e), String::new()));
            }
            Event::Text(t) => {
                if let Some(&at) = open.last() {
                    out[at].2.push_str(&t.unescape().unwrap());
                }
            }
            Event::End(_) => {
                path.pop();
                open.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(path.is_empty(), "every element closed");
    out
}

#[test]
fn junit_report_has_the_shape_ci_systems_read() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write(
        "j.yaml",
        "name: ok\nturns:\n  - user: hello\n---\nname: fails\nturns:\n  - user: hello\n    expect: {contains: \"<goodbye>\"}\n---\nname: broken\nturns:\n  - user: boom\n",
    );
    let summary = ws.path().join("step-summary.md");
    let out = exec(ws.runner(&server.url()).env("GITHUB_STEP_SUMMARY", &summary).args([
        "run",
        "j.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "-m",
        "gpt-4o",
        "--repeat",
        "2",
        "--junit",
        "out/junit.xml",
    ]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let xml = std::fs::read_to_string(ws.path().join("out/junit.xml")).unwrap();
    let elements = xml_elements(&xml);
    let root = &elements[0];
    assert_eq!(root.0, "testsuites");
    assert_eq!((root.1["tests"].as_str(), root.1["failures"].as_str(), root.1["errors"].as_str()), ("12", "4", "4"));
    let suites: Vec<_> = elements.iter().filter(|e| e.0 == "testsuites/testsuite").collect();
    assert_eq!(suites.len(), 2, "one suite per model");
    for suite in &suites {
        assert_eq!(
            (suite.1["tests"].as_str(), suite.1["failures"].as_str(), suite.1["errors"].as_str()),
            ("6", "2", "2")
        );
        assert!(suite.1["time"].parse::<f64>().is_ok());
    }
    let cases: Vec<_> = elements.iter().filter(|e| e.0 == "testsuites/testsuite/testcase").collect();
    assert_eq!(cases.len(), 12);
    assert!(
        cases
            .iter()
            .all(|c| c.1.contains_key("name") && c.1.contains_key("classname") && c.1["time"].parse::<f64>().is_ok())
    );
    assert!(cases.iter().any(|c| c.1["name"] == "fails #2" && c.1["classname"] == "openai:gpt-4o.fails"));
    let failures: Vec<_> = elements.iter().filter(|e| e.0 == "testsuites/testsuite/testcase/failure").collect();
    assert_eq!(failures.len(), 4);
    assert_eq!(failures[0].2, "turn 1: contains: reply does not contain \"<goodbye>\"");
    let errors: Vec<_> = elements.iter().filter(|e| e.0 == "testsuites/testsuite/testcase/error").collect();
    assert_eq!(errors.len(), 4);
    assert!(errors[0].1["message"].contains("HTTP 500"));

    let markdown = std::fs::read_to_string(&summary).unwrap();
    assert!(markdown.contains("| `openai:gpt-4o-mini` | 6 | 2 | 2 | 2 |"), "{markdown}");
    assert!(markdown.contains("| `openai:gpt-4o` | 6 | 2 | 2 | 2 |"), "{markdown}");
}

#[test]
fn call_checks_with_matchers_against_parallel_calls() {
    let scenario = |to_expect: &str| {
        format!(
            "tools: [add_numbers, reverse_text, get_weather]\nturns:\n  - user: add and reverse\n    expect:\n      tool_calls_unordered:\n        \
             - {{name: reverse_text, arguments: {{text: {to_expect}}}}}\n        - {{name: add_numbers, arguments: {{x: {{$one_of: [2, 9]}}, y: 3.0, z: {{$absent: true}}}}}}\n      \
             called: [add_numbers]\n      not_called: [get_weather]\n"
        )
    };
    let run = Test::new()
        .server(assistant)
        .file("s.yaml", &scenario("{$regex: \"^a\"}"))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let (_, log) = &run.logs()[0];
    let checks: Vec<&str> =
        log["turns"][0]["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["tool_calls_unordered", "called", "not_called"]);

    // The server's argument is not what the scenario expects: the check fails and says where.
    let run = Test::new()
        .server(assistant)
        .file("s.yaml", &scenario("{$one_of: [xyz, {$absent: true}]}"))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.code(1);
    let (_, log) = &run.logs()[0];
    let check = &log["turns"][0]["checks"][0];
    assert_eq!(check["passed"], false);
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(
            "no call matches reverse_text: reverse_text: `arguments.text` is \"abc\", expected one of [\"xyz\", absent]"
        ),
        "{detail}"
    );

    // An unknown matcher is a load error at its position; nothing is sent.
    let run = Test::new()
        .server(assistant)
        .file("s.yaml", &scenario("{$regexp: a}"))
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.code(2);
    assert!(run.stderr.contains("s.yaml:6:") && run.stderr.contains("unknown matcher `$regexp`"), "{}", run.stderr);
    assert!(run.server().chat_bodies().is_empty());
}
