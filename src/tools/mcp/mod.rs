//! Tools an MCP server lists, through `rmcp`, the official Rust SDK: servers started as a
//! command (stdio) or reached at a URL (streamable HTTP), one per run by default or one for
//! the whole batch (`shared: true`), each ended when its run or the batch ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::secret::{Secret, Secrets};
use crate::text::expand;

mod pool;
mod server;
mod tool;

pub(crate) use pool::{McpPool, RunServers};

/// Why a run's MCP servers could not give it their tools; the run is recorded with it,
/// unplayed. Cloned to every run that shares a server that failed to start.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum McpError {
    /// The server's process could not be started.
    #[error("MCP server {0}")]
    Spawn(String),
    #[error("MCP server `{0}`: its standard input and output could not be opened")]
    Pipes(String),
    #[error("header `{name}`: {why}")]
    HeaderName { name: String, why: String },
    #[error("header `{0}` has a value that is not a valid header value")]
    HeaderValue(String),
    /// It did not answer the handshake or list its tools in time, or said why not: the
    /// sentence says how far it got and ends with its stderr's last lines, redacted.
    #[error("MCP server `{label}` {why}")]
    Start { label: String, why: String },
    #[error("MCP server `{label}` does not list tool `{name}` named in `include`; it lists: {listed}")]
    NotListed { label: String, name: String, listed: String },
    #[error(
        "two MCP servers list a tool named `{name}` (the second: `{label}`); offer one of them (`include` picks a server's tools)"
    )]
    TwoOfOneName { name: String, label: String },
}

/// How long a server may take to start and list its tools when the entry sets no
/// `startup_timeout_secs`.
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call may take when the entry sets no `timeout_secs`.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit once asked, before its process group is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// An `mcp:` entry of a scenario's `tools`.
#[derive(Debug)]
pub(crate) struct McpServerSpec {
    /// How errors and the log name the server: its command line or its URL.
    pub label: String,
    transport: Transport,
    /// Only these of the listed tools (`None`: all).
    pub include: Option<Vec<String>>,
    /// One server for the whole batch instead of one per run.
    pub shared: bool,
    startup_timeout: Duration,
    call_timeout: Duration,
    /// The batch's secrets: a stdio server starts without their variables; what it says is
    /// redacted with them.
    secrets: Secrets,
}

#[derive(Debug)]
enum Transport {
    Stdio { argv: Vec<String>, dir: PathBuf },
    Http { url: String, headers: Vec<(String, Secret)> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    mcp: RawServer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    command: Option<Value>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    startup_timeout_secs: Option<f64>,
    #[serde(default)]
    timeout_secs: Option<f64>,
}

impl McpServerSpec {
    /// Reads an `{mcp: {...}}` entry; `dir` is where a `command` runs (the scenario file's
    /// directory), `env` expands `${VAR}` in headers, whose values join `secrets`. The error
    /// says what was expected.
    pub(crate) fn parse(
        entry: &Value,
        dir: PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
        secrets: &Secrets,
    ) -> Result<Self, String> {
        let raw: RawEntry = serde_json::from_value(entry.clone()).map_err(|err| {
            format!("expected an MCP server entry `{{mcp: {{command or url, include, shared}}}}`: {err}")
        })?;
        let raw = raw.mcp;
        let seconds = |field: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
            Some(secs) => Err(format!("expected `{field}` between 0 and 86400, found {secs}")),
        };
        let startup_timeout = seconds("startup_timeout_secs", raw.startup_timeout_secs, DEFAULT_STARTUP_TIMEOUT)?;
        let call_timeout = seconds("timeout_secs", raw.timeout_secs, DEFAULT_CALL_TIMEOUT)?;
        let transport = match (raw.command, raw.url) {
            (Some(command), None) => {
                let argv: Option<Vec<String>> =
                    command.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect());
                match argv {
                    Some(argv) if !argv.is_empty() && raw.headers.is_empty() => Transport::Stdio { argv, dir },
                    Some(argv) if !argv.is_empty() => {
                        return Err("`headers` go with `url`, not with `command`".to_owned());
                    }
                    _ => {
                        return Err(format!(
                            "expected the MCP `command` to be a list of strings (program, then arguments), found {command}"
                        ));
                    }
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("expected the MCP `url` to be an http:// or https:// URL, found `{url}`"));
                }
                let mut headers = Vec::new();
                for (name, template) in raw.headers {
                    let value = expand(&template, env).map_err(|e| e.to_string())?;
                    secrets.add_header(&name, &template, &value);
                    headers.push((name, Secret::new(value)));
                }
                secrets.add_url(&url);
                Transport::Http { url, headers }
            }
            (Some(_), Some(_)) => {
                return Err("expected one of `command` (stdio) or `url` (streamable HTTP) in an MCP entry, found both"
                    .to_owned());
            }
            (None, None) => {
                return Err("expected `command` (stdio) or `url` (streamable HTTP) in an MCP entry".to_owned());
            }
        };
        if let Some(include) = &raw.include
            && include.is_empty()
        {
            return Err("expected `include` to name at least one tool (leave it out for all)".to_owned());
        }
        let label = match &transport {
            Transport::Stdio { argv, .. } => argv.join(" "),
            Transport::Http { url, .. } => secrets.redact(url),
        };
        Ok(Self {
            label,
            transport,
            include: raw.include,
            shared: raw.shared,
            startup_timeout,
            call_timeout,
            secrets: secrets.clone(),
        })
    }

    /// What makes two entries the same server, for sharing one across a batch. Holds header
    /// values: never shown.
    fn identity(&self) -> String {
        match &self.transport {
            Transport::Stdio { argv, dir } => {
                format!("stdio\0{}\0{}", dir.display(), argv.join("\0"))
            }
            Transport::Http { url, headers } => {
                let headers: Vec<String> =
                    headers.iter().map(|(name, value)| format!("{name}\0{}", value.expose())).collect();
                format!("http\0{url}\0{}", headers.join("\0"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tool::{content, is_legal_name, legal_name};
    use super::*;
    use crate::tools::ToolError;
    use crate::tools::declared::MAX_OUTPUT;
    use rmcp::model::CallToolResult;
    use serde_json::json;

    fn parse(entry: Value) -> Result<McpServerSpec, String> {
        McpServerSpec::parse(
            &entry,
            PathBuf::from("."),
            &|var| (var == "TOKEN").then(|| "s3cr3t-value".to_owned()),
            &Secrets::default(),
        )
    }

    #[test]
    fn entries_are_read_or_refused_with_what_was_expected() {
        let spec =
            parse(json!({"mcp": {"command": ["node", "server.js"], "include": ["echo"], "shared": true}})).unwrap();
        assert_eq!(spec.label, "node server.js");
        assert_eq!(spec.include.as_deref(), Some(&["echo".to_owned()][..]));
        assert!(spec.shared);
        let spec =
            parse(json!({"mcp": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}}))
                .unwrap();
        assert!(!spec.shared);
        assert!(!format!("{spec:?}").contains("s3cr3t-value"), "{spec:?}");
        for (entry, expected) in [
            (json!({"mcp": {}}), "expected `command` (stdio) or `url`"),
            (json!({"mcp": {"command": ["a"], "url": "http://x"}}), "found both"),
            (json!({"mcp": {"command": "node server.js"}}), "a list of strings"),
            (json!({"mcp": {"url": "ftp://x"}}), "http:// or https://"),
            (json!({"mcp": {"command": ["a"], "inclde": ["x"]}}), "unknown field `inclde`"),
            (json!({"mcp": {"command": ["a"], "include": []}}), "at least one tool"),
            (json!({"mcp": {"url": "http://x", "headers": {"A": "${NOPE}"}}}), "set NOPE"),
            (json!({"mcp": {"command": ["a"]}, "name": "x"}), "unknown field `name`"),
            (json!({"mcp": {"command": ["a"], "timeout_secs": -1}}), "`timeout_secs` between"),
        ] {
            let err = parse(entry.clone()).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }

    #[test]
    fn text_blocks_become_the_message_and_is_error_a_tool_error() {
        use rmcp::model::ContentBlock;
        let two = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        assert_eq!(content(two).unwrap(), json!("a\nb"));
        let failed = CallToolResult::error(vec![ContentBlock::text("no such order")]);
        assert!(matches!(content(failed), Err(ToolError::Failed(m)) if m == "no such order"));
        let structured = CallToolResult::structured(json!({"total": 3}));
        // `structured` also writes the JSON as a text block, which is what the model reads.
        assert_eq!(content(structured).unwrap(), json!(r#"{"total":3}"#));
    }

    #[test]
    fn other_blocks_become_placeholders_and_big_results_errors() {
        use rmcp::model::ContentBlock;
        let image = ContentBlock::image("A".repeat(4096), "image/png");
        let mixed = CallToolResult::success(vec![ContentBlock::text("the chart:"), image, ContentBlock::text("done")]);
        assert_eq!(content(mixed).unwrap(), json!("the chart:\n[image: image/png, 3 KiB]\ndone"));
        let big = CallToolResult::success(vec![ContentBlock::text("x".repeat(MAX_OUTPUT + 1))]);
        assert!(matches!(content(big), Err(ToolError::Failed(m)) if m.contains("past the 1 MiB")));
    }

    #[test]
    fn illegal_names_are_mapped_and_kept_apart() {
        assert_eq!(legal_name("lookup_order", &[]), "lookup_order");
        assert_eq!(legal_name("math.add", &[]), "math_add");
        assert_eq!(legal_name("fs/read", &["fs_read".to_owned()]), "fs_read_2");
        assert_eq!(legal_name("<b>\nx", &[]), "_b__x");
        assert_eq!(legal_name("", &[]), "tool");
        let long = legal_name(&"a.".repeat(50), &["a_".repeat(32)]);
        assert!(is_legal_name(&long) && long.ends_with("_2"), "{long}");
    }
}
