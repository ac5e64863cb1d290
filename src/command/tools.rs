//! `runner tools [PATHS...]`: the tools scenarios can offer, with how each answers and its
//! JSON schema: the built-ins, `runner.yaml`'s, those the given scenario files declare, and
//! those their MCP servers list (the servers are started to ask them).

use std::fmt::Write as _;
use std::path::Path;

use super::EXIT_PASSED;
use crate::http::http_client;
use crate::record::ToolSource;
use crate::settings::{Flags, Settings};
use crate::text::printable;
use crate::tools::Tool;
use crate::tools::mcp::{McpPool, RunServers};

pub(crate) async fn tools(config: Option<&Path>, paths: &[String]) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, ..Flags::default() })?;
    let mut out = String::new();
    for tool in settings.tools.iter() {
        describe(&mut out, tool.as_ref(), None)?;
    }
    if !paths.is_empty() {
        let http = http_client()?;
        for scenario in super::load(&settings, paths)? {
            let by = format!("{} in {}", scenario.name, scenario.file);
            for tool in &scenario.declared {
                describe(&mut out, tool.as_ref(), Some(&by))?;
            }
            let servers = RunServers::start(&scenario.mcp, &McpPool::default(), &http).await?;
            for tool in &servers.tools {
                describe(&mut out, tool.as_ref(), Some(&by))?;
            }
            servers.finish().await;
        }
    }
    super::print(&out)?;
    Ok(EXIT_PASSED)
}

/// A tool's name, how it answers, its description and schema. Names and descriptions may
/// come from an MCP server: control characters (terminal escapes) are shown escaped.
fn describe(out: &mut String, tool: &dyn Tool, declared_by: Option<&str>) -> std::fmt::Result {
    let name = printable(tool.name());
    let listed =
        tool.original_name().map(|original| format!(", listed as `{}`", printable(original))).unwrap_or_default();
    let description: Vec<String> = tool.description().lines().map(printable).collect();
    let description = description.join("\n  ");
    match (tool.source(), declared_by) {
        (ToolSource::Builtin, _) => writeln!(out, "{name}\n  {description}")?,
        (source, Some(by)) => {
            writeln!(out, "{name} ({source}{listed}, declared by {})\n  {description}", printable(by))?;
        }
        (source, None) => writeln!(out, "{name} ({source}, runner.yaml)\n  {description}")?,
    }
    for line in serde_json::to_string_pretty(&tool.parameters()).map_err(|_| std::fmt::Error)?.lines() {
        writeln!(out, "  {line}")?;
    }
    writeln!(out)
}
