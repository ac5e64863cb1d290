//! A conversation: what `runner chat` and `runner ask` play, over the same agent loop, tools,
//! usage and cost as `runner run`. It is a run without a scenario, and is logged as one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::agent::{Agent, estimate_usage};
use crate::conversation::{About, Conversation};
use crate::files::write_atomically;
use crate::message::{Message, ToolSpec};
use crate::provider::cache::Cached;
use crate::provider::{Completion, Sampling, Target};
use crate::record::{RequestRecord, RunRecord, Status, TurnRecord};
use crate::tools::{ToolContext, ToolRegistry, WeatherConfig};
use crate::usage::UsageSource;

/// A conversation with one model at a time: runner's agent loop on the user's messages.
pub(crate) struct Session {
    pub target: Arc<Target>,
    registry: ToolRegistry,
    specs: Vec<ToolSpec>,
    context: ToolContext,
    pub conversation: Conversation,
    seed: u64,
}

/// `/save` before any turn finished.
#[derive(Debug, thiserror::Error)]
#[error("nothing to save yet: no finished turn")]
pub(crate) struct NothingToSave;

impl Session {
    /// A conversation offering `tools` of `registry` (all of them when `None`).
    pub(crate) fn new(
        target: Arc<Target>,
        registry: ToolRegistry,
        tools: Option<&[String]>,
        http: reqwest::Client,
        weather: WeatherConfig,
        seed: u64,
        secrets: crate::secret::Secrets,
    ) -> Self {
        let all: Vec<String> = registry.names().map(str::to_owned).collect();
        let specs = registry.specs(tools.unwrap_or(&all));
        let context = ToolContext::new(http, Arc::new(weather), seed).with_secrets(secrets);
        Self { target, registry, specs, context, conversation: Conversation::new(None), seed }
    }

    /// Plays one user turn; text is handed to `on_text` as it arrives, each tool call to
    /// `on_tool` as it ends.
    pub(crate) async fn turn(
        &mut self,
        user: &str,
        on_text: Option<crate::provider::TextSink<'_>>,
        on_tool: Option<crate::agent::ToolSink<'_>>,
    ) -> TurnRecord {
        let provider = Cached::new(&self.target, None);
        let agent = Agent {
            on_text,
            on_tool,
            ..Agent::new(&provider, &self.target, &self.specs, &self.registry, &self.context)
        };
        let before = self.conversation.messages.len();
        let mut record = self.conversation.ask(&agent, user).await;
        record.model = Some(self.target.spec.clone());
        if record.error.is_some() {
            // A turn that did not finish keeps its user message (the log's messages match its
            // turns) and drops the rest: half a tool round would make the next request invalid.
            self.conversation.messages.truncate(before + 1);
        }
        self.conversation.push(record.clone());
        record
    }

    /// Records a turn stopped half way (Ctrl-C): its user message stays in the conversation,
    /// and what was shown of the answer counts, estimated, as it was paid for.
    pub(crate) fn stopped(&mut self, user: &str, shown: &str) -> TurnRecord {
        let messages = &mut self.conversation.messages;
        if let Some(at) = messages.iter().rposition(|m| matches!(m, Message::User { content } if content == user)) {
            messages.truncate(at + 1);
        }
        let arrived = Completion { content: Some(shown.to_owned()), ..Completion::default() };
        let usage = estimate_usage(messages, &arrived);
        let cost = self.target.price.as_ref().map(|p| p.price.cost(&usage)).unwrap_or_default();
        let mut record = TurnRecord::new(self.conversation.turns.len() + 1, user);
        record.status = Status::Error;
        record.error = Some("answer stopped (Ctrl-C)".to_owned());
        record.reply = (!shown.is_empty()).then(|| shown.to_owned());
        record.requests.push(RequestRecord::new(usage, UsageSource::Estimated, cost, record.error.clone()));
        record.usage = usage;
        record.cost = cost;
        record.model = Some(self.target.spec.clone());
        self.conversation.push(record.clone());
        record
    }

    /// Forgets the conversation (totals are kept).
    pub(crate) fn reset(&mut self) {
        self.conversation.messages.clear();
    }

    /// The token and cost summary printed at the end of a session; figures runner estimated
    /// (the server reported no usage) are marked.
    pub(crate) fn summary(&self) -> String {
        let Conversation { usage, cost, turns, .. } = &self.conversation;
        let cost = if self.target.price.is_some() {
            format!("${:.6}", cost.total_usd)
        } else {
            "$0 (unpriced: no known price for this model)".to_owned()
        };
        let estimated = turns.iter().any(TurnRecord::estimated);
        let (mark, note) = if estimated { ("~", " (estimated: the server reported no usage)") } else { ("", "") };
        format!(
            "input tokens: {mark}{}{note}\noutput tokens: {mark}{}\ntotal tokens: {mark}{}\ntotal cost: {mark}{cost}\n",
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
        )
    }

    /// The conversation as a run without a scenario; `error` is the last one seen.
    pub(crate) fn record(&self, error: Option<&str>) -> RunRecord {
        let mut conversation = self.conversation.clone();
        conversation.error = error.map(str::to_owned);
        conversation.into_record(About {
            run_id: self.conversation.own_run_id(),
            scenario: None,
            target: &self.target,
            sampling: Sampling::default(),
            repetition: 1,
            tool_seed: self.seed,
        })
    }

    /// Where the conversation's log goes under `dir`: `<timestamp>.json`.
    pub(crate) fn log_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", self.conversation.own_run_id()))
    }

    /// Writes the conversation's record to [`Session::log_path`], atomically.
    pub(crate) fn save_log(&self, dir: &Path, error: Option<&str>) -> std::io::Result<PathBuf> {
        let record = self.record(error);
        let path = self.log_path(dir);
        let bytes = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        write_atomically(&path, &bytes)?;
        Ok(path)
    }

    /// The conversation so far as a scenario file: its user turns, the tools that were
    /// called with their results pinned, and `tool_calls` expectations matching what happened.
    pub(crate) fn to_scenario(&self, name: &str) -> Result<String, NothingToSave> {
        #[derive(Serialize)]
        struct SavedScenario {
            name: String,
            model: String,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            tool_results: BTreeMap<String, Value>,
            turns: Vec<SavedTurn>,
        }
        #[derive(Serialize)]
        struct SavedTurn {
            user: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            expect: Option<SavedExpect>,
        }
        #[derive(Serialize)]
        struct SavedExpect {
            tool_calls: Vec<SavedCall>,
        }
        #[derive(Serialize)]
        struct SavedCall {
            name: String,
            arguments: Value,
        }
        let mut tool_results = BTreeMap::new();
        let mut turns = Vec::new();
        let offered: Vec<&str> = self.specs.iter().map(|s| s.function.name.as_str()).collect();
        for turn in self.conversation.turns.iter().filter(|t| t.error.is_none()) {
            // A call `runner check` would refuse to expect (an unknown tool, arguments that are
            // not a JSON object) leaves the turn without a tool_calls expectation.
            let valid = turn.tool_calls.iter().all(|c| offered.contains(&c.name.as_str()) && c.arguments.is_object());
            let mut calls = Vec::new();
            for call in turn.tool_calls.iter().filter(|_| valid) {
                if let Some(result) = &call.result {
                    // One pinned result per tool: the first one seen.
                    tool_results.entry(call.name.clone()).or_insert_with(|| result.clone());
                }
                calls.push(SavedCall { name: call.name.clone(), arguments: call.arguments.clone() });
            }
            let expect = valid.then_some(SavedExpect { tool_calls: calls });
            turns.push(SavedTurn { user: turn.user.clone(), expect });
        }
        if turns.is_empty() {
            return Err(NothingToSave);
        }
        // A scenario has one model: the one that played its first turn.
        let model = self
            .conversation
            .turns
            .iter()
            .filter(|t| t.error.is_none())
            .find_map(|t| t.model.as_ref())
            .unwrap_or(&self.target.spec);
        let scenario = SavedScenario { name: name.to_owned(), model: model.to_string(), tool_results, turns };
        // Strings, numbers and maps of them always serialize.
        Ok(serde_saphyr::to_string(&scenario).expect("a saved scenario serializes"))
    }
}
