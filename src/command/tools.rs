//! `runner tools [PATHS...]`: the tools scenarios can offer, with how each answers and its
//! JSON schema: the built-ins, `runner.yaml`'s, and those the given scenario files declare.

use std::fmt::Write as _;
use std::path::Path;

use super::EXIT_PASSED;
use crate::settings::{Flags, Settings};
use crate::tools::Tool;

pub(crate) fn tools(config: Option<&Path>, paths: &[String]) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, ..Flags::default() })?;
    let mut out = String::new();
    for tool in settings.tools.iter() {
        describe(&mut out, tool.as_ref(), None)?;
    }
    if !paths.is_empty() {
        for scenario in super::load(&settings, paths)? {
            for tool in &scenario.declared {
                describe(&mut out, tool.as_ref(), Some(&format!("{} in {}", scenario.name, scenario.file)))?;
            }
        }
    }
    super::print(&out)?;
    Ok(EXIT_PASSED)
}

fn describe(out: &mut String, tool: &dyn Tool, declared_by: Option<&str>) -> std::fmt::Result {
    match (tool.source(), declared_by) {
        ("builtin", _) => writeln!(out, "{}\n  {}", tool.name(), tool.description())?,
        (source, Some(by)) => writeln!(out, "{} ({source}, declared by {by})\n  {}", tool.name(), tool.description())?,
        (source, None) => writeln!(out, "{} ({source}, runner.yaml)\n  {}", tool.name(), tool.description())?,
    }
    for line in serde_json::to_string_pretty(&tool.parameters()).map_err(|_| std::fmt::Error)?.lines() {
        writeln!(out, "  {line}")?;
    }
    writeln!(out)
}
