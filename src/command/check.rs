//! `runner check`: validate scenario files without calling any model.

use std::collections::HashSet;
use std::path::Path;

use super::EXIT_PASSED;
use crate::settings::{Flags, Settings};

pub(crate) fn check(
    config: Option<&Path>,
    paths: &[String],
    judge_model: Option<&str>,
    user_model: Option<&str>,
) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, judge_model, user_model, ..Flags::default() })?;
    let scenarios = super::load(&settings, paths)?;
    let files: HashSet<&str> = scenarios.iter().map(|s| s.file.as_str()).collect();
    super::print(&format!("ok: {} scenario(s) in {} file(s)\n", scenarios.len(), files.len()))?;
    Ok(EXIT_PASSED)
}
