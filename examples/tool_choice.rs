//! Accuracy of the embedded model's tool decision on the labelled prompts of
//! `tests/fixtures/tool_choice.yaml`: tool or text, which tool, which arguments.
//!
//!     cargo run --release --example tool_choice [FILE]

use runner::check::is_subset;
use runner::message::Message;
use runner::provider::Sampling;
use runner::provider::local::{LocalProvider, acquire};
use runner::tools::ToolRegistry;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Case {
    prompt: String,
    tool: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

fn main() {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tool_choice.yaml").to_owned());
    let cases: Vec<Case> = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sources = acquire::Sources::from_env();
    let http = runner::http::http_client().unwrap();
    let path = runtime.block_on(acquire::locate(&sources, &http, &runner::provider::Quiet)).unwrap();
    let provider = LocalProvider::load(&path, sources.cache_dir.as_deref()).unwrap();
    let registry = ToolRegistry::builtin();
    let names: Vec<String> = registry.names().map(str::to_owned).collect();
    let tools = registry.specs(&names);
    let system = Message::System { content: "You are a helpful assistant. Use the tools when they help.".into() };

    let (mut decision_ok, mut name_ok, mut args_ok, mut tool_cases) = (0, 0, 0, 0);
    for case in &cases {
        let messages = vec![system.clone(), Message::User { content: case.prompt.clone() }];
        let completion = provider.complete_blocking(&messages, &tools, &Sampling::default()).unwrap();
        let call = completion.tool_calls.first();
        let got_tool = call.map(|c| c.function.name.clone());
        let got_args: Option<Value> = call.and_then(|c| serde_json::from_str(&c.function.arguments).ok());
        let decision = got_tool.is_some() == case.tool.is_some();
        decision_ok += decision as usize;
        let mut mark = if decision { "ok  " } else { "MISS" }.to_owned();
        if let Some(expected) = &case.tool {
            tool_cases += 1;
            if got_tool.as_deref() == Some(expected.as_str()) {
                name_ok += 1;
                let expected_args = case.arguments.clone().unwrap_or(Value::Object(Default::default()));
                if got_args.as_ref().is_some_and(|a| is_subset(&expected_args, a)) {
                    args_ok += 1;
                } else {
                    mark = "ARGS".into();
                }
            } else if decision {
                mark = "NAME".into();
            }
        }
        let got = match (&got_tool, &got_args) {
            (Some(name), Some(args)) => format!("{name}({args})"),
            _ => format!("text: {:?}", completion.content.unwrap_or_default().chars().take(60).collect::<String>()),
        };
        println!("{mark} {:<52} -> {got}", case.prompt);
    }
    let pct = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
    println!();
    println!("decision (tool or text): {decision_ok}/{} = {:.0}%", cases.len(), pct(decision_ok, cases.len()));
    println!("tool name (of {tool_cases} needing a tool): {name_ok}/{tool_cases} = {:.0}%", pct(name_ok, tool_cases));
    println!("arguments (of {tool_cases} needing a tool): {args_ok}/{tool_cases} = {:.0}%", pct(args_ok, tool_cases));
}
