//! What a run leaves behind: the record written as its JSON log and summed into reports.

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pricing::{Cost, Price};
use crate::provider::Attempt;
use crate::provider::wire::Message;
use crate::usage::{Usage, UsageSource};

/// How a run or a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    Error,
    /// Never started: the budget was spent, `--fail-fast` stopped the run, or it was
    /// interrupted. Only summaries and reports carry it; a run that started never has it.
    NotStarted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Error => "error",
            Status::NotStarted => "not_started",
        }
    }

    /// The status named `text` (as written by [`Status::as_str`]).
    pub fn parse(text: &str) -> Option<Status> {
        [Status::Passed, Status::Failed, Status::Error, Status::NotStarted].into_iter().find(|s| s.as_str() == text)
    }

    /// The worse of two outcomes: error > failed > passed.
    pub fn worst(self, other: Status) -> Status {
        let rank = |s: Status| match s {
            Status::NotStarted | Status::Passed => 0,
            Status::Failed => 1,
            Status::Error => 2,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

/// One run: one scenario, one model, one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub runner_version: Cow<'static, str>,
    pub run_id: String,
    pub scenario: ScenarioRef,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRef {
    pub name: String,
    pub file: String,
}

/// The model as it was asked, with the sampling settings sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub provider: String,
    pub name: String,
    pub base_url: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
}

/// Cost of a whole run and the prices it was computed with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunCost {
    pub input_usd: f64,
    pub output_usd: f64,
    pub total_usd: f64,
    /// USD per million tokens; `null` when the model is unpriced.
    pub prices: Option<Price>,
    pub price_source: Option<String>,
    /// When the prices were read from their source, where known.
    pub price_date: Option<String>,
    /// No price is known for this model: the figures above are 0, not a real cost.
    pub unpriced: bool,
}

/// One user turn and everything it caused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnRecord {
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
}

/// One request to the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    /// `provider` when the figures are the provider's, `estimated` when it reported none.
    pub usage_source: UsageSource,
    pub latency_ms: u64,
    pub finish_reason: Option<String>,
    pub cost_usd: f64,
    pub error: Option<String>,
    pub attempts: Vec<Attempt>,
}

/// One tool call and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub id: String,
    pub name: String,
    /// The decoded arguments, or the model's raw text when it was not JSON.
    pub arguments: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The result came from the scenario's `tool_results`, not from running the tool.
    pub pinned: bool,
}

/// One expectation and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub check: Cow<'static, str>,
    pub passed: bool,
    pub detail: String,
}
