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
use super::summary::{RunFacts, Summary};
use crate::record::{Reporter, RunOutcome, RunRecord, Status};
use crate::usage::UsageSource;

mod charts;
mod sections;

use charts::{cost_chart, latency_chart};
use sections::{comparison_section, headline_detail, matrix_section, models_section, runs_section};

/// The page's style sheet and script: real files beside this one, pulled in at build time.
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

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
    /// What the simulated user cost.
    user_usd: f64,
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
            user_usd: facts.tally.user_usd,
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
                "simulated": t.simulated,
            })
        })
        .collect();
    json!({
        "log": log.map(|p| p.display().to_string()),
        "error": record.error,
        "system": system,
        "turns": turns,
        "unpriced": record.cost.unpriced,
        "ended": record.ended,
        "checks": record.checks,
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
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n",
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
    let tail = format!("\n]</script>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n");
    (head, tail)
}

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
}
