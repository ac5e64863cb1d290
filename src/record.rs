//! What a run leaves behind: the record written as its JSON log and summed into reports.
//! One vocabulary for every face: a scenario run, a chat conversation and `ask --json` are
//! all a [`RunRecord`] (a conversation is a run without a scenario), and what reaches the
//! reporters is a [`RunOutcome`]: a finished run, or one that never started.

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::Message;
use crate::model::{ModelSpec, Sampling};
use crate::pricing::{Cost, Price, PriceEntry};
use crate::usage::{Usage, UsageSource};

/// How a run or a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Passed,
    Failed,
    Error,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Error => "error",
        }
    }

    /// The status named `text` (as written by [`Status::as_str`]).
    pub(crate) fn parse(text: &str) -> Option<Status> {
        [Status::Passed, Status::Failed, Status::Error].into_iter().find(|s| s.as_str() == text)
    }

    /// The worse of two outcomes: error > failed > passed.
    pub(crate) fn worst(self, other: Status) -> Status {
        let rank = |s: Status| match s {
            Status::Passed => 0,
            Status::Failed => 1,
            Status::Error => 2,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

/// A sortable id for something that started at `at` (UTC, millisecond precision): a batch's
/// run id, a conversation's.
pub(crate) fn run_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The status column of a report row: a run's status, or `not_started`.
pub(crate) const NOT_STARTED: &str = "not_started";

/// What the reporters receive for each run of a batch.
#[derive(Debug, Clone)]
pub(crate) enum RunOutcome {
    /// The run played (well or not) and has its record.
    Finished(Box<RunRecord>),
    /// The run never started, or was aborted before it finished.
    NotStarted(NotStarted),
}

/// A run of the matrix that never started, and why.
#[derive(Debug, Clone)]
pub(crate) struct NotStarted {
    pub run_id: String,
    pub scenario: ScenarioRef,
    pub model: ModelSpec,
    pub repetition: u32,
    pub unpriced: bool,
    /// The budget was spent, `--fail-fast` stopped the batch, or it was interrupted.
    pub reason: String,
}

impl RunOutcome {
    /// The run's status; `None` for a run that never started.
    pub(crate) fn status(&self) -> Option<Status> {
        match self {
            RunOutcome::Finished(record) => Some(record.status),
            RunOutcome::NotStarted(_) => None,
        }
    }
}

/// One run: one scenario, one model, one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub runner_version: Cow<'static, str>,
    pub run_id: String,
    /// `None` for a conversation (`runner chat`, `runner ask`).
    pub scenario: Option<ScenarioRef>,
    pub model: ModelInfo,
    pub repetition: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub status: Status,
    pub error: Option<String>,
    /// The seed of this run's `get_random_number` stream.
    pub tool_seed: u64,
    pub messages: Vec<Message>,
    pub turns: Vec<TurnRecord>,
    pub usage: Usage,
    pub cost: RunCost,
    /// The MCP servers the run used, with what they wrote to stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<ServerLog>,
    /// The user's own agent program that played the run, with what it wrote to stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentLog>,
    /// How the conversation ended.
    #[serde(default)]
    pub ended: Ended,
    /// The conversation-level checks (the scenario's top-level `expect`).
    #[serde(default)]
    pub checks: Vec<CheckRecord>,
    /// What the simulated user cost; `null` without one.
    #[serde(default)]
    pub simulator: Option<SimulatorRecord>,
    /// The judge of the whole conversation (the top-level `expect.judge`), apart from the
    /// turns' judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeRecord>,
}

impl RunRecord {
    /// What the run actually spent: its cost and its judges', less the requests the cache
    /// answered.
    pub(crate) fn spent_usd(&self) -> f64 {
        let judges = self.turns.iter().filter_map(|t| t.judge.as_ref());
        let requests = self.turns.iter().flat_map(|t| &t.requests).chain(judges.clone().flat_map(|j| &j.requests));
        let users = self.turns.iter().filter_map(|t| t.user_request.as_ref());
        let stop = self.simulator.iter().filter_map(|s| s.stop_request.as_ref());
        let cached: f64 =
            requests.chain(users).chain(stop).filter(|r| r.cache == CacheUse::Hit).map(|r| r.cost.total_usd).sum();
        crate::pricing::spent_usd(self.cost.cost.total_usd, self.judge_cost_usd() + self.user_cost_usd(), cached)
    }

    /// What the simulated user cost (apart from the run's own cost); 0 without one.
    pub(crate) fn user_cost_usd(&self) -> f64 {
        self.simulator.as_ref().map_or(0.0, |s| s.cost.total_usd)
    }

    /// What the judges of the run's turns cost (apart from the run's own cost).
    pub(crate) fn judge_cost_usd(&self) -> f64 {
        let whole = self.judge.as_ref().map_or(0.0, |j| j.cost.total_usd);
        self.turns.iter().map(TurnRecord::judge_cost_usd).sum::<f64>() + whole
    }

    /// Requests the cache answered.
    pub(crate) fn cache_hits(&self) -> usize {
        self.turns.iter().map(TurnRecord::cache_hits).sum()
    }
}

/// A run's name within its batch, safe as a file name: `SCENARIO__PROVIDER_MODEL__REPETITION`
/// (its log is this name plus `.json`).
pub(crate) fn run_name(scenario: &str, model: &ModelSpec, repetition: u32) -> String {
    use crate::files::safe_file_name;
    format!("{}__{}__{repetition}", safe_file_name(scenario), safe_file_name(&model.to_string()))
}

/// The agent program a run played against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgentLog {
    /// Its command line.
    pub command: String,
    /// How it ended: `exit status: 0`, `killed ...`, or why it never started.
    pub exit: Option<String>,
    /// The end of its stderr (at most 64 KiB), redacted.
    pub stderr: String,
}

/// An MCP server a run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerLog {
    /// Its command line or URL.
    pub server: String,
    /// One server for the whole batch: its stderr is everything up to the run's end.
    pub shared: bool,
    /// The end of its stderr (at most 64 KiB).
    pub stderr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScenarioRef {
    pub name: String,
    pub file: String,
}

/// The model as it was asked, with the sampling settings sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ModelInfo {
    #[serde(flatten)]
    pub spec: ModelSpec,
    pub base_url: Option<String>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// Cost of a whole run and the prices it was computed with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunCost {
    #[serde(flatten)]
    pub cost: Cost,
    /// USD per million tokens; `null` when the model is unpriced.
    pub prices: Option<Price>,
    pub price_source: Option<String>,
    /// When the prices were read from their source, where known.
    pub price_date: Option<String>,
    /// No price is known for this model: the figures above are 0, not a real cost.
    pub unpriced: bool,
}

impl RunCost {
    /// `cost`, computed at `price` (`None`: unpriced).
    pub(crate) fn new(cost: Cost, price: Option<&PriceEntry>) -> Self {
        Self {
            cost,
            prices: price.map(|p| p.price),
            price_source: price.map(|p| p.source.clone()),
            price_date: price.and_then(|p| p.date.clone()),
            unpriced: price.is_none(),
        }
    }
}

/// One user turn and everything it caused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TurnRecord {
    /// 1-based.
    pub index: usize,
    pub user: String,
    /// The model's final text; `null` when the turn ended in an error first.
    pub reply: Option<String>,
    pub status: Status,
    pub error: Option<String>,
    /// Wall time of the whole turn: every request and tool call.
    pub latency_ms: u64,
    pub requests: Vec<RequestRecord>,
    pub tool_calls: Vec<ToolCallRecord>,
    pub usage: Usage,
    pub cost: Cost,
    pub checks: Vec<CheckRecord>,
    /// The model that played this turn, where a conversation can switch models (`/model` in
    /// `runner chat`); a scenario run's turns all use the run's model and leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// The judge's grading (`expect.judge`): its verdict, requests, tokens and cost, apart
    /// from the turn's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeRecord>,
    /// The user's message was written by the simulated user (`simulate:`), not the script.
    #[serde(default)]
    pub simulated: bool,
    /// The simulated user's request that wrote this turn's message: its tokens, cost,
    /// latency and cache use, apart from the turn's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_request: Option<RequestRecord>,
}

/// Said of a request `--replay` could not answer after the first turn: what it asks was
/// never recorded because an earlier answer differs.
pub(crate) const DIVERGED: &str = " (the conversation diverged from the recorded one at this turn: an earlier answer, the agent or the scenario changed)";

/// How a conversation ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// The script's turns ran out (no simulated user).
    #[default]
    Script,
    /// The simulated user wrote the stop marker.
    Stop,
    /// The simulated user wrote `max_turns` messages without stopping.
    MaxTurns,
    /// A turn, the agent or the simulated user failed.
    Error,
}

impl Ended {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ended::Script => "script",
            Ended::Stop => "stop",
            Ended::MaxTurns => "max_turns",
            Ended::Error => "error",
        }
    }

    /// The ending named `text`, as a scenario writes it.
    pub(crate) fn parse(text: &str) -> Option<Ended> {
        [Ended::Script, Ended::Stop, Ended::MaxTurns, Ended::Error].into_iter().find(|e| e.as_str() == text)
    }
}

/// What a run's simulated user cost, apart from the model under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SimulatorRecord {
    pub model: ModelSpec,
    pub usage: Usage,
    pub cost: Cost,
    /// No price is known for the simulator's model: its cost above is 0, not a real cost.
    pub unpriced: bool,
    /// What it wrote before the stop marker (never sent to the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_words: Option<String>,
    /// The request that ended the conversation (its stop, or its failure); the others are
    /// the turns' `user_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_request: Option<RequestRecord>,
}

/// A judge model's grading of one turn's reply against a rubric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JudgeRecord {
    pub model: ModelSpec,
    pub rubric: String,
    /// The verdict; `null` when the judge gave none (see `error`).
    pub pass: Option<bool>,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub requests: Vec<RequestRecord>,
    pub usage: Usage,
    pub cost: Cost,
    /// No price is known for the judge: its cost above is 0, not a real cost.
    pub unpriced: bool,
}

impl TurnRecord {
    /// The turn's record before its checks: `error` when it did not finish, else `passed`.
    pub(crate) fn new(index: usize, user: &str) -> Self {
        Self {
            index,
            user: user.to_owned(),
            reply: None,
            status: Status::Passed,
            error: None,
            latency_ms: 0,
            requests: Vec::new(),
            tool_calls: Vec::new(),
            usage: Usage::default(),
            cost: Cost::default(),
            checks: Vec::new(),
            model: None,
            judge: None,
            simulated: false,
            user_request: None,
        }
    }

    /// Said of a turn that ended in a silent empty answer (no text, no tool call, no error),
    /// which is what a proxy such as LiteLLM sends when its upstream request failed; `None`
    /// for any other turn.
    pub(crate) fn empty_reply(&self) -> Option<String> {
        if self.error.is_some() || !self.reply.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return None;
        }
        let finish = self.requests.last().and_then(|r| r.finish_reason.as_deref()).unwrap_or("none");
        Some(format!(
            "the model's answer was empty: no text and no tool call (finish_reason {finish}); a proxy such as LiteLLM answers so when its upstream request failed"
        ))
    }

    /// What the turn's judge cost; 0 without one.
    pub(crate) fn judge_cost_usd(&self) -> f64 {
        self.judge.as_ref().map_or(0.0, |j| j.cost.total_usd)
    }

    /// Whether some of the turn's token counts are runner's estimates.
    pub(crate) fn estimated(&self) -> bool {
        self.requests.iter().any(|r| r.usage_source == UsageSource::Estimated)
    }

    /// Requests of this turn the cache answered.
    pub(crate) fn cache_hits(&self) -> usize {
        self.requests.iter().filter(|r| r.cache == CacheUse::Hit).count()
    }

    /// Adds the turn's checks: a failed one makes a finished turn `failed`.
    pub(crate) fn with_checks(mut self, checks: Vec<CheckRecord>) -> Self {
        if self.status == Status::Passed && !checks.iter().all(|c| c.passed) {
            self.status = Status::Failed;
        }
        self.checks = checks;
        self
    }
}

/// One request to the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    /// When it was sent (the first attempt); `null` in logs an older runner wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub usage: Usage,
    /// `provider` when the figures are the provider's, `estimated` when it reported none.
    pub usage_source: UsageSource,
    pub latency_ms: u64,
    pub finish_reason: Option<String>,
    /// `cost_usd`, `input_cost_usd` and `output_cost_usd` in the log.
    #[serde(flatten, with = "request_cost")]
    pub cost: Cost,
    pub error: Option<String>,
    pub attempts: Vec<Attempt>,
    /// The provider's usage object as it sent it, whatever its shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_usage: Option<Value>,
    /// `hit` (answered from the request cache: nothing sent, nothing spent), `stored`,
    /// `off`, or `miss` (`--replay` and not in the cache).
    #[serde(default)]
    pub cache: CacheUse,
    /// The model an agent program named in its request (the model under test answered it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_model: Option<String>,
}

impl RequestRecord {
    /// A request's record before what the exchange adds (latency, finish reason, attempts,
    /// raw usage, cache use): its tokens, where they came from, their cost and its error.
    pub(crate) fn new(usage: Usage, usage_source: UsageSource, cost: Cost, error: Option<String>) -> Self {
        Self {
            started_at: None,
            usage,
            usage_source,
            latency_ms: 0,
            finish_reason: None,
            cost,
            error,
            attempts: Vec::new(),
            raw_usage: None,
            cache: CacheUse::default(),
            requested_model: None,
        }
    }
}

impl RequestRecord {
    /// When its answer (or its last failure) came: the time sent plus every attempt and every
    /// wait between them. `None` in logs an older runner wrote.
    pub(crate) fn ended_at(&self) -> Option<DateTime<Utc>> {
        let waited: u64 = self.attempts.iter().map(|a| a.latency_ms + a.retry_in_ms.unwrap_or(0)).sum();
        later(self.started_at?, waited.max(self.latency_ms))
    }
}

impl ToolCallRecord {
    /// When its result (or its error) came; `None` in logs an older runner wrote.
    pub(crate) fn ended_at(&self) -> Option<DateTime<Utc>> {
        later(self.started_at?, self.duration_ms)
    }
}

/// `ms` milliseconds after `at`; `None` past the calendar's end.
fn later(at: DateTime<Utc>, ms: u64) -> Option<DateTime<Utc>> {
    at.checked_add_signed(chrono::TimeDelta::try_milliseconds(i64::try_from(ms).ok()?)?)
}

/// A request's cost in the log: its total (`cost_usd`) and its input and output parts. A log
/// an older runner wrote has the total only; its parts read as 0.
mod request_cost {
    use serde::{Deserialize, Serialize};

    use super::Cost;

    #[derive(Serialize, Deserialize)]
    struct Parts {
        cost_usd: f64,
        #[serde(default)]
        input_cost_usd: f64,
        #[serde(default)]
        output_cost_usd: f64,
    }

    pub(super) fn serialize<S: serde::Serializer>(cost: &Cost, serializer: S) -> Result<S::Ok, S::Error> {
        Parts { cost_usd: cost.total_usd, input_cost_usd: cost.input_usd, output_cost_usd: cost.output_usd }
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cost, D::Error> {
        let parts = Parts::deserialize(deserializer)?;
        Ok(Cost { input_usd: parts.input_cost_usd, output_usd: parts.output_cost_usd, total_usd: parts.cost_usd })
    }
}

/// One tool call and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub id: String,
    pub name: String,
    /// The name an MCP server lists the tool under, when that name is not legal for a model
    /// and `name` was made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_as: Option<String>,
    /// The decoded arguments, or the model's raw text when it was not JSON.
    pub arguments: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// When the model asked for it; `null` in logs an older runner wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    /// The result came from the scenario's `tool_results`, not from running the tool (the
    /// log keeps it beside `source: pinned`, as older logs have it).
    pub pinned: bool,
    /// How the call was answered; `null` for a tool that was not offered.
    #[serde(default)]
    pub source: Option<ToolSource>,
}

/// How a tool call is answered, as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolSource {
    /// One of runner's built-in tools.
    Builtin,
    /// A declared tool's fixed `result`.
    Result,
    /// A declared tool's `results`, matched on the arguments.
    Results,
    /// A declared tool's `command`.
    Command,
    /// A declared tool's `http` request.
    Http,
    /// A tool an MCP server lists.
    Mcp,
    /// The scenario's `tool_results` answered instead of the tool.
    Pinned,
    /// The user's own agent program ran the tool and sent its result back.
    Agent,
}

impl ToolSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ToolSource::Builtin => "builtin",
            ToolSource::Result => "result",
            ToolSource::Results => "results",
            ToolSource::Command => "command",
            ToolSource::Http => "http",
            ToolSource::Mcp => "mcp",
            ToolSource::Pinned => "pinned",
            ToolSource::Agent => "agent",
        }
    }
}

impl std::fmt::Display for ToolSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HTTP attempt of a request, as recorded in the log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub latency_ms: u64,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// When the attempt failed and another follows: the wait before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// How a request was answered, as its log entry says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheUse {
    /// No cache.
    #[default]
    Off,
    /// Answered from the cache: nothing sent, nothing spent.
    Hit,
    /// Sent, and the answer stored.
    Stored,
    /// `--replay` and not in the cache: not answered.
    Miss,
}

impl CacheUse {
    /// Its name, as the log writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheUse::Off => "off",
            CacheUse::Hit => "hit",
            CacheUse::Stored => "stored",
            CacheUse::Miss => "miss",
        }
    }
}

/// Which expectation a check is, as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Contains,
    NotContains,
    Regex,
    ToolCalls,
    ToolCallsUnordered,
    Called,
    NotCalled,
    MaxCostUsd,
    MaxLatencyMs,
    Judge,
    /// How the conversation ended (`expect.ended`).
    Ended,
    /// How many user messages it took (`expect.max_turns`).
    MaxTurns,
}

impl CheckKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckKind::Contains => "contains",
            CheckKind::NotContains => "not_contains",
            CheckKind::Regex => "regex",
            CheckKind::ToolCalls => "tool_calls",
            CheckKind::ToolCallsUnordered => "tool_calls_unordered",
            CheckKind::Called => "called",
            CheckKind::NotCalled => "not_called",
            CheckKind::MaxCostUsd => "max_cost_usd",
            CheckKind::MaxLatencyMs => "max_latency_ms",
            CheckKind::Judge => "judge",
            CheckKind::Ended => "ended",
            CheckKind::MaxTurns => "max_turns",
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One expectation and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub check: CheckKind,
    pub passed: bool,
    pub detail: String,
}

/// Receives what becomes of each run, one at a time, in the order runs end: the JSON logs,
/// the CSV report, the summary, JUnit and the progress bar are all reporters.
pub(crate) trait Reporter {
    /// Called once, before the first run starts.
    fn plan(&mut self, _total_runs: usize) {}
    /// Called for each run: as it finishes, or (for runs never started) after the last one.
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()>;
}

impl<T: Reporter + ?Sized> Reporter for &mut T {
    fn plan(&mut self, total_runs: usize) {
        (**self).plan(total_runs);
    }
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        (**self).run_ended(outcome)
    }
}

/// A reporter that may not be there (an output not asked for).
impl<T: Reporter> Reporter for Option<T> {
    fn plan(&mut self, total_runs: usize) {
        if let Some(reporter) = self {
            reporter.plan(total_runs);
        }
    }
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        self.as_mut().map_or(Ok(()), |reporter| reporter.run_ended(outcome))
    }
}

/// Several reporters fed the same events, in order; each hears every event even when one
/// before it failed.
impl<A: Reporter, B: Reporter> Reporter for (A, B) {
    fn plan(&mut self, total_runs: usize) {
        self.0.plan(total_runs);
        self.1.plan(total_runs);
    }
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        let first = self.0.run_ended(outcome);
        let second = self.1.run_ended(outcome);
        first.and(second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_cost_split_through_the_log() {
        let cost = Cost { input_usd: 3e-6, output_usd: 4.8e-6, total_usd: 7.8e-6 };
        let request = RequestRecord::new(Usage::new(3, 2), UsageSource::Provider, cost, None);
        let text = serde_json::to_string(&request).unwrap();
        let back: RequestRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.cost, cost);
        assert_eq!(back.usage, request.usage);
        // A log an older runner wrote has the total only.
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().retain(|key, _| !key.ends_with("put_cost_usd"));
        let back: RequestRecord = serde_json::from_value(old).unwrap();
        assert_eq!(back.cost, Cost { input_usd: 0.0, output_usd: 0.0, total_usd: 7.8e-6 });
    }
}
