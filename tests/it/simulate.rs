//! Simulated users (`simulate:`) and checks over the whole conversation, against one server
//! that plays both sides: the model named `user-sim` is the simulated user, any other the
//! agent under test.

use serde_json::{Value, json};

use crate::server::{Reply, Request, text, tool_calls};
use crate::{Test, read_csv};

const AGENT_PROMPT: &str = "SECRET-AGENT-PROMPT: you are Acme's support agent.";

/// What the simulated user says next, by its goal (in its system prompt) and how many
/// messages it has written (its own are the `assistant`'s in its request).
fn simulator(request: &Request) -> Reply {
    let body = request.json();
    let messages = body["messages"].as_array().unwrap();
    let goal = messages[0]["content"].as_str().unwrap();
    let written = messages.iter().filter(|m| m["role"] == "assistant").count();
    let last = messages.last().unwrap()["content"].as_str().unwrap_or_default().to_owned();
    let say = |words: &str| text(words, 30, 5);
    if goal.contains("EMPTY") {
        return say("   ");
    }
    if goal.contains("IMMEDIATE") {
        return say("###STOP###");
    }
    if goal.contains("NEVER") {
        return say(&format!("And another thing, number {written}."));
    }
    if last.contains("refunded") {
        return say(if goal.contains("ALONE") { "###STOP###" } else { "Thanks, that is all. ###STOP###" });
    }
    if last.contains("Which order") {
        return say("It is A1001.");
    }
    say("My order arrived broken, I want my money back.")
}

/// The agent: asks which order, refunds it with the declared tool, says so.
fn agent(request: &Request) -> Reply {
    let last = request.last_message();
    if last["role"] == "tool" {
        return text("Your order A1001 is refunded.", 40, 8);
    }
    let user = request.last_user();
    if user.contains("A1001") {
        if request.json().get("tools").is_none() {
            // An agent program of its own, with no tools.
            return text("Your order A1001 is refunded.", 30, 6);
        }
        return tool_calls(&[("call_r", "refund_order", json!({"order_id": "A1001"}))], 35, 7);
    }
    if user.contains("money back") || user.contains("need help") {
        return text("Which order is it?", 20, 4);
    }
    text(&format!("Noted: {user}"), 10, 2)
}

pub fn both(request: &Request) -> Reply {
    if request.json()["model"] == "user-sim" { simulator(request) } else { agent(request) }
}

pub fn scenario(name: &str, goal: &str, extra: &str) -> String {
    format!(
        "name: {name}\nsystem: \"{AGENT_PROMPT}\"\ntools:\n  - name: refund_order\n    description: Refunds an order.\n    parameters: {{type: object, properties: {{order_id: {{type: string}}}}}}\n    result: {{refunded: true}}\n\
         turns:\n  - user: Hi, I need help with an order.\nsimulate:\n  model: openai:user-sim\n  goal: \"{goal}\"\n  persona: Dana, PERSONA-MARKER.\n  max_turns: 3\n{extra}"
    )
}

pub const PRICES: &str = "openai:user-sim: {input: 1, output: 2}\nopenai:gpt-4o-mini: {input: 0.15, output: 0.6}\n";

#[test]
fn a_simulated_user_plays_to_its_goal_and_stops() {
    let expect =
        "expect:\n  ended: stop\n  called: [refund_order]\n  contains: refunded\n  max_turns: 4\n  max_cost_usd: 1\n";
    let run = Test::new()
        .server(both)
        .file("refund.yaml", &scenario("refund", "GOAL-MARKER: your order A1001 arrived broken; get a refund.", expect))
        .file("prices.yaml", PRICES)
        .args(["run", "refund.yaml", "-m", "openai:gpt-4o-mini", "--prices", "prices.yaml", "--report", "r.csv"])
        .run();
    run.success();
    let (_, log) = &run.logs()[0];
    assert_eq!(log["ended"], "stop");
    assert_eq!(log["status"], "passed", "{log:#}");
    let checks: Vec<(&str, bool)> =
        log["checks"].as_array().unwrap().iter().map(|c| (c["check"].as_str().unwrap(), c["passed"] == true)).collect();
    assert_eq!(
        checks,
        [("ended", true), ("max_turns", true), ("called", true), ("contains", true), ("max_cost_usd", true)]
    );
    let turns = log["turns"].as_array().unwrap();
    let users: Vec<&str> = turns.iter().map(|t| t["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["Hi, I need help with an order.", "It is A1001."]);
    let simulated: Vec<bool> = turns.iter().map(|t| t["simulated"] == true).collect();
    assert_eq!(simulated, [false, true]);
    assert!(turns[0].get("user_request").is_none());
    assert_eq!(turns[1]["user_request"]["prompt_tokens"], 30);
    assert_eq!(log["simulator"]["last_words"], "Thanks, that is all.");
    assert_eq!(log["simulator"]["model"], json!({"provider": "openai", "name": "user-sim"}));
    // Two simulator requests (a message, then the stop) of 30 + 5 tokens at $1 / $2 per million.
    assert_eq!(log["simulator"]["usage"]["prompt_tokens"], 60);
    let simulator_cost = log["simulator"]["cost"]["total_usd"].as_f64().unwrap();
    assert!((simulator_cost - (60.0 + 10.0 * 2.0) / 1e6).abs() < 1e-12, "{simulator_cost}");
    // The run's own cost is the agent's only.
    assert_eq!(log["usage"]["prompt_tokens"], 20 + 35 + 40);
    let rows = read_csv(&run.path().join("r.csv"));
    let user_costs: f64 = rows.iter().map(|r| r["user_cost_usd"].parse::<f64>().unwrap()).sum();
    assert!((user_costs - simulator_cost).abs() < 1e-12, "{rows:?}");
    assert!(
        run.stdout.contains("simulated users: playing the user against openai:gpt-4o-mini cost $0.000080"),
        "{}",
        run.stdout
    );

    // Each side saw only its own: the simulator never the agent's prompt, tools or calls;
    // the agent never the goal or the persona.
    for body in run.server().chat_bodies() {
        let text = body.to_string();
        if body["model"] == "user-sim" {
            assert!(!text.contains("SECRET-AGENT-PROMPT") && !text.contains("refund_order"), "{text}");
            assert!(body.get("tools").is_none_or(|t| t.as_array().is_none_or(Vec::is_empty)), "{text}");
            assert!(body["messages"].as_array().unwrap().iter().all(|m| m["role"] != "tool"), "{text}");
            assert!(text.contains("GOAL-MARKER") && text.contains("PERSONA-MARKER"));
        } else {
            assert!(
                !text.contains("GOAL-MARKER") && !text.contains("PERSONA-MARKER") && !text.contains("###STOP###"),
                "{text}"
            );
        }
    }
}

#[test]
fn max_turns_and_the_simulator_s_own_faults_end_the_conversation_apart() {
    let run = Test::new()
        .server(both)
        .file("never.yaml", &scenario("never", "NEVER stop.", ""))
        .file("never-ok.yaml", &scenario("never-ok", "NEVER stop.", "expect: {ended: max_turns}\n"))
        .file("empty.yaml", &scenario("empty", "EMPTY.", ""))
        .file(
            "immediate.yaml",
            &scenario("immediate", "IMMEDIATE.", "").replace("turns:\n  - user: Hi, I need help with an order.\n", ""),
        )
        .file("alone.yaml", &scenario("alone", "ALONE: get the refund.", ""))
        .args(["run", ".", "-m", "openai:gpt-4o-mini"])
        .run();
    run.code(1);
    let logs = run.logs();
    let log = |name: &str| &logs.iter().find(|(file, _)| file.starts_with(&format!("{name}__"))).unwrap().1;
    assert_eq!((log("never")["ended"].as_str(), log("never")["status"].as_str()), (Some("max_turns"), Some("failed")));
    assert_eq!(log("never")["turns"].as_array().unwrap().len(), 4, "the scripted turn and 3 simulated ones");
    assert_eq!(log("never")["checks"][0]["detail"], "the conversation ended with `max_turns`, expected `stop`");
    assert_eq!(log("never-ok")["status"], "passed");
    let empty = log("empty");
    assert_eq!((empty["ended"].as_str(), empty["status"].as_str()), (Some("error"), Some("error")));
    assert_eq!(empty["error"], "the simulated user failed, not the agent: it wrote an empty message");
    let immediate = log("immediate");
    assert!(
        immediate["error"].as_str().unwrap().contains("###STOP### before the agent had said anything"),
        "{immediate:#}"
    );
    assert!(immediate["turns"].as_array().unwrap().is_empty());
    assert!(immediate["simulator"]["stop_request"]["completion_tokens"] == 5, "its cost is still counted");
    let alone = log("alone");
    assert_eq!((alone["ended"].as_str(), alone["status"].as_str()), (Some("stop"), Some("passed")));
    assert!(alone["simulator"].get("last_words").is_none());
    assert!(run.stdout.contains("conversation: ended: the conversation ended with `max_turns`"), "{}", run.stdout);
}

#[test]
fn a_scripted_scenario_has_checks_over_the_whole_conversation_too() {
    let scripted = |name: &str, expect: &str| {
        format!(
            "name: {name}\ntools: []\nturns:\n  - user: I want my money back\n  - user: It is A1001 please\nexpect:\n{expect}"
        )
    };
    let run = Test::new()
        .server(both)
        .file(
            "ok.yaml",
            &scripted("ok", "  ended: script\n  contains: refunded\n  not_contains: sorry\n  max_turns: 2\n"),
        )
        .file("bad.yaml", &scripted("bad", "  regex: '^Which'\n  max_turns: 1\n"))
        .args(["run", ".", "-m", "openai:gpt-4o-mini", "--junit", "j.xml"])
        .run();
    run.code(1);
    let logs = run.logs();
    let log = |name: &str| &logs.iter().find(|(file, _)| file.starts_with(&format!("{name}__"))).unwrap().1;
    assert_eq!(log("ok")["status"], "passed", "{:#}", log("ok"));
    assert_eq!(log("ok")["ended"], "script");
    let bad = log("bad");
    assert_eq!(bad["status"], "failed");
    let failed: Vec<&str> = bad["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["max_turns", "regex"]);
    let junit = std::fs::read_to_string(run.path().join("j.xml")).unwrap();
    assert!(junit.contains("conversation: max_turns: 2 user message(s), limit 1"), "{junit}");
}

#[test]
fn a_simulated_user_needs_a_model_and_is_never_the_model_under_test() {
    let without = "name: s\nsimulate:\n  goal: get a refund\n";
    let refused =
        Test::new().server(both).file("s.yaml", without).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"]).run();
    refused.code(2);
    assert!(refused.stderr.contains("s.yaml:3:3: expected a model for the simulated user"), "{}", refused.stderr);
    assert!(refused.server().chat_bodies().is_empty(), "nothing was sent");
    let given =
        refused.then().args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--user-model", "openai:user-sim"]).run();
    given.success();
    let bodies = given.server().chat_bodies();
    assert_eq!(bodies[0]["model"], "user-sim", "the simulated user opens the conversation");
}

#[test]
fn a_simulated_conversation_replays_and_a_changed_agent_diverges_where_it_changed() {
    let first = Test::new()
        .server(both)
        .file("refund.yaml", &scenario("refund", "Get a refund for A1001.", ""))
        .args(["run", "refund.yaml", "-m", "openai:gpt-4o-mini", "--cache", "c", "--seed", "3"])
        .run();
    first.success();
    let replay = ["run", "refund.yaml", "-m", "openai:gpt-4o-mini", "--cache", "c", "--seed", "3", "--replay"];
    let again = first.then().server_gone().env_remove("OPENAI_API_KEY").args(replay).run();
    again.success();
    let newest = |ran: &crate::Ran| -> Value {
        let logs = ran.logs();
        logs.into_iter().max_by_key(|(_, log)| log["started_at"].as_str().unwrap().to_owned()).unwrap().1
    };
    let replayed = newest(&again);
    assert_eq!(replayed["ended"], "stop");
    let hits = replayed["turns"].as_array().unwrap().iter().flat_map(|t| {
        let user = t.get("user_request").cloned().into_iter();
        t["requests"].as_array().unwrap().clone().into_iter().chain(user)
    });
    assert!(hits.into_iter().all(|r| r["cache"] == "hit"));
    // The agent's tool now answers otherwise: the second simulated turn's request was never
    // recorded, and the error says where the conversation diverged.
    again.write(
        "refund.yaml",
        &scenario("refund", "Get a refund for A1001.", "").replace("{refunded: true}", "{refunded: later}"),
    );
    let diverged = again.then().env_remove("OPENAI_API_KEY").args(replay).run();
    diverged.code(1);
    let log = newest(&diverged);
    let error = log["error"].as_str().unwrap();
    assert!(error.starts_with("turn 2: ") && error.contains("diverged from the recorded one at this turn"), "{error}");
}

#[test]
fn a_simulated_user_talks_to_an_agent_program() {
    let scenario = format!(
        "name: program\nagent:\n  command: [\"{}\", agent.py]\nsimulate:\n  model: openai:user-sim\n  goal: get a refund for A1001\n  max_turns: 4\nexpect:\n  contains: refunded\n",
        crate::agents::python()
    );
    let run = Test::new()
        .server(both)
        .file("agent.py", crate::agents::PLAIN_AGENT)
        .file("program.yaml", &scenario)
        .args(["run", "program.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let (_, log) = &run.logs()[0];
    assert_eq!(log["ended"], "stop");
    assert!(log["turns"].as_array().unwrap().iter().all(|t| t["simulated"] == true));
    assert!(log["agent"]["exit"].as_str().unwrap().contains("exit status: 0"));
}
