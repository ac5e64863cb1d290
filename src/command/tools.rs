//! `runner tools`: the registered tools with their JSON schemas.

use std::fmt::Write as _;

use super::EXIT_PASSED;
use crate::tools::ToolRegistry;

pub(crate) fn tools() -> anyhow::Result<u8> {
    let mut out = String::new();
    for tool in ToolRegistry::builtin().iter() {
        writeln!(out, "{}\n  {}", tool.name(), tool.description())?;
        for line in serde_json::to_string_pretty(&tool.parameters())?.lines() {
            writeln!(out, "  {line}")?;
        }
        writeln!(out)?;
    }
    super::print(&out)?;
    Ok(EXIT_PASSED)
}
