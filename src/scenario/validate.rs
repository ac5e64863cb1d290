//! From the file as written to a [`super::Scenario`]: every field checked, every problem with
//! its position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::agent::AgentSpec;
use super::raw::{RawExpect, RawExpectedCall, RawScenario, RawSimulate};
use super::{
    ConversationExpect, DEFAULT_MAX_TOOL_ROUNDS, DEFAULT_SIMULATED_TURNS, Expect, ExpectedCall, JudgeSpec, Pattern,
    Scenario, ScenarioError, Simulate, Turn, Validator, invalid,
};
use crate::model::Sampling;
use crate::record::Ended;
use crate::tools::Tool;
use crate::tools::declared::{DeclarationContext, DeclaredTool};
use crate::tools::mcp::McpServerSpec;

impl RawScenario {
    /// `top`: where the scenario's document starts (for what it lacks).
    pub(super) fn validate(
        self,
        path: &str,
        top: Location,
        default_name: String,
        validator: &Validator<'_>,
        errors: &mut Vec<ScenarioError>,
    ) -> Option<Scenario> {
        let before = errors.len();
        let mut fail = |location: Location, message: String| errors.push(invalid(path, location, message));
        let agent = self.agent_program(path, top, validator, &mut fail);

        let name = match self.name {
            Some(name) if name.value.trim().is_empty() => {
                fail(name.referenced, "expected a non-empty scenario name".to_owned());
                String::new()
            }
            Some(name) => name.value,
            None => default_name,
        };
        let model = match &self.model {
            Some(model) => match (validator.parse_model)(&model.value) {
                Ok(spec) => Some(spec),
                Err(err) => {
                    fail(model.referenced, err.to_string());
                    None
                }
            },
            None => None,
        };
        if let Some(t) = &self.temperature
            && !(0.0..=2.0).contains(&t.value)
        {
            fail(t.referenced, format!("expected temperature between 0 and 2, found {}", t.value));
        }
        if let Some(p) = &self.top_p
            && !(p.value > 0.0 && p.value <= 1.0)
        {
            fail(p.referenced, format!("expected top_p greater than 0 and at most 1, found {}", p.value));
        }
        if let Some(m) = &self.max_tokens
            && m.value == 0
        {
            fail(m.referenced, "expected max_tokens of at least 1".to_owned());
        }
        if let Some(r) = &self.max_tool_rounds
            && r.value == 0
        {
            fail(r.referenced, "expected max_tool_rounds of at least 1".to_owned());
        }
        let known = || validator.tools.names().collect::<Vec<_>>().join(", ");
        let mut declared: Vec<Arc<dyn Tool>> = Vec::new();
        let mut mcp: Vec<Arc<McpServerSpec>> = Vec::new();
        let tools: Vec<String> = match self.tools {
            _ if agent.is_some() => Vec::new(),
            Some(entries) => {
                let dir = scenario_dir(path);
                let context = DeclarationContext { dir, env: validator.env, secrets: validator.secrets.clone() };
                let mut names = Vec::new();
                for entry in entries {
                    let name = match &entry.value {
                        Value::String(name) => {
                            if validator.tools.get(name).is_none() {
                                fail(
                                    entry.referenced,
                                    format!("unknown tool `{name}`; expected one of: {}, or a declaration", known()),
                                );
                            }
                            name.clone()
                        }
                        Value::Object(map) if map.contains_key("mcp") => {
                            match McpServerSpec::parse(&entry.value, context.dir.clone(), context.env, &context.secrets)
                            {
                                Ok(server) => mcp.push(Arc::new(server)),
                                Err(message) => fail(entry.referenced, message),
                            }
                            continue;
                        }
                        Value::Object(_) => match DeclaredTool::parse(&entry.value, None, &context) {
                            Ok(tool) => {
                                for key in crate::tools::declared::null_non_keywords(&tool.parameters()) {
                                    let at = entry.referenced;
                                    tracing::warn!(
                                        "{path}:{}:{}: `{key}: null` in the parameters of `{}` is no JSON Schema keyword; a comma inside an unquoted flow mapping (`{{description: a, b}}`) splits it: quote the text",
                                        at.line(),
                                        at.column(),
                                        tool.name()
                                    );
                                }
                                let name = tool.name().to_owned();
                                declared.push(Arc::new(tool));
                                name
                            }
                            Err(message) => {
                                fail(entry.referenced, message);
                                continue;
                            }
                        },
                        other => {
                            fail(entry.referenced, format!("expected a tool name or a declaration, found {other}"));
                            continue;
                        }
                    };
                    if names.contains(&name) {
                        fail(entry.referenced, format!("tool `{name}` is offered twice"));
                    }
                    names.push(name);
                }
                names
            }
            None => validator.tools.names().map(str::to_owned).collect(),
        };
        // Names the checks may use: those offered, and those MCP servers are asked for. A
        // server without `include` may list any name: what it lists is known at run time.
        let mut offered = tools.clone();
        offered.extend(mcp.iter().flat_map(|server| server.include.iter().flatten().cloned()));
        // An agent program brings its own tools: any name may be called.
        let open = mcp.iter().any(|server| server.include.is_none()) || agent.is_some();
        let tool_results = match self.tool_results {
            Some(results) => {
                for tool in results.value.keys() {
                    if validator.tools.get(tool).is_none()
                        && !declared.iter().any(|d| d.name() == tool)
                        && !offered.contains(tool)
                        && !open
                    {
                        fail(
                            results.referenced,
                            format!("tool_results names unknown tool `{tool}`; expected one of: {}", known()),
                        );
                    }
                }
                results.value
            }
            None => BTreeMap::new(),
        };
        let simulated = self.simulate.is_some();
        let simulate = self.simulate.and_then(|raw| simulate(raw, validator, &mut fail));
        let raw_turns = self.turns.map(|turns| turns.value).unwrap_or_default();
        if raw_turns.is_empty() && !simulated {
            fail(top, "expected at least one turn under `turns:`, or a simulated user (`simulate:`)".to_owned());
        }
        let expect = self.expect.map(|mut raw| {
            let (ended, max_turns) = (raw.ended.take(), raw.max_turns.take());
            if raw.tool_calls.is_some() || raw.max_latency_ms.is_some() {
                fail(
                    top,
                    "the scenario's top-level `expect` checks the whole conversation: `tool_calls` (in order) and `max_latency_ms` go in a turn's `expect`; use `called` or `tool_calls_unordered` here".to_owned(),
                );
            }
            let ended = ended.and_then(|ended| match Ended::parse(&ended.value) {
                Some(value) => Some(value),
                None => {
                    fail(
                        ended.referenced,
                        format!("expected `ended` to be script, stop, max_turns or error, found `{}`", ended.value),
                    );
                    None
                }
            });
            if let Some(m) = &max_turns
                && m.value == 0
            {
                fail(m.referenced, "expected max_turns of at least 1".to_owned());
            }
            let checks = raw.validate(&offered, open, validator, &mut fail);
            ConversationExpect { checks, ended, max_turns: max_turns.map(|m| m.value) }
        });
        let mut turns: Vec<Turn> = raw_turns
            .into_iter()
            .map(|turn| Turn {
                user: turn.user,
                expect: turn
                    .expect
                    .map(|e| {
                        for field in
                            [e.ended.as_ref().map(|f| f.referenced), e.max_turns.as_ref().map(|f| f.referenced)]
                                .into_iter()
                                .flatten()
                        {
                            fail(
                                field,
                                "`ended` and `max_turns` go in the scenario's top-level `expect`, not a turn's"
                                    .to_owned(),
                            );
                        }
                        e.validate(&offered, open, validator, &mut fail)
                    })
                    .unwrap_or_default(),
            })
            .collect();
        // Collected in place over the parsed turns' larger allocation (six turns' room for a
        // one-turn scenario): kept for the whole batch, so given back now.
        turns.shrink_to_fit();

        (errors.len() == before).then(|| Scenario {
            name,
            file: path.to_owned(),
            description: self.description,
            model,
            system: self.system.map(|s| s.value),
            agent,
            sampling: Sampling {
                temperature: self.temperature.map(|t| t.value),
                top_p: self.top_p.map(|p| p.value),
                max_tokens: self.max_tokens.map(|m| m.value),
                seed: self.seed,
            },
            tools,
            declared,
            mcp,
            tool_results,
            max_tool_rounds: self.max_tool_rounds.map_or(DEFAULT_MAX_TOOL_ROUNDS, |r| r.value),
            turns,
            simulate,
            expect,
        })
    }
}

impl RawScenario {
    /// The scenario's agent program (else `runner.yaml`'s); `system:` and `tools:` beside
    /// one are errors, since the agent brings its own.
    fn agent_program(
        &self,
        path: &str,
        top: Location,
        validator: &Validator<'_>,
        fail: &mut impl FnMut(Location, String),
    ) -> Option<Arc<AgentSpec>> {
        let dir = scenario_dir(path);
        let (agent, whose) = match &self.agent {
            Some(entry) => match AgentSpec::parse(&entry.value, dir, validator.env, &validator.secrets) {
                Ok(agent) => (Arc::new(agent), "`agent:`"),
                Err(message) => {
                    fail(entry.referenced, message);
                    return None;
                }
            },
            None => (Arc::new(AgentSpec { dir, ..validator.agent.cloned()? }), "runner.yaml's `agent:`"),
        };
        if let Some(system) = &self.system {
            fail(system.referenced, format!("`system:` cannot go with {whose}: the agent brings its own prompt"));
        }
        if let Some(tools) = &self.tools {
            let at = tools.first().map_or(top, |entry| entry.referenced);
            fail(at, format!("`tools:` cannot go with {whose}: the agent brings its own tools"));
        }
        Some(agent)
    }
}

/// `simulate:` with its model settled: its own, else the validator's default, else a load
/// error (the model under test never plays the user by default).
fn simulate(
    raw: Spanned<RawSimulate>,
    validator: &Validator<'_>,
    fail: &mut impl FnMut(Location, String),
) -> Option<Simulate> {
    let at = raw.referenced;
    let raw = raw.value;
    if raw.goal.value.trim().is_empty() {
        fail(raw.goal.referenced, "expected a `goal` for the simulated user: what it wants and knows".to_owned());
    }
    if let Some(m) = &raw.max_turns
        && m.value == 0
    {
        fail(m.referenced, "expected max_turns of at least 1".to_owned());
    }
    let (model, model_at) = match (&raw.model, validator.user_model) {
        (Some(model), _) => (model.value.clone(), model.referenced),
        (None, Some(model)) => (model.to_owned(), at),
        (None, None) => {
            fail(
                at,
                "expected a model for the simulated user: give `simulate: {model: ...}`, `--user-model MODEL`, or `user_model:` in runner.yaml (the model under test never plays the user by default)".to_owned(),
            );
            return None;
        }
    };
    let model = match (validator.parse_model)(&model) {
        Ok(model) => model,
        Err(err) => {
            fail(model_at, format!("simulated user's model: {err}"));
            return None;
        }
    };
    Some(Simulate {
        model,
        goal: raw.goal.value,
        persona: raw.persona.filter(|p| !p.trim().is_empty()),
        max_turns: raw.max_turns.map_or(DEFAULT_SIMULATED_TURNS, |m| m.value),
    })
}

/// The directory a scenario's relative paths start from: its file's (the working directory
/// for standard input).
fn scenario_dir(path: &str) -> PathBuf {
    Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && path != "-")
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

impl RawExpect {
    /// `offered`: the tool names calls may name; `open`: any name may be offered (an MCP
    /// server lists its tools when it starts).
    fn validate(
        self,
        offered: &[String],
        open: bool,
        validator: &Validator<'_>,
        fail: &mut impl FnMut(Location, String),
    ) -> Expect {
        let expected_call = |name: Spanned<String>,
                             arguments: Option<Spanned<Value>>,
                             fail: &mut dyn FnMut(Location, String)| {
            if !open && !offered.contains(&name.value) {
                fail(
                    name.referenced,
                    format!("expected a tool this scenario offers ({}), found `{}`", offered.join(", "), name.value),
                );
            }
            let arguments = arguments.and_then(|args| {
                if !args.value.is_object() {
                    fail(args.referenced, "expected `arguments` to be a mapping".to_owned());
                    return None;
                }
                Pattern::parse(&args.value).map_err(|message| fail(args.referenced, message)).ok()
            });
            ExpectedCall { name: name.value, arguments }
        };
        let calls = |list: Option<Vec<RawExpectedCall>>, fail: &mut dyn FnMut(Location, String)| {
            list.map(|calls| {
                calls.into_iter().map(|call| expected_call(call.name, call.arguments, fail)).collect::<Vec<_>>()
            })
        };
        let tool_calls = calls(self.tool_calls, fail);
        let tool_calls_unordered = calls(self.tool_calls_unordered, fail);
        let called = self
            .called
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let at = entry.referenced;
                let spanned = |value: String| Spanned { value, referenced: at, defined: entry.defined };
                match entry.value {
                    Value::String(name) => Some(expected_call(spanned(name), None, fail)),
                    Value::Object(mut map) => {
                        match (map.remove("name"), map.remove("arguments"), map.keys().next().cloned()) {
                            (Some(Value::String(name)), arguments, None) => {
                                let arguments =
                                    arguments.map(|value| Spanned { value, referenced: at, defined: entry.defined });
                                Some(expected_call(spanned(name), arguments, fail))
                            }
                            (_, _, Some(key)) => {
                                fail(
                                    at,
                                    format!(
                                        "unknown field `{key}` in a `called` entry, expected `name` and `arguments`"
                                    ),
                                );
                                None
                            }
                            _ => {
                                fail(at, "expected a `called` entry to have a `name`".to_owned());
                                None
                            }
                        }
                    }
                    other => {
                        fail(at, format!("expected a tool name or {{name, arguments}} in `called`, found {other}"));
                        None
                    }
                }
            })
            .collect();
        let not_called = self.not_called.unwrap_or_default().into_iter().map(|name| name.value).collect();
        let regex = self
            .regex
            .map(|patterns| {
                patterns
                    .value
                    .0
                    .iter()
                    .filter_map(|pattern| match Regex::new(pattern) {
                        Ok(regex) => Some(regex),
                        Err(err) => {
                            let detail = err.to_string().lines().last().unwrap_or_default().trim().to_owned();
                            fail(
                                patterns.referenced,
                                format!("expected a valid regular expression, `{pattern}` is not: {detail}"),
                            );
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(cost) = &self.max_cost_usd
            && !(cost.value.is_finite() && cost.value >= 0.0)
        {
            fail(cost.referenced, format!("expected max_cost_usd to be a non-negative number, found {}", cost.value));
        }
        Expect {
            tool_calls,
            tool_calls_unordered,
            called,
            not_called,
            contains: self.contains.map(|s| s.0).unwrap_or_default(),
            not_contains: self.not_contains.map(|s| s.0).unwrap_or_default(),
            regex,
            max_cost_usd: self.max_cost_usd.map(|c| c.value),
            max_latency_ms: self.max_latency_ms,
            judge: self.judge.and_then(|judge| judge_spec(judge, validator, fail)),
        }
    }
}

/// `judge: RUBRIC` or `judge: {rubric, model}`, with its model settled: the check's own, else
/// the validator's default judge, else a load error (the model under test never grades
/// itself unless named).
pub(super) fn judge_spec(
    judge: Spanned<Value>,
    validator: &Validator<'_>,
    fail: &mut impl FnMut(Location, String),
) -> Option<JudgeSpec> {
    let at = judge.referenced;
    let (rubric, model) = match judge.value {
        Value::String(rubric) => (rubric, None),
        Value::Object(mut map) => {
            let rubric = map.remove("rubric");
            let model = map.remove("model");
            if let Some(key) = map.keys().next() {
                fail(at, format!("unknown field `{key}` in `judge`, expected `rubric` and `model`"));
                return None;
            }
            match (rubric, model) {
                (Some(Value::String(rubric)), None) => (rubric, None),
                (Some(Value::String(rubric)), Some(Value::String(model))) => (rubric, Some(model)),
                (Some(Value::String(_)), Some(other)) => {
                    fail(at, format!("expected `judge.model` to be a model name (PROVIDER:MODEL), found {other}"));
                    return None;
                }
                _ => {
                    fail(at, "expected `judge` to have a `rubric` (a string)".to_owned());
                    return None;
                }
            }
        }
        other => {
            fail(at, format!("expected `judge` to be a rubric (a string) or {{rubric, model}}, found {other}"));
            return None;
        }
    };
    if rubric.trim().is_empty() {
        fail(at, "expected a rubric in `judge`, found an empty one".to_owned());
        return None;
    }
    let Some(model) = model.or_else(|| validator.judge_model.map(str::to_owned)) else {
        fail(at, "expected a judge model for `judge`: give `judge: {rubric, model}`, `--judge-model MODEL`, or `judge_model:` in runner.yaml (the model under test never grades itself by default)".to_owned());
        return None;
    };
    match (validator.parse_model)(&model) {
        Ok(model) => Some(JudgeSpec { rubric, model }),
        Err(err) => {
            fail(at, format!("judge model: {err}"));
            None
        }
    }
}
