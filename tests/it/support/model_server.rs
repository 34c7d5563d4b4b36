//! A scripted model for the real Codex CLI: a small HTTP/1.1 server on 127.0.0.1 that speaks
//! the OpenAI Responses API (`POST /v1/responses`, answered with server-sent events) the way
//! Codex 0.169 reads it, so tests run real Codex sessions with no network and no API key.
//!
//! A test scripts the model with a function that sees each request and returns the model's next
//! turn: assistant text, function calls, `tool_search` calls. Every request is recorded, so the
//! test can assert on exactly what the model was shown (the skill listing, the tools that
//! `tool_search` loaded, the tool results). Requests the script does not answer get a short
//! final message, so Codex always ends its turn instead of waiting on us.
//!
//! Codex 0.169 sends plain JSON to a provider without OpenAI auth (zstd request compression is
//! only for ChatGPT-authenticated OpenAI traffic); a compressed body is refused with 415 and
//! recorded as a problem, so such a change shows up as a clear test failure.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the model says in one turn, in order.
#[derive(Clone, Debug)]
pub enum Output {
    /// An assistant message (`output_text`).
    Text(String),
    /// A function call; MCP tools are in a namespace such as `mcp__baton`.
    FunctionCall { call_id: String, namespace: Option<String>, name: String, arguments: Value },
    /// A call of Codex's client-side `tool_search` (a `tool_search_call` item, not a function).
    ToolSearch { call_id: String, query: String, limit: Option<u64> },
}

impl Output {
    pub fn text(text: &str) -> Output {
        Output::Text(text.to_string())
    }

    /// A call of MCP server `server`'s tool, named the way Codex names it for the model.
    pub fn mcp_call(call_id: &str, server: &str, tool: &str, arguments: Value) -> Output {
        Output::FunctionCall { call_id: call_id.to_string(), namespace: Some(format!("mcp__{server}")), name: tool.to_string(), arguments }
    }

    pub fn tool_search(call_id: &str, query: &str, limit: Option<u64>) -> Output {
        Output::ToolSearch { call_id: call_id.to_string(), query: query.to_string(), limit }
    }

    /// The Responses API output item for this output.
    fn item(&self, response: usize, index: usize) -> Value {
        match self {
            Output::Text(text) => json!({
                "type": "message",
                "id": format!("msg_{response}_{index}"),
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }),
            Output::FunctionCall { call_id, namespace, name, arguments } => {
                let mut item = json!({
                    "type": "function_call",
                    "id": format!("fc_{response}_{index}"),
                    "call_id": call_id,
                    "name": name,
                    "arguments": arguments.to_string(),
                    "status": "completed",
                });
                if let Some(namespace) = namespace {
                    item["namespace"] = json!(namespace);
                }
                item
            }
            Output::ToolSearch { call_id, query, limit } => {
                let mut arguments = json!({"query": query});
                if let Some(limit) = limit {
                    arguments["limit"] = json!(limit);
                }
                json!({
                    "type": "tool_search_call",
                    "id": format!("tsc_{response}_{index}"),
                    "call_id": call_id,
                    "execution": "client",
                    "status": "completed",
                    "arguments": arguments,
                })
            }
        }
    }
}

/// What an unscripted request gets: a final answer, so the turn ends.
pub const UNSCRIPTED_REPLY: &str = "Done (the scripted model has nothing more to say).";

/// One HTTP request Codex made, with its JSON body (`Value::Null` when there was none).
#[derive(Clone, Debug)]
pub struct ModelRequest {
    /// Position among all requests this server received, from 0.
    pub index: usize,
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl ModelRequest {
    /// A Responses API call (a model turn), as opposed to any other endpoint.
    pub fn is_turn(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/responses")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The Codex thread this turn belongs to: 0.169 sends it as the `thread-id` header
    /// (a sub-agent has its own; `session-id` stays the root thread's).
    pub fn thread_id(&self) -> Option<&str> {
        self.header("thread-id")
    }

    /// The `input` items: conversation so far, tool calls and their outputs.
    pub fn input(&self) -> &[Value] {
        self.body["input"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// The `tools` offered to the model directly (deferred tools are not here).
    pub fn tools(&self) -> &[Value] {
        self.body["tools"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// The output item Codex sent back for `call_id` (`function_call_output`,
    /// `tool_search_output`, ...).
    pub fn output_for(&self, call_id: &str) -> Option<&Value> {
        self.input().iter().find(|item| item["call_id"] == call_id && item["type"].as_str().is_some_and(|t| t.ends_with("_output")))
    }

    /// All text of the messages in the input (developer and user), e.g. to find the skill listing.
    pub fn message_text(&self) -> String {
        let messages = self.input().iter().filter(|item| item["type"] == "message");
        let parts = messages.flat_map(|m| m["content"].as_array().into_iter().flatten()).filter_map(|c| c["text"].as_str());
        parts.collect::<Vec<_>>().join("\n")
    }
}

impl ModelRequest {
    /// The structured result of MCP call `call_id` as this request shows it to the model;
    /// panics (a script failure, recorded as a problem) when it is absent or not JSON.
    pub fn result_of(&self, call_id: &str) -> Value {
        let item = self.output_for(call_id).unwrap_or_else(|| panic!("request {} carries no output of `{call_id}`", self.index));
        structured_in(&output_text(item))
    }
}

/// The JSON a successful MCP call shows the model: Codex sends `structuredContent` (not the text
/// content) after a "Wall time: ...\nOutput:\n" preamble.
pub fn structured_in(output: &str) -> Value {
    let json = output.split_once("Output:\n").map(|(_, json)| json).unwrap_or_else(|| panic!("no `Output:` in the tool output: {output}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("the tool output is not the structured JSON ({e}): {output}"))
}

/// The text the model sees as a function call's output: Codex sends either a string or a list
/// of content items.
pub fn output_text(output_item: &Value) -> String {
    match &output_item["output"] {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().filter_map(|i| i["text"].as_str()).collect::<Vec<_>>().join("\n"),
        other => other.to_string(),
    }
}

/// Decides the model's next turn; `None` means [`UNSCRIPTED_REPLY`].
pub type Script = Box<dyn FnMut(&ModelRequest) -> Option<Vec<Output>> + Send>;

/// A script that plays `turns` in order, one per model turn, then falls back to the default.
pub fn in_order(turns: Vec<Vec<Output>>) -> Script {
    let mut turns = turns.into_iter();
    Box::new(move |request: &ModelRequest| if request.is_turn() { turns.next() } else { None })
}

/// One model turn of a [`steps`] script, decided from the request (the conversation so far,
/// with the results of earlier calls), as a model reads its context.
pub type Step = Box<dyn FnOnce(&ModelRequest) -> Vec<Output> + Send>;

pub fn step(decide: impl FnOnce(&ModelRequest) -> Vec<Output> + Send + 'static) -> Step {
    Box::new(decide)
}

/// A script that plays `steps` in order, one per model turn, each reading what the model was
/// shown (e.g. the run_id and version of the last brief), then falls back to the default.
pub fn steps(steps: Vec<Step>) -> Script {
    let mut steps = steps.into_iter();
    Box::new(move |request: &ModelRequest| if request.is_turn() { steps.next().map(|decide| decide(request)) } else { None })
}

/// A script for several Codex threads at once (a lead and the sub-agents it spawns): each
/// thread plays its own steps, in order, chosen by `route` from the thread's first request
/// (e.g. the task message a sub-agent was spawned with). Threads run concurrently; each
/// request is answered from its own thread's steps, whatever the others are doing.
pub fn by_thread(mut route: impl FnMut(&ModelRequest) -> Vec<Step> + Send + 'static) -> Script {
    let mut threads: std::collections::HashMap<String, std::collections::VecDeque<Step>> = std::collections::HashMap::new();
    Box::new(move |request: &ModelRequest| {
        if !request.is_turn() {
            return None;
        }
        let thread = request.thread_id().unwrap_or("(no thread id)").to_string();
        let steps = threads.entry(thread).or_insert_with(|| route(request).into());
        steps.pop_front().map(|decide| decide(request))
    })
}

/// Everything the connection threads share.
struct Shared {
    script: Mutex<Script>,
    requests: Mutex<Vec<ModelRequest>>,
    /// Protocol trouble (bad framing, compressed or non-JSON bodies): a test should see none.
    problems: Mutex<Vec<String>>,
    stopping: AtomicBool,
    /// Tokens every turn reports in its usage (0 unless a test sets it).
    usage_per_turn: AtomicU64,
}

/// The running server; stops accepting when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Largest request head or body accepted: far above anything Codex sends, low enough that a
/// framing bug fails fast instead of eating memory.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long an idle keep-alive connection may stay silent before its thread gives up, so no
/// thread outlives a test by much even if Codex leaves a pooled connection open.
const IDLE: Duration = Duration::from_secs(120);

impl ModelServer {
    pub fn start(script: Script) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted model server on 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            requests: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            usage_per_turn: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || serve_connection(stream, &shared));
            }
        });
        ModelServer { addr, shared, acceptor: Some(acceptor) }
    }

    /// The `base_url` for Codex's provider config.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ModelRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Only the model turns (`POST /v1/responses`).
    pub fn turns(&self) -> Vec<ModelRequest> {
        self.requests().into_iter().filter(ModelRequest::is_turn).collect()
    }

    /// Report `tokens` of usage (all output tokens) with every turn from now on.
    pub fn set_usage_per_turn(&self, tokens: u64) {
        self.shared.usage_per_turn.store(tokens, Ordering::SeqCst);
    }

    pub fn problems(&self) -> Vec<String> {
        lock(&self.shared.problems).clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and ends.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A poisoned lock only means another connection thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serve requests on one keep-alive connection until the peer closes it or breaks framing.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, &mut writer) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(problem) => {
                lock(&shared.problems).push(problem.clone());
                let _ = respond(&mut writer, 400, "application/json", json!({"error": {"message": problem}}).to_string().as_bytes());
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        };
        let close = request.close;
        let (status, content_type, body) = answer(request, shared);
        if respond(&mut writer, status, content_type, body.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// A request as read off the wire, before it is recorded.
struct RawRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

/// Read one request; `Ok(None)` on a clean end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> Result<Option<RawRequest>, String> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = reader.read_until(b'\n', &mut line).map_err(|e| format!("reading the request head: {e}"))?;
        if read == 0 {
            return if head.is_empty() { Ok(None) } else { Err("connection closed inside a request head".to_string()) };
        }
        if head.is_empty() && (line == b"\r\n" || line == b"\n") {
            continue; // Stray line breaks between requests are allowed (RFC 9112, 2.2).
        }
        let end = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(format!("request head larger than {MAX_HEAD} bytes"));
        }
        if end {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_lowercase());
    if header("expect").is_some_and(|v| v == "100-continue") {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|e| format!("writing 100 Continue: {e}"))?;
    }
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let length = header("content-length").map(|v| v.parse::<usize>().map_err(|_| format!("bad content-length {v:?}"))).transpose()?;
        let length = length.unwrap_or(0);
        if length > MAX_BODY {
            return Err(format!("request body of {length} bytes is larger than {MAX_BODY}"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|e| format!("reading a {length}-byte body: {e}"))?;
        body
    };
    let close = match header("connection") {
        Some(v) => v.contains("close"),
        None => version.eq_ignore_ascii_case("HTTP/1.0"),
    };
    Ok(Some(RawRequest { method: method.to_string(), path: path.to_string(), headers, body, close }))
}

/// A `transfer-encoding: chunked` body (trailers are read and ignored).
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).map_err(|e| format!("reading a chunk size: {e}"))?;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                let read = reader.read_line(&mut trailer).map_err(|e| format!("reading chunk trailers: {e}"))?;
                if read == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(format!("chunked request body larger than {MAX_BODY} bytes"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(|e| format!("reading a {size}-byte chunk: {e}"))?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf).map_err(|e| format!("reading a chunk's line end: {e}"))?;
    }
}

/// Record the request and work out the answer: (status, content type, body).
fn answer(raw: RawRequest, shared: &Shared) -> (u16, &'static str, String) {
    let encoding = raw.headers.iter().find(|(n, _)| n == "content-encoding").map(|(_, v)| v.to_ascii_lowercase());
    let (body, problem) = match encoding.as_deref() {
        Some(encoding) if encoding != "identity" => (
            Value::Null,
            Some((415, format!("{} {} has a {encoding}-compressed body, which this server does not decode", raw.method, raw.path))),
        ),
        _ if raw.body.is_empty() => (Value::Null, None),
        _ => match serde_json::from_slice(&raw.body) {
            Ok(body) => (body, None),
            Err(e) => (Value::Null, Some((400, format!("{} {} has a body that is not JSON: {e}", raw.method, raw.path)))),
        },
    };
    let request = {
        let mut requests = lock(&shared.requests);
        let request = ModelRequest { index: requests.len(), method: raw.method, path: raw.path, headers: raw.headers, body };
        requests.push(request.clone());
        request
    };
    if let Some((status, problem)) = problem {
        lock(&shared.problems).push(problem.clone());
        return (status, "application/json", json!({"error": {"message": problem}}).to_string());
    }
    if !request.is_turn() {
        return (404, "application/json", json!({"error": {"message": format!("no such endpoint: {}", request.path)}}).to_string());
    }
    // A script that panics (e.g. on a tool result it cannot read) is recorded as a problem and
    // the turn ends with a message, so Codex finishes and the test reports the problem.
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (lock(&shared.script))(&request)));
    let outputs = match decided {
        Ok(outputs) => outputs.unwrap_or_else(|| vec![Output::text(UNSCRIPTED_REPLY)]),
        Err(panic) => {
            let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            lock(&shared.problems).push(format!("the script failed at request {}: {}", request.index, why.unwrap_or_default()));
            vec![Output::text("The scripted model failed; see the test's problems.")]
        }
    };
    (200, "text/event-stream", sse_turn(request.index, &outputs, shared.usage_per_turn.load(Ordering::SeqCst)))
}

/// One model turn as the Responses API streams it: `response.created`, each item `added`
/// (text also as an `output_text.delta`) and `done`, then `response.completed` with usage.
fn sse_turn(response: usize, outputs: &[Output], tokens: u64) -> String {
    let id = format!("resp_{response}");
    let mut events = vec![json!({"type": "response.created", "response": {"id": id, "status": "in_progress"}})];
    for (index, output) in outputs.iter().enumerate() {
        let item = output.item(response, index);
        events.push(json!({"type": "response.output_item.added", "output_index": index, "item": item}));
        if let Output::Text(text) = output {
            events.push(json!({
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "delta": text,
            }));
        }
        events.push(json!({"type": "response.output_item.done", "output_index": index, "item": item}));
    }
    let usage = json!({
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens,
    });
    events.push(json!({"type": "response.completed", "response": {"id": id, "status": "completed", "usage": usage}}));
    events.iter().map(|event| format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap_or_default())).collect()
}

fn respond(writer: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        415 => "Unsupported Media Type",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()
}
