//! `runner tools [PATHS...]`: the tools scenarios can offer, with how each answers and its
//! JSON schema: the built-ins, `runner.yaml`'s, those the given scenario files declare, and
//! those their MCP servers list (the servers are started to ask them).

use std::path::Path;

use super::EXIT_PASSED;
use crate::http::http_client;
use crate::record::ToolSource;
use crate::settings::{Flags, Settings};
use crate::text::{printable, shorten};
use crate::tools::Tool;
use crate::tools::mcp::{McpPool, RunServers};

pub(crate) async fn tools(config: Option<&Path>, paths: &[String], json: bool) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, ..Flags::default() })?;
    let mut listed: Vec<Listed> = settings.tools.iter().map(|tool| Listed::of(tool.as_ref(), None)).collect();
    if !paths.is_empty() {
        let http = http_client()?;
        for scenario in super::load(&settings, paths)? {
            let by = format!("{} in {}", scenario.name, scenario.file);
            listed.extend(scenario.declared.iter().map(|tool| Listed::of(tool.as_ref(), Some(&by))));
            let servers = RunServers::start(&scenario.mcp, &McpPool::default(), &http).await?;
            listed.extend(servers.tools.iter().map(|tool| Listed::of(tool.as_ref(), Some(&by))));
            servers.finish().await;
        }
    }
    let out = if json { serde_json::to_string_pretty(&listed)? + "\n" } else { table(&listed) };
    super::print(&out)?;
    Ok(EXIT_PASSED)
}

/// One tool as `runner tools` shows it. Names and descriptions may come from an MCP server:
/// control characters (terminal escapes) are shown escaped.
#[derive(Debug, serde::Serialize)]
struct Listed {
    name: String,
    /// `builtin`, `command`, `http`, `result`, `mcp`, ...
    source: String,
    /// The name its MCP server lists it under, when runner offers it under another.
    #[serde(skip_serializing_if = "Option::is_none")]
    listed_as: Option<String>,
    /// `runner.yaml`, or the scenario and file that declare it; `None` for a built-in.
    #[serde(skip_serializing_if = "Option::is_none")]
    declared_by: Option<String>,
    description: String,
    parameters: serde_json::Value,
}

impl Listed {
    fn of(tool: &dyn Tool, declared_by: Option<&str>) -> Self {
        let source = tool.source();
        let declared_by = match (&source, declared_by) {
            (ToolSource::Builtin, _) => None,
            (_, Some(by)) => Some(printable(by)),
            (_, None) => Some("runner.yaml".to_owned()),
        };
        Self {
            name: printable(tool.name()),
            source: source.to_string(),
            listed_as: tool.original_name().map(printable),
            declared_by,
            description: tool.description().lines().map(printable).collect::<Vec<_>>().join("\n"),
            parameters: tool.parameters(),
        }
    }

    /// The parameters' names, optional ones marked `?`.
    fn parameter_names(&self) -> String {
        let required: Vec<&str> = self.parameters["required"]
            .as_array()
            .map(|names| names.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        let names: Vec<String> = self.parameters["properties"]
            .as_object()
            .map(|properties| {
                properties
                    .keys()
                    .map(|name| {
                        let name = printable(name);
                        if required.contains(&name.as_str()) { name } else { format!("{name}?") }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() { "-".to_owned() } else { names.join(", ") }
    }
}

/// The short listing: a row per tool (name, where it comes from, parameters, the first line
/// of its description).
fn table(listed: &[Listed]) -> String {
    let mut rows = vec![["tool", "source", "parameters", "description"].map(String::from).to_vec()];
    for tool in listed {
        let mut source = tool.source.clone();
        if let Some(original) = &tool.listed_as {
            source.push_str(&format!(" (listed as `{original}`)"));
        }
        if let Some(by) = &tool.declared_by {
            source.push_str(&format!(", {by}"));
        }
        let first_line = tool.description.lines().next().unwrap_or_default();
        rows.push(vec![tool.name.clone(), source, tool.parameter_names(), shorten(first_line, 60)]);
    }
    let mut out = crate::report::render_table(&rows, &[0, 1, 2, 3]);
    out.push_str("\n(runner tools --json: every description and JSON schema)\n");
    out
}
