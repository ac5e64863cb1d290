//! Tools a scenario (or `runner.yaml`) declares: a name, a description, a JSON Schema for the
//! arguments, and how a call is answered: one `result`, `results` chosen by the arguments,
//! a `command` run per call, or an `http` endpoint.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::{ProcessGroup, own_group};
use super::{Tool, ToolContext, ToolError, schema_problems};
use crate::matcher::Pattern;
use crate::record::ToolSource;
use crate::secret::{Secret, Secrets};
use crate::text::expand;

/// How long a `command` may run when the declaration sets no `timeout_secs`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most output a `command` or an `http` answer may give; past it the call is an error.
pub(crate) const MAX_OUTPUT: usize = 1 << 20;
/// Lines of stderr a failed command's error carries.
const STDERR_LINES: usize = 10;

/// A tool declared in YAML.
pub(crate) struct DeclaredTool {
    name: String,
    description: String,
    parameters: Value,
    validator: jsonschema::Validator,
    answer: Answer,
    /// The batch's secrets: a command starts without their variables; output and errors are
    /// redacted with them.
    secrets: Secrets,
}

/// How a declared tool answers.
enum Answer {
    Result(Value),
    /// The first entry whose `when` matches the arguments (no `when`: always).
    Results(Vec<(Option<Pattern>, Value)>),
    Command {
        argv: Vec<String>,
        dir: PathBuf,
        timeout: Duration,
    },
    Http {
        url: String,
        headers: Vec<(String, Secret)>,
        timeout: Duration,
    },
}

/// A declaration as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    results: Option<Vec<RawWhen>>,
    #[serde(default)]
    command: Option<Value>,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    timeout_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(default)]
    when: Option<Value>,
    result: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// Where a declaration is and what it may use.
pub(crate) struct DeclarationContext<'a> {
    /// The directory `command` tools run in (the scenario file's).
    pub dir: PathBuf,
    /// Looks up `${VAR}` in http headers (the environment).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The batch's secrets: header values are added to it.
    pub secrets: Secrets,
}

impl DeclaredTool {
    /// Reads a declaration; `name` is given for `runner.yaml`'s map entries. The error says
    /// what was expected.
    pub(crate) fn parse(value: &Value, name: Option<&str>, context: &DeclarationContext<'_>) -> Result<Self, String> {
        let raw: RawDeclaration =
            serde_json::from_value(value.clone()).map_err(|err| format!("expected a tool declaration: {err}"))?;
        let name = match (name, raw.name) {
            (Some(given), None) => given.to_owned(),
            (None, Some(name)) => name,
            (Some(_), Some(_)) => {
                return Err("a tool declared under its name in runner.yaml takes no `name` field".to_owned());
            }
            (None, None) => return Err("expected a tool declaration with a `name`".to_owned()),
        };
        if !(1..=64).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("expected a tool name of 1 to 64 letters, digits, `_` or `-`, found `{name}`"));
        }
        let parameters = raw.parameters.unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
        // Building the validator checks the schema against its metaschema first.
        let validator = jsonschema::validator_for(&parameters)
            .map_err(|err| format!("expected `parameters` of `{name}` to be a valid JSON Schema: {err}"))?;
        let timeout = match raw.timeout_secs {
            None => DEFAULT_TIMEOUT,
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Duration::from_secs_f64(secs),
            Some(secs) => {
                return Err(format!("expected `timeout_secs` of `{name}` between 0 and 86400, found {secs}"));
            }
        };
        let kinds = [raw.result.is_some(), raw.results.is_some(), raw.command.is_some(), raw.http.is_some()];
        let answer = match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(format!("expected `{name}` to say how it answers: one of result, results, command, http"));
            }
            1 => {
                if let Some(result) = raw.result {
                    Answer::Result(result)
                } else if let Some(results) = raw.results {
                    let mut entries = Vec::with_capacity(results.len());
                    for entry in results {
                        let when = entry
                            .when
                            .as_ref()
                            .map(Pattern::parse)
                            .transpose()
                            .map_err(|err| format!("in `results` of `{name}`: {err}"))?;
                        entries.push((when, entry.result));
                    }
                    Answer::Results(entries)
                } else if let Some(command) = raw.command {
                    let argv: Option<Vec<String>> = command
                        .as_array()
                        .and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect());
                    match argv {
                        Some(argv) if !argv.is_empty() => Answer::Command { argv, dir: context.dir.clone(), timeout },
                        _ => {
                            return Err(format!(
                                "expected `command` of `{name}` to be a list of strings (program, then arguments), found {command}"
                            ));
                        }
                    }
                } else {
                    let http = raw.http.expect("one kind is set");
                    if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                        return Err(format!(
                            "expected the `http` url of `{name}` to be an http:// or https:// URL, found `{}`",
                            http.url
                        ));
                    }
                    let mut headers = Vec::new();
                    for (header, template) in http.headers {
                        let value = expand(&template, context.env).map_err(|e| e.to_string())?;
                        context.secrets.add_header(&header, &template, &value);
                        headers.push((header, Secret::new(value)));
                    }
                    context.secrets.add_url(&http.url);
                    Answer::Http { url: http.url, headers, timeout }
                }
            }
            _ => {
                return Err(format!("expected `{name}` to have exactly one of result, results, command, http"));
            }
        };
        Ok(Self { name, description: raw.description, parameters, validator, answer, secrets: context.secrets.clone() })
    }

    async fn answer(&self, arguments: Value, context: &ToolContext) -> Result<Value, ToolError> {
        match &self.answer {
            Answer::Result(result) => Ok(result.clone()),
            Answer::Results(entries) => entries
                .iter()
                .find(|(when, _)| {
                    when.as_ref().is_none_or(|pattern| pattern.check(Some(&arguments), "arguments").is_ok())
                })
                .map(|(_, result)| result.clone())
                .ok_or_else(|| {
                    ToolError::Failed(format!(
                        "no `results` entry of `{}` matches the arguments {arguments}",
                        self.name
                    ))
                }),
            Answer::Command { argv, dir, timeout } => run_command(argv, dir, *timeout, &arguments, &self.secrets).await,
            Answer::Http { url, headers, timeout } => {
                post(context, url, headers, *timeout, &arguments, &self.secrets).await
            }
        }
    }
}

impl Tool for DeclaredTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    fn source(&self) -> ToolSource {
        match self.answer {
            Answer::Result(_) => ToolSource::Result,
            Answer::Results(_) => ToolSource::Results,
            Answer::Command { .. } => ToolSource::Command,
            Answer::Http { .. } => ToolSource::Http,
        }
    }
    fn check(&self, arguments: &Value) -> Vec<String> {
        schema_problems(&self.validator, arguments)
    }
    fn call<'a>(&'a self, arguments: Value, context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(self.answer(arguments, context))
    }
}

/// The JSON Schema keywords (draft 2020-12 and the older drafts' names still met).
const KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "definitions",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "items",
    "prefixItems",
    "contains",
    "unevaluatedItems",
    "unevaluatedProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "nullable",
];

/// Keys of `schema` (at any depth) that are no JSON Schema keyword and whose value is null:
/// almost always a description cut at a comma by YAML's flow mapping
/// (`{type: string, description: The id, like A1.}` gives `"like A1.": null`). Names of
/// properties and definitions are not keywords and are not looked at.
pub(crate) fn null_non_keywords(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(schema, false)];
    while let Some((value, names)) = stack.pop() {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    if !names && item.is_null() && !KEYWORDS.contains(&key.as_str()) {
                        found.push(key.clone());
                    }
                    let holds_names = !names
                        && ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"]
                            .contains(&key.as_str());
                    stack.push((item, holds_names));
                }
            }
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, false))),
            _ => {}
        }
    }
    found.sort();
    found
}

/// The output as the result: JSON when it parses, else the text.
fn as_result(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).trim_end().to_owned()))
}

/// One process per call: the arguments as JSON on stdin, stdout is the result. A non-zero
/// exit, a time-out or more than [`MAX_OUTPUT`] of output is a tool error with stderr's last
/// lines; on time-out the whole process group is killed. The time-out bounds the whole call,
/// from start to exit. The command starts without the variables that hold the batch's
/// secrets.
async fn run_command(
    argv: &[String],
    dir: &PathBuf,
    timeout: Duration,
    arguments: &Value,
    secrets: &Secrets,
) -> Result<Value, ToolError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut command = tokio::process::Command::new(&argv[0]);
    own_group(command.args(&argv[1..]).current_dir(dir), secrets);
    let spawning = super::process::spawning();
    let mut child = command.spawn().map_err(|err| super::process::spawn_error(&argv[0], dir, &err))?;
    let mut group = ProcessGroup::of(child.id());
    drop(spawning);
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // A command that does not read its input must not block the call.
    let input = arguments.to_string();
    tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let errors = tokio::spawn(async move {
        let mut err = Vec::new();
        let _ = (&mut stderr).take(MAX_OUTPUT as u64).read_to_end(&mut err).await;
        err
    });
    // Reads stdout to its end; `false` when it passes the cap first.
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            let n = stdout.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(true);
            }
            if out.len() + n > MAX_OUTPUT {
                return Ok(false);
            }
            out.extend_from_slice(&chunk[..n]);
        }
    };
    let timed_out = || ToolError::Failed(format!("`{}` did not finish within {timeout:?} (killed)", argv.join(" ")));
    let whole = match tokio::time::timeout_at(deadline, read).await {
        Ok(whole) => whole.map_err(|e| ToolError::Failed(format!("cannot read the output of `{}`: {e}", argv[0])))?,
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            return Err(timed_out());
        }
    };
    if !whole {
        group.kill();
        let _ = child.wait().await;
        return Err(ToolError::Failed(format!(
            "`{}` wrote more than {} MiB (killed)",
            argv.join(" "),
            MAX_OUTPUT >> 20
        )));
    }
    // Its output ended; it may still run: what is left of the time-out bounds the wait.
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status.map_err(|e| ToolError::Failed(e.to_string()))?,
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            return Err(timed_out());
        }
    };
    group.kill(); // Whatever it left running in its group goes with it.
    let err = errors.await.unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
        return Err(ToolError::Failed(format!("`{}` exited with {status}: {tail}", argv.join(" "))));
    }
    Ok(as_result(&out))
}

/// POSTs the arguments as JSON; a 2xx body is the result, anything else a tool error.
/// Header values never reach a result or an error.
async fn post(
    context: &ToolContext,
    url: &str,
    headers: &[(String, Secret)],
    timeout: Duration,
    arguments: &Value,
    secrets: &Secrets,
) -> Result<Value, ToolError> {
    let redact = |text: &str| secrets.redact(text);
    let mut request = context.http.post(url).timeout(timeout).json(arguments);
    for (name, value) in headers {
        request = request.header(name, value.expose());
    }
    let failed = |err: reqwest::Error| {
        if err.is_timeout() {
            ToolError::Failed(format!("{url} did not answer within {timeout:?}"))
        } else {
            ToolError::Failed(redact(&crate::http::error_chain(&err)))
        }
    };
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_OUTPUT {
            return Err(ToolError::Failed(format!("{url} answered more than {} MiB", MAX_OUTPUT >> 20)));
        }
        body.extend_from_slice(&chunk);
    }
    if let Some(location) = crate::http::unfollowed_redirect(&response) {
        return Err(ToolError::Failed(redact(&format!(
            "{url} redirected to another origin ({location}); runner does not follow it, so that the tool's headers go only to its own url"
        ))));
    }
    if !status.is_success() {
        return Err(ToolError::Failed(redact(&format!(
            "{url} answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body).chars().take(2000).collect::<String>()
        ))));
    }
    Ok(secrets.redact_value(as_result(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_description_split_at_a_comma_is_found() {
        // What `{type: string, description: The order id, like A1001.}` reads as.
        let split = json!({"type": "object", "properties": {"order_id": {"type": "string", "description": "The order id", "like A1001.": null}}});
        assert_eq!(null_non_keywords(&split), ["like A1001."]);
        let fine = json!({"type": "object", "properties": {"note": {"type": ["string", "null"], "default": null}, "nullable_name": {"const": null}}, "$defs": {"x": {"type": "null"}}});
        assert!(null_non_keywords(&fine).is_empty());
    }
}
