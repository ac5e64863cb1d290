//! One conversation's bookkeeping: its messages, what each turn did, the running totals, and
//! the one place a conversation becomes a [`RunRecord`]. `runner run`, `runner chat` and
//! `runner ask` all keep their conversation here.
//!
//! Who speaks is kept apart from the bookkeeping: the user's side is a [`UserSide`] (a
//! scenario's script today) and the assistant's side an [`Assistant`] (runner's own agent
//! loop today). Either can be swapped without touching what is counted and recorded.

use std::borrow::Cow;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::message::Message;
use crate::pricing::{Cost, PriceEntry};
use crate::provider::{Sampling, Target};
use crate::record::{
    AgentLog, CheckRecord, Ended, JudgeRecord, ModelInfo, RequestRecord, RunCost, RunRecord, ScenarioRef, ServerLog,
    SimulatorRecord, Status, TurnRecord, run_id,
};
use crate::scenario::{Expect, Turn};
use crate::usage::Usage;

/// The assistant's side of a conversation: answers one user message.
pub(crate) trait Assistant {
    /// Answers user turn `index` (1-based): appends the user's message and every message the
    /// answer took to `messages`. The record has no checks yet; `error` set means the turn
    /// could not finish.
    async fn answer(&self, messages: &mut Vec<Message>, index: usize, user: &str) -> TurnRecord;
}

/// The user's side of a conversation: what the user says next.
pub(crate) trait UserSide<'a> {
    /// The user's next turn, given the conversation so far; `None` ends the conversation.
    async fn next(&mut self, conversation: &Conversation) -> Option<UserTurn<'a>>;

    /// Once `next` gave `None`: why the conversation ended, the user side's own error (the
    /// simulated user failed, not the agent), and what a simulated user cost.
    fn end(self) -> UserEnd;
}

/// How the user's side ended a conversation.
pub(crate) struct UserEnd {
    pub ended: Ended,
    pub error: Option<String>,
    pub simulator: Option<SimulatorRecord>,
}

/// One thing the user says, and what the answer is expected to do.
pub(crate) struct UserTurn<'a> {
    pub text: Cow<'a, str>,
    pub expect: Option<&'a Expect>,
    /// Written by the simulated user, with the request that wrote it.
    pub simulated: Option<RequestRecord>,
}

/// A scenario's user: its turns, in order.
pub(crate) struct Script<'a> {
    turns: std::slice::Iter<'a, Turn>,
}

impl<'a> Script<'a> {
    pub(crate) fn new(turns: &'a [Turn]) -> Self {
        Self { turns: turns.iter() }
    }
}

impl<'a> UserSide<'a> for Script<'a> {
    async fn next(&mut self, _conversation: &Conversation) -> Option<UserTurn<'a>> {
        let turn = self.turns.next()?;
        Some(UserTurn { text: Cow::Borrowed(&turn.user), expect: Some(&turn.expect), simulated: None })
    }

    fn end(self) -> UserEnd {
        UserEnd { ended: Ended::Script, error: None, simulator: None }
    }
}

/// What a conversation is about, for its record: the run it belongs to and the model that
/// played it.
pub(crate) struct About<'a> {
    pub run_id: String,
    /// `None` for a conversation (`runner chat`, `runner ask`).
    pub scenario: Option<ScenarioRef>,
    pub target: &'a Target,
    pub sampling: Sampling,
    pub repetition: u32,
    pub tool_seed: u64,
}

/// One conversation: its messages, what each turn did, and the running totals.
#[derive(Clone)]
pub(crate) struct Conversation {
    pub messages: Vec<Message>,
    pub turns: Vec<TurnRecord>,
    pub usage: Usage,
    pub cost: Cost,
    pub started_at: DateTime<Utc>,
    started: Instant,
    /// The run's error, as its record gives it.
    pub error: Option<String>,
    /// The MCP servers the conversation used, with what they wrote to stderr.
    pub servers: Vec<ServerLog>,
    /// The agent program that played the assistant's side, when one did.
    pub agent: Option<AgentLog>,
    /// How it ended.
    pub ended: Ended,
    /// The checks over the whole conversation.
    pub checks: Vec<CheckRecord>,
    /// What a simulated user cost.
    pub simulator: Option<SimulatorRecord>,
    /// The judge of the whole conversation (the top-level `expect.judge`).
    pub judge: Option<JudgeRecord>,
}

impl Conversation {
    /// A conversation that has not started, with its system prompt when there is one.
    pub(crate) fn new(system: Option<&str>) -> Self {
        Self {
            messages: system.map(|content| Message::System { content: content.to_owned() }).into_iter().collect(),
            turns: Vec::new(),
            usage: Usage::default(),
            cost: Cost::default(),
            started_at: Utc::now(),
            started: Instant::now(),
            error: None,
            servers: Vec::new(),
            agent: None,
            ended: Ended::Script,
            checks: Vec::new(),
            simulator: None,
            judge: None,
        }
    }

    /// The assistant's answer to `user`, as the next turn; not counted until [`Conversation::push`].
    pub(crate) async fn ask(&mut self, assistant: &impl Assistant, user: &str) -> TurnRecord {
        assistant.answer(&mut self.messages, self.turns.len() + 1, user).await
    }

    /// Counts a finished turn (its checks added).
    pub(crate) fn push(&mut self, turn: TurnRecord) {
        self.usage += turn.usage;
        self.cost += turn.cost;
        self.turns.push(turn);
    }

    /// The first turn's error, with the turn it happened in: a scenario run's error.
    pub(crate) fn first_turn_error(&self) -> Option<String> {
        self.turns.iter().find_map(|turn| Some(format!("turn {}: {}", turn.index, turn.error.as_ref()?)))
    }

    /// The worst of the turns' outcomes; `error` when the conversation has one of its own,
    /// `failed` when a check over the whole of it failed.
    pub(crate) fn status(&self) -> Status {
        let start = match (&self.error, self.checks.iter().all(|c| c.passed)) {
            (Some(_), _) => Status::Error,
            (None, false) => Status::Failed,
            (None, true) => Status::Passed,
        };
        self.turns.iter().fold(start, |status, turn| status.worst(turn.status))
    }

    /// The agent's replies so far, in order.
    pub(crate) fn replies(&self) -> impl Iterator<Item = &str> {
        self.turns.iter().filter_map(|turn| turn.reply.as_deref())
    }

    /// The conversation's record: the one place a [`RunRecord`] is made.
    pub(crate) fn into_record(self, about: About<'_>) -> RunRecord {
        let finished_at = Utc::now();
        let status = self.status();
        let price: Option<&PriceEntry> = about.target.price.as_ref();
        RunRecord {
            runner_version: env!("CARGO_PKG_VERSION").into(),
            run_id: about.run_id,
            scenario: about.scenario,
            model: ModelInfo {
                spec: about.target.spec.clone(),
                base_url: about.target.provider.base_url().map(str::to_owned),
                sampling: about.sampling,
            },
            repetition: about.repetition,
            started_at: self.started_at,
            finished_at,
            duration_ms: self.started.elapsed().as_millis() as u64,
            status,
            error: self.error,
            tool_seed: about.tool_seed,
            messages: self.messages,
            turns: self.turns,
            usage: self.usage,
            cost: RunCost::new(self.cost, price),
            mcp_servers: self.servers,
            agent: self.agent,
            ended: self.ended,
            checks: self.checks,
            simulator: self.simulator,
            judge: self.judge,
        }
    }

    /// The id of a conversation that is its own run (`runner chat`, `runner ask`).
    pub(crate) fn own_run_id(&self) -> String {
        run_id(self.started_at)
    }
}
