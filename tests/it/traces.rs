//! Runs as OpenTelemetry traces, received by a collector on 127.0.0.1 that decodes OTLP with
//! the real `opentelemetry-proto` package (tests/fixtures/otlp_receiver.py): span names,
//! kinds, parents, times, attributes, events, both protocols, the headers, no key, no content
//! unless asked, and collectors that are down, refuse or never answer.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use crate::agents::python;
use crate::run::assistant;
use crate::{KEY, Ran, Test};

const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp_receiver.py");
/// The collector's credential, as `OTEL_EXPORTER_OTLP_HEADERS` carries it (percent-encoded).
const COLLECTOR_TOKEN: &str = "otlp-tok-7d8e9f0a1b2c";
const HEADERS: &str = "authorization=Bearer%20otlp-tok-7d8e9f0a1b2c,x-team=evals";

/// SpanKind in OTLP's numbering.
const INTERNAL: i64 = 1;
const CLIENT: i64 = 3;
/// Status codes.
const UNSET: i64 = 0;
const ERROR: i64 = 2;

/// The receiver, running until dropped.
struct Collector {
    child: Child,
    url: String,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// `mode`: `ok` (decodes and accepts), `refuse` (503), `slow` (answers after 30 s).
    fn start(mode: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("requests.jsonl");
        let mut child = Command::new(python())
            .arg(RECEIVER)
            .arg(&out)
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("receiver said {line:?}"));
        Self { child, url: format!("http://127.0.0.1:{port}"), out, _dir: dir }
    }

    /// Every request it received, decoded.
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// Every span it received.
    fn spans(&self) -> Vec<Value> {
        self.requests().iter().flat_map(|r| r["spans"].as_array().unwrap().clone()).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TRACED: &str = "name: traced
system: Be brief.
tools: [reverse_text]
turns:
  - user: reverse apple
    expect:
      contains: elppa
      called: [reverse_text]
  - user: hello
    expect:
      contains: goodbye
";

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn nanos(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap()).unwrap().timestamp_nanos_opt().unwrap()
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// Everything runner wrote or said, and everything the collector received.
fn everything(run: &Ran, collector: &Collector) -> String {
    let mut all = format!("{}\n{}\n", run.stdout, run.stderr);
    for (_, bytes) in run.all_files() {
        all.push_str(&String::from_utf8_lossy(&bytes));
    }
    for request in collector.requests() {
        all.push_str(&request["body"].to_string());
        all.push_str(&request["spans"].to_string());
    }
    all
}

#[test]
fn each_run_is_one_trace_of_requests_tool_calls_and_checks() {
    let collector = Collector::start("ok");
    let run = Test::new()
        .server(assistant)
        .file("traced.yaml", TRACED)
        .env("OTEL_EXPORTER_OTLP_HEADERS", HEADERS)
        .args(["run", "traced.yaml", "-m", "openai:gpt-4o-mini", "--repeat", "2", "--otlp", &collector.url])
        .run();
    // A check fails: exit code 1, as without traces.
    run.code(1);
    let requests = collector.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request["path"], "/v1/traces");
        assert_eq!(request["content_type"], "application/x-protobuf");
        assert_eq!(request["headers"]["authorization"], format!("Bearer {COLLECTOR_TOKEN}"));
        assert_eq!(request["headers"]["x-team"], "evals");
    }
    let spans = collector.spans();
    // Per run: the root, three requests, one tool call.
    assert_eq!(spans.len(), 10, "{spans:#?}");
    assert!(run.stdout.contains(&format!("traces: 10 spans sent to {}/v1/traces", collector.url)), "{}", run.stdout);
    let roots = named(&spans, "invoke_agent traced");
    assert_eq!(roots.len(), 2);
    let logs = run.logs();
    for root in roots {
        let trace = root["trace_id"].as_str().unwrap();
        let a = &root["attributes"];
        assert_eq!(root["kind"], INTERNAL);
        assert_eq!(root["parent_span_id"], "");
        assert_eq!(root["resource"]["service.name"], "runner");
        assert_eq!(root["scope"]["name"], "runner");
        assert_eq!(a["gen_ai.operation.name"], "invoke_agent");
        assert_eq!(a["gen_ai.agent.name"], "traced");
        assert_eq!(a["gen_ai.provider.name"], "openai");
        assert_eq!(a["gen_ai.request.model"], "gpt-4o-mini");
        assert_eq!(a["runner.status"], "failed");
        assert_eq!(root["status"]["code"], UNSET);
        // The run's log is the one this trace tells of.
        let repetition = int(&a["runner.repetition"]);
        let (_, log) = logs.iter().find(|(_, l)| l["repetition"] == repetition).unwrap();
        assert!(a["gen_ai.conversation.id"].as_str().unwrap().starts_with(log["run_id"].as_str().unwrap()));
        assert!(a["gen_ai.conversation.id"].as_str().unwrap().ends_with(&format!("__{repetition}")));
        // Token totals are the server's: 20 + 40 + 11 in, 8 + 10 + 3 out.
        assert_eq!(a["gen_ai.usage.input_tokens"], 71);
        assert_eq!(a["gen_ai.usage.output_tokens"], 21);
        assert_eq!(a["runner.cost_usd"].as_f64(), log["cost"]["total_usd"].as_f64());
        // The record's own times.
        assert!((int(&root["start_ns"]) - nanos(&log["started_at"])).abs() < 1_000_000, "{root}");
        assert!((int(&root["end_ns"]) - nanos(&log["finished_at"])).abs() < 1_000_000, "{root}");

        let mut children: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] == trace && s != &root).collect();
        children.sort_by_key(|s| int(&s["start_ns"]));
        let names: Vec<&str> = children.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["chat gpt-4o-mini", "execute_tool reverse_text", "chat gpt-4o-mini", "chat gpt-4o-mini"]);
        let mut last_end = int(&root["start_ns"]);
        for child in &children {
            assert_eq!(child["parent_span_id"], root["span_id"]);
            assert!(int(&child["start_ns"]) >= last_end, "{child}");
            assert!(int(&child["end_ns"]) >= int(&child["start_ns"]));
            last_end = int(&child["end_ns"]);
        }
        assert!(last_end <= int(&root["end_ns"]));
        let served = [(20, 8, "tool_calls"), (40, 10, "stop"), (11, 3, "stop")];
        let chats: Vec<&&Value> = children.iter().filter(|s| s["kind"] == CLIENT).collect();
        assert_eq!(chats.len(), 3);
        for (chat, (input, output, finish)) in chats.iter().zip(served) {
            let c = &chat["attributes"];
            assert_eq!(c["gen_ai.operation.name"], "chat");
            assert_eq!(c["gen_ai.provider.name"], "openai");
            assert_eq!(c["gen_ai.request.model"], "gpt-4o-mini");
            assert_eq!(c["gen_ai.usage.input_tokens"], input);
            assert_eq!(c["gen_ai.usage.output_tokens"], output);
            assert_eq!(c["gen_ai.response.finish_reasons"], json!([finish]));
            assert_eq!(c["server.address"], "127.0.0.1");
            assert_eq!(c["runner.cache"], "off");
            assert_eq!(c["runner.role"], "assistant");
            assert!(c["runner.cost_usd"].as_f64().unwrap() > 0.0);
            // No contents without --otlp-content.
            assert!(c.get("gen_ai.input.messages").is_none() && c.get("gen_ai.output.messages").is_none(), "{c}");
        }
        let tool = children[1];
        assert_eq!(tool["kind"], INTERNAL);
        assert_eq!(tool["attributes"]["gen_ai.operation.name"], "execute_tool");
        assert_eq!(tool["attributes"]["gen_ai.tool.name"], "reverse_text");
        assert_eq!(tool["attributes"]["gen_ai.tool.call.id"], "call_rev");
        assert!(tool["attributes"].get("gen_ai.tool.call.arguments").is_none());
        // Each check an evaluation event on the root.
        let events: Vec<(i64, &str, &str)> = root["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["name"], "gen_ai.evaluation.result");
                let a = &e["attributes"];
                assert!(a["gen_ai.evaluation.explanation"].as_str().is_some_and(|x| !x.is_empty()), "{e}");
                (
                    int(&a["runner.turn"]),
                    a["gen_ai.evaluation.name"].as_str().unwrap(),
                    a["gen_ai.evaluation.score.label"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(events, [(1, "called", "pass"), (1, "contains", "pass"), (2, "contains", "fail")]);
    }
    // The two runs are two traces.
    let traces: std::collections::HashSet<&str> = spans.iter().map(|s| s["trace_id"].as_str().unwrap()).collect();
    assert_eq!(traces.len(), 2);
    // The conversation's words stay home; the collector's token goes only to the collector.
    let all = everything(&run, &collector);
    let bodies: String = collector.requests().iter().map(|r| r["body"].as_str().unwrap().to_owned()).collect();
    for word in ["Be brief.", "reverse apple", "Hello there!"] {
        assert!(!bodies.contains(word), "{word} was exported without --otlp-content");
    }
    assert!(!all.contains(KEY));
    let written: String = run.all_files().iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    assert!(!written.contains(COLLECTOR_TOKEN) && !run.stdout.contains(COLLECTOR_TOKEN));
    assert!(!run.stderr.contains(COLLECTOR_TOKEN) && !bodies.contains(COLLECTOR_TOKEN));
}

#[test]
fn json_on_request_with_contents_when_asked() {
    let collector = Collector::start("ok");
    let run = Test::new()
        .server(assistant)
        .file("traced.yaml", TRACED)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("{}/", collector.url))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_SERVICE_NAME", "nightly-evals")
        .args(["run", "traced.yaml", "-m", "openai:gpt-4o-mini", "--otlp-content"])
        .run();
    run.code(1);
    for request in collector.requests() {
        assert_eq!(request["path"], "/v1/traces");
        assert_eq!(request["content_type"], "application/json");
    }
    let spans = collector.spans();
    assert_eq!(spans.len(), 5);
    assert_eq!(spans[0]["resource"]["service.name"], "nightly-evals");
    let mut chats: Vec<&Value> = spans.iter().filter(|s| s["kind"] == CLIENT).collect();
    chats.sort_by_key(|s| int(&s["start_ns"]));
    let messages = |span: &Value, key: &str| -> Value {
        serde_json::from_str(span["attributes"][key].as_str().unwrap_or_else(|| panic!("no {key} in {span}"))).unwrap()
    };
    assert_eq!(
        messages(chats[0], "gen_ai.input.messages"),
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "reverse apple"}]}
        ])
    );
    assert_eq!(
        messages(chats[0], "gen_ai.output.messages"),
        json!([{"role": "assistant", "parts": [{"type": "tool_call", "id": "call_rev", "name": "reverse_text", "arguments": {"text": "apple"}}], "finish_reason": "tool_calls"}])
    );
    let second = messages(chats[1], "gen_ai.input.messages");
    let result = r#"{"result":"elppa"}"#;
    assert_eq!(
        second[3],
        json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_rev", "response": result}]})
    );
    assert_eq!(
        messages(chats[1], "gen_ai.output.messages"),
        json!([{"role": "assistant", "parts": [{"type": "text", "content": format!("Tool said: {result}")}], "finish_reason": "stop"}])
    );
    assert_eq!(messages(chats[2], "gen_ai.input.messages").as_array().unwrap().len(), 6);
    let tool = named(&spans, "execute_tool reverse_text")[0];
    assert_eq!(tool["attributes"]["gen_ai.tool.call.arguments"], r#"{"text":"apple"}"#);
    assert_eq!(tool["attributes"]["gen_ai.tool.call.result"], result);
}

#[test]
fn judge_and_simulated_user_requests_are_spans_of_their_own() {
    let collector = Collector::start("ok");
    let run = Test::new()
        .server(crate::judge::judged)
        .file("s.yaml", crate::judge::SCENARIO)
        // The traces' own variable is taken as it is, over the general one.
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &format!("{}/v1/traces", collector.url))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .args(["run", "s.yaml", "--judge-model", "openai:gpt-4o"])
        .run();
    run.code(1);
    let spans = collector.spans();
    let judges: Vec<&Value> = spans.iter().filter(|s| s["attributes"]["runner.role"] == "judge").collect();
    assert_eq!(judges.len(), 2, "{spans:#?}");
    for judge in judges {
        assert_eq!(judge["name"], "chat gpt-4o");
        assert_eq!(judge["kind"], CLIENT);
        assert_eq!(judge["attributes"]["gen_ai.usage.input_tokens"], 500);
        assert_eq!(judge["attributes"]["gen_ai.usage.output_tokens"], 20);
    }
    let root = named(&spans, "invoke_agent judged")[0];
    let judged: Vec<&str> = root["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["attributes"]["gen_ai.evaluation.name"] == "judge")
        .map(|e| e["attributes"]["gen_ai.evaluation.score.label"].as_str().unwrap())
        .collect();
    assert_eq!(judged, ["pass", "fail"]);

    let collector = Collector::start("ok");
    let expect = "expect:\n  ended: stop\n";
    let scenario = crate::simulate::scenario("refund", "Your order A1001 arrived broken; get a refund.", expect);
    let run = Test::new()
        .server(crate::simulate::both)
        .file("refund.yaml", &scenario)
        .file("prices.yaml", crate::simulate::PRICES)
        .args(["run", "refund.yaml", "-m", "openai:gpt-4o-mini", "--prices", "prices.yaml", "--otlp", &collector.url])
        .run();
    run.success();
    let spans = collector.spans();
    let users: Vec<&Value> = spans.iter().filter(|s| s["attributes"]["runner.role"] == "user").collect();
    // A message, then the stop.
    assert_eq!(users.len(), 2, "{spans:#?}");
    assert!(users.iter().all(|s| s["name"] == "chat user-sim" && s["attributes"]["gen_ai.usage.input_tokens"] == 30));
    let root = named(&spans, "invoke_agent refund")[0];
    assert_eq!(root["attributes"]["runner.ended"], "stop");
    let ended: Vec<&Value> = root["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["attributes"]["gen_ai.evaluation.name"] == "ended")
        .collect();
    assert_eq!(ended.len(), 1);
    assert!(ended[0]["attributes"].get("runner.turn").is_none());
}

#[test]
fn no_key_reaches_a_trace_even_with_contents() {
    let collector = Collector::start("ok");
    // The key in a call's id, name, arguments and finish reason, then in an error body (cut
    // inside the key); in another run, JSON-escaped in an error body.
    let scenarios = "name: keys\ntools: [add_numbers]\nturns:\n  - user: \"fault:key-in-call\"\n  - user: \"fault:long-error\"\n---\nname: escaped\nturns:\n  - user: \"fault:escaped-key\"\n";
    let run = Test::new()
        .server(crate::hostile::hostile)
        .file("k.yaml", scenarios)
        .env("OTEL_EXPORTER_OTLP_HEADERS", HEADERS)
        .args(["run", "k.yaml", "-m", "openai:gpt-4o-mini", "--otlp", &collector.url, "--otlp-content"])
        .run();
    let spans = collector.spans();
    assert!(spans.len() >= 2, "{}", run.stderr);
    // The error the run ended in is the root's status, redacted.
    let root = named(&spans, "invoke_agent keys")[0];
    assert_eq!(root["status"]["code"], ERROR, "{root}");
    let failed: Vec<&Value> = spans.iter().filter(|s| s["kind"] == CLIENT && s["status"]["code"] == ERROR).collect();
    assert_eq!(failed.len(), 2, "{spans:#?}");
    assert!(failed.iter().all(|s| s["attributes"]["error.type"] == "400"), "{failed:#?}");
    let all = everything(&run, &collector);
    assert!(!all.contains(KEY), "the key reached a trace");
    let bodies: String = collector.requests().iter().map(|r| r["body"].as_str().unwrap().to_owned()).collect();
    assert!(bodies.contains("[redacted]"), "the planted keys were not in the contents at all");
    assert!(!bodies.contains(COLLECTOR_TOKEN));
}

/// The passing one-turn scenario, against `collector_url`.
fn passing(url: &str) -> Ran {
    Test::new()
        .server(assistant)
        .file("hello.yaml", "name: hello\nturns:\n  - user: hello\n    expect:\n      contains: Hello\n")
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini", "--otlp", url])
        .run()
}

fn warnings(run: &Ran) -> Vec<&str> {
    run.stderr.lines().filter(|l| l.starts_with("warning: traces:")).collect()
}

#[test]
fn a_collector_that_is_down_refuses_or_hangs_costs_one_warning_and_nothing_else() {
    // Down: nothing listens.
    let run = passing("http://127.0.0.1:9");
    run.success();
    let said = warnings(&run);
    assert_eq!(said.len(), 1, "{}", run.stderr);
    assert!(said[0].contains("2 of 2 spans were not sent to http://127.0.0.1:9/v1/traces"), "{}", said[0]);
    assert!(said[0].contains("cannot connect to the collector: Connection refused"), "{}", said[0]);
    assert_eq!(run.logs().len(), 1);

    // Refusing: the collector's own words.
    let collector = Collector::start("refuse");
    let run = passing(&collector.url);
    run.success();
    let said = warnings(&run);
    assert_eq!(said.len(), 1, "{}", run.stderr);
    assert!(said[0].contains("HTTP 503"), "{}", said[0]);
    assert!(said[0].contains("collector overloaded"), "{}", said[0]);

    // Never answering: the wait at the end is bounded (the collector would answer after 30 s).
    let collector = Collector::start("slow");
    let started = Instant::now();
    let run = passing(&collector.url);
    let waited = started.elapsed();
    run.success();
    assert!(waited.as_secs() < 20, "runner waited {waited:?} for a collector that never answers");
    let said = warnings(&run);
    assert_eq!(said.len(), 1, "{}", run.stderr);
    assert!(said[0].contains("5 s"), "{}", said[0]);
}

#[test]
fn settings_that_cannot_export_are_refused_before_anything_runs() {
    let grpc = Test::new()
        .server(assistant)
        .file("hello.yaml", "turns:\n  - user: hello\n")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    grpc.code(2);
    assert!(grpc.stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{}", grpc.stderr);
    assert!(grpc.stderr.contains("http/protobuf"), "{}", grpc.stderr);
    assert!(grpc.server().chat_bodies().is_empty());

    let gzip = Test::new()
        .server(assistant)
        .file("hello.yaml", "turns:\n  - user: hello\n")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini", "--otlp", "http://127.0.0.1:9"])
        .run();
    gzip.code(2);
    assert!(
        gzip.stderr.contains("OTEL_EXPORTER_OTLP_COMPRESSION=gzip: runner sends traces uncompressed"),
        "{}",
        gzip.stderr
    );
    assert!(gzip.all_files().iter().all(|(path, _)| path.ends_with("hello.yaml")), "{:?}", gzip.all_files());

    // The standard switch turns the variables off: a run as without traces.
    let disabled = Test::new()
        .server(assistant)
        .file("hello.yaml", "turns:\n  - user: hello\n")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_SDK_DISABLED", "true")
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    disabled.success();
    assert!(!disabled.stdout.contains("traces:") && !disabled.stderr.contains("traces:"), "{}", disabled.stderr);

    let alone = Test::new()
        .server(assistant)
        .file("hello.yaml", "turns:\n  - user: hello\n")
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini", "--otlp-content"])
        .run();
    alone.code(2);
    assert!(alone.stderr.contains("--otlp-content needs a collector"), "{}", alone.stderr);

    let token = "hdr-secret-5a6b7c8d9e";
    let bad = Test::new()
        .server(assistant)
        .file("hello.yaml", "turns:\n  - user: hello\n")
        .env("OTEL_EXPORTER_OTLP_HEADERS", token)
        .args(["run", "hello.yaml", "-m", "openai:gpt-4o-mini", "--otlp", "http://127.0.0.1:9"])
        .run();
    bad.code(2);
    assert!(bad.stderr.contains("OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not NAME=VALUE"), "{}", bad.stderr);
    assert!(!bad.stderr.contains(token));
}

#[test]
fn an_agent_program_s_requests_and_tool_calls_are_spans_too() {
    let collector = Collector::start("ok");
    let run = Test::new()
        .server(crate::agents::orders)
        .file("orders_agent.py", &crate::agents::orders_agent())
        .file("desk.yaml", &crate::agents::desk("desk", true))
        .env("OTEL_EXPORTER_OTLP_HEADERS", HEADERS)
        .args(["run", "desk.yaml", "-m", "openai:gpt-4o-mini", "--otlp", &collector.url, "--otlp-content"])
        .run();
    run.success();
    let spans = collector.spans();
    let mut children: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"] != "").collect();
    children.sort_by_key(|s| int(&s["start_ns"]));
    let names: Vec<&str> = children.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "chat gpt-4o-mini",
            "execute_tool lookup_order",
            "chat gpt-4o-mini",
            "chat gpt-4o-mini",
            "execute_tool refund_order",
            "chat gpt-4o-mini"
        ]
    );
    let tools: Vec<&&Value> =
        children.iter().filter(|s| s["attributes"]["gen_ai.operation.name"] == "execute_tool").collect();
    for tool in tools {
        assert_eq!(tool["attributes"]["runner.tool.source"], "agent");
        assert!(int(&tool["end_ns"]) > int(&tool["start_ns"]), "the agent's own time running the tool: {tool}");
    }
    let root = named(&spans, "invoke_agent desk")[0];
    assert_eq!(root["attributes"]["gen_ai.usage.input_tokens"], 130);
    assert_eq!(root["attributes"]["gen_ai.usage.output_tokens"], 37);
    let output =
        children[0]["attributes"]["gen_ai.output.messages"].as_str().unwrap_or_else(|| panic!("{:#}", children[0]));
    assert!(output.contains("lookup_order"), "{output}");
    assert!(!everything(&run, &collector).contains(COLLECTOR_TOKEN));
}
