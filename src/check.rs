//! Expectations of a turn, checked against what happened.

use serde_json::Value;

use crate::record::{CheckRecord, ToolCallRecord};
use crate::scenario::Expect;

/// What a turn produced, as the checks see it.
pub struct TurnFacts<'a> {
    pub reply: &'a str,
    pub tool_calls: &'a [ToolCallRecord],
    pub cost_usd: f64,
    /// `false` when the model has no price, so a cost limit cannot be verified.
    pub priced: bool,
    pub latency_ms: u64,
}

/// Evaluates every expectation of `expect`, one record per listed item.
pub fn evaluate(expect: &Expect, facts: &TurnFacts<'_>) -> Vec<CheckRecord> {
    let mut checks = Vec::new();
    if let Some(expected) = &expect.tool_calls {
        checks.push(check_tool_calls(expected, facts.tool_calls));
    }
    let reply = facts.reply.to_lowercase();
    for needle in &expect.contains {
        let passed = reply.contains(&needle.to_lowercase());
        let detail = if passed { format!("reply contains {needle:?}") } else { format!("reply does not contain {needle:?}") };
        checks.push(CheckRecord { check: "contains".into(), passed, detail });
    }
    for needle in &expect.not_contains {
        let passed = !reply.contains(&needle.to_lowercase());
        let detail = if passed { format!("reply does not contain {needle:?}") } else { format!("reply contains {needle:?}") };
        checks.push(CheckRecord { check: "not_contains".into(), passed, detail });
    }
    for regex in &expect.regex {
        let passed = regex.is_match(facts.reply);
        let verb = if passed { "matches" } else { "does not match" };
        checks.push(CheckRecord { check: "regex".into(), passed, detail: format!("reply {verb} /{}/", regex.as_str()) });
    }
    if let Some(limit) = expect.max_cost_usd {
        let (passed, detail) = if facts.priced {
            let passed = facts.cost_usd <= limit;
            (passed, format!("turn cost ${:.6} {} limit ${limit}", facts.cost_usd, if passed { "within" } else { "over" }))
        } else {
            (false, format!("cannot check a cost limit of ${limit}: the model has no price (add one with --prices)"))
        };
        checks.push(CheckRecord { check: "max_cost_usd".into(), passed, detail });
    }
    if let Some(limit) = expect.max_latency_ms {
        let passed = facts.latency_ms <= limit;
        let detail = format!("turn took {} ms, limit {limit} ms", facts.latency_ms);
        checks.push(CheckRecord { check: "max_latency_ms".into(), passed, detail });
    }
    checks
}

fn check_tool_calls(expected: &[crate::scenario::ExpectedCall], actual: &[ToolCallRecord]) -> CheckRecord {
    let called = || {
        let names: Vec<_> = actual.iter().map(|c| format!("{}({})", c.name, c.arguments)).collect();
        if names.is_empty() { "no tool".to_owned() } else { names.join(", ") }
    };
    let fail = |detail: String| CheckRecord { check: "tool_calls".into(), passed: false, detail };
    if expected.len() != actual.len() {
        return fail(format!("expected {} tool call(s), the model made {}: {}", expected.len(), actual.len(), called()));
    }
    for (i, (want, got)) in expected.iter().zip(actual).enumerate() {
        if want.name != got.name {
            return fail(format!("call {}: expected {}, got {}; calls: {}", i + 1, want.name, got.name, called()));
        }
        if let Some(arguments) = &want.arguments
            && !is_subset(arguments, &got.arguments)
        {
            return fail(format!("call {}: {} arguments {} do not include {arguments}", i + 1, got.name, got.arguments));
        }
    }
    CheckRecord { check: "tool_calls".into(), passed: true, detail: format!("called {}", called()) }
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
        ToolCallRecord { id: "c".into(), name: name.into(), arguments, result: None, error: None, duration_ms: 0, pinned: false }
    }

    fn facts<'a>(reply: &'a str, calls: &'a [ToolCallRecord]) -> TurnFacts<'a> {
        TurnFacts { reply, tool_calls: calls, cost_usd: 0.002, priced: true, latency_ms: 900 }
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
        let want = |name: &str, args: Option<Value>| ExpectedCall { name: name.into(), arguments: args };

        let ok = evaluate(&expect(vec![want("get_weather", Some(json!({"city": "Paris"}))), want("reverse_text", None)]), &facts("", &calls));
        assert!(ok[0].passed, "{ok:?}");
        let swapped = evaluate(&expect(vec![want("reverse_text", None), want("get_weather", None)]), &facts("", &calls));
        assert!(!swapped[0].passed);
        assert!(swapped[0].detail.contains("call 1: expected reverse_text, got get_weather"), "{}", swapped[0].detail);
        let missing = evaluate(&expect(vec![want("get_weather", None)]), &facts("", &calls));
        assert!(missing[0].detail.starts_with("expected 1 tool call(s), the model made 2"));
        let wrong_args = evaluate(&expect(vec![want("get_weather", Some(json!({"city": "Rome"}))), want("reverse_text", None)]), &facts("", &calls));
        assert!(!wrong_args[0].passed);
        let none = evaluate(&expect(vec![]), &facts("", &[]));
        assert!(none[0].passed);
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
