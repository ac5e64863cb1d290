//! `--baseline REPORT.csv`: this batch against an earlier report. Per model, the pass rate and
//! cost before and after; per scenario and model, the regressions (every run passed before,
//! not now) and the fixes (the reverse). Any regression fails the batch.

use std::fmt::Write as _;

use super::confidence::pair;
use super::summary::{ModelStats, Summary, percent_cell, usd_cell};
use crate::model::ModelSpec;
use crate::stats::Paired;

/// One model's figures before and after (`None`: it was not in that batch).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelChange {
    pub model: ModelSpec,
    pub pass_rate: (Option<f64>, Option<f64>),
    pub cost_usd: (Option<f64>, Option<f64>),
    /// The change in pass fraction, paired over the scenarios it finished in both batches.
    pub pass_change: Option<Paired>,
}

impl ModelChange {
    /// The change as shown in tables: `+5.0 [-2.1, 12.1]` (points, 95% interval).
    pub(crate) fn change_cell(&self) -> String {
        let Some(change) = &self.pass_change else {
            return "-".to_owned();
        };
        let points = format!("{:+.1}", change.mean * 100.0);
        match change.interval {
            None => format!("{points} (1 scenario)"),
            Some(_) if change.p.is_none() => format!("{points} (every scenario alike)"),
            Some(i) => format!("{points} [{:.1}, {:.1}]", i.low * 100.0, i.high * 100.0),
        }
    }
}

/// A scenario on a model whose outcome changed: passes over finished runs, before and after.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub scenario: String,
    pub model: ModelSpec,
    pub before: (usize, usize),
    pub after: (usize, usize),
}

/// The comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Comparison {
    /// What the baseline is (its path).
    pub baseline: String,
    pub models: Vec<ModelChange>,
    pub regressions: Vec<Change>,
    pub fixes: Vec<Change>,
}

impl Comparison {
    /// `after` against `before`. A (scenario, model) regressed when every finished run of it
    /// passed before and not every one passes now; it is fixed in the reverse case. One found
    /// on one side only is neither.
    pub(crate) fn new(baseline: &str, before: &Summary, after: &Summary) -> Self {
        let mut models: Vec<ModelChange> = Vec::new();
        for m in after.models().iter().chain(before.models()) {
            if models.iter().any(|c| c.model == m.model) {
                continue;
            }
            let find = |s: &Summary| s.models().iter().find(|x| x.model == m.model).cloned();
            let (b, a) = (find(before), find(after));
            models.push(ModelChange {
                model: m.model.clone(),
                pass_rate: (b.as_ref().and_then(ModelStats::pass_rate), a.as_ref().and_then(ModelStats::pass_rate)),
                cost_usd: (b.as_ref().map(|x| x.tally.cost_usd), a.as_ref().map(|x| x.tally.cost_usd)),
                pass_change: match (&b, &a) {
                    (Some(b), Some(a)) => pair(before.scenarios(), b, after.scenarios(), a).pass,
                    _ => None,
                },
            });
        }
        let (mut regressions, mut fixes) = (Vec::new(), Vec::new());
        for now in after.scenarios().iter().filter(|s| s.runs > 0) {
            let Some(then) =
                before.scenarios().iter().find(|s| s.scenario == now.scenario && s.model == now.model && s.runs > 0)
            else {
                continue;
            };
            let (passed_then, passed_now) = (then.passed == then.runs, now.passed == now.runs);
            let change = Change {
                scenario: now.scenario.clone(),
                model: now.model.clone(),
                before: (then.passed, then.runs),
                after: (now.passed, now.runs),
            };
            match (passed_then, passed_now) {
                (true, false) => regressions.push(change),
                (false, true) => fixes.push(change),
                _ => {}
            }
        }
        Self { baseline: baseline.to_owned(), models, regressions, fixes }
    }

    /// As text, after the summary.
    pub(crate) fn render(&self) -> String {
        let mut rows = vec![
            ["model", "pass_rate before", "after", "change (points, 95%)", "cost_usd before", "after"]
                .map(String::from)
                .to_vec(),
        ];
        for m in &self.models {
            rows.push(vec![
                m.model.to_string(),
                percent_cell(m.pass_rate.0),
                percent_cell(m.pass_rate.1),
                m.change_cell(),
                usd_cell(m.cost_usd.0),
                usd_cell(m.cost_usd.1),
            ]);
        }
        let mut out = format!("\nbaseline: {}\n", self.baseline);
        out.push_str(&super::render_table(&rows, &[0]));
        let list = |out: &mut String, title: &str, changes: &[Change]| {
            let _ = writeln!(out, "{title}: {}", changes.len());
            for c in changes {
                let _ = writeln!(
                    out,
                    "  {} on {} ({}/{} -> {}/{})",
                    c.scenario.escape_debug(),
                    c.model,
                    c.before.0,
                    c.before.1,
                    c.after.0,
                    c.after.1
                );
            }
        };
        list(&mut out, "regressions (passed before, not now)", &self.regressions);
        list(&mut out, "fixes (did not pass before, pass now)", &self.fixes);
        out
    }

    /// As Markdown, for the step summary.
    pub(crate) fn render_markdown(&self) -> String {
        let mut out = format!(
            "#### Against the baseline {}\n\n| model | pass rate before | after | change (points, 95% interval) | cost (USD) before | after |\n|---|---:|---:|---:|---:|---:|\n",
            super::markdown_code(&self.baseline)
        );
        for m in &self.models {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                super::markdown_code(&m.model.to_string()),
                percent_cell(m.pass_rate.0),
                percent_cell(m.pass_rate.1),
                m.change_cell(),
                usd_cell(m.cost_usd.0),
                usd_cell(m.cost_usd.1)
            );
        }
        for (title, changes) in [("Regressions", &self.regressions), ("Fixes", &self.fixes)] {
            let _ = write!(out, "\n**{title}**: {}\n", changes.len());
            if !changes.is_empty() {
                out.push_str("\n| scenario | model | before | after |\n|---|---|---:|---:|\n");
                for c in changes {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {}/{} | {}/{} |",
                        super::markdown_cell(&c.scenario),
                        super::markdown_code(&c.model.to_string()),
                        c.before.0,
                        c.before.1,
                        c.after.0,
                        c.after.1
                    );
                }
            }
        }
        out.push('\n');
        out
    }
}
