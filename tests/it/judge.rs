//! `expect.judge`: a judge model grades a reply through a forced `grade` call; its verdict,
//! reason, tokens and cost are recorded apart and count toward the budget.

use serde_json::{Value, json};

use crate::Test;
use crate::run::assistant;
use crate::server::{Reply, Request, api_error, text, tool_calls};

/// The model under test is `assistant` (gpt-4o-mini); `openai:gpt-4o` is the judge, which
/// passes a reply that states "elppa" and fails any other. A judge request carries the rubric
/// and the conversation in its user message.
pub fn judged(request: &Request) -> Reply {
    let body = request.json();
    if body["model"] != "gpt-4o" {
        return assistant(request);
    }
    let shown = request.last_user();
    let reply = shown.rsplit("<message role=\"assistant\">\n").next().unwrap_or_default();
    let verdict = if reply.contains("elppa") {
        json!({"pass": true, "reason": "It gives elppa."})
    } else {
        json!({"pass": false, "reason": "It never says goodbye."})
    };
    tool_calls(&[("g1", "grade", verdict)], 500, 20)
}

pub const SCENARIO: &str = "name: judged
model: openai:gpt-4o-mini
tools: [reverse_text]
turns:
  - user: reverse apple
    expect:
      judge: {rubric: The reply gives the reversed word., model: openai:gpt-4o}
  - user: say bye
    expect:
      contains: bye
      judge: Says goodbye.
";

/// gpt-4o's built-in price: 500 input x $2.50/M + 20 output x $10/M.
const JUDGE_COST: f64 = 0.00145;

#[test]
fn a_judge_grades_each_reply_through_a_forced_call_and_is_recorded_apart() {
    let out = Test::new()
        .server(judged)
        .file("s.yaml", SCENARIO)
        .args(["run", "s.yaml", "--judge-model", "openai:gpt-4o", "--report", "r.csv"])
        .run();
    out.code(1);

    // The judge's requests: forced to call `grade`, the only tool, with the conversation up
    // to and including the reply it grades, and the rubric.
    let judge_bodies: Vec<Value> = out.server().chat_bodies().into_iter().filter(|b| b["model"] == "gpt-4o").collect();
    assert_eq!(judge_bodies.len(), 2);
    let first = &judge_bodies[0];
    assert_eq!(first["tool_choice"], json!({"type": "function", "function": {"name": "grade"}}));
    assert_eq!(first["tools"].as_array().unwrap().len(), 1);
    assert_eq!(first["tools"][0]["function"]["name"], "grade");
    assert_eq!(first["tools"][0]["function"]["parameters"]["required"], json!(["pass", "reason"]));
    let shown = first["messages"][1]["content"].as_str().unwrap();
    assert!(shown.contains("<message role=\"user\">\nreverse apple\n</message>"), "{shown}");
    assert!(
        shown.contains("<tool_call id=\"call_rev\" name=\"reverse_text\">\n{\"text\":\"apple\"}\n</tool_call>"),
        "{shown}"
    );
    assert!(shown.contains("<tool_result id=\"call_rev\">\n{\"result\":\"elppa\"}\n</tool_result>"), "{shown}");
    assert!(
        shown.contains("<message role=\"assistant\">\nTool said: {\"result\":\"elppa\"}\n</message>\n</conversation>"),
        "{shown}"
    );
    assert!(shown.contains("<rubric>\nThe reply gives the reversed word.\n</rubric>"), "{shown}");
    assert!(!shown.contains("say bye"), "the judge sees nothing after the reply: {shown}");
    // The model under test was never sent tool_choice other than auto, nor the grade tool.
    for body in out.server().chat_bodies().iter().filter(|b| b["model"] == "gpt-4o-mini") {
        assert_eq!(body["tool_choice"], "auto");
    }
    // The second turn's judge came from --judge-model and saw the whole conversation.
    let second = judge_bodies[1]["messages"][1]["content"].as_str().unwrap();
    assert!(
        second.contains("reverse apple") && second.contains("<message role=\"user\">\nsay bye\n</message>"),
        "{second}"
    );
    assert!(second.contains("<rubric>\nSays goodbye.\n</rubric>"), "{second}");

    // The log: a `judge` check with the reason, and the judge's record apart from the turn's.
    let (_, log) = out.logs().remove(0);
    let turn = &log["turns"][0];
    assert_eq!(turn["checks"], json!([{"check": "judge", "passed": true, "detail": "openai:gpt-4o: It gives elppa."}]));
    let judge = &turn["judge"];
    assert_eq!(judge["model"], json!({"provider": "openai", "name": "gpt-4o"}));
    assert_eq!(
        (judge["pass"].clone(), judge["reason"].clone(), judge["error"].clone()),
        (json!(true), json!("It gives elppa."), Value::Null)
    );
    assert_eq!(judge["rubric"], "The reply gives the reversed word.");
    assert_eq!(
        (judge["usage"]["prompt_tokens"].as_u64(), judge["usage"]["completion_tokens"].as_u64()),
        (Some(500), Some(20))
    );
    assert!((judge["cost"]["total_usd"].as_f64().unwrap() - JUDGE_COST).abs() < 1e-12, "{judge}");
    assert_eq!(judge["requests"].as_array().unwrap().len(), 1);
    // The turn's own usage is the model's alone (20 + 40 prompt tokens at gpt-4o-mini's price).
    assert_eq!(turn["usage"]["prompt_tokens"], 60);
    let second_turn = &log["turns"][1];
    assert_eq!(second_turn["status"], "failed");
    assert_eq!(
        second_turn["checks"][1],
        json!({"check": "judge", "passed": false, "detail": "openai:gpt-4o: It never says goodbye."})
    );
    assert_eq!(log["status"], "failed");

    // The CSV: judge_cost_usd on each turn, not in total_cost_usd; the summary adds it up.
    let rows = crate::read_csv(&out.ws.path().join("r.csv"));
    for row in &rows {
        assert_eq!(row["judge_cost_usd"], "0.00145");
        assert!(row["total_cost_usd"].parse::<f64>().unwrap() < 0.0001, "{row:?}");
    }
    let summary = crate::read_csv(&out.ws.path().join("r.summary.csv"));
    assert_eq!(summary[0]["judge_cost_usd"], "0.0029");
    assert!(
        out.stdout.contains("judge: grading openai:gpt-4o-mini's replies cost $0.002900 (not in its cost_usd)"),
        "{}",
        out.stdout
    );
    // What failed says why: the judge's reason.
    assert!(
        out.stdout
            .contains("judged on openai:gpt-4o-mini #1 turn 2: failed judge: openai:gpt-4o: It never says goodbye."),
        "{}",
        out.stdout
    );
}

#[test]
fn the_judge_cost_counts_toward_the_budget() {
    // Each run costs the model $0.00001 and its judge $0.00145: a $0.001 budget is spent by
    // the judge of the first run alone.
    let scenarios: Vec<String> = (0..3)
        .map(|i| {
            format!("name: s{i}\nturns:\n  - user: reverse apple\n    expect: {{judge: Gives the reversed word.}}\n")
        })
        .collect();
    let out = Test::new()
        .server(judged)
        .file("s.yaml", &scenarios.join("---\n"))
        .args([
            "run",
            "s.yaml",
            "-m",
            "openai:gpt-4o-mini",
            "--judge-model",
            "openai:gpt-4o",
            "-j",
            "1",
            "--max-cost-usd",
            "0.001",
            "--report",
            "r.csv",
        ])
        .run();
    out.code(3);
    let statuses: Vec<String> =
        crate::read_csv(&out.ws.path().join("r.csv")).iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses, ["passed", "not_started", "not_started"]);
    assert!(out.stdout.contains("budget of $0.001 reached: $0.001"), "{}", out.stdout);
}

#[test]
fn a_judge_must_be_named_and_is_never_the_model_under_test() {
    let yaml = "model: openai:gpt-4o-mini\ntools: [reverse_text]\nturns:\n  - user: reverse apple\n    expect:\n      judge: Gives the reversed word.\n";
    // None configured: a load error at the check, nothing sent.
    let out = Test::new().server(judged).file("s.yaml", yaml).args(["run", "s.yaml"]).run();
    out.code(2);
    assert!(out.stderr.contains("s.yaml:6:14: expected a judge model for `judge`"), "{}", out.stderr);
    assert!(out.server().requests().is_empty());
    let check = Test::new().file("s.yaml", yaml).args(["check", "s.yaml"]).run();
    check.code(2);
    Test::new().file("s.yaml", yaml).args(["check", "s.yaml", "--judge-model", "openai:gpt-4o"]).run().success();
    // judge_model: in runner.yaml, and --judge-model over it.
    let out = Test::new()
        .server(judged)
        .file("s.yaml", yaml)
        .file("runner.yaml", "judge_model: openai:gpt-4o\n")
        .args(["run", "s.yaml"])
        .run();
    out.success();
    let judges: Vec<Value> =
        out.server().chat_bodies().into_iter().filter(|b| b["tool_choice"]["function"]["name"] == "grade").collect();
    assert_eq!(judges.len(), 1);
    assert_eq!(judges[0]["model"], "gpt-4o");
    let out = Test::new()
        .server(judged)
        .file("s.yaml", yaml)
        .file("runner.yaml", "judge_model: openai:gpt-4o\n")
        .args(["run", "s.yaml", "--judge-model", "openai:gpt-4.1"])
        .run();
    let judged_by: Vec<Value> = out
        .server()
        .chat_bodies()
        .into_iter()
        .filter(|b| b["tool_choice"]["function"]["name"] == "grade")
        .map(|b| b["model"].clone())
        .collect();
    assert_eq!(judged_by, ["gpt-4.1"]);
    // A judge that cannot be reached is refused before anything runs, like a model.
    let out =
        Test::new().server(judged).file("s.yaml", yaml).args(["run", "s.yaml", "--judge-model", "nowhere:x"]).run();
    out.code(2);
    assert!(out.stderr.contains("judge model"), "{}", out.stderr);
    assert!(out.server().requests().is_empty());
}

#[test]
fn a_judge_without_a_verdict_is_the_runs_error_not_a_failure() {
    let judge_says = |reply: fn() -> Reply| {
        move |request: &Request| if request.json()["model"] == "gpt-4o" { reply() } else { assistant(request) }
    };
    let yaml = "turns:\n  - user: hello\n    expect: {judge: Greets the user.}\n  - user: hello\n";
    for (reply, why) in [
        (
            (|| text("PASS", 30, 2)) as fn() -> Reply,
            "judge: the judge answered in text instead of calling `grade`: \"PASS\"",
        ),
        (
            || tool_calls(&[("g", "grade", json!({"reason": "fine"}))], 30, 2),
            "judge: the judge's verdict has no `pass`",
        ),
        (|| api_error(400, "tool_choice is not supported"), "judge: the judge's request failed: HTTP 400"),
    ] {
        let out = Test::new()
            .server(judge_says(reply))
            .file("s.yaml", yaml)
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--judge-model", "openai:gpt-4o"])
            .run();
        out.code(1);
        let (_, log) = out.logs().remove(0);
        assert_eq!(log["status"], "error", "{log}");
        assert!(log["error"].as_str().unwrap().starts_with(&format!("turn 1: {why}")), "{}", log["error"]);
        let turn = &log["turns"][0];
        assert_eq!(turn["checks"][0]["passed"], false);
        assert!(turn["checks"][0]["detail"].as_str().unwrap().starts_with("openai:gpt-4o gave no verdict: "), "{turn}");
        assert_eq!(turn["judge"]["pass"], Value::Null);
        // The reply was there: the conversation went on.
        assert_eq!(log["turns"].as_array().unwrap().len(), 2, "{log}");
    }
}
