//! `runner schema`: the JSON Schema of scenario files.

use super::EXIT_PASSED;

pub(crate) fn schema() -> anyhow::Result<u8> {
    super::print(&format!("{}\n", crate::scenario::SCHEMA.trim_end()))?;
    Ok(EXIT_PASSED)
}
