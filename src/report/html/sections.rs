//! The page's sections as HTML: the headline, the models table, the comparison with a
//! baseline, the scenario x model matrix and the runs table.

use std::fmt::Write as _;

use super::charts::color;
use super::{Row, escape_markup};
use crate::record::Status;
use crate::report::baseline::Comparison;
use crate::report::summary::{Summary, money_cell, optional, percent_cell, usd_cell};

pub(super) fn headline_detail(summary: &Summary) -> String {
    let failed: usize = summary.models().iter().map(|m| m.failed).sum();
    let errors: usize = summary.models().iter().map(|m| m.errors).sum();
    let mut text = format!("{failed} failed, {errors} with errors");
    if summary.not_started() > 0 {
        let _ = write!(text, ", {} not started", summary.not_started());
    }
    let flaky = summary.scenarios().iter().filter(|s| s.flaky()).count();
    if flaky > 0 {
        let _ = write!(text, "; {flaky} flaky");
    }
    let _ = write!(text, " · {} model(s), {} scenario(s)", summary.models().len(), scenario_names(summary).len());
    text
}

/// Every scenario of the batch, sorted.
pub(super) fn scenario_names(summary: &Summary) -> Vec<&str> {
    let mut names: Vec<&str> = summary.scenarios().iter().map(|s| s.scenario.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

pub(super) fn models_section(summary: &Summary) -> String {
    let mut out = String::from(
        "<section id=\"models\"><h2>Models</h2><table class=\"models\"><thead><tr><th>model</th><th>runs</th><th>passed</th><th>failed</th><th>errors</th>\
         <th>not started</th><th>pass rate</th><th>95% interval</th><th>prompt tokens</th><th>completion tokens</th><th>cost (USD)</th><th>USD per pass</th>\
         <th>median turn (ms)</th><th>p95 turn (ms)</th></tr></thead><tbody>\n",
    );
    let confidence = summary.confidence();
    for (i, m) in summary.models().iter().enumerate() {
        let money = |value| money_cell(m, value);
        let rate = percent_cell(m.pass_rate());
        let interval = confidence
            .of_model(&m.model)
            .and_then(|c| c.interval)
            .map_or_else(|| "-".to_owned(), |i| format!("{:.1}–{:.1}%", i.low * 100.0, i.high * 100.0));
        let _ = writeln!(
            out,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{rate}</b></td><td>{interval}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            color(i),
            escape_markup(&m.model.to_string()),
            m.runs,
            m.passed,
            m.failed,
            m.errors,
            m.not_started,
            m.tally.usage.prompt_tokens,
            m.tally.usage.completion_tokens,
            money(Some(m.tally.cost_usd)),
            money(m.cost_per_pass()),
            optional(m.median_latency_ms()),
            optional(m.p95_latency_ms()),
        );
    }
    out.push_str("</tbody></table>");
    let sure = confidence.render();
    if !sure.is_empty() {
        let _ = write!(out, "<div id=\"confidence\"><h3>How sure</h3><ul>");
        for line in sure.lines().filter(|l| !l.ends_with(':')) {
            let _ = write!(out, "<li>{}</li>", escape_markup(line.trim()));
        }
        out.push_str("</ul></div>");
    }
    // What helped play and grade each model's runs, apart from its cost.
    for m in summary.models() {
        let model = escape_markup(&m.model.to_string());
        let helpers = [
            (m.tally.judge_usd, "judge: grading ", "'s replies"),
            (m.tally.user_usd, "simulated users: playing the user against ", ""),
        ];
        for (usd, before, after) in helpers.into_iter().filter(|(usd, ..)| *usd > 0.0) {
            let _ = write!(out, "<p class=\"muted\">{before}{model}{after} cost ${usd:.6} (not in its cost)</p>");
        }
    }
    out.push_str("</section>\n");
    out
}

pub(super) fn comparison_section(c: &Comparison) -> String {
    let verdict = if c.regressions.is_empty() { "ok" } else { "bad" };
    let mut out = format!(
        "<section id=\"baseline\" class=\"{verdict}\"><h2>Against the baseline</h2><p class=\"muted\">{}</p><table><thead><tr><th>model</th><th>pass rate before</th><th>after</th><th>change (points, 95% interval)</th><th>cost before</th><th>after</th></tr></thead><tbody>",
        escape_markup(&c.baseline)
    );
    for m in &c.models {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_markup(&m.model.to_string()),
            percent_cell(m.pass_rate.0),
            percent_cell(m.pass_rate.1),
            escape_markup(&m.change_cell()),
            usd_cell(m.cost_usd.0),
            usd_cell(m.cost_usd.1)
        );
    }
    out.push_str("</tbody></table>");
    for (label, class, changes) in [
        ("Regressions (passed before, not now)", "failed", &c.regressions),
        ("Fixes (did not pass before, pass now)", "passed", &c.fixes),
    ] {
        let _ = write!(out, "<h3>{label}: {}</h3>", changes.len());
        if !changes.is_empty() {
            out.push_str("<ul>");
            for change in changes {
                let _ = write!(
                    out,
                    "<li><span class=\"chip {class}\">{}/{} → {}/{}</span> {} on {}</li>",
                    change.before.0,
                    change.before.1,
                    change.after.0,
                    change.after.1,
                    escape_markup(&change.scenario),
                    escape_markup(&change.model.to_string())
                );
            }
            out.push_str("</ul>");
        }
    }
    out.push_str("</section>\n");
    out
}

/// Scenarios down, models across: passes over finished runs, flaky marked; a cell opens its
/// runs.
pub(super) fn matrix_section(summary: &Summary) -> String {
    let models = summary.models();
    let mut out = String::from(
        "<section id=\"matrix\"><h2>Scenarios × models</h2><div class=\"scroll\"><table class=\"matrix\"><thead><tr><th>scenario</th>",
    );
    for m in models {
        let _ = write!(out, "<th>{}</th>", escape_markup(&m.model.to_string()));
    }
    out.push_str("</tr></thead><tbody>\n");
    for name in scenario_names(summary) {
        let _ = write!(out, "<tr data-scenario=\"{}\"><th>{}</th>", escape_markup(name), escape_markup(name));
        for m in models {
            match summary.scenarios().iter().find(|s| s.scenario == name && s.model == m.model) {
                Some(s) => {
                    let (class, text) = if s.runs == 0 {
                        ("skipped", "not started".to_owned())
                    } else if s.passed == s.runs {
                        ("passed", format!("{}/{}", s.passed, s.runs))
                    } else if s.flaky() {
                        ("flaky", format!("{}/{} flaky", s.passed, s.runs))
                    } else {
                        ("failed", format!("{}/{}", s.passed, s.runs))
                    };
                    let _ = write!(
                        out,
                        "<td class=\"cell {class}\" data-scenario=\"{}\" data-model=\"{}\" tabindex=\"0\" title=\"{} on {}: {} of {} passed\">{text}</td>",
                        escape_markup(name),
                        escape_markup(&m.model.to_string()),
                        escape_markup(name),
                        escape_markup(&m.model.to_string()),
                        s.passed,
                        s.runs
                    );
                }
                None => out.push_str("<td class=\"cell none\">–</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div></section>\n");
    out
}

pub(super) fn runs_section(rows: &[Row], summary: &Summary) -> String {
    let mut out = String::from(
        "<section id=\"runs\"><h2>Runs</h2><div class=\"filters\"><input id=\"filter-text\" type=\"search\" placeholder=\"scenario contains…\" aria-label=\"Scenario contains\">\
         <select id=\"filter-model\" aria-label=\"Model\"><option value=\"\">every model</option>",
    );
    for m in summary.models() {
        let name = escape_markup(&m.model.to_string());
        let _ = write!(out, "<option value=\"{name}\">{name}</option>");
    }
    out.push_str(
        "</select><select id=\"filter-status\" aria-label=\"Status\"><option value=\"\">every status</option><option value=\"not-passed\">did not pass</option>\
         <option value=\"passed\">passed</option><option value=\"failed\">failed</option><option value=\"error\">error</option><option value=\"not_started\">not started</option></select>\
         <span id=\"shown\" class=\"muted\"></span></div>\n<div class=\"scroll\"><table class=\"runs\"><thead><tr><th>scenario</th><th>model</th><th>#</th><th>status</th><th>turns</th><th>cost (USD)</th><th>time</th><th>what went wrong</th></tr></thead><tbody>\n",
    );
    for row in rows {
        let status = row.status.map_or("not_started", Status::as_str);
        let mut cost = if row.unpriced { "unpriced".to_owned() } else { format!("{:.6}", row.cost_usd) };
        if row.judge_usd > 0.0 && !row.unpriced {
            let _ = write!(cost, " + judge {:.6}", row.judge_usd);
        }
        if row.user_usd > 0.0 {
            let _ = write!(cost, " + user {:.6}", row.user_usd);
        }
        let time = row.duration_ms.map_or_else(String::new, |ms| format!("{:.1} s", ms as f64 / 1000.0));
        let _ = writeln!(
            out,
            "<tr data-i=\"{}\" data-scenario=\"{}\" data-model=\"{}\" data-status=\"{status}\"{} tabindex=\"0\"><td>{}</td><td>{}</td><td>{}</td><td><span class=\"chip {status}\">{}</span></td><td>{}</td><td>{cost}</td><td>{time}</td><td class=\"note\">{}</td></tr>",
            row.index,
            escape_markup(&row.scenario),
            escape_markup(&row.model),
            row.missing.as_deref().map_or_else(String::new, |why| format!(" data-missing=\"{}\"", escape_markup(why))),
            escape_markup(&row.scenario),
            escape_markup(&row.model),
            row.repetition,
            status.replace('_', " "),
            row.turns,
            escape_markup(&row.note),
        );
    }
    out.push_str("</tbody></table></div><p class=\"muted\">Open a run (click, or Enter) for its conversation: messages, tool calls, checks, tokens and cost per request.</p></section>\n");
    out
}
