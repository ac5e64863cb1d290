//! `runner report FILES...`: the comparison summary rebuilt from CSV reports: shards merged,
//! optionally re-priced at another model's prices.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::UsageError;
use super::{EXIT_FAILED, EXIT_PASSED};
use crate::cli::ReportArgs;
use crate::files::{safe_file_name, write_atomically};
use crate::report::html::{HtmlReport, Page};
use crate::report::json::{log_name, read_log};
use crate::report::merge::Merged;
use crate::settings::{Flags, Settings};

/// The HTML report of the runs in `merged`, each conversation read from its log under `logs`
/// where it is there; returns how many were.
fn write_html(path: &Path, merged: &Merged, logs: &Path, page: &Page<'_>) -> anyhow::Result<usize> {
    let mut html = HtmlReport::create(path, None)?;
    let mut found = 0;
    for (run_id, facts) in merged.runs() {
        let log = logs.join(safe_file_name(run_id)).join(log_name(&facts.scenario, &facts.model, facts.repetition));
        let record = if facts.status.is_some() { read_log(&log) } else { None };
        found += usize::from(record.is_some());
        let missing = match facts.status {
            None => "not started".to_owned(),
            Some(_) => format!("no log at {} (give --logs-dir where the run wrote its logs)", log.display()),
        };
        html.add(facts, record.as_ref(), record.as_ref().map(|_| log.as_path()), Some(missing))
            .with_context(|| format!("cannot write beside {}", path.display()))?;
    }
    html.finish(page)?;
    Ok(found)
}

/// The model the run that wrote `report` compared the others with: the `compared_to` of the
/// summary beside it (`NAME.summary.csv`), when there is one.
fn recorded_reference(report: &Path) -> Option<crate::model::ModelSpec> {
    let summary = crate::report::summary_path(report);
    let bytes = crate::files::read_regular(&summary, 16 << 20).ok()?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let column = reader.headers().ok()?.iter().position(|name| name == "compared_to")?;
    reader
        .records()
        .filter_map(Result::ok)
        .find_map(|row| row.get(column).filter(|cell| !cell.is_empty()).and_then(crate::model::ModelSpec::from_key))
}

pub(crate) fn report(config: Option<&Path>, args: &ReportArgs) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, prices: args.prices.as_deref(), ..Flags::default() })?;
    let price_as = match &args.price_as {
        Some(text) => {
            let spec = settings.parse_model(text)?;
            let entry = settings.prices.get(&spec.provider, &spec.name).cloned();
            Some((
                spec,
                entry.ok_or_else(|| {
                    UsageError(format!("no known price for {text}; add one with --prices FILE or runner.yaml"))
                })?,
            ))
        }
        None => None,
    };
    let mut merged = Merged::default();
    for path in &args.files {
        if !merged.read(path, price_as.as_ref().map(|(_, entry)| entry))? {
            eprintln!("note: skipped {}: a per-model summary, not a report", path.display());
        }
    }
    let mut summary = merged.summary();
    let models: Vec<_> = summary.models().iter().map(|m| m.model.clone()).collect();
    // The per-scenario table sorted by scenario, then model (the reports' rows are in the order
    // runs finished).
    let mut scenarios: Vec<String> = summary.scenarios().iter().map(|s| s.scenario.clone()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    let cells: Vec<(&str, &crate::model::ModelSpec)> =
        scenarios.iter().flat_map(|name| models.iter().map(move |model| (name.as_str(), model))).collect();
    summary.arrange(&cells);
    let reference = args.files.first().and_then(|report| recorded_reference(report));
    summary.ask(super::asked(&settings, &args.confidence, &models, reference.as_ref())?);
    if let Some(path) = &args.summary {
        write_atomically(path, &summary.to_csv()?).with_context(|| format!("cannot write {}", path.display()))?;
        super::write_pass_k(path, &summary)?;
    }
    if let Some(path) = &args.merged {
        merged.write_rows(path)?;
    }
    let mut out = summary.render_within(super::terminal_width());
    if let Some((spec, entry)) = &price_as {
        let p = &entry.price;
        let date = entry.date.as_deref().map_or_else(String::new, |d| format!(", read {d}"));
        writeln!(
            out,
            "costs: every model's recorded tokens re-priced at {spec}'s prices (input ${}, output ${} per million; {}{date})",
            p.input, p.output, entry.source
        )?;
    }
    let comparison = super::compare_with(args.baseline.as_deref(), &summary)?;
    if let Some(comparison) = &comparison {
        out.push_str(&comparison.render());
    }
    if let Some(path) = &args.html {
        let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
        let found = write_html(
            path,
            &merged,
            &args.logs_dir,
            &Page { title: &files.join(", "), summary: &summary, comparison: comparison.as_ref() },
        )?;
        let runs = merged.runs().count();
        writeln!(
            out,
            "html: {} ({found} of {runs} conversations from the logs under {})",
            path.display(),
            args.logs_dir.display()
        )?;
    }
    if let Some(width) = super::terminal_width() {
        out = crate::text::wrap(&out, width);
    }
    super::print(&out)?;
    let regressed = comparison.is_some_and(|c| !c.regressions.is_empty());
    Ok(if summary.all_passed() && !regressed { EXIT_PASSED } else { EXIT_FAILED })
}
