//! One run's record as one trace, named as the OpenTelemetry GenAI conventions name things:
//! the run is the root span `invoke_agent {scenario}`; each model request (the model under
//! test's, the judge's, the simulated user's) is a `chat {model}` span and each tool call an
//! `execute_tool {tool}` span beneath it; each check is a `gen_ai.evaluation.result` event
//! on the root. Every span keeps the times the record holds. Contents (messages, arguments,
//! results) only when asked for, and then as the record holds them: already redacted.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::{Value as Json, json};

use crate::message::Message;
use crate::model::ModelSpec;
use crate::record::{CacheUse, CheckRecord, RequestRecord, RunRecord, Status as RunStatus, ToolCallRecord};

/// Events (checks) one root span keeps at most; the SDK's default of 128 would drop the
/// checks of a long conversation.
pub(super) const MAX_EVENTS: u32 = 4096;

/// Who sent a request, as `runner.role` says.
#[derive(Clone, Copy)]
enum Role {
    /// The model under test.
    Assistant,
    Judge,
    /// The simulated user.
    User,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Assistant => "assistant",
            Role::Judge => "judge",
            Role::User => "user",
        }
    }
}

/// Records `record` as a trace; returns how many spans it made.
pub(super) fn export(tracer: &SdkTracer, record: &RunRecord, content: bool) -> usize {
    let run = Run { tracer, record, cx: Context::new() };
    let root = run.root();
    let run = Run { cx: Context::new().with_span(root), ..run };
    let mut made = 1;
    let contents = if content { contents(record) } else { Vec::new() };
    let mut answered = 0;
    for turn in &record.turns {
        let simulator = record.simulator.as_ref().map(|s| &s.model);
        if let (Some(request), Some(model)) = (&turn.user_request, simulator) {
            made += run.chat(request, model, Role::User, turn.index, None);
        }
        let model = turn.model.as_ref().unwrap_or(&record.model.spec);
        for request in &turn.requests {
            let said = if request.error.is_none() {
                answered += 1;
                contents.get(answered - 1).cloned().flatten()
            } else {
                None
            };
            made += run.chat(request, model, Role::Assistant, turn.index, said);
        }
        for call in &turn.tool_calls {
            made += run.tool(call, turn.index, content);
        }
        if let Some(judge) = &turn.judge {
            for request in &judge.requests {
                made += run.chat(request, &judge.model, Role::Judge, turn.index, None);
            }
        }
        let ended = turn
            .requests
            .iter()
            .filter_map(RequestRecord::ended_at)
            .chain(turn.tool_calls.iter().filter_map(ToolCallRecord::ended_at))
            .max()
            .unwrap_or(record.finished_at);
        for check in &turn.checks {
            run.evaluation(check, ended, Some(turn.index));
        }
    }
    let last = record.turns.len();
    if let Some(simulator) = &record.simulator
        && let Some(request) = &simulator.stop_request
    {
        made += run.chat(request, &simulator.model, Role::User, last + 1, None);
    }
    if let Some(judge) = &record.judge {
        for request in &judge.requests {
            made += run.chat(request, &judge.model, Role::Judge, last, None);
        }
    }
    for check in &record.checks {
        run.evaluation(check, record.finished_at, None);
    }
    let span = run.cx.span();
    if record.status == RunStatus::Error {
        span.set_status(Status::error(record.error.clone().unwrap_or_default()));
    }
    span.end_with_timestamp(record.finished_at.into());
    made
}

/// One run being recorded: the tracer, the record, and (once the root is open) its context.
struct Run<'a> {
    tracer: &'a SdkTracer,
    record: &'a RunRecord,
    cx: Context,
}

impl Run<'_> {
    /// The root span, open: ended by [`export`] once everything beneath it is recorded.
    fn root(&self) -> opentelemetry_sdk::trace::Span {
        let record = self.record;
        let spec = &record.model.spec;
        let scenario = record.scenario.as_ref().map_or("conversation", |s| s.name.as_str());
        let name = crate::record::run_name(scenario, spec, record.repetition);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", scenario.to_owned()),
            KeyValue::new("gen_ai.provider.name", provider_name(spec)),
            KeyValue::new("gen_ai.request.model", spec.name.clone()),
            KeyValue::new("gen_ai.conversation.id", format!("{}/{name}", record.run_id)),
            KeyValue::new("gen_ai.usage.input_tokens", int(record.usage.prompt_tokens)),
            KeyValue::new("gen_ai.usage.output_tokens", int(record.usage.completion_tokens)),
            KeyValue::new("runner.status", record.status.as_str()),
            KeyValue::new("runner.repetition", i64::from(record.repetition)),
            KeyValue::new("runner.cost_usd", record.cost.cost.total_usd),
            KeyValue::new("runner.run_id", record.run_id.clone()),
            KeyValue::new("runner.turns", int(record.turns.len())),
            KeyValue::new("runner.ended", record.ended.as_str()),
        ];
        if let Some(scenario) = &record.scenario {
            attributes.push(KeyValue::new("runner.scenario.file", scenario.file.clone()));
        }
        if record.cost.unpriced {
            attributes.push(KeyValue::new("runner.unpriced", true));
        }
        self.tracer
            .span_builder(format!("invoke_agent {scenario}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(SystemTime::from(record.started_at))
            .with_attributes(attributes)
            .start_with_context(self.tracer, &Context::new())
    }

    /// A `chat {model}` span for one request; `said` is its input and output messages (as
    /// JSON) when contents are exported. Returns the spans made (1).
    fn chat(
        &self,
        request: &RequestRecord,
        model: &ModelSpec,
        role: Role,
        turn: usize,
        said: Option<(String, String)>,
    ) -> usize {
        let started = request.started_at.unwrap_or(self.record.started_at);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", provider_name(model)),
            KeyValue::new("gen_ai.request.model", model.name.clone()),
            KeyValue::new("gen_ai.usage.input_tokens", int(request.usage.prompt_tokens)),
            KeyValue::new("gen_ai.usage.output_tokens", int(request.usage.completion_tokens)),
            KeyValue::new("runner.cost_usd", request.cost.total_usd),
            KeyValue::new("runner.cache", request.cache.as_str()),
            KeyValue::new("runner.role", role.as_str()),
            KeyValue::new("runner.turn", int(turn)),
            KeyValue::new("runner.attempts", int(request.attempts.len())),
        ];
        if let Some(reason) = &request.finish_reason {
            let reasons = Array::String(vec![StringValue::from(reason.clone())]);
            attributes.push(KeyValue::new("gen_ai.response.finish_reasons", Value::Array(reasons)));
        }
        if request.usage_source == crate::usage::UsageSource::Estimated {
            attributes.push(KeyValue::new("runner.usage.estimated", true));
        }
        if matches!(role, Role::Assistant) {
            attributes.extend(self.server());
            let sampling = &self.record.model.sampling;
            if let Some(t) = sampling.temperature {
                attributes.push(KeyValue::new("gen_ai.request.temperature", t));
            }
            if let Some(p) = sampling.top_p {
                attributes.push(KeyValue::new("gen_ai.request.top_p", p));
            }
            if let Some(n) = sampling.max_tokens {
                attributes.push(KeyValue::new("gen_ai.request.max_tokens", i64::from(n)));
            }
            if let Some(seed) = sampling.seed.and_then(|s| i64::try_from(s).ok()) {
                attributes.push(KeyValue::new("gen_ai.request.seed", seed));
            }
        }
        if let Some(kind) = request_error_type(request) {
            attributes.push(KeyValue::new("error.type", kind));
        }
        if let Some((input, output)) = said {
            attributes.push(KeyValue::new("gen_ai.input.messages", input));
            attributes.push(KeyValue::new("gen_ai.output.messages", output));
        }
        let times = (started, request.ended_at().unwrap_or(started));
        self.child(format!("chat {}", model.name), SpanKind::Client, times, attributes, request.error.as_ref())
    }

    /// A span beneath the run's, from `started` to `ended`, its status ERROR with `error`.
    /// Returns the spans made (1).
    fn child(
        &self,
        name: String,
        kind: SpanKind,
        (started, ended): (DateTime<Utc>, DateTime<Utc>),
        attributes: Vec<KeyValue>,
        error: Option<&String>,
    ) -> usize {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(SystemTime::from(started))
            .with_attributes(attributes)
            .start_with_context(self.tracer, &self.cx);
        if let Some(error) = error {
            span.set_status(Status::error(error.clone()));
        }
        span.end_with_timestamp(ended.into());
        1
    }

    /// `server.address` and `server.port` of the model under test, from its base URL.
    fn server(&self) -> Vec<KeyValue> {
        let Some(url) = self.record.model.base_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()) else {
            return Vec::new();
        };
        let mut server = Vec::new();
        if let Some(host) = url.host_str() {
            server.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(port) = url.port_or_known_default() {
            server.push(KeyValue::new("server.port", i64::from(port)));
        }
        server
    }

    /// An `execute_tool {tool}` span; its arguments and result with `content`.
    fn tool(&self, call: &ToolCallRecord, turn: usize, content: bool) -> usize {
        let started = call.started_at.unwrap_or(self.record.started_at);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", call.name.clone()),
            KeyValue::new("gen_ai.tool.call.id", call.id.clone()),
            KeyValue::new("gen_ai.tool.type", "function"),
            KeyValue::new("runner.turn", int(turn)),
        ];
        if let Some(source) = call.source {
            attributes.push(KeyValue::new("runner.tool.source", source.as_str()));
        }
        if call.error.is_some() {
            // A call of a tool that was not offered has no source.
            let kind = if call.source.is_none() { "unknown_tool" } else { "tool_error" };
            attributes.push(KeyValue::new("error.type", kind));
        }
        if content {
            attributes.push(KeyValue::new("gen_ai.tool.call.arguments", call.arguments.to_string()));
            let result = match &call.result {
                Some(Json::String(text)) => Some(text.clone()),
                Some(value) => Some(value.to_string()),
                None => None,
            };
            if let Some(result) = result {
                attributes.push(KeyValue::new("gen_ai.tool.call.result", result));
            }
        }
        let times = (started, call.ended_at().unwrap_or(started));
        self.child(format!("execute_tool {}", call.name), SpanKind::Internal, times, attributes, call.error.as_ref())
    }

    /// A check as a `gen_ai.evaluation.result` event on the root span, at `at`. Its
    /// explanation is runner's sentence on the outcome, which may name a call's arguments.
    fn evaluation(&self, check: &CheckRecord, at: DateTime<Utc>, turn: Option<usize>) {
        let mut attributes = vec![
            KeyValue::new("gen_ai.evaluation.name", check.check.as_str()),
            KeyValue::new("gen_ai.evaluation.score.label", if check.passed { "pass" } else { "fail" }),
            KeyValue::new("gen_ai.evaluation.score.value", if check.passed { 1.0 } else { 0.0 }),
            KeyValue::new("gen_ai.evaluation.explanation", check.detail.clone()),
        ];
        if let Some(turn) = turn.and_then(|t| i64::try_from(t).ok()) {
            attributes.push(KeyValue::new("runner.turn", turn));
        }
        self.cx.span().add_event_with_timestamp("gen_ai.evaluation.result", at.into(), attributes);
    }
}

/// `gen_ai.provider.name`: the conventions' name for the providers they list, runner's own
/// name for the others.
fn provider_name(spec: &ModelSpec) -> String {
    match spec.provider.as_str() {
        "azure" => "azure.ai.openai",
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        other => other,
    }
    .to_owned()
}

/// A count as an attribute's integer (saturating: OTLP integers are signed).
fn int(count: impl TryInto<i64>) -> i64 {
    count.try_into().unwrap_or(i64::MAX)
}

/// `error.type` of a failed request: the HTTP status the server answered with, `not_cached`
/// for a replay miss, else `_OTHER` (a time-out, a refused connection, a body that does not
/// parse: the span's status says which).
fn request_error_type(request: &RequestRecord) -> Option<String> {
    request.error.as_ref()?;
    if request.cache == CacheUse::Miss {
        return Some("not_cached".to_owned());
    }
    match request.attempts.last().and_then(|a| a.status).filter(|s| *s >= 400) {
        Some(status) => Some(status.to_string()),
        None => Some("_OTHER".to_owned()),
    }
}

/// The input and output messages of each answered request of the model under test, in
/// order, as `gen_ai.input.messages` / `gen_ai.output.messages` JSON: the answer is the
/// record's next assistant message, what came before it is what was sent. Empty when the
/// conversation does not hold one assistant message per answer (an agent program that kept
/// its own history): nothing is exported rather than the wrong messages.
fn contents(record: &RunRecord) -> Vec<Option<(String, String)>> {
    let answered: Vec<&RequestRecord> =
        record.turns.iter().flat_map(|t| &t.requests).filter(|r| r.error.is_none()).collect();
    let replies: Vec<usize> = record
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m, Message::Assistant { .. }))
        .map(|(i, _)| i)
        .collect();
    if replies.len() != answered.len() {
        return Vec::new();
    }
    replies
        .iter()
        .zip(answered)
        .map(|(&at, request)| {
            let input: Vec<Json> = record.messages[..at].iter().map(|m| semantic(m, None)).collect();
            let output = [semantic(&record.messages[at], request.finish_reason.as_deref())];
            Some((Json::Array(input).to_string(), json!(output).to_string()))
        })
        .collect()
}

/// A message in the conventions' shape: a role and its parts.
fn semantic(message: &Message, finish_reason: Option<&str>) -> Json {
    let text = |content: &str| json!({"type": "text", "content": content});
    let mut entry = match message {
        Message::System { content } => json!({"role": "system", "parts": [text(content)]}),
        Message::User { content } => json!({"role": "user", "parts": [text(content)]}),
        Message::Assistant { content, tool_calls } => {
            let mut parts: Vec<Json> = content.iter().filter(|c| !c.is_empty()).map(|c| text(c)).collect();
            for call in tool_calls {
                let arguments = serde_json::from_str::<Json>(&call.function.arguments)
                    .unwrap_or_else(|_| Json::String(call.function.arguments.clone()));
                parts.push(
                    json!({"type": "tool_call", "id": call.id, "name": call.function.name, "arguments": arguments}),
                );
            }
            json!({"role": "assistant", "parts": parts})
        }
        Message::Tool { tool_call_id, content } => {
            json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": tool_call_id, "response": content}]})
        }
    };
    if let Some(reason) = finish_reason {
        entry["finish_reason"] = Json::String(reason.to_owned());
    }
    entry
}
