//! Scenario files: loading, every field of the format, and validation with positions.
//!
//! Every file is read and validated before any model is called. A problem is reported as
//! `FILE:LINE:COLUMN: what was expected`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

pub use crate::matcher::Pattern;
use crate::provider::Sampling;
use crate::tools::declared::{DeclarationContext, DeclaredTool};
use crate::tools::mcp::McpServerSpec;
use crate::tools::{Tool, ToolRegistry};

/// Largest scenario file accepted.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Tool rounds allowed in one turn when a scenario sets no `max_tool_rounds`.
pub const DEFAULT_MAX_TOOL_ROUNDS: u32 = 8;

/// The JSON Schema of scenario files (`runner schema`); the shipped scenarios reference it.
pub const SCHEMA: &str = include_str!("../schema/scenario.schema.json");

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The file it came from, as given (`-` for standard input).
    pub file: String,
    pub description: Option<String>,
    pub model: Option<String>,
    pub system: Option<String>,
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
    pub model: String,
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
    /// Checks a `model:` value; the error says what is wrong with it.
    pub check_model: &'a dyn Fn(&str) -> Result<(), String>,
    /// Looks up `${VAR}` in declared tools' http headers.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The judge of `expect.judge` checks that name none (`--judge-model`, `judge_model:`).
    pub judge_model: Option<&'a str>,
    /// The batch's secrets: declared tools' and MCP servers' header values join it.
    pub(crate) secrets: crate::provider::Secrets,
}

impl<'a> Validator<'a> {
    /// A validator with no environment (a `${VAR}` in a header is then an error).
    pub fn new(tools: &'a ToolRegistry, check_model: &'a dyn Fn(&str) -> Result<(), String>) -> Self {
        Self { tools, check_model, env: &|_| None, judge_model: None, secrets: Default::default() }
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
            Err(message) => {
                errors.push(ScenarioError::Unreadable { path: source.display(), message });
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    fn display(&self) -> String {
        match self {
            Source::Stdin => "-".to_owned(),
            Source::File(path) => path.display().to_string(),
        }
    }

    fn stem(&self) -> String {
        match self {
            Source::Stdin => "stdin".to_owned(),
            Source::File(path) => {
                path.file_stem().map_or_else(|| "scenario".to_owned(), |s| s.to_string_lossy().into_owned())
            }
        }
    }
}

fn expand_paths(paths: &[String], errors: &mut Vec<ScenarioError>) -> Vec<Source> {
    let mut sources = Vec::new();
    for path in paths {
        if path == "-" {
            if !sources.contains(&Source::Stdin) {
                sources.push(Source::Stdin);
            }
            continue;
        }
        let path = PathBuf::from(path);
        if path.is_dir() {
            let mut files = Vec::new();
            let mut visited = Vec::new();
            if let Err(err) = collect_yaml_files(&path, &mut files, &mut visited) {
                errors.push(ScenarioError::Unreadable { path: path.display().to_string(), message: err.to_string() });
            }
            if files.is_empty() {
                errors.push(ScenarioError::Unreadable {
                    path: path.display().to_string(),
                    message: "directory holds no *.yaml or *.yml file".to_owned(),
                });
            }
            files.sort();
            sources.extend(files.into_iter().map(Source::File));
        } else {
            sources.push(Source::File(path));
        }
    }
    // The same file named twice (by a glob and its directory, say) is loaded once.
    let mut seen = Vec::new();
    sources.retain(|source| {
        let key = match source {
            Source::File(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
            Source::Stdin => PathBuf::from("-"),
        };
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    sources
}

/// Every `*.yaml` / `*.yml` regular file under `dir`, hidden entries skipped. A directory
/// reached twice (a symlink loop, or two links to one place) is walked once; FIFOs, devices
/// and sockets are not scenario files and are skipped.
fn collect_yaml_files(dir: &Path, files: &mut Vec<PathBuf>, visited: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let real = std::fs::canonicalize(dir)?;
    if visited.contains(&real) {
        return Ok(());
    }
    visited.push(real);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        // Follows links; an entry that cannot be looked at (a dangling link) is no scenario.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            collect_yaml_files(&path, files, visited)?;
        } else if meta.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

fn read_source(source: &Source) -> Result<String, String> {
    let mut bytes = Vec::new();
    let read = match source {
        Source::Stdin => std::io::stdin().lock().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes),
        Source::File(path) => {
            // Only regular files: opening a FIFO would wait for a writer forever.
            match std::fs::metadata(path) {
                Ok(meta) if !meta.is_file() => return Err("not a regular file".to_owned()),
                _ => {}
            }
            std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        }
    };
    read.map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than the {} MiB a scenario file may be", MAX_FILE_BYTES >> 20));
    }
    String::from_utf8(bytes)
        .map_err(|err| format!("not UTF-8 text (invalid byte at offset {})", err.utf8_error().valid_up_to()))
}

/// Parses and validates the scenarios of one file's text. `stem` names unnamed scenarios.
pub fn parse_scenarios(
    text: &str,
    path: &str,
    stem: &str,
    validator: &Validator<'_>,
) -> Result<Vec<Scenario>, ScenarioErrors> {
    let raws: Vec<RawScenario> = serde_saphyr::from_multiple_with_options(text, yaml_options())
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
            raw.validate(path, default_name, validator, &mut errors)
        })
        .collect();
    if errors.is_empty() { Ok(scenarios) } else { Err(ScenarioErrors(errors)) }
}

pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 10_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 64,
            max_nodes: 250_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
    }
}

/// A YAML error as `FILE:LINE:COLUMN: message`.
pub(crate) fn yaml_error(path: &str, err: &serde_saphyr::Error) -> ScenarioError {
    invalid(path, err.location().unwrap_or(Location::UNKNOWN), plain_message(err))
}

/// The parser's message without its own position suffix (we print `file:line:column:`).
fn plain_message(err: &serde_saphyr::Error) -> String {
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let rendered = err.render_with_options(options);
    let message = match rendered.find(" at line ") {
        Some(at) if rendered[at..].contains(", column ") => rendered[..at].to_owned(),
        _ => rendered,
    };
    if message.starts_with("budget breached") || message.contains("limit exceeded") {
        // A YAML bomb or a runaway file: say which limit, and what the limits are.
        return format!(
            "expected a scenario file within runner's limits (64 levels of nesting, 250000 values, 10000 documents, \
             1000 anchors and aliases, 100000 values expanded from aliases); {}",
            limit_sentence(&message)
        );
    }
    message
}

/// The parser's account of a breached limit (`budget breached: Documents { documents: 10001 }`)
/// as a sentence: `this file goes past it: 10001 documents`.
fn limit_sentence(message: &str) -> String {
    let detail = message.strip_prefix("budget breached:").unwrap_or(message).trim();
    // `Kind { field: number, ... }` -> `number field, ...`
    let Some((_, fields)) = detail.split_once('{') else {
        return format!("this file goes past it: {detail}");
    };
    let parts: Vec<String> = fields
        .trim_end_matches('}')
        .split(',')
        .filter_map(|field| {
            let (name, value) = field.split_once(':')?;
            Some(format!("{} {}", value.trim(), name.trim().replace('_', " ")))
        })
        .collect();
    if parts.is_empty() {
        format!("this file goes past it: {detail}")
    } else {
        format!("this file goes past it: {}", parts.join(", "))
    }
}

fn invalid(path: &str, location: Location, message: impl Into<String>) -> ScenarioError {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    model: Option<Spanned<String>>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    temperature: Option<Spanned<f64>>,
    #[serde(default)]
    top_p: Option<Spanned<f64>>,
    #[serde(default)]
    max_tokens: Option<Spanned<u32>>,
    #[serde(default)]
    seed: Option<u64>,
    /// Names, declarations, or `{mcp: ...}`.
    #[serde(default)]
    tools: Option<Vec<Spanned<Value>>>,
    #[serde(default)]
    tool_results: Option<Spanned<BTreeMap<String, Value>>>,
    #[serde(default)]
    max_tool_rounds: Option<Spanned<u32>>,
    turns: Spanned<Vec<RawTurn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    user: String,
    #[serde(default)]
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    tool_calls: Option<Vec<RawExpectedCall>>,
    #[serde(default)]
    tool_calls_unordered: Option<Vec<RawExpectedCall>>,
    /// Names or `{name, arguments}`.
    #[serde(default)]
    called: Option<Vec<Spanned<Value>>>,
    #[serde(default)]
    not_called: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    contains: Option<Strings>,
    #[serde(default)]
    not_contains: Option<Strings>,
    #[serde(default)]
    regex: Option<Spanned<Strings>>,
    #[serde(default)]
    max_cost_usd: Option<Spanned<f64>>,
    #[serde(default)]
    max_latency_ms: Option<u64>,
    /// A rubric, or `{rubric, model}`.
    #[serde(default)]
    judge: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectedCall {
    name: Spanned<String>,
    #[serde(default)]
    arguments: Option<Spanned<Value>>,
}

/// A string or a list of strings.
struct Strings(Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Strings, E> {
                Ok(Strings(vec![value.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(Strings(items))
            }
        }
        deserializer.deserialize_any(StringsVisitor)
    }
}

impl RawScenario {
    fn validate(
        self,
        path: &str,
        default_name: String,
        validator: &Validator<'_>,
        errors: &mut Vec<ScenarioError>,
    ) -> Option<Scenario> {
        let before = errors.len();
        let mut fail = |location: Location, message: String| errors.push(invalid(path, location, message));

        let name = match self.name {
            Some(name) if name.value.trim().is_empty() => {
                fail(name.referenced, "expected a non-empty scenario name".to_owned());
                String::new()
            }
            Some(name) => name.value,
            None => default_name,
        };
        if let Some(model) = &self.model
            && let Err(message) = (validator.check_model)(&model.value)
        {
            fail(model.referenced, message);
        }
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
            Some(entries) => {
                let dir = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty() && path != "-")
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
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
        let open = mcp.iter().any(|server| server.include.is_none());
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
        if self.turns.value.is_empty() {
            fail(self.turns.referenced, "expected at least one turn".to_owned());
        }
        let mut turns: Vec<Turn> = self
            .turns
            .value
            .into_iter()
            .map(|turn| Turn {
                user: turn.user,
                expect: turn.expect.map(|e| e.validate(&offered, open, validator, &mut fail)).unwrap_or_default(),
            })
            .collect();
        // Collected in place over the parsed turns' larger allocation (six turns' room for a
        // one-turn scenario): kept for the whole batch, so given back now.
        turns.shrink_to_fit();

        (errors.len() == before).then(|| Scenario {
            name,
            file: path.to_owned(),
            description: self.description,
            model: self.model.map(|m| m.value),
            system: self.system,
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
        })
    }
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
fn judge_spec(
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
    if let Err(message) = (validator.check_model)(&model) {
        fail(at, format!("judge model: {message}"));
        return None;
    }
    Some(JudgeSpec { rubric, model })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Vec<Scenario>, String> {
        let tools = ToolRegistry::builtin();
        let check_model = |m: &str| {
            if m.starts_with("bad:") { Err(format!("unknown provider in `{m}`")) } else { Ok(()) }
        };
        let validator = Validator::new(&tools, &check_model);
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
        assert_eq!(s.model.as_deref(), Some("openai:gpt-4o-mini"));
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
        let check_model = |m: &str| {
            if m.starts_with("bad:") { Err(format!("unknown provider in `{m}`")) } else { Ok(()) }
        };
        let parse_with = |text: &str, judge_model: Option<&str>| {
            let validator = Validator { judge_model, ..Validator::new(&tools, &check_model) };
            parse_scenarios(text, "s.yaml", "s", &validator).map_err(|e| e.to_string())
        };
        let text = "model: openai:gpt-4o\nturns:\n  - user: hi\n    expect:\n      judge: Greets back.\n  - user: bye\n    expect:\n      judge: {rubric: Says goodbye., model: anthropic:claude-haiku-4-5}\n";
        let judges = |scenarios: Vec<Scenario>| {
            scenarios[0].turns.iter().map(|t| t.expect.judge.clone().unwrap()).collect::<Vec<_>>()
        };
        let with_default = judges(parse_with(text, Some("openai:gpt-4o-mini")).unwrap());
        assert_eq!(with_default[0], JudgeSpec { rubric: "Greets back.".into(), model: "openai:gpt-4o-mini".into() });
        assert_eq!(
            with_default[1],
            JudgeSpec { rubric: "Says goodbye.".into(), model: "anthropic:claude-haiku-4-5".into() }
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
        assert_eq!(bad("{rubric: x, model: bad:y}"), "s.yaml:4:14: judge model: unknown provider in `bad:y`");
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
        let check_model = |_: &str| Ok(());
        let validator = Validator::new(&registry, &check_model);
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
        let check_model = |_: &str| Ok(());
        let validator = Validator::new(&registry, &check_model);
        let errors = load_scenarios(&[path.display().to_string()], &validator).unwrap_err();
        assert!(errors.0[0].to_string().contains("larger than the 8 MiB a scenario file may be"), "{}", errors.0[0]);
    }
}
