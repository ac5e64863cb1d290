//! Expectations of a turn, checked against what happened.

use serde_json::Value;

pub(crate) mod judge;

use crate::record::{CheckKind, CheckRecord, ToolCallRecord};
use crate::scenario::{Expect, ExpectedCall};

/// What a turn produced, as the checks see it.
pub struct TurnFacts<'a> {
    pub reply: &'a str,
    pub tool_calls: &'a [ToolCallRecord],
    pub cost_usd: f64,
    /// `false` when the model has no price, so a cost limit cannot be verified.
    pub priced: bool,
    pub latency_ms: u64,
    /// What the cost is of, as a detail says it: `turn`, or `run` for the whole conversation.
    pub scope: &'static str,
}

/// Evaluates every expectation of `expect`, one record per listed item.
pub fn evaluate(expect: &Expect, facts: &TurnFacts<'_>) -> Vec<CheckRecord> {
    let mut checks = Vec::new();
    if let Some(expected) = &expect.tool_calls {
        checks.push(check_tool_calls(expected, facts.tool_calls));
    }
    if let Some(expected) = &expect.tool_calls_unordered {
        checks.push(check_unordered(expected, facts.tool_calls));
    }
    if !expect.called.is_empty() {
        checks.push(check_called(&expect.called, facts.tool_calls));
    }
    if !expect.not_called.is_empty() {
        let made: Vec<&str> = expect
            .not_called
            .iter()
            .filter(|name| facts.tool_calls.iter().any(|c| c.name == **name))
            .map(String::as_str)
            .collect();
        let (passed, detail) = if made.is_empty() {
            (true, format!("none of {} was called", expect.not_called.join(", ")))
        } else {
            (false, format!("{} was called; calls: {}", made.join(", "), list_calls(facts.tool_calls)))
        };
        checks.push(CheckRecord { check: CheckKind::NotCalled, passed, detail });
    }
    let reply = facts.reply.to_lowercase();
    for needle in &expect.contains {
        let passed = reply.contains(&needle.to_lowercase());
        let detail =
            if passed { format!("reply contains {needle:?}") } else { format!("reply does not contain {needle:?}") };
        checks.push(CheckRecord { check: CheckKind::Contains, passed, detail });
    }
    for needle in &expect.not_contains {
        let passed = !reply.contains(&needle.to_lowercase());
        let detail =
            if passed { format!("reply does not contain {needle:?}") } else { format!("reply contains {needle:?}") };
        checks.push(CheckRecord { check: CheckKind::NotContains, passed, detail });
    }
    for regex in &expect.regex {
        let passed = regex.is_match(facts.reply);
        let verb = if passed { "matches" } else { "does not match" };
        checks.push(CheckRecord {
            check: CheckKind::Regex,
            passed,
            detail: format!("reply {verb} /{}/", regex.as_str()),
        });
    }
    if let Some(limit) = expect.max_cost_usd {
        let (passed, detail) = if facts.priced {
            let passed = facts.cost_usd <= limit;
            (
                passed,
                format!(
                    "{} cost ${:.6} {} limit ${limit}",
                    facts.scope,
                    facts.cost_usd,
                    if passed { "within" } else { "over" }
                ),
            )
        } else {
            (false, format!("cannot check a cost limit of ${limit}: the model has no price (add one with --prices)"))
        };
        checks.push(CheckRecord { check: CheckKind::MaxCostUsd, passed, detail });
    }
    if let Some(limit) = expect.max_latency_ms {
        let passed = facts.latency_ms <= limit;
        let detail = format!("turn took {} ms, limit {limit} ms", facts.latency_ms);
        checks.push(CheckRecord { check: CheckKind::MaxLatencyMs, passed, detail });
    }
    checks
}

/// The calls made, as a detail reads them: `name({args}), ...` or `no tool`.
fn list_calls(actual: &[ToolCallRecord]) -> String {
    let names: Vec<_> = actual.iter().map(|c| format!("{}({})", c.name, c.arguments)).collect();
    if names.is_empty() { "no tool".to_owned() } else { names.join(", ") }
}

/// Whether `got` is the call `want` describes; `Err` says how it differs.
fn call_matches(want: &ExpectedCall, got: &ToolCallRecord) -> Result<(), String> {
    if want.name != got.name {
        return Err(format!("expected {}, got {}", want.name, got.name));
    }
    match &want.arguments {
        Some(pattern) => pattern.check(Some(&got.arguments), "arguments").map_err(|why| format!("{}: {why}", got.name)),
        None => Ok(()),
    }
}

fn check_tool_calls(expected: &[ExpectedCall], actual: &[ToolCallRecord]) -> CheckRecord {
    let fail = |detail: String| CheckRecord { check: CheckKind::ToolCalls, passed: false, detail };
    if expected.len() != actual.len() {
        return fail(format!(
            "expected {} tool call(s), the model made {}: {}",
            expected.len(),
            actual.len(),
            list_calls(actual)
        ));
    }
    for (i, (want, got)) in expected.iter().zip(actual).enumerate() {
        if let Err(why) = call_matches(want, got) {
            return fail(format!("call {}: {why}; calls: {}", i + 1, list_calls(actual)));
        }
    }
    CheckRecord { check: CheckKind::ToolCalls, passed: true, detail: format!("called {}", list_calls(actual)) }
}

/// Exactly these calls in any order: every expected call matched to its own actual call.
fn check_unordered(expected: &[ExpectedCall], actual: &[ToolCallRecord]) -> CheckRecord {
    let fail = |detail: String| CheckRecord { check: CheckKind::ToolCallsUnordered, passed: false, detail };
    if expected.len() != actual.len() {
        return fail(format!(
            "expected {} tool call(s) in any order, the model made {}: {}",
            expected.len(),
            actual.len(),
            list_calls(actual)
        ));
    }
    match assign(expected, actual) {
        Ok(()) => CheckRecord {
            check: CheckKind::ToolCallsUnordered,
            passed: true,
            detail: format!("called {}", list_calls(actual)),
        },
        Err(why) => fail(format!("{why}; calls: {}", list_calls(actual))),
    }
}

/// At least these calls, in any order.
fn check_called(expected: &[ExpectedCall], actual: &[ToolCallRecord]) -> CheckRecord {
    match assign(expected, actual) {
        Ok(()) => {
            CheckRecord { check: CheckKind::Called, passed: true, detail: format!("called {}", list_calls(actual)) }
        }
        Err(why) => CheckRecord {
            check: CheckKind::Called,
            passed: false,
            detail: format!("{why}; calls: {}", list_calls(actual)),
        },
    }
}

/// Gives every expected call its own matching actual call (backtracking: calls per turn are
/// few). `Err` names the first expected call no assignment could satisfy, and why the
/// closest call differs.
fn assign(expected: &[ExpectedCall], actual: &[ToolCallRecord]) -> Result<(), String> {
    fn search(expected: &[ExpectedCall], actual: &[ToolCallRecord], used: &mut [bool]) -> bool {
        let Some((want, rest)) = expected.split_first() else {
            return true;
        };
        for (i, got) in actual.iter().enumerate() {
            if !used[i] && call_matches(want, got).is_ok() {
                used[i] = true;
                if search(rest, actual, used) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    let mut used = vec![false; actual.len()];
    if search(expected, actual, &mut used) {
        return Ok(());
    }
    // The first expected call that no call matches on its own, else a clash of two.
    for want in expected {
        if !actual.iter().any(|got| call_matches(want, got).is_ok()) {
            let closest =
                actual.iter().find(|got| got.name == want.name).map(|got| call_matches(want, got).unwrap_err());
            return Err(match closest {
                Some(why) => format!("no call matches {}: {why}", want.name),
                None => format!("{} was not called", want.name),
            });
        }
    }
    Err("the calls cannot each match a different expected call (two expectations want the same call)".to_owned())
}

/// Whether `expected` is contained in `actual`: objects by key, recursively; arrays element
/// by element; numbers by value (2 equals 2.0); everything else by equality.
pub fn is_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            want.iter().all(|(key, value)| got.get(key).is_some_and(|actual| is_subset(value, actual)))
        }
        (Value::Array(want), Value::Array(got)) => {
            want.len() == got.len() && want.iter().zip(got).all(|(w, g)| is_subset(w, g))
        }
        (Value::Number(want), Value::Number(got)) => want.as_f64() == got.as_f64(),
        _ => expected == actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ExpectedCall;
    use serde_json::json;

    fn call(name: &str, arguments: Value) -> ToolCallRecord {
        ToolCallRecord {
            id: "c".into(),
            name: name.into(),
            listed_as: None,
            arguments,
            result: None,
            error: None,
            started_at: None,
            duration_ms: 0,
            pinned: false,
            source: None,
        }
    }

    fn facts<'a>(reply: &'a str, calls: &'a [ToolCallRecord]) -> TurnFacts<'a> {
        TurnFacts { reply, tool_calls: calls, cost_usd: 0.002, priced: true, latency_ms: 900, scope: "turn" }
    }

    #[test]
    fn subset_matching() {
        assert!(is_subset(&json!({"city": "Paris"}), &json!({"city": "Paris", "units": "c"})));
        assert!(is_subset(&json!({"x": 2}), &json!({"x": 2.0})));
        assert!(!is_subset(&json!({"city": "Paris"}), &json!({"city": "paris"})));
        assert!(!is_subset(&json!({"a": {"b": 1}}), &json!({"a": {"c": 1}})));
        assert!(!is_subset(&json!([1, 2]), &json!([1, 2, 3])));
    }

    #[test]
    fn tool_calls_in_order_with_argument_subsets() {
        let calls = [call("get_weather", json!({"city": "Paris"})), call("reverse_text", json!({"text": "a"}))];
        let expect = |list: Vec<ExpectedCall>| Expect { tool_calls: Some(list), ..Expect::default() };
        let want = |name: &str, args: Option<Value>| ExpectedCall {
            name: name.into(),
            arguments: args.map(|a| crate::scenario::Pattern::parse(&a).unwrap()),
        };

        let ok = evaluate(
            &expect(vec![want("get_weather", Some(json!({"city": "Paris"}))), want("reverse_text", None)]),
            &facts("", &calls),
        );
        assert!(ok[0].passed, "{ok:?}");
        let swapped =
            evaluate(&expect(vec![want("reverse_text", None), want("get_weather", None)]), &facts("", &calls));
        assert!(!swapped[0].passed);
        assert!(swapped[0].detail.contains("call 1: expected reverse_text, got get_weather"), "{}", swapped[0].detail);
        let missing = evaluate(&expect(vec![want("get_weather", None)]), &facts("", &calls));
        assert!(missing[0].detail.starts_with("expected 1 tool call(s), the model made 2"));
        let wrong_args = evaluate(
            &expect(vec![want("get_weather", Some(json!({"city": "Rome"}))), want("reverse_text", None)]),
            &facts("", &calls),
        );
        assert!(!wrong_args[0].passed);
        let none = evaluate(&expect(vec![]), &facts("", &[]));
        assert!(none[0].passed);
    }

    fn want(name: &str, args: Value) -> ExpectedCall {
        ExpectedCall { name: name.into(), arguments: Some(crate::scenario::Pattern::parse(&args).unwrap()) }
    }

    #[test]
    fn unordered_called_and_not_called() {
        let calls = [
            call("add_numbers", json!({"x": 1, "y": 2})),
            call("add_numbers", json!({"x": 3, "y": 4})),
            call("reverse_text", json!({"text": "a"})),
        ];
        let unordered = |list: Vec<ExpectedCall>| {
            evaluate(&Expect { tool_calls_unordered: Some(list), ..Expect::default() }, &facts("", &calls)).remove(0)
        };
        // Any order; each expectation takes its own call.
        let ok = unordered(vec![
            want("reverse_text", json!({})),
            want("add_numbers", json!({"x": 3})),
            want("add_numbers", json!({"x": {"$one_of": [1, 9]}})),
        ]);
        assert!(ok.passed, "{ok:?}");
        let twice = unordered(vec![
            want("reverse_text", json!({})),
            want("add_numbers", json!({"x": 3})),
            want("add_numbers", json!({"y": 4})),
        ]);
        assert!(!twice.passed && twice.detail.contains("two expectations want the same call"), "{twice:?}");
        let wrong = unordered(vec![
            want("reverse_text", json!({"text": "b"})),
            want("add_numbers", json!({})),
            want("add_numbers", json!({})),
        ]);
        assert!(
            wrong
                .detail
                .starts_with("no call matches reverse_text: reverse_text: `arguments.text` is \"a\", expected \"b\""),
            "{wrong:?}"
        );
        let short = unordered(vec![want("reverse_text", json!({}))]);
        assert!(short.detail.starts_with("expected 1 tool call(s) in any order, the model made 3"), "{short:?}");

        let called = |list: Vec<ExpectedCall>| {
            evaluate(&Expect { called: list, ..Expect::default() }, &facts("", &calls)).remove(0)
        };
        assert!(called(vec![want("add_numbers", json!({"y": 4}))]).passed);
        let missing = called(vec![ExpectedCall { name: "get_weather".into(), arguments: None }]);
        assert_eq!((missing.check.as_str(), missing.passed), ("called", false));
        assert!(missing.detail.starts_with("get_weather was not called"), "{missing:?}");

        let not_called = |names: &[&str]| {
            evaluate(
                &Expect { not_called: names.iter().map(|n| (*n).to_owned()).collect(), ..Expect::default() },
                &facts("", &calls),
            )
            .remove(0)
        };
        assert!(not_called(&["get_weather"]).passed);
        let made = not_called(&["get_weather", "reverse_text"]);
        assert!(!made.passed && made.detail.starts_with("reverse_text was called"), "{made:?}");
    }

    #[test]
    fn text_checks_are_case_insensitive_except_regex() {
        let expect = Expect {
            contains: vec!["ELPPA".into()],
            not_contains: vec!["Error".into()],
            regex: vec![regex::Regex::new("^e.ppa$").unwrap()],
            ..Expect::default()
        };
        let results = evaluate(&expect, &facts("elppa", &[]));
        assert!(results.iter().all(|c| c.passed), "{results:?}");
        let results = evaluate(&expect, &facts("an ERROR: Elppa", &[]));
        assert_eq!(results.iter().map(|c| c.passed).collect::<Vec<_>>(), [true, false, false]);
    }

    #[test]
    fn cost_and_latency_limits() {
        let expect = Expect { max_cost_usd: Some(0.001), max_latency_ms: Some(1000), ..Expect::default() };
        let results = evaluate(&expect, &facts("x", &[]));
        assert_eq!((results[0].passed, results[1].passed), (false, true));
        let unpriced = TurnFacts { priced: false, cost_usd: 0.0, ..facts("x", &[]) };
        let results = evaluate(&expect, &unpriced);
        assert!(!results[0].passed && results[0].detail.contains("no price"));
    }
}
