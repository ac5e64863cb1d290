//! Tools declared in YAML: answered by a fixed result, by results chosen by the arguments, by
//! a command, by an HTTP endpoint; their schemas checked for real; their problems at load.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{MockServer, Reply, Request, text, tool_calls};
use crate::{KEY, Ran, Test};

/// The model: `call NAME {ARGS}` calls NAME with ARGS; after a tool round it repeats what the
/// tools said.
pub fn model(request: &Request) -> Reply {
    let last = request.last_message();
    if last["role"] == "tool" {
        let body = request.json();
        let results: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        return text(&format!("Tool said: {}", results.join(" | ")), 10, 5);
    }
    let user = request.last_user();
    let Some(call) = user.strip_prefix("call ") else { return text("no call", 5, 5) };
    let (name, args) = call.split_once(' ').unwrap_or((call, "{}"));
    tool_calls(&[("call_1", name, serde_json::from_str(args).unwrap())], 10, 5)
}

/// One turn saying `user`, with `tools` as the scenario's tools list (YAML).
fn run_with(tools: &str, user: &str, extra: &[(&str, &str)]) -> Ran {
    let mut test =
        Test::new().server(model).file("s.yaml", &format!("name: s\ntools:\n{tools}\nturns:\n  - user: '{user}'\n"));
    for (name, content) in extra {
        test = test.file(name, content);
    }
    test.args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"]).run()
}

fn first_call(run: &Ran) -> Value {
    run.logs()[0].1["turns"][0]["tool_calls"][0].clone()
}

const REFUND: &str = "  - name: refund
    description: Refund an order.
    parameters:
      type: object
      properties:
        order_id: {type: string}
        amount: {type: number, minimum: 0}
      required: [order_id, amount]
      additionalProperties: false
";

#[test]
fn result_and_results_answer_by_the_arguments() {
    let run = run_with(
        &format!("{REFUND}    result: {{status: refunded}}"),
        r#"call refund {"order_id": "A1", "amount": 5}"#,
        &[],
    );
    run.success();
    let call = first_call(&run);
    assert_eq!((call["result"].clone(), call["source"].as_str()), (json!({"status": "refunded"}), Some("result")));
    // The declared schema is sent to the model as written.
    let offered = &run.server().chat_bodies()[0]["tools"][0]["function"];
    assert_eq!(offered["name"], "refund");
    assert_eq!(offered["parameters"]["properties"]["amount"], json!({"type": "number", "minimum": 0}));

    let results = format!(
        "{REFUND}    results:\n      - when: {{order_id: A1}}\n        result: {{status: refunded}}\n      - when: {{order_id: {{$regex: '^B'}}}}\n        result: {{status: pending}}"
    );
    let run = run_with(&results, r#"call refund {"order_id": "B7", "amount": 5}"#, &[]);
    run.success();
    assert_eq!(first_call(&run)["result"], json!({"status": "pending"}));
    assert_eq!(first_call(&run)["source"], "results");
    // No entry matches: a tool error to the model; the run goes on.
    let run = run_with(&results, r#"call refund {"order_id": "Z9", "amount": 5}"#, &[]);
    run.success();
    assert!(
        first_call(&run)["error"].as_str().unwrap().contains("no `results` entry of `refund` matches"),
        "{}",
        first_call(&run)
    );
}

#[test]
fn arguments_are_checked_against_the_declared_schema() {
    let run = run_with(
        &format!("{REFUND}    result: ok"),
        r#"call refund {"order_id": "A1", "amount": -3, "note": "x"}"#,
        &[],
    );
    run.success();
    let error = first_call(&run)["error"].as_str().unwrap().to_owned();
    // The path and the rule, for each violation.
    assert!(error.contains("/amount") && error.contains("minimum"), "{error}");
    assert!(error.contains("note"), "{error}");
    // It went back to the model as the tool's answer.
    assert!(run.logs()[0].1["turns"][0]["reply"].as_str().unwrap().contains("invalid arguments"));
}

#[test]
fn command_tools_run_once_per_call_in_the_scenario_directory() {
    let script = "import json, os, sys\nargs = json.load(sys.stdin)\nprint(json.dumps({'cwd_has_script': os.path.exists('tool.py'), 'doubled': args['count'] * 2}))\n";
    let tool = "  - name: double\n    parameters: {type: object, properties: {count: {type: integer}}, required: [count]}\n    command: [python3, tool.py]";
    let run = run_with(tool, r#"call double {"count": 21}"#, &[("tool.py", script)]);
    run.success();
    let call = first_call(&run);
    assert_eq!(call["result"], json!({"cwd_has_script": true, "doubled": 42}));
    assert_eq!(call["source"], "command");

    // Not JSON: the text is the result.
    let run = run_with("  - name: hello\n    command: [sh, -c, 'echo plain words']", "call hello {}", &[]);
    assert_eq!(first_call(&run)["result"], "plain words");
    // A non-zero exit: an error with stderr's last lines.
    let run = run_with(
        "  - name: broken\n    command: [sh, -c, 'echo first >&2; echo the reason >&2; exit 3']",
        "call broken {}",
        &[],
    );
    let error = first_call(&run)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("exit status: 3") && error.contains("the reason"), "{error}");
}

#[test]
fn a_hanging_or_flooding_command_is_stopped() {
    // Hangs, with a child of its own: the whole group is killed at the time-out.
    let started = Instant::now();
    let run = run_with(
        "  - name: hang\n    timeout_secs: 1\n    command: [sh, -c, 'sleep 37 & sleep 37']",
        "call hang {}",
        &[],
    );
    run.success();
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(first_call(&run)["error"].as_str().unwrap().contains("did not finish within 1s"), "{}", first_call(&run));
    // SIGKILL is delivered at once, but a loaded machine may take a moment to end them.
    let sleepers = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 37"])
            .output()
            .map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sleepers(), 0, "the command's processes are gone");
    // Floods: stopped at 1 MiB.
    let run = run_with("  - name: flood\n    command: [sh, -c, 'yes flood']", "call flood {}", &[]);
    run.success();
    assert!(first_call(&run)["error"].as_str().unwrap().contains("more than 1 MiB"), "{}", first_call(&run));
}

#[test]
fn http_tools_post_the_arguments_and_never_show_their_headers() {
    let secret = "tools-token-0123456789-must-stay-hidden";
    let endpoint = MockServer::start(move |request| {
        let auth = request.header("authorization").unwrap_or_default().to_owned();
        match request.path.as_str() {
            "/refund" => {
                Reply::json(200, json!({"got": request.json(), "auth_ok": auth == format!("Bearer {secret}")}))
            }
            "/echo" => Reply::json(200, json!({"echo": auth})),
            _ => Reply::json(503, json!({"error": format!("down, your header was {auth}")})),
        }
    });
    let tool = |path: &str| {
        format!(
            "  - name: refund\n    http:\n      url: {}{path}\n      headers: {{Authorization: 'Bearer ${{TOOLS_TOKEN}}'}}",
            endpoint.url()
        )
    };
    let run = |path: &str| {
        Test::new()
            .server(model)
            .env("TOOLS_TOKEN", secret)
            .file(
                "s.yaml",
                &format!("name: s\ntools:\n{}\nturns:\n  - user: 'call refund {{\"order_id\": \"A1\"}}'\n", tool(path)),
            )
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
            .run()
    };
    let ok = run("/refund");
    ok.success();
    assert_eq!(first_call(&ok)["result"], json!({"got": {"order_id": "A1"}, "auth_ok": true}));
    assert_eq!(first_call(&ok)["source"], "http");
    for path in ["/echo", "/down"] {
        let run = run(path);
        let mut everything = format!("{}{}", run.stdout, run.stderr);
        for (_, bytes) in run.all_files() {
            everything.push_str(&String::from_utf8_lossy(&bytes));
        }
        assert!(!everything.contains(secret), "{path}: the header value reached an output");
        assert!(
            !run.server().chat_bodies().iter().any(|b| b.to_string().contains(secret)),
            "{path}: the header value reached the model"
        );
    }
    assert!(first_call(&run("/down"))["error"].as_str().unwrap().contains("HTTP 503"));
    assert!(!KEY.is_empty());
}

#[test]
fn declarations_shadow_pin_and_come_from_runner_yaml() {
    // runner.yaml declares lookup_order; the scenario offers it by name and pins nothing.
    let config = "tools:\n  lookup_order:\n    description: Look an order up.\n    parameters: {type: object, properties: {id: {type: string}}}\n    result: {status: shipped}\n";
    let run = run_with("  - lookup_order", r#"call lookup_order {"id": "A1"}"#, &[("runner.yaml", config)]);
    run.success();
    assert_eq!(first_call(&run)["result"], json!({"status": "shipped"}));
    // A declaration with a built-in's name shadows it for this scenario only.
    let run = run_with("  - name: reverse_text\n    result: shadowed", r#"call reverse_text {"text": "abc"}"#, &[]);
    assert_eq!(first_call(&run)["result"], "shadowed");
    // tool_results pins a declared tool as it pins a built-in.
    let run = Test::new()
        .server(model)
        .file("s.yaml", "name: s\ntools:\n  - name: refund\n    command: [sh, -c, 'exit 1']\ntool_results:\n  refund: {status: pinned}\nturns:\n  - user: 'call refund {}'\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    assert_eq!(
        (first_call(&run)["result"].clone(), first_call(&run)["source"].clone()),
        (json!({"status": "pinned"}), json!("pinned"))
    );
    // runner tools lists the declared ones.
    let tools = crate::exec(run.runner("http://127.0.0.1:9").args(["tools", "s.yaml"]));
    assert_eq!(tools.code, 0, "{}", tools.stderr);
    assert!(
        tools.stdout.lines().any(|l| l.starts_with("refund ") && l.contains(" command, s in s.yaml ")),
        "{}",
        tools.stdout
    );
}

#[test]
fn every_problem_in_a_declaration_is_a_load_error_with_its_position() {
    for (tools, expected) in [
        ("  - name: two\n    result: 1\n    command: [x]", "exactly one of result, results, command, http"),
        ("  - name: none\n    description: no answer", "one of result, results, command, http"),
        ("  - name: 'bad name!'\n    result: 1", "expected a tool name of 1 to 64"),
        ("  - name: bad_schema\n    parameters: {type: objekt}\n    result: 1", "valid JSON Schema"),
        ("  - name: extra\n    result: 1\n    colour: red", "unknown field `colour`"),
        ("  - name: cmd\n    command: python3 tool.py", "list of strings"),
        ("  - name: when\n    results: [{when: {a: {$nope: 1}}, result: 1}]", "unknown matcher `$nope`"),
    ] {
        let run = run_with(tools, "hello", &[]);
        run.code(2);
        assert!(run.stderr.contains("s.yaml:3:5: ") && run.stderr.contains(expected), "{tools}: {}", run.stderr);
        assert!(run.server().chat_bodies().is_empty(), "nothing is sent");
    }
}

#[test]
fn a_description_cut_at_a_comma_by_a_flow_mapping_is_warned_about_at_its_line() {
    let yaml = "name: s\ntools:\n  - name: lookup\n    parameters:\n      type: object\n      properties:\n        order_id: {type: string, description: The order id, like A1001.}\n    result: {}\nturns:\n  - user: hi\n";
    let ran = Test::new().file("s.yaml", yaml).args(["check", "s.yaml"]).run();
    ran.success();
    assert!(
        ran.stderr.contains("s.yaml:3:5: `like A1001.: null` in the parameters of `lookup` is no JSON Schema keyword"),
        "{}",
        ran.stderr
    );
    // The shipped example says it whole, and draws no warning.
    let shipped = Test::new().args(["check", concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/support.yaml")]).run();
    shipped.success();
    assert!(!shipped.stderr.contains("no JSON Schema keyword"), "{}", shipped.stderr);
}
