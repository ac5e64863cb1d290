//! `--html FILE`: one self-contained page to look at a batch. The per-model summary, cost
//! against pass rate and turn latency as inline SVG drawn here, the scenario x model matrix,
//! every run in a table, and each run's conversation one click away (messages, tool calls,
//! checks, the judge, tokens and cost per request).
//!
//! Nothing on the page asks for another address: inline CSS and script, no font, image or
//! link to load, and a Content-Security-Policy that forbids any request. Every text from a run
//! (which a model wrote) reaches the page escaped, or through `textContent` in the script.
//!
//! Memory stays flat: each run's conversation goes to a staging file beside the page as the
//! run ends; only a short row per run is kept, and the page is put together at the end (then
//! renamed into place, so a page that exists is whole).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use super::baseline::Comparison;
use super::escape_markup;
use super::failures::{first_problem, one_line};
use super::summary::{ModelStats, RunFacts, Summary, money_cell, optional, percent_cell, percentile, usd_cell};
use crate::record::{Reporter, RunOutcome, RunRecord, Status};
use crate::usage::UsageSource;

/// Dots drawn per model in the latency strip; more turns are sampled evenly by rank.
const MAX_DOTS: usize = 300;

/// A run as the runs table shows it.
#[derive(Debug, Clone)]
struct Row {
    /// Its place in the staged conversations.
    index: usize,
    scenario: String,
    model: String,
    repetition: u32,
    /// `None`: never started.
    status: Option<Status>,
    /// Turns played (one latency each in the run's figures).
    turns: usize,
    cost_usd: f64,
    judge_usd: f64,
    unpriced: bool,
    duration_ms: Option<u64>,
    /// What went wrong first, or why it never started.
    note: String,
    /// Why there is no conversation to open, when there is none.
    missing: Option<String>,
}

/// What the page is about, besides its runs.
pub(crate) struct Page<'a> {
    /// The run id (`runner run`) or the reports read (`runner report`).
    pub title: &'a str,
    pub summary: &'a Summary,
    pub comparison: Option<&'a Comparison>,
}

/// The page being built: rows in memory, conversations staged on disk.
pub(crate) struct HtmlReport {
    path: PathBuf,
    staging: PathBuf,
    data: BufWriter<File>,
    rows: Vec<Row>,
    /// Where each run's log is (`runner run`): the batch's log directory.
    logs: Option<PathBuf>,
}

impl HtmlReport {
    /// A page to be written at `path` (its directory created now, so a bad path fails before
    /// any run). `logs`: the directory of the batch's logs, named on each run.
    pub(crate) fn create(path: &Path, logs: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let staging = crate::files::temp_path(path);
        let file = File::create(&staging).with_context(|| format!("cannot write beside {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            staging,
            data: BufWriter::new(file),
            rows: Vec::new(),
            logs: logs.map(Path::to_path_buf),
        })
    }

    /// Adds a run: its figures, its record when there is one (its conversation is staged
    /// now), and where its log is.
    pub(crate) fn add(
        &mut self,
        facts: &RunFacts,
        record: Option<&RunRecord>,
        log: Option<&Path>,
        why_missing: Option<String>,
    ) -> std::io::Result<()> {
        let index = self.rows.len();
        if index > 0 {
            self.data.write_all(b",\n")?;
        }
        // What went wrong first; for a run never started, why.
        let note = match (record, facts.status) {
            (Some(record), Some(status)) if status != Status::Passed => {
                let (turn, what) = first_problem(record);
                let turn = turn.map_or_else(String::new, |t| format!("turn {t}: "));
                one_line(&format!("{turn}{what}"))
            }
            (_, None) => why_missing.clone().unwrap_or_default(),
            _ => String::new(),
        };
        match record {
            Some(record) => script_json(&mut self.data, &conversation(record, log))?,
            None => self.data.write_all(b"null")?,
        }
        self.rows.push(Row {
            index,
            scenario: facts.scenario.clone(),
            model: facts.model.to_string(),
            repetition: facts.repetition,
            status: facts.status,
            turns: facts.tally.turn_latencies_ms.len(),
            cost_usd: facts.tally.cost_usd,
            judge_usd: facts.tally.judge_usd,
            unpriced: facts.tally.unpriced,
            duration_ms: record.map(|r| r.duration_ms),
            note,
            missing: record.is_none().then(|| why_missing.unwrap_or_else(|| "no conversation was recorded".to_owned())),
        });
        Ok(())
    }

    /// Writes the page (whole, or not at all) and removes the staging file.
    pub(crate) fn finish(mut self, page: &Page<'_>) -> anyhow::Result<()> {
        self.data.flush().with_context(|| format!("cannot write beside {}", self.path.display()))?;
        let (head, tail) = render(page, &self.rows);
        let target = self.path.clone();
        let tmp = crate::files::temp_path(&target);
        let written = (|| -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(&tmp)?);
            out.write_all(head.as_bytes())?;
            std::io::copy(&mut File::open(&self.staging)?, &mut out)?;
            out.write_all(tail.as_bytes())?;
            out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
            std::fs::rename(&tmp, &target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("cannot write {}", target.display()))
    }
}

impl Drop for HtmlReport {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.staging);
    }
}

impl Reporter for HtmlReport {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        let facts = RunFacts::of(outcome);
        let written = match outcome {
            RunOutcome::Finished(record) => {
                let log = self
                    .logs
                    .as_ref()
                    .map(|dir| dir.join(super::json::log_name(&facts.scenario, &facts.model, facts.repetition)));
                self.add(&facts, Some(record), log.as_deref(), None)
            }
            RunOutcome::NotStarted(run) => self.add(&facts, None, None, Some(format!("not started: {}", run.reason))),
        };
        written.with_context(|| format!("cannot write beside {}", self.path.display()))
    }
}

/// `value` as JSON safe inside a `<script>` element: `<` written as `\u003c`, so no
/// `</script>` or `<!--` can appear in it.
fn script_json(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    out.write_all(text.replace('<', "\\u003c").as_bytes())
}

/// What the script shows when a run is opened.
fn conversation(record: &RunRecord, log: Option<&Path>) -> Value {
    use crate::message::Message;
    let system = record.messages.iter().find_map(|m| match m {
        Message::System { content } => Some(content.as_str()),
        _ => None,
    });
    // What the model said beside its tool calls, per turn (the turn records keep only the
    // final reply; the messages have the rest): the k-th user message starts turn k.
    let mut said: Vec<Vec<&str>> = Vec::new();
    for message in &record.messages {
        match message {
            Message::User { .. } => said.push(Vec::new()),
            Message::Assistant { content: Some(text), tool_calls }
                if !tool_calls.is_empty() && !text.trim().is_empty() =>
            {
                if let Some(turn) = said.last_mut() {
                    turn.push(text);
                }
            }
            _ => {}
        }
    }
    let turns: Vec<Value> = record
        .turns
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let requests: Vec<Value> = t
                .requests
                .iter()
                .map(|r| {
                    json!({
                        "prompt": r.usage.prompt_tokens,
                        "completion": r.usage.completion_tokens,
                        "cached": r.usage.cached_tokens,
                        "estimated": r.usage_source == UsageSource::Estimated,
                        "cost": r.cost.total_usd,
                        "latency_ms": r.latency_ms,
                        "attempts": r.attempts.len(),
                        "cache": r.cache,
                        "finish": r.finish_reason,
                        "error": r.error,
                    })
                })
                .collect();
            let tools: Vec<Value> = t
                .tool_calls
                .iter()
                .map(|c| json!({"name": c.name, "arguments": c.arguments, "result": c.result, "error": c.error, "source": c.source, "ms": c.duration_ms}))
                .collect();
            let judge = t.judge.as_ref().map(|j| {
                json!({
                    "model": j.model.to_string(),
                    "rubric": j.rubric,
                    "pass": j.pass,
                    "reason": j.reason,
                    "error": j.error,
                    "prompt": j.usage.prompt_tokens,
                    "completion": j.usage.completion_tokens,
                    "cost": j.cost.total_usd,
                    "unpriced": j.unpriced,
                })
            });
            json!({
                "user": t.user,
                "said": said.get(k).cloned().unwrap_or_default(),
                "reply": t.reply,
                "status": t.status,
                "error": t.error,
                "latency_ms": t.latency_ms,
                "prompt": t.usage.prompt_tokens,
                "completion": t.usage.completion_tokens,
                "cost": t.cost.total_usd,
                "requests": requests,
                "tools": tools,
                "checks": t.checks,
                "judge": judge,
            })
        })
        .collect();
    json!({
        "log": log.map(|p| p.display().to_string()),
        "error": record.error,
        "system": system,
        "turns": turns,
        "unpriced": record.cost.unpriced,
    })
}

/// The page around the staged conversations: everything before them and everything after.
fn render(page: &Page<'_>, rows: &[Row]) -> (String, String) {
    let summary = page.summary;
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| (&a.scenario, &a.model, a.repetition).cmp(&(&b.scenario, &b.model, b.repetition)));
    let passed: usize = summary.models().iter().map(|m| m.passed).sum();
    let total = summary.total_runs();
    let mut head = String::with_capacity(64 * 1024 + rows.len() * 400);
    let title = format!("runner · {}", page.title);
    let _ = write!(
        head,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape_markup(&title)
    );
    let verdict = if total > 0 && passed == total { "ok" } else { "bad" };
    let _ = write!(
        head,
        "<header><h1>{}</h1><p class=\"headline {verdict}\" id=\"headline\">{passed} of {total} runs passed</p><p class=\"muted\">{}</p></header>\n<main>\n",
        escape_markup(&title),
        escape_markup(&headline_detail(summary))
    );
    if let Some(comparison) = page.comparison {
        head.push_str(&comparison_section(comparison));
    }
    head.push_str(&models_section(summary));
    head.push_str("<section id=\"charts\"><h2>Cost, pass rate and latency</h2><div class=\"charts\">");
    head.push_str(&cost_chart(summary));
    head.push_str(&latency_chart(summary));
    head.push_str("</div></section>\n");
    head.push_str(&matrix_section(summary));
    head.push_str(&runs_section(&rows, summary));
    head.push_str(
        "</main>\n<dialog id=\"run\" aria-labelledby=\"run-title\"><form method=\"dialog\"><button class=\"close\" aria-label=\"Close\">✕</button></form><div id=\"run-body\"></div></dialog>\n\
         <script type=\"application/json\" id=\"runs-data\">[\n",
    );
    let tail = format!("\n]</script>\n<script>{SCRIPT}</script>\n</body>\n</html>\n");
    (head, tail)
}

fn headline_detail(summary: &Summary) -> String {
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
fn scenario_names(summary: &Summary) -> Vec<&str> {
    let mut names: Vec<&str> = summary.scenarios().iter().map(|s| s.scenario.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn models_section(summary: &Summary) -> String {
    let mut out = String::from(
        "<section id=\"models\"><h2>Models</h2><table class=\"models\"><thead><tr><th>model</th><th>runs</th><th>passed</th><th>failed</th><th>errors</th>\
         <th>not started</th><th>pass rate</th><th>prompt tokens</th><th>completion tokens</th><th>cost (USD)</th><th>USD per pass</th>\
         <th>median turn (ms)</th><th>p95 turn (ms)</th></tr></thead><tbody>\n",
    );
    for (i, m) in summary.models().iter().enumerate() {
        let money = |value| money_cell(m, value);
        let rate = percent_cell(m.pass_rate());
        let _ = writeln!(
            out,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{rate}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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
    for m in summary.models().iter().filter(|m| m.tally.judge_usd > 0.0) {
        let _ = write!(
            out,
            "<p class=\"muted\">judge: grading {}'s replies cost ${:.6} (not in its cost)</p>",
            escape_markup(&m.model.to_string()),
            m.tally.judge_usd
        );
    }
    out.push_str("</section>\n");
    out
}

fn comparison_section(c: &Comparison) -> String {
    let verdict = if c.regressions.is_empty() { "ok" } else { "bad" };
    let mut out = format!(
        "<section id=\"baseline\" class=\"{verdict}\"><h2>Against the baseline</h2><p class=\"muted\">{}</p><table><thead><tr><th>model</th><th>pass rate before</th><th>after</th><th>cost before</th><th>after</th></tr></thead><tbody>",
        escape_markup(&c.baseline)
    );
    for m in &c.models {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td></tr>",
            escape_markup(&m.model.to_string()),
            percent_cell(m.pass_rate.0),
            percent_cell(m.pass_rate.1),
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

/// A color per model, by its place in the summary.
fn color(i: usize) -> &'static str {
    const PALETTE: [&str; 10] =
        ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"];
    PALETTE[i % PALETTE.len()]
}

/// A round upper bound for an axis (1, 2 or 5 times a power of ten) and its tick step.
fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.25);
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// A number as an axis label: no trailing zeros.
fn tick_label(value: f64) -> String {
    let text = format!("{value:.8}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Cost against pass rate: a labelled point per model; mean cost of a finished run across,
/// pass rate up.
fn cost_chart(summary: &Summary) -> String {
    let (width, height) = (480.0, 320.0);
    let (left, right, top, bottom) = (64.0, 24.0, 16.0, 48.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let points: Vec<(usize, &ModelStats, f64, f64)> = summary
        .models()
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Some((i, m, if m.runs > 0 { m.tally.cost_usd / m.runs as f64 } else { 0.0 }, m.pass_rate()?))
        })
        .collect();
    let max_cost = points.iter().filter(|p| !p.1.tally.unpriced).map(|p| p.2).fold(0.0, f64::max);
    let (x_max, x_step) = nice_axis(max_cost);
    let x = |cost: f64| left + cost / x_max * plot_w;
    let y = |rate: f64| top + (1.0 - rate) * plot_h;
    let mut svg = format!(
        "<figure><svg id=\"cost-chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Cost against pass rate, one point per model\"><title>Cost against pass rate</title>"
    );
    for i in 0..=4 {
        let rate = f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            left + plot_w,
            y(rate),
            y(rate),
            left - 6.0,
            y(rate) + 4.0,
            i * 25
        );
    }
    let mut tick = 0.0;
    while tick <= x_max + x_step / 2.0 {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(tick),
            x(tick),
            top + plot_h,
            x(tick),
            top + plot_h + 16.0,
            tick_label(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">mean cost per run (USD)</text><text class=\"axis\" transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">pass rate</text>",
        left + plot_w / 2.0,
        height - 8.0,
        top + plot_h / 2.0
    );
    // Labels nudged apart vertically so that close points stay readable.
    let mut labels: Vec<(f64, f64, usize)> =
        points.iter().map(|(i, m, cost, rate)| (x(if m.tally.unpriced { 0.0 } else { *cost }), y(*rate), *i)).collect();
    labels.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut placed: Vec<(f64, f64, usize)> = Vec::new();
    for (px, py, i) in labels {
        let mut ly = py + 4.0;
        while placed.iter().any(|(qx, qy, _)| (qy - ly).abs() < 13.0 && (qx - px).abs() < 150.0) {
            ly += 13.0;
        }
        placed.push((px, ly, i));
    }
    for (i, m, cost, rate) in &points {
        let cx = x(if m.tally.unpriced { 0.0 } else { *cost });
        let (_, ly, _) = placed.iter().find(|p| p.2 == *i).copied().unwrap_or((cx, y(*rate), *i));
        let right_side = cx < left + plot_w * 0.6;
        let (lx, anchor) = if right_side { (cx + 10.0, "start") } else { (cx - 10.0, "end") };
        let cost_text = if m.tally.unpriced {
            "unpriced".to_owned()
        } else {
            format!("${cost:.6} per run, ${:.6} in all", m.tally.cost_usd)
        };
        let fill = if m.tally.unpriced { "none" } else { color(*i) };
        let _ = write!(
            svg,
            "<g class=\"point\"><title>{}: pass rate {:.1}% ({}/{}), {}</title><circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"{fill}\" stroke=\"{}\" stroke-width=\"2\"/><text class=\"label\" x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"{anchor}\">{}{}</text></g>",
            escape_markup(&m.model.to_string()),
            rate * 100.0,
            m.passed,
            m.runs,
            cost_text,
            y(*rate),
            color(*i),
            escape_markup(&m.model.to_string()),
            if m.tally.unpriced { " (unpriced)" } else { "" },
        );
    }
    svg.push_str(
        "</svg><figcaption>Each point is a model: its pass rate against what one run cost on average. Up and to the left is better.</figcaption></figure>",
    );
    svg
}

/// Turn latency per model: every turn as a dot (at most [`MAX_DOTS`], sampled by rank), the
/// middle half as a box, the median as a bar, p5 to p95 as whiskers.
fn latency_chart(summary: &Summary) -> String {
    let models: Vec<(usize, &ModelStats)> =
        summary.models().iter().enumerate().filter(|(_, m)| !m.tally.turn_latencies_ms.is_empty()).collect();
    let row = 44.0;
    let (left, right, top, bottom) = (170.0, 24.0, 16.0, 48.0);
    let width = 480.0;
    let plot_w = width - left - right;
    let height = top + bottom + row * models.len().max(1) as f64;
    let p99 = models.iter().filter_map(|(_, m)| percentile(&m.tally.turn_latencies_ms, 99)).max().unwrap_or(0);
    let (x_max, x_step) = nice_axis(p99 as f64);
    let x = |ms: f64| left + ms.min(x_max) / x_max * plot_w;
    let mut svg = format!(
        "<figure><svg id=\"latency-chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Turn latency per model\"><title>Turn latency per model</title>"
    );
    let mut tick = 0.0;
    while tick <= x_max + x_step / 2.0 {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(tick),
            x(tick),
            height - bottom,
            x(tick),
            height - bottom + 16.0,
            tick_label(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">turn latency (ms)</text>",
        left + plot_w / 2.0,
        height - 8.0
    );
    for (n, (i, m)) in models.iter().enumerate() {
        let mid = top + row * n as f64 + row / 2.0;
        let mut sorted = m.tally.turn_latencies_ms.clone();
        sorted.sort_unstable();
        let at = |p: usize| percentile(&sorted, p).unwrap_or(0) as f64;
        let beyond = sorted.iter().filter(|&&ms| ms as f64 > x_max).count();
        let label = if beyond > 0 { format!("{} ({beyond} beyond)", m.model) } else { m.model.to_string() };
        let _ = write!(
            svg,
            "<text class=\"label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            mid + 4.0,
            escape_markup(&short(&label, 26))
        );
        let step = sorted.len().div_ceil(MAX_DOTS).max(1);
        svg.push_str("<g class=\"dots\">");
        for (k, ms) in sorted.iter().enumerate().filter(|(k, _)| k % step == 0) {
            // A fixed jitter from the rank, so that the page is the same every time.
            let jitter = ((crate::rng::mix64(k as u64) % 1000) as f64 / 1000.0 - 0.5) * (row * 0.55);
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.2\" fill=\"{}\"/>",
                x(*ms as f64),
                mid + jitter,
                color(*i)
            );
        }
        svg.push_str("</g>");
        let (p5, p25, p50, p75, p95) = (at(5), at(25), at(50), at(75), at(95));
        let _ = write!(
            svg,
            "<g class=\"box\"><title>{}: median {} ms, middle half {}–{} ms, p95 {} ms, {} turn(s)</title><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\"/><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/><line class=\"median\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/></g>",
            escape_markup(&m.model.to_string()),
            p50,
            p25,
            p75,
            p95,
            sorted.len(),
            x(p5),
            x(p95),
            x(p25),
            mid - row * 0.3,
            (x(p75) - x(p25)).max(1.0),
            row * 0.6,
            x(p50),
            x(p50),
            mid - row * 0.34,
            mid + row * 0.34,
        );
    }
    if models.is_empty() {
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no turn was played</text>",
            left + plot_w / 2.0,
            top + row / 2.0
        );
    }
    svg.push_str(
        "</svg><figcaption>Every turn of every run; the box holds the middle half, the bar is the median, the whiskers reach p5 and p95.</figcaption></figure>",
    );
    svg
}

/// `text` cut to `max` characters with an ellipsis.
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Scenarios down, models across: passes over finished runs, flaky marked; a cell opens its
/// runs.
fn matrix_section(summary: &Summary) -> String {
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

fn runs_section(rows: &[Row], summary: &Summary) -> String {
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
        let cost = if row.unpriced {
            "unpriced".to_owned()
        } else if row.judge_usd > 0.0 {
            format!("{:.6} + judge {:.6}", row.cost_usd, row.judge_usd)
        } else {
            format!("{:.6}", row.cost_usd)
        };
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

const STYLE: &str = r##"
:root{--bg:#fff;--fg:#1d2330;--muted:#5f6b7a;--line:#e3e7ee;--card:#f6f8fb;--pass:#1f8a4c;--pass-bg:#e3f5ea;--fail:#c23b3b;--fail-bg:#fbe6e6;--flaky:#a66a00;--flaky-bg:#fdf0d5;--err:#7b3fb0;--err-bg:#f0e6fa;--skip-bg:#eceff3}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--fg:#e4e8ef;--muted:#98a2b3;--line:#2a303b;--card:#1a1f27;--pass:#5fd08d;--pass-bg:#173626;--fail:#f07a7a;--fail-bg:#3d1d1f;--flaky:#f0bd55;--flaky-bg:#3a2e12;--err:#c59af0;--err-bg:#2e2140;--skip-bg:#232832}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:20px 28px 8px;border-bottom:1px solid var(--line)}h1{font-size:18px;margin:0 0 4px;font-weight:600}h2{font-size:16px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px}
.headline{font-size:26px;font-weight:700;margin:4px 0}.headline.ok{color:var(--pass)}.headline.bad{color:var(--fail)}.muted{color:var(--muted)}
main{padding:8px 28px 40px;max-width:1400px}section{margin:22px 0}table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}thead th{font-weight:600;color:var(--muted);font-size:12px;white-space:nowrap}
table.models td:not(:first-child),table.models th:not(:first-child){text-align:right}table.models td:first-child{white-space:nowrap}.swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:7px}
.charts{display:flex;flex-wrap:wrap;gap:24px}figure{margin:0;flex:1 1 440px;max-width:640px;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px}
figure svg{width:100%;height:auto;display:block}figcaption{color:var(--muted);font-size:12px;margin-top:4px}
svg .grid{stroke:var(--line);stroke-width:1}svg .tick{fill:var(--muted);font-size:11px}svg .axis{fill:var(--muted);font-size:12px}svg .label{fill:var(--fg);font-size:12px}
svg .box line,svg .box rect{stroke:var(--fg);stroke-width:1.2;fill:none}svg .box rect{fill:var(--bg);fill-opacity:.35}svg .box .median{stroke-width:3}svg .dots circle{fill-opacity:.45}
.scroll{overflow-x:auto}.matrix td.cell{text-align:center;cursor:pointer;font-weight:600;min-width:90px;white-space:nowrap}.matrix tbody th{font-weight:500;white-space:nowrap}
.cell.passed,.chip.passed{background:var(--pass-bg);color:var(--pass)}.cell.failed,.chip.failed{background:var(--fail-bg);color:var(--fail)}.cell.flaky{background:var(--flaky-bg);color:var(--flaky)}
.chip.error{background:var(--err-bg);color:var(--err)}.cell.skipped,.chip.not_started{background:var(--skip-bg);color:var(--muted)}.cell.none{color:var(--muted);text-align:center}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.filters{display:flex;gap:8px;align-items:center;margin-bottom:8px;flex-wrap:wrap}input,select,button{font:inherit;color:var(--fg);background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:4px 8px}
table.runs tbody tr{cursor:pointer}table.runs tbody tr:hover,table.runs tbody tr:focus,.matrix td.cell:focus,.matrix td.cell:hover{outline:2px solid #4e79a7;outline-offset:-2px}
td.note{color:var(--muted);max-width:520px}#runs .scroll{content-visibility:auto;contain-intrinsic-size:auto 800px}#baseline.bad h2{color:var(--fail)}
dialog{width:min(980px,94vw);max-height:90vh;border:1px solid var(--line);border-radius:10px;background:var(--bg);color:var(--fg);padding:18px 22px}dialog::backdrop{background:rgba(10,14,20,.55)}
.close{float:right;cursor:pointer}.turn{border-top:1px solid var(--line);padding:10px 0}.msg{border-radius:8px;padding:8px 11px;margin:6px 0;white-space:pre-wrap;word-break:break-word}
.msg.user{background:var(--card);border-left:3px solid #4e79a7}.msg.assistant{background:var(--pass-bg);border-left:3px solid var(--pass)}.msg.system{background:var(--skip-bg)}.msg.error{background:var(--err-bg);border-left:3px solid var(--err)}
.role{font-size:11px;font-weight:700;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;display:block;margin-bottom:2px}
.tool{border:1px solid var(--line);border-radius:8px;margin:6px 0;padding:6px 10px;background:var(--card)}pre{margin:4px 0;white-space:pre-wrap;word-break:break-word;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
ul.checks{list-style:none;padding:0;margin:6px 0}ul.checks li{margin:2px 0}.ok{color:var(--pass)}.no{color:var(--fail)}table.requests td,table.requests th{font-size:12px;padding:2px 8px}
"##;

const SCRIPT: &str = r##"
(function () {
  "use strict";
  // The conversations are parsed when the first one is opened, not before the page shows.
  var data = null;
  function conversations() { return data || (data = JSON.parse(document.getElementById("runs-data").textContent)); }
  var rows = Array.prototype.slice.call(document.querySelectorAll("table.runs tbody tr"));
  var dialog = document.getElementById("run");
  var body = document.getElementById("run-body");
  var text = document.getElementById("filter-text"), model = document.getElementById("filter-model"), status = document.getElementById("filter-status");
  var shown = document.getElementById("shown");
  function el(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined && content !== null) e.textContent = String(content);
    return e;
  }
  function usd(v) { return "$" + Number(v || 0).toFixed(6); }
  function json(v) {
    if (typeof v === "string") { try { return JSON.stringify(JSON.parse(v), null, 2); } catch (e) { return v; } }
    return JSON.stringify(v, null, 2);
  }
  function message(role, content, cls) {
    var m = el("div", "msg " + (cls || role));
    m.appendChild(el("span", "role", role));
    m.appendChild(document.createTextNode(content));
    return m;
  }
  function open(i) {
    var row = rows.filter(function (r) { return r.dataset.i === String(i); })[0];
    if (!row) return;
    var run = conversations()[i];
    body.textContent = "";
    var title = el("h2", null, row.dataset.scenario + " · " + row.dataset.model + " · #" + row.cells[2].textContent + " ");
    title.id = "run-title";
    title.appendChild(el("span", "chip " + row.dataset.status, row.dataset.status.replace("_", " ")));
    body.appendChild(title);
    if (!run) {
      body.appendChild(el("p", "muted", row.dataset.missing || "no conversation was recorded"));
    } else {
      if (run.log) body.appendChild(el("p", "muted", "log: " + run.log));
      if (run.error) body.appendChild(message("error", run.error, "error"));
      if (run.system) {
        var d = el("details"); d.appendChild(el("summary", null, "system prompt")); d.appendChild(message("system", run.system)); body.appendChild(d);
      }
      run.turns.forEach(function (t, n) {
        var box = el("div", "turn");
        var head = el("h3", null, "Turn " + (n + 1) + " ");
        head.appendChild(el("span", "chip " + t.status, t.status));
        head.appendChild(el("span", "muted", " · " + t.latency_ms + " ms · " + t.prompt + " + " + t.completion + " tokens · " + (run.unpriced ? "unpriced" : usd(t.cost))));
        box.appendChild(head);
        box.appendChild(message("user", t.user));
        t.said.forEach(function (s) { box.appendChild(message("assistant, beside its tool calls", s, "assistant")); });
        t.tools.forEach(function (c) {
          var tool = el("div", "tool");
          tool.appendChild(el("span", "role", "tool call · " + c.name + (c.source ? " · " + c.source : "") + " · " + c.ms + " ms"));
          tool.appendChild(el("pre", null, json(c.arguments)));
          if (c.error) tool.appendChild(el("pre", "no", "error: " + c.error));
          else tool.appendChild(el("pre", "ok", "→ " + json(c.result)));
          box.appendChild(tool);
        });
        if (t.reply !== null) box.appendChild(message("assistant", t.reply));
        if (t.error) box.appendChild(message("error", t.error, "error"));
        if (t.checks.length) {
          var ul = el("ul", "checks");
          t.checks.forEach(function (c) {
            var li = el("li");
            li.appendChild(el("b", c.passed ? "ok" : "no", (c.passed ? "✓ " : "✗ ") + c.check));
            li.appendChild(document.createTextNode(" " + c.detail));
            ul.appendChild(li);
          });
          box.appendChild(ul);
        }
        if (t.judge) {
          var j = t.judge;
          var jd = el("div", "tool");
          jd.appendChild(el("span", "role", "judge · " + j.model + " · " + j.prompt + " + " + j.completion + " tokens · " + (j.unpriced ? "unpriced" : usd(j.cost))));
          jd.appendChild(el("pre", null, "rubric: " + j.rubric));
          if (j.error) jd.appendChild(el("pre", "no", "no verdict: " + j.error));
          else jd.appendChild(el("pre", j.pass ? "ok" : "no", (j.pass ? "pass: " : "fail: ") + j.reason));
          box.appendChild(jd);
        }
        var table = el("table", "requests");
        var hr = el("tr");
        ["request", "prompt", "completion", "cached", "cost", "latency", "attempts", "cache", "finish"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
        table.appendChild(hr);
        t.requests.forEach(function (r, k) {
          var tr = el("tr");
          [k + 1, r.prompt + (r.estimated ? " (est.)" : ""), r.completion, r.cached, run.unpriced ? "unpriced" : usd(r.cost), r.latency_ms + " ms", r.attempts, r.cache, r.error ? "error: " + r.error : (r.finish || "")].forEach(function (v) { tr.appendChild(el("td", null, v)); });
          table.appendChild(tr);
        });
        box.appendChild(table);
        body.appendChild(box);
      });
    }
    if (!dialog.open) dialog.showModal();
    if (history.replaceState) history.replaceState(null, "", "#run-" + i);
  }
  function apply() {
    var q = text.value.toLowerCase(), m = model.value, s = status.value, count = 0;
    rows.forEach(function (r) {
      var ok = (!q || r.dataset.scenario.toLowerCase().indexOf(q) >= 0) && (!m || r.dataset.model === m) &&
        (!s || r.dataset.status === s || (s === "not-passed" && r.dataset.status !== "passed"));
      if (r.hidden === ok) r.hidden = !ok;
      if (ok) count++;
    });
    document.querySelectorAll("table.matrix tbody tr").forEach(function (r) {
      var hide = !!q && r.dataset.scenario.toLowerCase().indexOf(q) < 0;
      if (r.hidden !== hide) r.hidden = hide;
    });
    shown.textContent = count + " of " + rows.length + " runs";
    return count;
  }
  [text, model, status].forEach(function (input) { input.addEventListener("input", apply); });
  var tbody = document.querySelector("table.runs tbody");
  function rowOf(e) { var r = e.target.closest("tr[data-i]"); return r && tbody.contains(r) ? r : null; }
  tbody.addEventListener("click", function (e) { var r = rowOf(e); if (r) open(r.dataset.i); });
  tbody.addEventListener("keydown", function (e) { var r = rowOf(e); if (r && e.key === "Enter") open(r.dataset.i); });
  document.querySelectorAll("td.cell[data-scenario]").forEach(function (cell) {
    function pick() {
      text.value = cell.dataset.scenario; model.value = cell.dataset.model; status.value = "";
      apply();
      var visible = rows.filter(function (r) { return !r.hidden && r.dataset.scenario === cell.dataset.scenario; });
      var worst = visible.filter(function (r) { return r.dataset.status !== "passed"; })[0] || visible[0];
      if (worst) open(worst.dataset.i);
    }
    cell.addEventListener("click", pick);
    cell.addEventListener("keydown", function (e) { if (e.key === "Enter") pick(); });
  });
  dialog.addEventListener("close", function () { if (history.replaceState) history.replaceState(null, "", location.pathname + location.search); });
  // A view can be linked to: ?q=TEXT&model=MODEL&status=STATUS set the filters.
  var params = new URLSearchParams(location.search);
  if (params.get("q")) text.value = params.get("q");
  if (params.get("model")) model.value = params.get("model");
  if (params.get("status")) status.value = params.get("status");
  apply();
  var wanted = /^#run-(\d+)$/.exec(location.hash);
  if (wanted) open(wanted[1]);
  document.documentElement.setAttribute("data-ready-ms", String(Math.round(performance.now())));
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_script_data_cannot_close_its_element() {
        assert_eq!(escape_markup("<b onclick='x'>\"&"), "&lt;b onclick=&apos;x&apos;&gt;&quot;&amp;");
        let mut out = Vec::new();
        script_json(&mut out, &json!({"reply": "</script><script>alert(1)</script><!--"})).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('<'), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["reply"], "</script><script>alert(1)</script><!--");
    }

    #[test]
    fn a_conversation_keeps_what_the_model_said_beside_its_tool_calls() {
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12});
        let turn = |index: usize, user: &str, reply: &str| json!({"index": index, "user": user, "reply": reply, "status": "passed", "error": null, "latency_ms": 5, "requests": [], "tool_calls": [], "usage": usage, "cost": {"input_usd": 0.0, "output_usd": 0.0, "total_usd": 0.0}, "checks": []});
        let call = json!([{"id": "c1", "type": "function", "function": {"name": "add_numbers", "arguments": "{}"}}]);
        let record: RunRecord = serde_json::from_value(json!({
            "runner_version": "0", "run_id": "r", "scenario": {"name": "s", "file": "s.yaml"},
            "model": {"provider": "openai", "name": "m", "base_url": null, "temperature": null, "top_p": null, "max_tokens": null, "seed": null},
            "repetition": 1, "started_at": "2026-11-25T00:00:00Z", "finished_at": "2026-11-25T00:00:01Z", "duration_ms": 1000,
            "status": "passed", "error": null, "tool_seed": 1,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "add"},
                {"role": "assistant", "content": "Let me add them.", "tool_calls": call},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"result\": 3}"},
                {"role": "assistant", "content": "3"}
            ],
            "turns": [turn(1, "hi", "Hello."), turn(2, "add", "3")],
            "usage": usage, "cost": {"input_usd": 0.0, "output_usd": 0.0, "total_usd": 0.0, "prices": null, "price_source": null, "price_date": null, "unpriced": true}
        }))
        .unwrap();
        let shown = conversation(&record, Some(Path::new("logs/r/s.json")));
        assert_eq!(shown["system"], "Be brief.");
        assert_eq!(shown["log"], "logs/r/s.json");
        assert_eq!(shown["turns"][0]["said"], json!([]));
        assert_eq!(shown["turns"][1]["said"], json!(["Let me add them."]));
        assert_eq!(shown["turns"][1]["reply"], "3");
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
        let (max, step) = nice_axis(0.00123);
        assert!((max - 0.0015).abs() < 1e-12 && (step - 0.0005).abs() < 1e-12, "{max} {step}");
        assert_eq!(nice_axis(8700.0), (10000.0, 2500.0));
        assert_eq!(nice_axis(100.0), (100.0, 25.0));
        assert_eq!(tick_label(0.0004), "0.0004");
        assert_eq!(tick_label(2500.0), "2500");
    }
}
