//! Scenario files: loading, every field of the format, and validation with positions.
//!
//! Every file is read and validated before any model is called. A problem is reported as
//! `FILE:LINE:COLUMN: what was expected`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;
use serde_saphyr::Location;

pub mod agent;
mod discover;
mod raw;
mod validate;

use discover::{expand_paths, read_source};
use raw::RawScenario;

pub use crate::matcher::Pattern;
use crate::model::{ModelSpec, Sampling};
use crate::provider::ModelError;
use crate::tools::mcp::McpServerSpec;
use crate::tools::{Tool, ToolRegistry};
use crate::yaml::yaml_options;

/// Largest scenario file accepted.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Tool rounds allowed in one turn when a scenario sets no `max_tool_rounds`.
pub const DEFAULT_MAX_TOOL_ROUNDS: u32 = 8;

/// The JSON Schema of scenario files (`runner schema`); the shipped scenarios reference it.
pub const SCHEMA: &str = include_str!("../../schema/scenario.schema.json");

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The file it came from, as given (`-` for standard input).
    pub file: String,
    pub description: Option<String>,
    pub model: Option<ModelSpec>,
    pub system: Option<String>,
    /// The user's own agent program, played in place of runner's agent loop.
    pub agent: Option<Arc<agent::AgentSpec>>,
    pub sampling: Sampling,
    /// Tools offered to the model, in order.
    pub tools: Vec<String>,
    /// The tools this scenario declares (they shadow built-ins and configured tools of the
    /// same name).
    pub declared: Vec<Arc<dyn Tool>>,
    /// MCP servers whose tools are offered too (known once a run starts them).
    pub(crate) mcp: Vec<Arc<McpServerSpec>>,
    /// Fixed results that replace running the named tools.
    pub tool_results: BTreeMap<String, Value>,
    pub max_tool_rounds: u32,
    pub turns: Vec<Turn>,
    /// A model that plays the user after the scripted turns.
    pub simulate: Option<Simulate>,
    /// Checks over the whole conversation, once it ended.
    pub expect: Option<ConversationExpect>,
}

/// Simulated user messages at most when `simulate.max_turns` is not set.
pub const DEFAULT_SIMULATED_TURNS: u32 = 10;

/// `simulate:`: a model that plays the user toward a goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulate {
    /// Its model: the scenario's, else `--user-model`, else `user_model:` in runner.yaml.
    pub model: ModelSpec,
    /// What this user wants and knows.
    pub goal: String,
    pub persona: Option<String>,
    /// Simulated messages at most.
    pub max_turns: u32,
}

/// The top-level `expect`: checks over the whole conversation.
#[derive(Debug, Clone, Default)]
pub struct ConversationExpect {
    /// `called`, `not_called` and `tool_calls_unordered` over every turn; `contains`,
    /// `not_contains` and `regex` on the last reply; `judge` over the whole conversation;
    /// `max_cost_usd` for the run.
    pub checks: Expect,
    /// How it must end (`stop` by default when a simulated user plays).
    pub ended: Option<crate::record::Ended>,
    /// User messages at most, scripted and simulated.
    pub max_turns: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Turn {
    pub user: String,
    pub expect: Expect,
}

/// What must hold after a turn. Empty: the turn passes when it ends without an error.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Tools called during the turn, in order; `Some(vec![])` means no tool may be called.
    pub tool_calls: Option<Vec<ExpectedCall>>,
    /// Exactly these calls, in any order (parallel calls).
    pub tool_calls_unordered: Option<Vec<ExpectedCall>>,
    /// At least these calls, in any order.
    pub called: Vec<ExpectedCall>,
    /// Tools never called in the turn.
    pub not_called: Vec<String>,
    pub contains: Vec<String>,
    pub not_contains: Vec<String>,
    pub regex: Vec<Regex>,
    pub max_cost_usd: Option<f64>,
    pub max_latency_ms: Option<u64>,
    /// A rubric a judge model grades the reply against.
    pub judge: Option<JudgeSpec>,
}

/// `expect.judge`: what a judge model grades the turn's reply against, and which model.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSpec {
    pub rubric: String,
    /// The judge as written: the check's own `model`, else the default judge
    /// (`--judge-model`, `judge_model:` in runner.yaml). Never the model under test by default.
    pub model: ModelSpec,
}

#[derive(Debug, Clone)]
pub struct ExpectedCall {
    pub name: String,
    /// What the call's arguments must match (a subset, with `$` matchers).
    pub arguments: Option<Pattern>,
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: u64, column: u64, message: String },
}

/// Every problem found in the scenario files, one per line.
#[derive(Debug)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

/// What validation checks names against.
pub struct Validator<'a> {
    /// The tools a scenario may offer by name: the built-ins and `runner.yaml`'s.
    pub tools: &'a ToolRegistry,
    /// Parses a `model:` value; the error says what is wrong with it.
    pub parse_model: &'a dyn Fn(&str) -> Result<ModelSpec, ModelError>,
    /// Looks up `${VAR}` in declared tools' http headers.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The judge of `expect.judge` checks that name none (`--judge-model`, `judge_model:`).
    pub judge_model: Option<&'a str>,
    /// The batch's secrets: declared tools' and MCP servers' header values join it.
    pub(crate) secrets: crate::secret::Secrets,
    /// `runner.yaml`'s agent program: every scenario's that names none.
    pub agent: Option<&'a agent::AgentSpec>,
    /// The simulated user's model where `simulate:` names none (`--user-model`,
    /// `user_model:`).
    pub user_model: Option<&'a str>,
}

impl<'a> Validator<'a> {
    /// A validator with no environment (a `${VAR}` in a header is then an error).
    pub fn new(tools: &'a ToolRegistry, parse_model: &'a dyn Fn(&str) -> Result<ModelSpec, ModelError>) -> Self {
        Self {
            tools,
            parse_model,
            env: &|_| None,
            judge_model: None,
            secrets: Default::default(),
            agent: None,
            user_model: None,
        }
    }
}

/// Expands `paths` (files, directories, `-`) into scenario files, loads and validates them all.
/// Returns every problem found, not only the first.
pub fn load_scenarios(paths: &[String], validator: &Validator<'_>) -> Result<Vec<Scenario>, ScenarioErrors> {
    let mut errors = Vec::new();
    let mut scenarios = Vec::new();
    for source in expand_paths(paths, &mut errors) {
        let text = match read_source(&source) {
            Ok(text) => text,
            Err(err) => {
                errors.push(ScenarioError::Unreadable { path: source.display(), message: err.to_string() });
                continue;
            }
        };
        match parse_scenarios(&text, &source.display(), &source.stem(), validator) {
            Ok(parsed) => scenarios.extend(parsed),
            Err(err) => errors.extend(err.0),
        }
    }
    if errors.is_empty() {
        check_unique_names(&scenarios, &mut errors);
    }
    if errors.is_empty() { Ok(scenarios) } else { Err(ScenarioErrors(errors)) }
}

/// Parses and validates the scenarios of one file's text. `stem` names unnamed scenarios.
pub fn parse_scenarios(
    text: &str,
    path: &str,
    stem: &str,
    validator: &Validator<'_>,
) -> Result<Vec<Scenario>, ScenarioErrors> {
    let raws: Vec<serde_saphyr::Spanned<RawScenario>> = serde_saphyr::from_multiple_with_options(text, yaml_options())
        .map_err(|err| ScenarioErrors(vec![yaml_error(path, &err)]))?;
    if raws.is_empty() {
        return Err(ScenarioErrors(vec![ScenarioError::Invalid {
            path: path.to_owned(),
            line: 1,
            column: 1,
            message: "expected a scenario (a mapping with `turns`), found an empty file".to_owned(),
        }]));
    }
    let count = raws.len();
    let mut errors = Vec::new();
    let scenarios = raws
        .into_iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let default_name = if count == 1 { stem.to_owned() } else { format!("{stem}-{}", i + 1) };
            raw.value.validate(path, raw.referenced, default_name, validator, &mut errors)
        })
        .collect();
    if errors.is_empty() { Ok(scenarios) } else { Err(ScenarioErrors(errors)) }
}

/// A YAML error as `FILE:LINE:COLUMN: message`.
pub(crate) fn yaml_error(path: &str, err: &serde_saphyr::Error) -> ScenarioError {
    let (location, message) = crate::yaml::error_at(err);
    invalid(path, location, message)
}

pub(super) fn invalid(path: &str, location: Location, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.to_owned(),
        line: location.line(),
        column: location.column(),
        message: message.into(),
    }
}

/// Scenario names must be unique, also once made safe as file names: `a/b` and `a:b` would
/// otherwise write the same log.
fn check_unique_names(scenarios: &[Scenario], errors: &mut Vec<ScenarioError>) {
    let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
    for scenario in scenarios {
        let key = crate::files::safe_file_name(&scenario.name);
        if let Some((name, first)) = seen.insert(key.clone(), (&scenario.name, &scenario.file)) {
            let message = if name == scenario.name {
                format!("scenario name `{name}` is already used in {first}; names must be unique")
            } else {
                format!(
                    "scenario names `{}` and `{name}` (in {first}) make the same log file name `{key}`; rename one",
                    scenario.name.escape_debug()
                )
            };
            errors.push(ScenarioError::Unreadable { path: scenario.file.clone(), message });
        }
    }
}

/// Tests' models: `bad:...` is an unknown provider, `PROVIDER:MODEL` a model, a bare name an
/// OpenAI model.
#[cfg(test)]
pub(crate) fn any_model(m: &str) -> Result<ModelSpec, ModelError> {
    if m.starts_with("bad:") {
        return Err(ModelError::UnknownProvider { provider: "bad".into(), text: m.into(), known: "openai".into() });
    }
    Ok(ModelSpec::from_key(m).unwrap_or_else(|| ModelSpec { provider: "openai".into(), name: m.into() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Vec<Scenario>, String> {
        let tools = ToolRegistry::builtin();
        let validator = Validator::new(&tools, &crate::scenario::any_model);
        parse_scenarios(text, "s.yaml", "s", &validator).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_field() {
        let scenarios = parse(
            r#"
name: weather-paris
description: free text
model: openai:gpt-4o-mini
system: You are a helpful assistant.
temperature: 0
top_p: 0.5
max_tokens: 100
seed: 7
tools: [get_weather, reverse_text]
tool_results:
  get_weather: {city: Paris, temperature_c: 15, conditions: rainy}
max_tool_rounds: 3
turns:
  - user: What's the weather in Paris?
    expect:
      tool_calls:
        - name: get_weather
          arguments: {city: Paris}
      contains: ["15"]
  - user: reverse apple
    expect:
      contains: elppa
      not_contains: [error, sorry]
      regex: "e.ppa"
      max_cost_usd: 0.01
      max_latency_ms: 30000
  - user: bye
"#,
        )
        .unwrap();
        let s = &scenarios[0];
        assert_eq!(s.name, "weather-paris");
        assert_eq!(s.model.as_ref().map(ToString::to_string).as_deref(), Some("openai:gpt-4o-mini"));
        assert_eq!(
            s.sampling,
            Sampling { temperature: Some(0.0), top_p: Some(0.5), max_tokens: Some(100), seed: Some(7) }
        );
        assert_eq!(s.tools, ["get_weather", "reverse_text"]);
        assert_eq!(s.tool_results["get_weather"], json!({"city": "Paris", "temperature_c": 15, "conditions": "rainy"}));
        assert_eq!(s.max_tool_rounds, 3);
        let first = &s.turns[0].expect;
        let call = &first.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.name, "get_weather");
        assert!(
            call.arguments.as_ref().unwrap().check(Some(&json!({"city": "Paris", "units": "c"})), "arguments").is_ok()
        );
        assert_eq!(first.contains, ["15"]);
        let second = &s.turns[1].expect;
        assert_eq!(second.contains, ["elppa"]);
        assert_eq!(second.not_contains, ["error", "sorry"]);
        assert_eq!(second.regex[0].as_str(), "e.ppa");
        assert_eq!((second.max_cost_usd, second.max_latency_ms), (Some(0.01), Some(30000)));
        assert!(s.turns[2].expect.tool_calls.is_none());
    }

    #[test]
    fn defaults_and_document_names() {
        let scenarios =
            parse("turns: [{user: a}]\n---\nturns: [{user: b}]\n---\nname: named\ntools: []\nturns: [{user: c}]\n")
                .unwrap();
        let names: Vec<_> = scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s-1", "s-2", "named"]);
        assert_eq!(scenarios[0].tools.len(), 5);
        assert!(scenarios[2].tools.is_empty());
        assert_eq!(scenarios[0].max_tool_rounds, DEFAULT_MAX_TOOL_ROUNDS);
        assert_eq!(parse("turns: [{user: a}]").unwrap()[0].name, "s");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse("name: x\nturns:\n  - user: hi\n    expekt: {contains: a}\n").unwrap_err();
        assert!(err.starts_with("s.yaml:4:5: "), "{err}");
        assert!(err.contains("expekt"), "{err}");
    }

    #[test]
    fn semantic_errors_point_at_the_value() {
        let err = parse("tools: [get_weather, teleport]\nturns: [{user: hi}]\n").unwrap_err();
        assert!(err.starts_with("s.yaml:1:22: unknown tool `teleport`"), "{err}");
        let err = parse("turns:\n  - user: hi\n    expect:\n      regex: \"a(\"\n").unwrap_err();
        assert!(err.starts_with("s.yaml:4:14: expected a valid regular expression"), "{err}");
        let err = parse("model: bad:x\nturns: [{user: hi}]\n").unwrap_err();
        assert!(err.starts_with("s.yaml:1:8: unknown provider"), "{err}");
        let err = parse(
            "tools: [reverse_text]\nturns:\n  - user: hi\n    expect:\n      tool_calls: [{name: get_weather}]\n",
        )
        .unwrap_err();
        assert!(err.starts_with("s.yaml:5:27: expected a tool this scenario offers (reverse_text)"), "{err}");
        let err = parse("temperature: 3\nturns: [{user: hi}]\n").unwrap_err();
        assert!(err.starts_with("s.yaml:1:14: expected temperature between 0 and 2"), "{err}");
        let err = parse("turns: []\n").unwrap_err();
        assert!(err.contains("expected at least one turn"), "{err}");
    }

    #[test]
    fn judges_need_a_rubric_and_a_model_never_the_model_under_test_by_default() {
        let tools = ToolRegistry::builtin();
        let parse_with = |text: &str, judge_model: Option<&str>| {
            let validator = Validator { judge_model, ..Validator::new(&tools, &crate::scenario::any_model) };
            parse_scenarios(text, "s.yaml", "s", &validator).map_err(|e| e.to_string())
        };
        let text = "model: openai:gpt-4o\nturns:\n  - user: hi\n    expect:\n      judge: Greets back.\n  - user: bye\n    expect:\n      judge: {rubric: Says goodbye., model: anthropic:claude-haiku-4-5}\n";
        let judges = |scenarios: Vec<Scenario>| {
            scenarios[0].turns.iter().map(|t| t.expect.judge.clone().unwrap()).collect::<Vec<_>>()
        };
        let with_default = judges(parse_with(text, Some("openai:gpt-4o-mini")).unwrap());
        assert_eq!(
            with_default[0],
            JudgeSpec { rubric: "Greets back.".into(), model: ModelSpec::from_key("openai:gpt-4o-mini").unwrap() }
        );
        assert_eq!(
            with_default[1],
            JudgeSpec {
                rubric: "Says goodbye.".into(),
                model: ModelSpec::from_key("anthropic:claude-haiku-4-5").unwrap()
            }
        );
        // No default judge: the check without a model is a load error at its line; never the
        // scenario's own model.
        let err = parse_with(text, None).unwrap_err();
        assert!(
            err.starts_with(
                "s.yaml:5:14: expected a judge model for `judge`: give `judge: {rubric, model}`, `--judge-model MODEL`"
            ),
            "{err}"
        );
        assert!(!err.contains("s.yaml:8"), "{err}");
        let bad = |expect: &str| {
            parse_with(
                &format!("turns:\n  - user: hi\n    expect:\n      judge: {expect}\n"),
                Some("openai:gpt-4o-mini"),
            )
            .unwrap_err()
        };
        assert_eq!(bad("\"  \""), "s.yaml:4:14: expected a rubric in `judge`, found an empty one");
        assert_eq!(
            bad("{rubric: x, grader: y}"),
            "s.yaml:4:14: unknown field `grader` in `judge`, expected `rubric` and `model`"
        );
        assert_eq!(bad("{model: openai:gpt-4o}"), "s.yaml:4:14: expected `judge` to have a `rubric` (a string)");
        assert_eq!(
            bad("{rubric: x, model: bad:y}"),
            "s.yaml:4:14: judge model: unknown provider `bad` in `bad:y`; expected one of: openai (add endpoints in runner.yaml)"
        );
        assert_eq!(
            bad("[x]"),
            "s.yaml:4:14: expected `judge` to be a rubric (a string) or {rubric, model}, found [\"x\"]"
        );
    }

    #[test]
    fn matchers_and_call_checks_are_checked_at_load() {
        let at = |yaml: &str| parse(yaml).unwrap_err();
        let unknown = at(
            "tools: [reverse_text]\nturns:\n  - user: hi\n    expect:\n      tool_calls:\n        - name: reverse_text\n          arguments: {text: {$oneof: [a]}}\n",
        );
        assert!(unknown.contains("s.yaml:7:22: unknown matcher `$oneof`"), "{unknown}");
        let regex = at(
            "tools: [reverse_text]\nturns:\n  - user: hi\n    expect:\n      called: [{name: reverse_text, arguments: {text: {$regex: '('}}}]\n",
        );
        assert!(regex.contains("expected a valid regular expression in `$regex`"), "{regex}");
        let offered = at(
            "tools: [reverse_text]\nturns:\n  - user: hi\n    expect:\n      tool_calls_unordered: [{name: add_numbers}]\n",
        );
        assert!(
            offered.contains("expected a tool this scenario offers (reverse_text), found `add_numbers`"),
            "{offered}"
        );
        let field = at(
            "tools: [reverse_text]\nturns:\n  - user: hi\n    expect:\n      called: [{name: reverse_text, args: {}}]\n",
        );
        assert!(field.contains("unknown field `args`"), "{field}");
        // not_called may name a tool that is not offered: that it is never called is the point.
        assert!(
            parse("tools: [reverse_text]\nturns:\n  - user: hi\n    expect:\n      not_called: [delete_account]\n")
                .is_ok()
        );
    }

    #[test]
    fn type_errors_and_missing_fields() {
        let err = parse("turns:\n  - user: hi\n    expect:\n      contains: {a: b}\n").unwrap_err();
        assert!(err.starts_with("s.yaml:4:"), "{err}");
        assert!(err.contains("a string or a list of strings"), "{err}");
        let err = parse("name: x\n").unwrap_err();
        assert!(err.contains("turns"), "{err}");
        let err = parse("").unwrap_err();
        assert!(err.contains("empty file"), "{err}");
        let err = parse("turns: [{user: a}]\n---\nturns: [{user: b, bogus: 1}]\n").unwrap_err();
        assert!(err.starts_with("s.yaml:3:"), "{err}");
    }

    #[test]
    fn yaml_bombs_are_refused_quickly_with_a_clear_error() {
        let registry = crate::tools::ToolRegistry::builtin();
        let validator = Validator::new(&registry, &crate::scenario::any_model);
        let parse = |text: &str| {
            parse_scenarios(text, "bomb.yaml", "bomb", &validator).map(|_| ()).unwrap_err().0[0].to_string()
        };

        // Billion laughs: nine levels of nine aliases each would expand to 9^9 strings.
        let mut laughs = String::from("tool_results:\n  get_weather:\n    a0: &a0 lol\n");
        for level in 1..=9 {
            let refs: Vec<String> = (0..9).map(|_| format!("*a{}", level - 1)).collect();
            laughs.push_str(&format!("    a{level}: &a{level} [{}]\n", refs.join(", ")));
        }
        laughs.push_str("turns:\n  - user: hi\n");
        let started = std::time::Instant::now();
        let err = parse(&laughs);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(err.starts_with("bomb.yaml:") && err.contains("alias"), "{err}");

        let deep =
            format!("tool_results:\n  get_weather: {}x{}\nturns:\n  - user: hi\n", "[".repeat(200), "]".repeat(200));
        let err = parse(&deep);
        assert!(err.starts_with("bomb.yaml:") && err.contains("depth"), "{err}");

        let documents = "turns:\n  - user: hi\n---\n".repeat(10_001);
        let err = parse(&documents);
        assert!(err.starts_with("bomb.yaml:") && err.contains("document"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let mut text = String::from("turns:\n  - user: \"");
        text.push_str(&"x".repeat(MAX_FILE_BYTES as usize));
        text.push_str("\"\n");
        std::fs::write(&path, text).unwrap();
        let registry = crate::tools::ToolRegistry::builtin();
        let validator = Validator::new(&registry, &crate::scenario::any_model);
        let errors = load_scenarios(&[path.display().to_string()], &validator).unwrap_err();
        assert!(errors.0[0].to_string().contains("larger than the 8 MiB a scenario file may be"), "{}", errors.0[0]);
    }
}
