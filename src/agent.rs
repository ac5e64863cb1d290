//! The agent loop for one user turn: send the conversation, run the tools the model asks
//! for, send the results back, until the model answers in text.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::conversation::Assistant;
use crate::message::{Message, ToolSpec};
use crate::pricing::{Cost, Price};
use crate::provider::{Completion, CompletionRequest, Exchange, Provider, ProviderError, Sampling, Target};
use crate::record::{RequestRecord, Status, ToolCallRecord, ToolSource, TurnRecord};
use crate::scenario::DEFAULT_MAX_TOOL_ROUNDS;
use crate::tools::{ToolContext, ToolError, ToolRegistry, decode_arguments};
use crate::usage::{Usage, UsageSource, estimate_tokens};

/// Everything one conversation needs to talk to its model and run its tools.
pub(crate) struct Agent<'a> {
    pub provider: &'a dyn Provider,
    pub model: &'a str,
    pub sampling: Sampling,
    /// Tools offered on every request of the conversation.
    pub tools: &'a [ToolSpec],
    pub registry: &'a ToolRegistry,
    /// Fixed results that replace running the named tools.
    pub tool_results: &'a BTreeMap<String, Value>,
    pub max_tool_rounds: u32,
    pub context: &'a ToolContext,
    /// `None` for an unpriced model: its cost is 0.
    pub price: Option<&'a Price>,
    /// When set, replies are streamed and their text handed here as it arrives.
    pub on_text: Option<crate::provider::TextSink<'a>>,
    /// When set, every tool call's record is handed here as soon as the call ends.
    pub on_tool: Option<ToolSink<'a>>,
}

/// Where a conversation shows each tool call as it ends (`runner chat`, `ask -v`).
pub(crate) type ToolSink<'a> = &'a (dyn Fn(&ToolCallRecord) + Send + Sync);

/// No results pinned.
static NOTHING_PINNED: BTreeMap<String, Value> = BTreeMap::new();

impl<'a> Agent<'a> {
    /// An agent for `target` through `provider` (which may be the target's own, or a cache in
    /// front of it), offering `tools`: default sampling, nothing pinned, at most
    /// [`DEFAULT_MAX_TOOL_ROUNDS`] tool rounds, nothing streamed.
    pub(crate) fn new(
        provider: &'a dyn Provider,
        target: &'a Target,
        tools: &'a [ToolSpec],
        registry: &'a ToolRegistry,
        context: &'a ToolContext,
    ) -> Self {
        Self {
            provider,
            model: &target.spec.name,
            sampling: Sampling::default(),
            tools,
            registry,
            tool_results: &NOTHING_PINNED,
            max_tool_rounds: DEFAULT_MAX_TOOL_ROUNDS,
            context,
            price: target.price.as_ref().map(|p| &p.price),
            on_text: None,
            on_tool: None,
        }
    }
}

impl Assistant for Agent<'_> {
    async fn answer(&self, messages: &mut Vec<Message>, index: usize, user: &str) -> TurnRecord {
        self.run_turn(messages, index, user).await
    }
}

impl Agent<'_> {
    /// Plays user turn `index` (1-based), appending every message to `messages`. The record
    /// has no checks yet; `error` set means the turn could not finish.
    pub(crate) async fn run_turn(&self, messages: &mut Vec<Message>, index: usize, user: &str) -> TurnRecord {
        let started = Instant::now();
        let mut outcome = TurnRecord::new(index, user);
        messages.push(Message::User { content: user.to_owned() });
        let mut rounds = 0;
        // What a streamed reply has shown, so a reply that fails half way still counts.
        let shown = std::sync::Mutex::new(String::new());
        let show = |text: &str| {
            shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_str(text);
            if let Some(on_text) = self.on_text {
                on_text(text);
            }
        };
        loop {
            shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
            let request = CompletionRequest {
                model: self.model,
                messages,
                tools: self.tools,
                sampling: &self.sampling,
                tool_choice: None,
                on_text: self.on_text.map(|_| &show as crate::provider::TextSink<'_>),
            };
            let sent = Utc::now();
            let exchange = self.provider.complete(request).await;
            let partial = std::mem::take(&mut *shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            let (result, record) = record_exchange(exchange, sent, messages, self.price, partial);
            outcome.usage += record.usage;
            outcome.cost += record.cost;
            outcome.requests.push(record);
            let completion = match result {
                Ok(completion) => completion,
                Err(error) => {
                    outcome.error = Some(format!("model request failed: {error}"));
                    break;
                }
            };

            if completion.tool_calls.is_empty() {
                let reply = completion.content.unwrap_or_default();
                messages.push(Message::Assistant { content: Some(reply.clone()), tool_calls: vec![] });
                outcome.reply = Some(reply);
                break;
            }
            let mut calls = completion.tool_calls;
            for (i, call) in calls.iter_mut().enumerate() {
                if call.id.is_empty() {
                    call.id = format!("call_{}_{}", rounds + 1, i + 1);
                }
            }
            messages.push(Message::Assistant { content: completion.content, tool_calls: calls.clone() });
            if rounds == self.max_tool_rounds {
                outcome.error = Some(format!(
                    "the model still called tools after {} tool round(s) (max_tool_rounds)",
                    self.max_tool_rounds
                ));
                break;
            }
            rounds += 1;
            for call in calls {
                let (record, environment) =
                    self.run_tool(&call.id, &call.function.name, &call.function.arguments).await;
                messages.push(Message::Tool { tool_call_id: call.id, content: tool_message(&record) });
                if let Some(on_tool) = self.on_tool {
                    on_tool(&record);
                }
                outcome.tool_calls.push(record);
                if let Some(why) = environment {
                    // The machine failed, not the model: the turn is an error (and --resume
                    // plays the run again), not a failure to hold against the model.
                    outcome.error.get_or_insert(format!("tool `{}` could not run: {why}", call.function.name));
                }
            }
            if outcome.error.is_some() {
                break;
            }
        }
        outcome.latency_ms = started.elapsed().as_millis() as u64;
        if outcome.error.is_some() {
            outcome.status = Status::Error;
        }
        outcome
    }

    /// The call's record, its result and error redacted with the batch's secrets; and, when the
    /// machine stopped it (no file descriptors left), why.
    async fn run_tool(&self, id: &str, name: &str, raw_arguments: &str) -> (ToolCallRecord, Option<String>) {
        let started = Instant::now();
        let started_at = Utc::now();
        let offered = self.tools.iter().any(|spec| spec.function.name == name);
        let pinned = self.tool_results.get(name).filter(|_| offered);
        let (arguments, result) = if !offered {
            let arguments = decode_arguments(raw_arguments).unwrap_or_else(|_| Value::String(raw_arguments.to_owned()));
            (arguments, Err(ToolError::Unknown(name.to_owned())))
        } else if let Some(value) = pinned {
            match decode_arguments(raw_arguments) {
                Ok(arguments) => (arguments, Ok(value.clone())),
                Err(err) => (Value::String(raw_arguments.to_owned()), Err(err)),
            }
        } else {
            self.registry.call(name, raw_arguments, self.context).await
        };
        let secrets = &self.context.secrets;
        let environment = match &result {
            Err(ToolError::Environment(why)) => Some(secrets.redact(why)),
            _ => None,
        };
        let (result, error) = match result {
            Ok(value) => (Some(secrets.redact_value(value)), None),
            Err(err) => (None, Some(secrets.redact(&err.to_string()))),
        };
        let tool = self.registry.get(name).filter(|_| offered);
        let source = if pinned.is_some() { Some(ToolSource::Pinned) } else { tool.map(|tool| tool.source()) };
        let record = ToolCallRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            listed_as: tool.and_then(|tool| tool.original_name()).map(str::to_owned),
            arguments,
            result,
            error,
            started_at: Some(started_at),
            duration_ms: started.elapsed().as_millis() as u64,
            pinned: pinned.is_some(),
            source,
        };
        (record, environment)
    }
}

/// The `tool` message content: a string result as is, anything else as JSON, an error as
/// `{"error": "..."}`.
fn tool_message(record: &ToolCallRecord) -> String {
    match (&record.result, &record.error) {
        (Some(Value::String(text)), _) => text.clone(),
        (Some(value), _) => value.to_string(),
        (None, error) => json!({ "error": error.as_deref().unwrap_or("tool failed") }).to_string(),
    }
}

/// The record of one request sent for `messages` at `sent`, and the completion or the
/// provider's error. Usage is the provider's, else counted by runner; `partial` is the text a
/// streamed reply showed before it failed: generated and paid for, so counted too.
pub(crate) fn record_exchange(
    exchange: Exchange,
    sent: DateTime<Utc>,
    messages: &[Message],
    price: Option<&Price>,
    partial: String,
) -> (Result<Completion, ProviderError>, RequestRecord) {
    let latency_ms = exchange.attempts.iter().map(|a| a.latency_ms).sum();
    let (result, usage, usage_source, finish_reason, raw_usage) = match exchange.result {
        Ok(completion) => {
            let (usage, source) = match completion.usage {
                Some(usage) => (usage, UsageSource::Provider),
                None => (estimate_usage(messages, &completion), UsageSource::Estimated),
            };
            let (finish, raw) = (completion.finish_reason.clone(), completion.raw_usage.clone());
            (Ok(completion), usage, source, finish, raw)
        }
        Err(err) if partial.is_empty() => (Err(err), Usage::default(), UsageSource::Provider, None, None),
        Err(err) => {
            let arrived = Completion { content: Some(partial), ..Completion::default() };
            (Err(err), estimate_usage(messages, &arrived), UsageSource::Estimated, None, None)
        }
    };
    let cost: Cost = price.map(|p| p.cost(&usage)).unwrap_or_default();
    let error = result.as_ref().err().map(ToString::to_string);
    let record = RequestRecord {
        started_at: Some(sent),
        latency_ms,
        finish_reason,
        attempts: exchange.attempts,
        raw_usage,
        cache: exchange.cache,
        ..RequestRecord::new(usage, usage_source, cost, error)
    };
    (result, record)
}

/// Usage counted by runner when the provider reports none.
pub(crate) fn estimate_usage(messages: &[Message], completion: &Completion) -> Usage {
    let prompt = serde_json::to_string(messages).map_or(0, |text| estimate_tokens(&text));
    let output = completion.content.as_deref().map_or(0, estimate_tokens)
        + completion
            .tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.function.name) + estimate_tokens(&c.function.arguments))
            .sum::<u64>();
    Usage::new(prompt, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FunctionCall, ToolCall};
    use crate::provider::{Completion, Exchange, ProviderError};
    use futures::future::BoxFuture;
    use std::sync::{Arc, Mutex};

    /// Replies from a script, in order, and remembers what it was sent.
    struct Scripted {
        replies: Mutex<Vec<Result<Completion, ProviderError>>>,
        seen: Mutex<Vec<Vec<Message>>>,
    }

    impl Provider for Scripted {
        fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
            self.seen.lock().unwrap().push(request.messages.to_vec());
            let result = self.replies.lock().unwrap().remove(0);
            Box::pin(async move { Exchange { result, attempts: vec![], cache: Default::default() } })
        }
        fn base_url(&self) -> Option<&str> {
            None
        }
    }

    fn call(id: &str, name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall { name: name.into(), arguments: args.into() },
        }
    }

    fn tools_reply(calls: Vec<ToolCall>) -> Result<Completion, ProviderError> {
        Ok(Completion { tool_calls: calls, usage: Some(Usage::new(10, 5)), ..Completion::default() })
    }

    fn text_reply(text: &str) -> Result<Completion, ProviderError> {
        Ok(Completion { content: Some(text.into()), usage: Some(Usage::new(20, 3)), ..Completion::default() })
    }

    async fn play(
        replies: Vec<Result<Completion, ProviderError>>,
        max_tool_rounds: u32,
        pinned: BTreeMap<String, Value>,
    ) -> (TurnRecord, Vec<Message>, Arc<Scripted>) {
        let provider = Arc::new(Scripted { replies: Mutex::new(replies), seen: Mutex::new(vec![]) });
        let registry = ToolRegistry::builtin();
        let offered: Vec<String> = ["add_numbers", "reverse_text", "get_weather"].map(String::from).to_vec();
        let specs = registry.specs(&offered);
        let context = ToolContext::new(crate::http::http_client().unwrap(), Default::default(), 1);
        let price = Price { input: 1.0, cached_input: None, output: 2.0, cache_write_input: None };
        let agent = Agent {
            provider: provider.as_ref(),
            model: "m",
            sampling: Sampling::default(),
            tools: &specs,
            registry: &registry,
            tool_results: &pinned,
            max_tool_rounds,
            context: &context,
            price: Some(&price),
            on_text: None,
            on_tool: None,
        };
        let mut messages = vec![];
        let outcome = agent.run_turn(&mut messages, 1, "go").await;
        (outcome, messages, provider)
    }

    #[tokio::test]
    async fn runs_every_call_in_order_and_sends_results_back() {
        let replies = vec![
            tools_reply(vec![
                call("a", "add_numbers", r#"{"x":2,"y":3}"#),
                call("b", "reverse_text", r#"{"text":"apple"}"#),
            ]),
            text_reply("5 and elppa"),
        ];
        let (outcome, messages, provider) = play(replies, 8, BTreeMap::new()).await;
        assert_eq!(outcome.reply.as_deref(), Some("5 and elppa"));
        assert!(outcome.error.is_none());
        assert_eq!(outcome.tool_calls.len(), 2);
        assert_eq!(outcome.usage, Usage::new(30, 8));
        // 30 input x $1/M + 8 output x $2/M
        assert!((outcome.cost.total_usd - 46e-6).abs() < 1e-15);
        let roles: Vec<_> =
            messages.iter().map(|m| serde_json::to_value(m).unwrap()["role"].as_str().unwrap().to_owned()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "tool", "assistant"]);
        assert_eq!(messages[2], Message::Tool { tool_call_id: "a".into(), content: r#"{"result":5}"#.into() });
        assert_eq!(messages[3], Message::Tool { tool_call_id: "b".into(), content: r#"{"result":"elppa"}"#.into() });
        // The second request carried the tool results.
        assert_eq!(provider.seen.lock().unwrap()[1].len(), 4);
    }

    #[tokio::test]
    async fn tool_errors_go_back_to_the_model() {
        let replies = vec![
            tools_reply(vec![
                call("a", "teleport", "{}"),
                call("b", "add_numbers", "{oops"),
                call("c", "get_random_number", r#"{"min":1,"max":2}"#),
            ]),
            text_reply("sorry"),
        ];
        let (outcome, messages, _) = play(replies, 8, BTreeMap::new()).await;
        assert!(outcome.error.is_none());
        let errors: Vec<_> = outcome.tool_calls.iter().map(|c| c.error.clone().unwrap()).collect();
        assert_eq!(errors[0], "unknown tool `teleport`");
        assert!(errors[1].starts_with("invalid arguments: not valid JSON"));
        // Known to the registry but not offered by this scenario.
        assert_eq!(errors[2], "unknown tool `get_random_number`");
        assert_eq!(outcome.tool_calls[1].arguments, json!("{oops"));
        assert!(
            matches!(&messages[2], Message::Tool { content, .. } if content == r#"{"error":"unknown tool `teleport`"}"#)
        );
    }

    #[tokio::test]
    async fn pinned_results_replace_the_tool() {
        let pinned = BTreeMap::from([("get_weather".to_owned(), json!({"temperature_c": 15}))]);
        let replies = vec![tools_reply(vec![call("w", "get_weather", r#"{"city":"Paris"}"#)]), text_reply("15")];
        let (outcome, messages, _) = play(replies, 8, pinned).await;
        assert!(outcome.tool_calls[0].pinned);
        assert_eq!(outcome.tool_calls[0].result, Some(json!({"temperature_c": 15})));
        assert_eq!(messages[2], Message::Tool { tool_call_id: "w".into(), content: r#"{"temperature_c":15}"#.into() });
    }

    #[tokio::test]
    async fn too_many_rounds_is_an_error() {
        let replies = vec![
            tools_reply(vec![call("1", "add_numbers", r#"{"x":1,"y":1}"#)]),
            tools_reply(vec![call("2", "add_numbers", r#"{"x":1,"y":1}"#)]),
            tools_reply(vec![call("3", "add_numbers", r#"{"x":1,"y":1}"#)]),
        ];
        let (outcome, _, _) = play(replies, 2, BTreeMap::new()).await;
        assert_eq!(outcome.tool_calls.len(), 2);
        assert_eq!(outcome.requests.len(), 3);
        assert!(outcome.error.unwrap().contains("after 2 tool round(s)"));
    }

    /// A tool the machine stops: no descriptors left to start it.
    struct Starved;

    impl crate::tools::Tool for Starved {
        fn name(&self) -> &str {
            "add_numbers"
        }
        fn description(&self) -> &str {
            ""
        }
        fn parameters(&self) -> Value {
            json!({"type": "object"})
        }
        fn check(&self, _arguments: &Value) -> Vec<String> {
            Vec::new()
        }
        fn call<'a>(&'a self, _arguments: Value, _context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
            Box::pin(async {
                Err(ToolError::Environment(
                    "cannot start `x`: Too many open files (the machine's limit, not the model)".into(),
                ))
            })
        }
    }

    #[tokio::test]
    async fn a_tool_the_machine_stops_makes_the_turn_an_error_and_secrets_are_redacted() {
        let provider = Arc::new(Scripted {
            replies: Mutex::new(vec![tools_reply(vec![call("a", "add_numbers", "{}")]), text_reply("never")]),
            seen: Mutex::new(vec![]),
        });
        let registry = ToolRegistry::builtin().with(&[Arc::new(Starved) as Arc<dyn crate::tools::Tool>]);
        let specs = registry.specs(&["add_numbers".to_owned()]);
        let context = ToolContext::new(crate::http::http_client().unwrap(), Default::default(), 1);
        let agent = Agent {
            provider: provider.as_ref(),
            model: "m",
            sampling: Sampling::default(),
            tools: &specs,
            registry: &registry,
            tool_results: &BTreeMap::new(),
            max_tool_rounds: 8,
            context: &context,
            price: None,
            on_text: None,
            on_tool: None,
        };
        let outcome = agent.run_turn(&mut vec![], 1, "go").await;
        assert_eq!(outcome.status, Status::Error);
        assert!(outcome.error.as_deref().unwrap().contains("tool `add_numbers` could not run"), "{:?}", outcome.error);
        assert_eq!(outcome.requests.len(), 1, "no request after the machine stopped the tool");

        // Whatever a tool returns, the batch's secrets are redacted from it.
        let secrets = crate::secret::Secrets::default();
        secrets.add("Bearer tool-secret-0123456789");
        let context =
            ToolContext::new(crate::http::http_client().unwrap(), Default::default(), 1).with_secrets(secrets);
        let pinned = BTreeMap::from([("add_numbers".to_owned(), json!({"echo": "token tool-secret-0123456789"}))]);
        let provider = Arc::new(Scripted {
            replies: Mutex::new(vec![tools_reply(vec![call("a", "add_numbers", "{}")]), text_reply("ok")]),
            seen: Mutex::new(vec![]),
        });
        let registry = ToolRegistry::builtin();
        let specs = registry.specs(&["add_numbers".to_owned()]);
        let agent = Agent {
            provider: provider.as_ref(),
            registry: &registry,
            tools: &specs,
            tool_results: &pinned,
            context: &context,
            ..agent
        };
        let mut messages = vec![];
        let outcome = agent.run_turn(&mut messages, 1, "go").await;
        assert_eq!(outcome.tool_calls[0].result, Some(json!({"echo": "token [redacted]"})));
        assert!(!serde_json::to_string(&messages).unwrap().contains("tool-secret"));
    }

    #[tokio::test]
    async fn provider_failure_is_recorded() {
        let replies = vec![Err(ProviderError::Status { status: 500, body: "boom".into() })];
        let (outcome, _, _) = play(replies, 8, BTreeMap::new()).await;
        assert_eq!(outcome.error.as_deref(), Some("model request failed: HTTP 500: boom"));
        assert_eq!(outcome.status, Status::Error);
        assert_eq!(outcome.requests[0].error.as_deref(), Some("HTTP 500: boom"));
    }
}
