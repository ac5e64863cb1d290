//! `runner report FILES...`: the comparison summary rebuilt from CSV reports: shards merged,
//! optionally re-priced at another model's prices.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{EXIT_FAILED, EXIT_PASSED};
use crate::files::write_atomically;
use crate::cli::ReportArgs;
use crate::report::merge::Merged;
use crate::settings::{Flags, Settings, UsageError};

pub(crate) fn report(config: Option<&Path>, args: &ReportArgs) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, prices: args.prices.as_deref(), ..Flags::default() })?;
    let price_as = match &args.price_as {
        Some(text) => {
            let spec = settings.parse_model(text)?;
            let entry = settings.prices.get(&spec.provider, &spec.name).cloned();
            Some((spec, entry.ok_or_else(|| UsageError(format!("no known price for {text}; add one with --prices FILE or runner.yaml")))?))
        }
        None => None,
    };
    let mut merged = Merged::default();
    for path in &args.files {
        if !merged.read(path, price_as.as_ref().map(|(_, entry)| entry))? {
            eprintln!("note: skipped {}: a per-model summary, not a report", path.display());
        }
    }
    let summary = merged.summary();
    if let Some(path) = &args.summary {
        write_atomically(path, &summary.to_csv()?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.merged {
        merged.write_rows(path)?;
    }
    let mut out = summary.render();
    if let Some((spec, entry)) = &price_as {
        let p = &entry.price;
        let date = entry.date.as_deref().map_or_else(String::new, |d| format!(", read {d}"));
        writeln!(out, "costs: every model's recorded tokens re-priced at {spec}'s prices (input ${}, output ${} per million; {}{date})", p.input, p.output, entry.source)?;
    }
    let comparison = super::compare_with(args.baseline.as_deref(), &summary)?;
    if let Some(comparison) = &comparison {
        out.push_str(&comparison.render());
    }
    super::print(&out)?;
    let regressed = comparison.is_some_and(|c| !c.regressions.is_empty());
    Ok(if summary.all_passed() && !regressed { EXIT_PASSED } else { EXIT_FAILED })
}
