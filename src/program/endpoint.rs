//! The batch's Chat Completions endpoint: one HTTP server on 127.0.0.1 that every agent
//! program calls its model through. A request's token (its `Authorization: Bearer ...`) names
//! the run it belongs to; it is answered by that run's model under test through runner's own
//! provider stack (the request cache, retries, the per-endpoint limits, the real key), and
//! recorded as a request of the run's current turn.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::wire::{self, ChatRequest, Header};
use crate::agent::record_exchange;
use crate::message::{Message, ToolCall};
use crate::provider::cache::Cached;
use crate::provider::{Completion, CompletionRequest, Provider, ProviderError, Target};
use crate::record::{RequestRecord, ToolCallRecord, ToolSource};
use crate::secret::Secrets;
use crate::usage::Usage;

/// The largest request body taken: 32 MiB (a long conversation, never a file upload).
const MAX_BODY: usize = 32 << 20;

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Links = Mutex<HashMap<String, Arc<RunLink>>>;

/// The batch's endpoint; it stops serving when dropped.
pub(crate) struct Endpoint {
    base_url: String,
    links: Arc<Links>,
    accept: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Starts serving on a free port of 127.0.0.1.
    pub(crate) async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let links: Arc<Links> = Arc::default();
        let accept = tokio::spawn(accept(listener, links.clone()));
        Ok(Self { base_url, links, accept })
    }

    /// `http://127.0.0.1:PORT/v1`: what an agent gets as `OPENAI_BASE_URL`.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves `link`'s run under a token of its own until the returned value is dropped.
    pub(crate) fn open(&self, link: RunLink) -> Opened {
        let token = format!(
            "runner-run-{:016x}{:016x}",
            crate::rng::random_seed(),
            crate::rng::mix64(crate::rng::random_seed() ^ link.serial)
        );
        let link = Arc::new(link);
        self.links.lock().unwrap_or_else(PoisonError::into_inner).insert(token.clone(), link.clone());
        Opened { token, link, links: self.links.clone() }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A run the endpoint serves; dropping it ends that (its token then gets 401).
pub(crate) struct Opened {
    pub token: String,
    pub link: Arc<RunLink>,
    links: Arc<Links>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.links.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.token);
    }
}

/// One run as the endpoint sees it: the model that answers it and what its current turn has
/// asked so far.
pub(crate) struct RunLink {
    pub target: Arc<Target>,
    /// Part of a request's cache key (`--repeat` > 1).
    pub repetition: Option<u32>,
    /// Sent as the sampling seed where a request sets none (`--seed`).
    pub sampling_seed: Option<u64>,
    /// Redacted from the tool results the agent sends back.
    pub secrets: Secrets,
    /// Tells this run's generated call ids (and tokens) from every other's.
    pub serial: u64,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    turn: TurnLog,
    /// Calls the model asked for whose result has not come back: id -> (index in the turn's
    /// calls, when it was asked).
    pending: HashMap<String, (usize, Instant)>,
    /// Calls named so far (for ids the model did not give).
    named: u64,
    /// Requests so far (their response ids).
    responses: u64,
}

/// What the agent's requests did during one turn.
#[derive(Debug, Default)]
pub(crate) struct TurnLog {
    pub requests: Vec<RequestRecord>,
    /// The calls the model asked for, with the results the agent sent back.
    pub tool_calls: Vec<ToolCallRecord>,
    /// The model's tool-calling messages and the agent's results, in order.
    pub messages: Vec<Message>,
}

impl RunLink {
    pub(crate) fn new(
        target: Arc<Target>,
        repetition: Option<u32>,
        sampling_seed: Option<u64>,
        secrets: Secrets,
        serial: u64,
    ) -> Self {
        Self { target, repetition, sampling_seed, secrets, serial, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The turn so far, handed over as it ends; calls whose result never came back say so.
    pub(crate) fn take_turn(&self) -> TurnLog {
        let mut state = self.state();
        let pending: Vec<usize> = state.pending.drain().map(|(_, (index, _))| index).collect();
        let mut turn = std::mem::take(&mut state.turn);
        for index in pending {
            turn.tool_calls[index].error = Some("the agent sent no result back for this call".to_owned());
        }
        turn
    }

    /// A request arrived: the results it carries for calls asked before are theirs.
    fn results_arrived(&self, messages: &[Message]) {
        let mut state = self.state();
        for message in messages {
            let Message::Tool { tool_call_id, content } = message else { continue };
            let Some((index, asked)) = state.pending.remove(tool_call_id) else { continue };
            let result = serde_json::from_str(content).unwrap_or_else(|_| Value::String(content.clone()));
            let call = &mut state.turn.tool_calls[index];
            call.result = Some(self.secrets.redact_value(result));
            call.duration_ms = asked.elapsed().as_millis() as u64;
            state.turn.messages.push(message.clone());
        }
    }

    /// A request was answered (or failed): its record joins the turn, and the calls the
    /// model asked for (each given an id when it had none) wait for their results.
    fn answered(&self, record: RequestRecord, completion: Option<&mut Completion>) {
        let mut state = self.state();
        state.turn.requests.push(record);
        if let Some(completion) = completion.filter(|c| !c.tool_calls.is_empty()) {
            for call in &mut completion.tool_calls {
                if call.id.is_empty() {
                    state.named += 1;
                    call.id = wire::call_id(self.serial, state.named);
                }
                let index = state.turn.tool_calls.len();
                state.turn.tool_calls.push(ToolCallRecord {
                    id: call.id.clone(),
                    name: call.function.name.clone(),
                    listed_as: None,
                    arguments: wire::arguments(&call.function),
                    result: None,
                    error: None,
                    started_at: Some(chrono::Utc::now()),
                    duration_ms: 0,
                    pinned: false,
                    source: Some(ToolSource::Agent),
                });
                state.pending.insert(call.id.clone(), (index, Instant::now()));
            }
            let calls: Vec<ToolCall> = completion.tool_calls.clone();
            state.turn.messages.push(Message::Assistant { content: completion.content.clone(), tool_calls: calls });
        }
    }

    /// The id of the response to a request just arrived: unique within the batch.
    fn response_id(&self) -> String {
        let mut state = self.state();
        state.responses += 1;
        format!("chatcmpl-runner-{:x}-{}", self.serial, state.responses)
    }
}

async fn accept(listener: TcpListener, links: Arc<Links>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::debug!(%err, "the agents' endpoint could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let links = links.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| serve(links.clone(), request));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

async fn serve(links: Arc<Links>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let link = token.and_then(|token| links.lock().unwrap_or_else(PoisonError::into_inner).get(token).cloned());
    let path = request.uri().path().trim_end_matches('/');
    let known = matches!(path, "/v1/models" | "/v1/chat/completions");
    let Some(link) = link.filter(|_| known) else {
        return Ok(if known {
            refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "this endpoint answers only the agent programs runner starts, each with its own OPENAI_API_KEY",
            )
        } else {
            refuse(StatusCode::NOT_FOUND, "not_found", "runner serves POST /v1/chat/completions and GET /v1/models")
        });
    };
    Ok(match (request.method(), path) {
        (&Method::GET, "/v1/models") => {
            let model = &link.target.spec.name;
            json(
                StatusCode::OK,
                &serde_json::json!({"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "runner"}]}),
            )
        }
        (&Method::POST, "/v1/chat/completions") => chat(link, request.into_body()).await,
        _ => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST for chat completions, GET for models",
        ),
    })
}

/// What the model's side of one request sends the response: its text as it arrives, then
/// the completion (or why there is none) with its usage.
enum Event {
    Text(String),
    Done(Box<Result<(Completion, Usage), ProviderError>>),
}

async fn chat(link: Arc<RunLink>, body: Incoming) -> Response<Body> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", &err.to_string()),
    };
    let request: ChatRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(err) => {
            let why = format!("expected a Chat Completions request: {err}");
            return refuse(StatusCode::BAD_REQUEST, "invalid_request_error", &why);
        }
    };
    let requested = request.model.clone();
    let asked = match request.asked() {
        Ok(asked) => asked,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "invalid_request_error", &why),
    };
    link.results_arrived(&asked.messages);
    let (stream, include_usage) = (asked.stream, asked.include_usage);
    let (events, mut received) = mpsc::unbounded_channel();
    // Its own task: a request the agent gives up on is still answered and recorded.
    tokio::spawn(answer(link.clone(), asked, requested, events));
    let (id, created, model) = (link.response_id(), chrono::Utc::now().timestamp(), link.target.spec.name.clone());
    let first = received.recv().await;
    match first {
        None => refuse(StatusCode::BAD_GATEWAY, "runner_error", "the request ended without an answer"),
        Some(Event::Done(done)) if done.is_err() || !stream => match *done {
            Err(err) => failed(&err),
            Ok((completion, usage)) => {
                json(StatusCode::OK, &wire::response(&Header { id: &id, created, model: &model }, &completion, &usage))
            }
        },
        Some(first) => {
            // A stream: the text as it arrives, then the calls, the finish and the usage.
            let (frames, body) = mpsc::unbounded_channel::<Bytes>();
            tokio::spawn(async move {
                let head = Header { id: &id, created, model: &model };
                let send = |value: &Value| frames.send(Bytes::from(format!("data: {value}\n\n"))).is_ok();
                send(&wire::chunk(&head, serde_json::json!({"role": "assistant", "content": ""}), None));
                let mut event = Some(first);
                while let Some(next) = event {
                    match next {
                        Event::Text(text) => {
                            send(&wire::chunk(&head, serde_json::json!({"content": text}), None));
                        }
                        Event::Done(done) => {
                            match *done {
                                Ok((completion, usage)) => {
                                    for chunk in wire::closing_chunks(&head, &completion, &usage, include_usage) {
                                        send(&chunk);
                                    }
                                    let _ = frames.send(Bytes::from_static(b"data: [DONE]\n\n"));
                                }
                                Err(err) => {
                                    send(&wire::error(&err.to_string(), "runner_error"));
                                }
                            }
                            return;
                        }
                    }
                    event = received.recv().await;
                }
            });
            let frames = futures::stream::unfold(body, |mut body| async move {
                body.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), body))
            });
            let mut response = Response::new(UnsyncBoxBody::new(StreamBody::new(frames)));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert("cache-control", HeaderValue::from_static("no-cache"));
            response
        }
    }
}

/// Asks the run's model under test, records the exchange in the run's turn, and sends the
/// outcome to `events`.
async fn answer(
    link: Arc<RunLink>,
    asked: super::wire::Asked,
    requested: Option<String>,
    events: mpsc::UnboundedSender<Event>,
) {
    let provider = Cached::new(&link.target, link.repetition);
    let sampling = crate::model::Sampling { seed: asked.sampling.seed.or(link.sampling_seed), ..asked.sampling };
    let shown = Mutex::new(String::new());
    let on_text = |text: &str| {
        shown.lock().unwrap_or_else(PoisonError::into_inner).push_str(text);
        let _ = events.send(Event::Text(text.to_owned()));
    };
    let request = CompletionRequest {
        model: &link.target.spec.name,
        messages: &asked.messages,
        tools: &asked.tools,
        sampling: &sampling,
        tool_choice: asked.forced.as_deref(),
        on_text: asked.stream.then_some(&on_text as crate::provider::TextSink<'_>),
    };
    let sent = chrono::Utc::now();
    let exchange = provider.complete(request).await;
    let partial = std::mem::take(&mut *shown.lock().unwrap_or_else(PoisonError::into_inner));
    let price = link.target.price.as_ref().map(|p| &p.price);
    let (result, mut record) = record_exchange(exchange, sent, &asked.messages, price, partial);
    record.requested_model = requested;
    let usage = record.usage;
    let outcome = match result {
        Ok(mut completion) => {
            link.answered(record, Some(&mut completion));
            Ok((completion, usage))
        }
        Err(err) => {
            link.answered(record, None);
            Err(err)
        }
    };
    let _ = events.send(Event::Done(Box::new(outcome)));
}

/// The error response for a request the model under test could not answer.
fn failed(err: &ProviderError) -> Response<Body> {
    let status = match err {
        ProviderError::Status { status, .. } => StatusCode::from_u16(*status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY),
        ProviderError::Timeout(_) | ProviderError::Stalled(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    refuse(status, "runner_error", &format!("the model under test could not answer: {err}"))
}

fn refuse(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    json(status, &wire::error(message, kind))
}

fn json(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(UnsyncBoxBody::new(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
