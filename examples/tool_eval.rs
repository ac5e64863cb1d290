//! The embedded model's tool use on the labelled set of `tests/fixtures/tool_eval/`: 152
//! prompts over 30 declared tools from 14 domains, split in halves before any tuning.
//!
//! For each case of the chosen half: (1) the decision (a call or text) and whether the calls
//! are exact (same number, each expected call matched by one made: its name, and its
//! arguments by the matchers of scenario checks); (2) where the model called tools, each
//! call answered with its tool's `result`, then the reply: does it state every string and
//! number of the results, and does every number in it come from the message or the results.
//!
//! Run it:
//!
//!     cargo run --release --example tool_eval -- design     # or: holdout, all

use std::collections::BTreeMap;

use runner::matcher::Pattern;
use runner::message::{FunctionSpec, Message, ToolSpec};
use runner::provider::Sampling;
use runner::provider::local::{LocalProvider, acquire};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Declared {
    description: String,
    parameters: Value,
    result: Value,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    tools: Vec<String>,
    half: String,
    calls: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    name: String,
    arguments: Value,
}

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tool_eval");

fn main() {
    let half = std::env::args().nth(1).unwrap_or_else(|| "design".to_owned());
    assert!(["design", "holdout", "all"].contains(&half.as_str()), "the half: design, holdout or all");
    let declared: BTreeMap<String, Declared> =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{DIR}/tools.yaml")).unwrap()).unwrap();
    let cases: Vec<Case> =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{DIR}/cases.yaml")).unwrap()).unwrap();
    let cases: Vec<&Case> = cases.iter().filter(|c| half == "all" || c.half == half).collect();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sources = acquire::Sources::from_env();
    let http = runner::http::http_client().unwrap();
    let path = runtime.block_on(acquire::locate(&sources, &http, &runner::provider::Quiet)).unwrap();
    let provider = LocalProvider::load(&path, sources.cache_dir.as_deref()).unwrap();
    let system = Message::System { content: "You are a helpful assistant.".into() };

    let (mut decided, mut exact, mut needing) = (0, 0, 0);
    let (mut stated, mut statable, mut grounded, mut answered) = (0, 0, 0, 0);
    let started = std::time::Instant::now();
    for case in &cases {
        let specs: Vec<ToolSpec> = case
            .tools
            .iter()
            .map(|name| ToolSpec {
                kind: "function",
                function: FunctionSpec {
                    name: name.clone(),
                    description: declared[name].description.clone(),
                    parameters: declared[name].parameters.clone(),
                },
            })
            .collect();
        let mut messages = vec![system.clone(), Message::User { content: case.prompt.clone() }];
        let first = provider.complete_blocking(&messages, &specs, &Sampling::default()).unwrap();
        let made: Vec<(String, Value)> = first
            .tool_calls
            .iter()
            .map(|c| (c.function.name.clone(), serde_json::from_str(&c.function.arguments).unwrap_or(Value::Null)))
            .collect();
        let decision = made.is_empty() == case.calls.is_empty();
        decided += usize::from(decision);
        let is_exact = made.len() == case.calls.len() && matches_all(&case.calls, &made);
        if !case.calls.is_empty() {
            needing += 1;
            exact += usize::from(is_exact);
        }
        let mut mark = if !decision {
            "MISS"
        } else if !case.calls.is_empty() && !is_exact {
            "ARGS"
        } else {
            "ok  "
        }
        .to_owned();
        let mut shown: Vec<String> = made.iter().map(|(n, a)| format!("{n}({a})")).collect();
        if made.is_empty() {
            shown.push(format!(
                "text: {:?}",
                first.content.clone().unwrap_or_default().chars().take(60).collect::<String>()
            ));
        } else {
            // The faithfulness round: each call answered with its tool's result.
            messages.push(Message::Assistant { content: None, tool_calls: first.tool_calls.clone() });
            let mut results = Vec::new();
            for call in &first.tool_calls {
                let result = declared.get(&call.function.name).map_or(Value::Null, |d| d.result.clone());
                messages.push(Message::Tool { tool_call_id: call.id.clone(), content: result.to_string() });
                results.push(result);
            }
            let reply = provider
                .complete_blocking(&messages, &specs, &Sampling::default())
                .unwrap()
                .content
                .unwrap_or_default();
            answered += 1;
            let facts: Vec<String> = results.iter().flat_map(leaves).collect();
            if !facts.is_empty() {
                statable += 1;
                let lower = reply.to_lowercase();
                let all = facts.iter().all(|f| lower.contains(&f.to_lowercase()));
                stated += usize::from(all);
                if !all {
                    mark.push_str(" !stated");
                }
            }
            let sources =
                format!("{} {}", case.prompt, results.iter().map(Value::to_string).collect::<Vec<_>>().join(" "));
            let invented: Vec<String> = numbers(&reply)
                .into_iter()
                .filter(|n| !numbers(&sources).iter().any(|s| (s - n).abs() < 1e-9))
                .map(|n| n.to_string())
                .collect();
            grounded += usize::from(invented.is_empty());
            if !invented.is_empty() {
                mark.push_str(" !invented");
            }
            shown.push(format!("reply: {:?}", reply.chars().take(70).collect::<String>()));
        }
        println!("{mark:<22} {:<60} -> {}", case.prompt.chars().take(60).collect::<String>(), shown.join("; "));
    }
    let pct = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
    println!();
    println!("half: {half}, {} cases, {:.1} s", cases.len(), started.elapsed().as_secs_f64());
    println!("decision (tool or text): {decided}/{} = {:.0}%", cases.len(), pct(decided, cases.len()));
    println!("exact calls (of {needing} needing tools): {exact}/{needing} = {:.0}%", pct(exact, needing));
    println!(
        "replies stating the results (of {statable} with strings or numbers): {stated}/{statable} = {:.0}%",
        pct(stated, statable)
    );
    println!(
        "replies with no invented number (of {answered} after tool calls): {grounded}/{answered} = {:.0}%",
        pct(grounded, answered)
    );
}

/// Each expected call is matched by a distinct call made (any order).
fn matches_all(expected: &[Expected], made: &[(String, Value)]) -> bool {
    let mut used = vec![false; made.len()];
    expected.iter().all(|e| {
        let pattern = Pattern::parse(&e.arguments).expect("a valid pattern");
        let found = made.iter().enumerate().position(|(i, (name, args))| {
            !used[i] && *name == e.name && pattern.check(Some(args), "arguments").is_ok()
        });
        found.inspect(|&i| used[i] = true).is_some()
    })
}

/// The strings and numbers of a result (booleans say nothing a reply must repeat).
fn leaves(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Array(items) => items.iter().flat_map(leaves).collect(),
        Value::Object(map) => map.values().flat_map(leaves).collect(),
        _ => Vec::new(),
    }
}

/// The numbers written in `text`.
fn numbers(text: &str) -> Vec<f64> {
    // Thousands separators are part of a number: "250,000" is 250000, not 250 and 0.
    let regex = regex::Regex::new(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?").unwrap();
    regex.find_iter(text).filter_map(|m| m.as_str().replace(',', "").parse().ok()).collect()
}
