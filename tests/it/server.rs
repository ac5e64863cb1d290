//! A real HTTP/1.1 server on 127.0.0.1 that answers from a handler: the tests' stand-in for
//! a Chat Completions API (and for the weather service). It records every request it gets
//! and how many were in flight at once.
#![allow(unreachable_pub)] // also compiled into the benchmarks
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The last message of a Chat Completions request.
    pub fn last_message(&self) -> Value {
        self.json()["messages"].as_array().and_then(|m| m.last().cloned()).unwrap_or(Value::Null)
    }

    /// The first user message of a Chat Completions request.
    pub fn first_user(&self) -> String {
        let body = self.json();
        body["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// The last user message of a Chat Completions request.
    pub fn last_user(&self) -> String {
        let body = self.json();
        body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.path.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the server sends back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Waited before answering.
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
    pub cut: Cut,
}

/// How a reply is broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Sent whole.
    None,
    /// The connection is closed without a response.
    Drop,
    /// The head promises the whole body; half of it is sent, then the connection closes.
    Truncate,
    /// The body is sent in this many pieces, one every `delay` (a stream that keeps coming).
    Drip(usize),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::bytes(status, body.to_string().into_bytes())
    }

    pub fn bytes(status: u16, body: Vec<u8>) -> Self {
        Self { status, body, delay: Duration::ZERO, headers: Vec::new(), cut: Cut::None }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn cut(mut self, cut: Cut) -> Self {
        self.cut = cut;
        self
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct State {
    handler: Handler,
    requests: Mutex<Vec<Request>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    record: bool,
}

/// The server; it stops when dropped.
pub struct MockServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Starts on a free port of 127.0.0.1, answering every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(handler, true)
    }

    /// Like [`MockServer::start`]; `record: false` keeps no request (for long benchmarks).
    pub fn start_with(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static, record: bool) -> Self {
        let state = Arc::new(State {
            handler: Arc::new(handler),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            record,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        tokio::spawn(serve(stream, thread_state.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = rx => {}
                }
            });
        });
        Self { addr, state, shutdown: Some(tx), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The Chat Completions requests received, as JSON bodies.
    pub fn chat_bodies(&self) -> Vec<Value> {
        self.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).map(Request::json).collect()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else { return };
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let reply = (state.handler)(&request);
        if state.record {
            state.requests.lock().unwrap().push(request);
        }
        if !reply.delay.is_zero() && !matches!(reply.cut, Cut::Drip(_)) {
            tokio::time::sleep(reply.delay).await;
        }
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if reply.cut == Cut::Drop {
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reply.status,
            if reply.status < 400 { "OK" } else { "Error" },
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        // One write: a head and body sent apart meet Nagle's algorithm and a delayed ACK.
        let mut response = head.into_bytes();
        if reply.cut == Cut::Truncate {
            response.extend_from_slice(&reply.body[..reply.body.len() / 2]);
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
            return;
        }
        if let Cut::Drip(pieces) = reply.cut {
            if stream.write_all(&response).await.is_err() {
                return;
            }
            for piece in reply.body.chunks(reply.body.len().div_ceil(pieces.max(1)).max(1)) {
                tokio::time::sleep(reply.delay).await;
                if stream.write_all(piece).await.is_err() {
                    return;
                }
            }
            continue;
        }
        response.extend_from_slice(&reply.body);
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(Request { method, path, headers, body })
}

/// A Chat Completions reply with text.
pub fn text(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        }),
    )
}

/// A Chat Completions reply asking for tool calls: (id, name, arguments).
pub fn tool_calls(calls: &[(&str, &str, Value)], prompt_tokens: u64, completion_tokens: u64) -> Reply {
    let calls: Vec<Value> =
        calls.iter().map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})).collect();
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        }),
    )
}

/// An API error in OpenAI's shape.
pub fn api_error(status: u16, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"message": message, "type": "server_error", "code": null}}))
}

/// The same reply as a Chat Completions event stream when the request asked for one: text
/// in pieces, each tool call as an id-and-name piece then argument fragments, usage in a
/// last chunk without choices, then `[DONE]`.
pub fn as_stream(request: &Request, reply: Reply) -> Reply {
    if request.json()["stream"] != true || reply.status != 200 {
        return reply;
    }
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let message = &body["choices"][0]["message"];
    let mut chunks = Vec::new();
    let chunk =
        |delta: Value, finish: Value| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    chunks.push(chunk(json!({"role": "assistant"}), Value::Null));
    if let Some(text) = message["content"].as_str() {
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(4) {
            chunks.push(chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null));
        }
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        for (index, call) in calls.iter().enumerate() {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]}),
                Value::Null,
            ));
            let arguments: Vec<char> = call["function"]["arguments"].as_str().unwrap().chars().collect();
            for piece in arguments.chunks(5) {
                chunks.push(chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": piece.iter().collect::<String>()}}]}), Value::Null));
            }
        }
    }
    chunks.push(chunk(json!({}), body["choices"][0]["finish_reason"].clone()));
    chunks.push(json!({"choices": [], "usage": body["usage"]}));
    let mut text = String::new();
    for chunk in chunks {
        text.push_str(&format!("data: {chunk}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    Reply::bytes(200, text.into_bytes())
}
