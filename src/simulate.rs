//! A simulated user: a model that plays the user toward a goal once a scenario's scripted
//! turns are over, until it writes the stop marker. It sees its goal, its persona, runner's
//! instructions for playing a user and the conversation as a user sees it (its own messages
//! and the agent's replies); never the agent's prompt, tools, tool calls or results.

use std::borrow::Cow;
use std::sync::Arc;

use crate::agent::record_exchange;
use crate::conversation::{Conversation, Script, UserEnd, UserSide, UserTurn};
use crate::message::Message;
use crate::pricing::Cost;
use crate::provider::cache::Cached;
use crate::provider::{CompletionRequest, Provider, Sampling, Target};
use crate::record::{CacheUse, Ended, RequestRecord, SimulatorRecord};
use crate::scenario::{Simulate, Turn};
use crate::usage::Usage;

/// What the simulated user writes to end the conversation.
pub(crate) const STOP: &str = "###STOP###";

/// The first message of the simulator's conversation, in the user's role: chat APIs want one
/// before the simulator's own (assistant) messages.
const OPENING: &str = "[The conversation with the agent starts now. Write your first message to the agent.]";

/// The user's side of a scenario with `simulate:`: its scripted turns first, then the model.
pub(crate) struct SimulatedUser<'a> {
    script: Script<'a>,
    spec: &'a Simulate,
    target: Arc<Target>,
    /// Part of a request's cache key (`--repeat` > 1).
    repetition: Option<u32>,
    sampling: Sampling,
    /// Simulated messages written so far.
    written: u32,
    ended: Option<Ended>,
    error: Option<String>,
    last_words: Option<String>,
    usage: Usage,
    cost: Cost,
    stop_request: Option<RequestRecord>,
}

impl<'a> SimulatedUser<'a> {
    pub(crate) fn new(
        turns: &'a [Turn],
        spec: &'a Simulate,
        target: Arc<Target>,
        repetition: Option<u32>,
        seed: Option<u64>,
    ) -> Self {
        Self {
            script: Script::new(turns),
            spec,
            target,
            repetition,
            sampling: Sampling { seed, ..Sampling::default() },
            written: 0,
            ended: None,
            error: None,
            last_words: None,
            usage: Usage::default(),
            cost: Cost::default(),
            stop_request: None,
        }
    }

    /// Asks the simulator for the user's next message: `Ok(Some(text))`, `Ok(None)` when it
    /// stopped, `Err` when it failed (every request recorded either way).
    async fn ask(&mut self, conversation: &Conversation) -> (Result<Option<String>, String>, RequestRecord) {
        let messages = simulator_messages(self.spec, conversation);
        let provider = Cached::new(&self.target, self.repetition);
        let request = CompletionRequest {
            model: &self.target.spec.name,
            messages: &messages,
            tools: &[],
            sampling: &self.sampling,
            tool_choice: None,
            on_text: None,
        };
        let sent = chrono::Utc::now();
        let exchange = provider.complete(request).await;
        let price = self.target.price.as_ref().map(|p| &p.price);
        let (result, record) = record_exchange(exchange, sent, &messages, price, String::new());
        self.usage += record.usage;
        self.cost += record.cost;
        let outcome = match result {
            Err(err) if record.cache == CacheUse::Miss && !conversation.turns.is_empty() => {
                Err(format!("its request failed: {err}{}", crate::record::DIVERGED))
            }
            Err(err) => Err(format!("its request failed: {err}")),
            Ok(completion) => {
                let text = completion.content.unwrap_or_default();
                match read_message(&text) {
                    Said::Message(message) => Ok(Some(message)),
                    Said::Empty => Err("it wrote an empty message".to_owned()),
                    Said::Stop(_) if conversation.replies().next().is_none() => {
                        Err(format!("it wrote {STOP} before the agent had said anything"))
                    }
                    Said::Stop(last_words) => {
                        self.last_words = last_words;
                        Ok(None)
                    }
                }
            }
        };
        (outcome, record)
    }
}

impl<'a> UserSide<'a> for SimulatedUser<'a> {
    async fn next(&mut self, conversation: &Conversation) -> Option<UserTurn<'a>> {
        if self.ended.is_some() {
            return None;
        }
        if let Some(turn) = self.script.next(conversation).await {
            return Some(turn);
        }
        if self.written == self.spec.max_turns {
            self.ended = Some(Ended::MaxTurns);
            return None;
        }
        let (outcome, record) = self.ask(conversation).await;
        match outcome {
            Ok(Some(text)) => {
                self.written += 1;
                Some(UserTurn { text: Cow::Owned(text), expect: None, simulated: Some(record) })
            }
            Ok(None) => {
                self.stop_request = Some(record);
                self.ended = Some(Ended::Stop);
                None
            }
            Err(why) => {
                self.stop_request = Some(record);
                self.ended = Some(Ended::Error);
                self.error = Some(format!("the simulated user failed, not the agent: {why}"));
                None
            }
        }
    }

    fn end(self) -> UserEnd {
        let simulator = SimulatorRecord {
            model: self.target.spec.clone(),
            usage: self.usage,
            cost: self.cost,
            unpriced: self.target.price.is_none(),
            last_words: self.last_words,
            stop_request: self.stop_request,
        };
        UserEnd { ended: self.ended.unwrap_or(Ended::Script), error: self.error, simulator: Some(simulator) }
    }
}

/// What the simulator wrote.
#[derive(Debug, PartialEq)]
enum Said {
    Message(String),
    Empty,
    /// The stop marker, with the words before it.
    Stop(Option<String>),
}

fn read_message(text: &str) -> Said {
    let text = text.trim();
    match text.find(STOP) {
        Some(at) => {
            let before = text[..at].trim();
            Said::Stop((!before.is_empty()).then(|| before.to_owned()))
        }
        None if text.is_empty() => Said::Empty,
        None => Said::Message(text.to_owned()),
    }
}

/// The simulator's request: runner's instructions with the goal and persona, then the
/// conversation as the user saw it, with the roles turned (its own messages are the
/// assistant's, the agent's replies the user's).
fn simulator_messages(spec: &Simulate, conversation: &Conversation) -> Vec<Message> {
    let mut messages = vec![Message::System { content: instructions(spec) }];
    messages.push(Message::User { content: OPENING.to_owned() });
    for turn in &conversation.turns {
        messages.push(Message::Assistant { content: Some(turn.user.clone()), tool_calls: Vec::new() });
        if let Some(reply) = &turn.reply {
            messages.push(Message::User { content: reply.clone() });
        }
    }
    messages
}

/// How to play a user: what makes a simulated user believable, and what keeps its results
/// fair to the agent.
fn instructions(spec: &Simulate) -> String {
    let persona = spec.persona.as_deref().map(|p| format!("\n\nWho you are:\n{}", p.trim())).unwrap_or_default();
    format!(
        "You are playing a user who is chatting with an AI assistant (the agent), so that the agent can be tested. \
Stay in the role of that user the whole time.

Your goal:
{goal}{persona}

How to play the user:
- Write only the user's next message: one short message, the way a person types in a chat. No narration, no stage directions, no quotes around it, no \"User:\" in front of it.
- Pursue your goal one step at a time. Do not put everything you know into your first message.
- Give a piece of information only when the agent asks for it, and only if your goal gives it to you. Never invent facts your goal does not give you (ids, names, dates, amounts, addresses); if you are asked for something you do not know, say you do not know it.
- You are the user, not the assistant: do not offer help, do not answer your own questions, do not do the agent's work for it.
- Answer what the agent asks you. Judge what the agent says it did against your goal.
- When your goal has been met, or it is clear that it cannot be met (the agent refuses, or keeps getting it wrong), end the conversation: write {STOP} as your whole message, or after one short closing sentence.
- Never write {STOP} before the agent has answered you at least once.

In the messages that follow, your own messages appear as the assistant's and the agent's replies as the user's.",
        goal = spec.goal.trim(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::record::TurnRecord;

    #[test]
    fn the_stop_marker_ends_and_keeps_the_words_before_it() {
        assert_eq!(read_message("###STOP###"), Said::Stop(None));
        assert_eq!(read_message("  Thanks, bye! ###STOP###\n"), Said::Stop(Some("Thanks, bye!".into())));
        assert_eq!(read_message("  \n"), Said::Empty);
        assert_eq!(read_message(" my order is A1 "), Said::Message("my order is A1".into()));
    }

    #[test]
    fn the_simulator_sees_the_conversation_as_the_user_did_and_nothing_of_the_agent_s() {
        let spec = Simulate {
            model: ModelSpec { provider: "openai".into(), name: "u".into() },
            goal: "Get a refund for A1.".into(),
            persona: Some("Dana, terse.".into()),
            max_turns: 3,
        };
        let mut conversation = Conversation::new(Some("SECRET SYSTEM PROMPT"));
        let mut turn = TurnRecord::new(1, "hi");
        turn.reply = Some("Which order?".into());
        conversation.push(turn);
        let messages = simulator_messages(&spec, &conversation);
        let Message::System { content } = &messages[0] else { panic!("{messages:?}") };
        assert!(content.contains("Get a refund for A1.") && content.contains("Dana, terse.") && content.contains(STOP));
        assert_eq!(messages[1], Message::User { content: OPENING.into() });
        assert_eq!(messages[2], Message::Assistant { content: Some("hi".into()), tool_calls: vec![] });
        assert_eq!(messages[3], Message::User { content: "Which order?".into() });
        assert_eq!(messages.len(), 4);
        assert!(!format!("{messages:?}").contains("SECRET SYSTEM PROMPT"));
    }
}
