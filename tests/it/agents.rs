//! A user's own agent program under test: a real agent on the official `openai` Python SDK,
//! a plain-HTTP agent, and agents that crash, hang or write garbage, each driven by runner
//! through its endpoint against the scripted server.

use serde_json::{Value, json};

use crate::server::{Reply, Request, as_stream, text, tool_calls};
use crate::{KEY, Test, Workspace, pids, running, signal, wait_for};

/// The Python of the venv `scripts/test` makes, with the `openai` SDK from PyPI.
pub fn python() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/venv/bin/python");
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: `bash scripts/test` creates it (pip install openai)"
    );
    path.to_owned()
}

/// The example agent shipped in examples/agents/.
pub fn orders_agent() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agents/orders_agent.py")).unwrap()
}

/// The order desk's model: looks the order up, refunds it, then says what the tool said.
pub fn orders(request: &Request) -> Reply {
    let last = request.last_message();
    let user = request.last_user();
    let reply = if last["role"] == "tool" {
        text(&format!("Done: {}", last["content"].as_str().unwrap()), 40, 10)
    } else if user.contains("status") {
        tool_calls(&[("call_look", "lookup_order", json!({"order_id": "A100"}))], 20, 8)
    } else if user.contains("refund") {
        tool_calls(&[("call_refund", "refund_order", json!({"order_id": "A100", "reason": "broken"}))], 30, 9)
    } else {
        text(&format!("You said: {user}"), 5, 3)
    };
    as_stream(request, reply)
}

pub fn desk(name: &str, stream: bool) -> String {
    format!(
        r#"name: {name}
agent:
  command: ["{python}", orders_agent.py]
  env: {{AGENT_STREAM: "{stream}"}}
turns:
  - user: What is the status of order A100?
    expect:
      tool_calls: [{{name: lookup_order, arguments: {{order_id: A100}}}}]
      contains: shipped
  - user: Please refund it, it arrived broken.
    expect:
      called: [refund_order]
      not_called: [lookup_order]
"#,
        python = python(),
        stream = u8::from(stream),
    )
}

#[test]
fn an_sdk_agent_is_measured_and_checked_like_runner_s_own_loop() {
    let run = Test::new()
        .server(orders)
        .file("orders_agent.py", &orders_agent())
        .file("plain.yaml", &desk("plain", false))
        .file("streamed.yaml", &desk("streamed", true))
        .file("prices.yaml", "openai:gpt-4o-mini: {input: 1, output: 2}\nopenai:gpt-4.1-mini: {input: 3, output: 5}\n")
        .args(["run", "plain.yaml", "streamed.yaml", "-m", "openai:gpt-4o-mini", "-m", "openai:gpt-4.1-mini"])
        .args(["--prices", "prices.yaml", "--report", "r.csv"])
        .run();
    run.success();

    // Every request the agents made reached the server as the model under test.
    let bodies = run.server().chat_bodies();
    assert_eq!(bodies.len(), 16, "4 runs x 2 turns x 2 requests");
    for model in ["gpt-4o-mini", "gpt-4.1-mini"] {
        assert_eq!(bodies.iter().filter(|b| b["model"] == model).count(), 8, "{model}");
    }
    assert_eq!(bodies.iter().filter(|b| b["stream"] == true).count(), 8, "the streamed agent's requests stream on");
    assert!(run.server().requests().iter().all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));

    let logs = run.logs();
    assert_eq!(logs.len(), 4);
    for (name, log) in &logs {
        assert_eq!(log["status"], "passed", "{name}: {log:#}");
        assert!(log["agent"]["command"].as_str().unwrap().ends_with("orders_agent.py"), "{name}");
        assert_eq!(log["agent"]["exit"], "exit status: 0", "{name}: stdin closed, it exits");
        assert!(log["agent"]["stderr"].as_str().unwrap().contains("tool lookup_order -> "), "{name}");
        let first = &log["turns"][0];
        assert_eq!(first["requests"].as_array().unwrap().len(), 2, "{name}");
        assert_eq!(first["requests"][0]["requested_model"], "gpt-4o-mini", "{name}: the model the agent named");
        assert_eq!(
            (first["usage"]["prompt_tokens"].as_u64(), first["usage"]["completion_tokens"].as_u64()),
            (Some(60), Some(18))
        );
        let call = &first["tool_calls"][0];
        assert_eq!(call["name"], "lookup_order");
        assert_eq!(call["source"], "agent");
        assert_eq!(call["arguments"], json!({"order_id": "A100"}));
        assert_eq!(
            call["result"],
            json!({"status": "shipped", "total_usd": 42.5}),
            "{name}: the result the agent sent back"
        );
        assert_eq!(log["turns"][1]["tool_calls"][0]["result"], json!({"refunded_usd": 42.5}));
        assert_eq!(log["usage"]["prompt_tokens"], 130, "{name}");
        assert_eq!(log["usage"]["completion_tokens"], 37, "{name}");
        // The judge and the reports see the agent's tool calls in the conversation.
        let roles: Vec<&str> =
            log["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "assistant", "user", "assistant", "tool", "assistant"],
            "{name}"
        );
        // Cost is the tokens at the model's price: 130 in and 37 out per run.
        let expected =
            if name.contains("gpt-4.1-mini") { (130.0 * 3.0 + 37.0 * 5.0) / 1e6 } else { (130.0 + 37.0 * 2.0) / 1e6 };
        let cost = log["cost"]["total_usd"].as_f64().unwrap();
        assert!((cost - expected).abs() < 1e-12, "{name}: {cost} != {expected}");
    }
    let rows = run.csv_rows_of("r.csv");
    assert_eq!(rows.len(), 8, "a row per turn");
    assert!(rows.iter().all(|row| row["status"] == "passed"));
}

/// A plain-HTTP agent (Python's standard library): it records its environment, probes the
/// endpoint with a wrong token and lists the models, then asks for a reply under a model
/// name of its own.
pub const PLAIN_AGENT: &str = r#"
import json, os, sys, urllib.request, urllib.error
base, token = os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]
json.dump(dict(os.environ), open("env.json", "w"))
def call(path, body=None, key=token):
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)
probes = {"wrong_token": call("/models", key="sk-guess")[0], "models": call("/models")}
json.dump(probes, open("probes.json", "w"))
for line in sys.stdin:
    user = json.loads(line)["content"]
    status, body = call("/chat/completions", {"model": "my-own-name", "messages": [{"role": "user", "content": user}]})
    reply = body["choices"][0]["message"]["content"] if status == 200 else None
    print(json.dumps({"type": "reply", "content": reply} if reply else {"type": "error", "message": str(body)}), flush=True)
"#;

#[test]
fn the_agent_gets_a_token_of_its_own_and_never_the_key() {
    let scenario = format!(
        "name: plain\nagent:\n  command: [\"{}\", agent.py]\n  env: {{EXTRA: \"${{HOME}}\"}}\nturns:\n  - user: hello\n    expect:\n      contains: hello\n",
        python()
    );
    let run = Test::new()
        .server(orders)
        .file("agent.py", PLAIN_AGENT)
        .file("plain.yaml", &scenario)
        .env("ANTHROPIC_API_KEY", "sk-ant-also-secret")
        .args(["run", "plain.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let env: Value = serde_json::from_slice(&std::fs::read(run.path().join("env.json")).unwrap()).unwrap();
    assert!(env["OPENAI_BASE_URL"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{env}");
    assert!(env["OPENAI_BASE_URL"].as_str().unwrap().ends_with("/v1"), "{env}");
    assert!(env["OPENAI_API_KEY"].as_str().unwrap().starts_with("runner-run-"), "{env}");
    assert_eq!(env["RUNNER_MODEL"], "openai:gpt-4o-mini");
    assert_eq!(env["RUNNER_SCENARIO"], "plain");
    assert!(env["RUNNER_RUN"].as_str().unwrap().ends_with("/plain__openai_gpt-4o-mini__1"), "{env}");
    assert_eq!(env["EXTRA"], std::env::var("HOME").unwrap_or_default());
    assert!(env.get("ANTHROPIC_API_KEY").is_none(), "a key runner reads is not passed on");
    let text = env.to_string();
    assert!(!text.contains(KEY) && !text.contains("sk-ant-also-secret"), "no key reaches the agent");

    let probes: Value = serde_json::from_slice(&std::fs::read(run.path().join("probes.json")).unwrap()).unwrap();
    assert_eq!(probes["wrong_token"], 401);
    assert_eq!(probes["models"][0], 200);
    assert_eq!(probes["models"][1]["data"][0]["id"], "gpt-4o-mini");

    let (_, log) = &run.logs()[0];
    assert_eq!(log["turns"][0]["requests"][0]["requested_model"], "my-own-name");
    assert_eq!(run.server().chat_bodies()[0]["model"], "gpt-4o-mini", "the model under test answers");
    for (path, bytes) in run.all_files() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(KEY), "{} holds the key", path.display());
    }
    assert!(!run.stdout.contains(KEY) && !run.stderr.contains(KEY));
}

#[test]
fn a_crashing_hanging_or_garbled_agent_fails_its_own_run_only() {
    let agent = |name: &str, command: &str, timeout: &str| {
        format!(
            "name: {name}\nagent:\n  command: {command}\n  timeout_secs: {timeout}\nturns:\n  - user: hello\n  - user: again\n"
        )
    };
    let fine = r#"[sh, -c, 'while read line; do echo "{\"type\": \"reply\", \"content\": \"ok\"}"; done']"#;
    let run = Test::new()
        .server(orders)
        .file("crash.yaml", &agent("crash", r#"[sh, -c, "echo 'boom: no config file' >&2; exit 3"]"#, "10"))
        .file(
            "hang.yaml",
            &agent("hang", r#"[sh, -c, "echo $$ >> pids.txt; sleep 600 & echo $! >> pids.txt; wait"]"#, "1"),
        )
        .file("garbage.yaml", &agent("garbage", r#"[sh, -c, "read line; echo this is not json; sleep 600"]"#, "10"))
        .file("missing.yaml", &agent("missing", "[./no-such-agent]", "10"))
        .file(
            "said.yaml",
            &agent("said", r#"[sh, -c, 'read line; echo "{\"type\": \"error\", \"message\": \"no idea\"}"']"#, "10"),
        )
        .file("fine.yaml", &agent("fine", fine, "10"))
        .args(["run", ".", "-m", "openai:gpt-4o-mini", "-j", "6"])
        .run();
    run.code(1);
    let logs = run.logs();
    let error = |name: &str| {
        let (_, log) = logs.iter().find(|(file, _)| file.starts_with(&format!("{name}__"))).unwrap();
        assert_eq!(log["status"], if name == "fine" { "passed" } else { "error" }, "{name}: {log:#}");
        log["error"].as_str().unwrap_or_default().to_owned()
    };
    let crash = error("crash");
    assert!(crash.contains("exit status: 3") && crash.contains("boom: no config file"), "{crash}");
    let hang = error("hang");
    assert!(hang.contains("did not answer turn 1 within 1s"), "{hang}");
    let garbage = error("garbage");
    assert!(garbage.contains("not the protocol") && garbage.contains("this is not json"), "{garbage}");
    let missing = error("missing");
    assert!(missing.contains("cannot start `./no-such-agent`"), "{missing}");
    assert!(error("said").contains("the agent reported an error: no idea"));
    assert_eq!(error("fine"), "");
    // The hanging agent and its child are gone with the batch.
    let started = pids(&run.ws);
    assert_eq!(started.len(), 2, "the shell and its sleep");
    assert!(started.iter().all(|&pid| !running(pid)), "{started:?} outlived the batch");
}

/// The order desk's model as Anthropic's Messages API speaks it.
fn claude_desk(request: &Request) -> Reply {
    let body = request.json();
    let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
    let block = &last["content"][0];
    let message = |content: Value, stop: &str| {
        Reply::json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test", "content": content,
                   "stop_reason": stop, "stop_sequence": null, "usage": {"input_tokens": 50, "output_tokens": 10}}),
        )
    };
    match block["type"].as_str() {
        Some("tool_result") => {
            let said = block["content"].as_str().unwrap_or_default();
            message(json!([{"type": "text", "text": format!("Done: {said}")}]), "end_turn")
        }
        _ if block["text"].as_str().unwrap_or_default().contains("status") => message(
            json!([{"type": "tool_use", "id": "toolu_look", "name": "lookup_order", "input": {"order_id": "A100"}}]),
            "tool_use",
        ),
        _ => message(
            json!([{"type": "tool_use", "id": "toolu_refund", "name": "refund_order", "input": {"order_id": "A100"}}]),
            "tool_use",
        ),
    }
}

#[test]
fn an_agent_that_speaks_chat_completions_is_answered_by_an_anthropic_model() {
    let test = Test::new().server(claude_desk);
    let url = test.url();
    let run = test
        .env("ANTHROPIC_BASE_URL", &url)
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key-never-shown")
        .file("orders_agent.py", &orders_agent())
        .file("desk.yaml", &desk("desk", false))
        .args(["run", "desk.yaml", "-m", "anthropic:claude-test"])
        .run();
    run.success();
    let requests = run.server().requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/v1/messages" && r.header("x-api-key") == Some("sk-ant-test-key-never-shown"))
    );
    let (_, log) = &run.logs()[0];
    assert_eq!(log["model"]["provider"], "anthropic");
    let call = &log["turns"][0]["tool_calls"][0];
    assert_eq!(
        (call["id"].as_str(), call["name"].as_str(), call["source"].as_str()),
        (Some("toolu_look"), Some("lookup_order"), Some("agent"))
    );
    assert_eq!(call["result"], json!({"status": "shipped", "total_usd": 42.5}));
    assert_eq!(log["usage"]["prompt_tokens"], 200);
    assert_eq!(log["turns"][0]["requests"][0]["requested_model"], "gpt-4o-mini");
}

#[test]
fn an_agent_s_requests_replay_from_the_cache_with_the_server_gone() {
    let first = Test::new()
        .server(orders)
        .file("orders_agent.py", &orders_agent())
        .file("desk.yaml", &desk("desk", true))
        .args(["run", "desk.yaml", "-m", "openai:gpt-4o-mini", "--cache", "c"])
        .run();
    first.success();
    let again = first
        .then()
        .server_gone()
        .env_remove("OPENAI_API_KEY")
        .args(["run", "desk.yaml", "-m", "openai:gpt-4o-mini", "--cache", "c", "--replay"])
        .run();
    again.success();
    let logs = again.logs();
    let (_, replayed) = logs.iter().max_by_key(|(_, log)| log["started_at"].as_str().unwrap().to_owned()).unwrap();
    let requests: Vec<&Value> =
        replayed["turns"].as_array().unwrap().iter().flat_map(|t| t["requests"].as_array().unwrap()).collect();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r["cache"] == "hit"), "{requests:?}");
}

#[test]
fn an_agent_brings_its_own_prompt_and_tools() {
    let run = Test::new()
        .file(
            "s.yaml",
            "name: x\nagent:\n  command: [a]\nsystem: be brief\ntools:\n  - get_weather\nturns:\n  - user: hi\n",
        )
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.code(2);
    assert!(run.stderr.contains("s.yaml:4:9: `system:` cannot go with `agent:`"), "{}", run.stderr);
    assert!(run.stderr.contains("s.yaml:6:5: `tools:` cannot go with `agent:`"), "{}", run.stderr);
}

#[test]
fn agents_in_flight_end_with_the_batch_on_sigterm() {
    let ws = Workspace::new();
    for n in 0..3 {
        ws.write(
            &format!("s{n}.yaml"),
            &format!(
                "name: s{n}\nagent:\n  command: [sh, -c, 'echo $$ >> pids.txt; sleep 600 & echo $! >> pids.txt; wait']\nturns:\n  - user: hi\n"
            ),
        );
    }
    let child = ws
        .runner("http://127.0.0.1:9")
        .args(["run", ".", "-m", "openai:gpt-4o-mini", "-j", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| pids(&ws).len() == 6);
    // The first stops new runs and lets those in flight finish; the second aborts them.
    signal(&child, libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(200));
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", String::from_utf8_lossy(&output.stderr));
    let started = pids(&ws);
    wait_for(|| started.iter().all(|&pid| !running(pid)));
}

#[test]
fn runner_yaml_names_the_agent_of_every_scenario_that_names_none() {
    let echo =
        r#"[sh, -c, 'while read line; do echo "{\"type\": \"reply\", \"content\": \"from the default\"}"; done']"#;
    let run = Test::new()
        .file("runner.yaml", &format!("agent:\n  command: {echo}\n"))
        .file("suite/a.yaml", "name: a\nturns:\n  - user: hi\n    expect: {contains: default}\n")
        .file("suite/b.yaml", "name: b\nsystem: be brief\nturns:\n  - user: hi\n")
        .args(["run", "suite/a.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let (_, log) = &run.logs()[0];
    assert_eq!(log["turns"][0]["reply"], "from the default");
    assert!(log["agent"]["command"].as_str().unwrap().starts_with("sh -c"));
    // A scenario with its own prompt cannot take the default agent either.
    let refused = run.then().args(["run", "suite/b.yaml", "-m", "openai:gpt-4o-mini"]).run();
    refused.code(2);
    assert!(
        refused.stderr.contains("suite/b.yaml:2:9: `system:` cannot go with runner.yaml's `agent:`"),
        "{}",
        refused.stderr
    );
}
