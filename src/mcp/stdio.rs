//! The MCP stdio transport, hardened: every line the client sends gets exactly one answer
//! (notifications and responses none), whatever it holds.
//!
//! rmcp's own stdio transport drops what it cannot parse with only a log line: garbage,
//! invalid UTF-8, JSON nested deeper than serde_json's recursion limit (128) and lines over
//! its 16 MiB cap. A client waiting on such a request would wait forever. This transport
//! reads stdin itself, line by line with a byte cap, and answers those lines with JSON-RPC
//! errors: -32700 (parse error) for invalid UTF-8, invalid JSON and over-deep JSON, -32600
//! (invalid request) for over-large lines and for JSON that is no valid message. The id of
//! the request is used when it can be read, else `null`. Valid messages go to rmcp as they
//! are. Before `initialize`, notifications and responses are dropped, since rmcp ends the
//! session on anything but a request there.
//!
//! Output goes through one writer task, so rmcp's answers and these never interleave and
//! stdout carries nothing but whole protocol lines.

mod pipe;
mod scan;

use crate::limits::{MAX_ARGUMENT_DEPTH, MAX_MESSAGE_DEPTH, text_depth};
use rmcp::RoleServer;
use rmcp::model::{CallToolRequest, ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, JsonRpcRequest, NumberOrString, ServerResult};
use rmcp::service::TxJsonRpcMessage;
use rmcp::transport::Transport;
use serde_json::{Value, json};
use std::io;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// The largest message accepted, in bytes (as rmcp's default).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// How much of an over-large line is kept to find its id.
const HEAD_BYTES: usize = 64 * 1024;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// A line queued for stdout; `done` learns whether it was written.
struct Outgoing {
    line: Vec<u8>,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// What was read from stdin.
enum Read {
    /// A whole line is in `line`.
    Line,
    /// A line over [`MAX_LINE_BYTES`]: its first bytes and its length.
    TooLarge {
        head: Vec<u8>,
        len: usize,
    },
    Eof,
}

/// State while skipping the rest of an over-large line.
struct Discard {
    head: Vec<u8>,
    len: usize,
}

/// What to do with one line.
enum Verdict {
    Deliver(Box<ClientJsonRpcMessage>),
    Answer(Vec<u8>),
    Ignore,
}

/// The transport: hand it to rmcp's `serve`.
pub struct HardenedStdio<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    discard: Option<Discard>,
    eof: bool,
    out: mpsc::Sender<Outgoing>,
    /// An error answer waiting for room in the output queue.
    pending: Option<Vec<u8>>,
    /// Whether an `initialize` request has been passed on.
    initialized: bool,
}

/// The process's stdin and stdout.
pub fn stdio() -> HardenedStdio<pipe::Stdin> {
    let (reader, writer) = pipe::open();
    HardenedStdio::new(reader, writer)
}

impl<R: AsyncRead + Send + Unpin> HardenedStdio<R> {
    /// Read messages from `reader` and write answers to `writer`. Needs a tokio runtime.
    pub fn new<W: AsyncWrite + Send + Unpin + 'static>(reader: R, writer: W) -> Self {
        let (out, queue) = mpsc::channel(64);
        tokio::spawn(write_lines(writer, queue));
        HardenedStdio {
            reader: BufReader::new(reader),
            line: Vec::new(),
            discard: None,
            eof: false,
            out,
            pending: None,
            initialized: false,
        }
    }

    /// Read one line into `self.line` without letting it grow past the cap. Cancel-safe:
    /// what was read stays in `self` for the next call.
    async fn read_line(&mut self) -> io::Result<Read> {
        loop {
            let (consumed, ended) = {
                let available = self.reader.fill_buf().await?;
                if available.is_empty() {
                    self.eof = true;
                    if let Some(d) = self.discard.take() {
                        return Ok(Read::TooLarge { head: d.head, len: d.len });
                    }
                    // A last line without its newline is still a message.
                    return Ok(if self.line.is_empty() { Read::Eof } else { Read::Line });
                }
                let newline = available.iter().position(|b| *b == b'\n');
                let take = newline.map_or(available.len(), |i| i + 1);
                if let Some(d) = &mut self.discard {
                    d.len += take;
                } else if self.line.len() + take > MAX_LINE_BYTES + 1 {
                    let len = self.line.len() + take;
                    let mut head = std::mem::take(&mut self.line);
                    head.truncate(HEAD_BYTES);
                    head.extend_from_slice(&available[..take.min(HEAD_BYTES - head.len())]);
                    self.discard = Some(Discard { head, len });
                } else {
                    self.line.extend_from_slice(&available[..take]);
                }
                (take, newline.is_some())
            };
            self.reader.consume(consumed);
            if ended {
                return Ok(match self.discard.take() {
                    Some(d) => Read::TooLarge { head: d.head, len: d.len },
                    None => Read::Line,
                });
            }
        }
    }

    /// Decide what to do with the line in `self.line`.
    fn judge(&mut self) -> Verdict {
        let raw = std::mem::take(&mut self.line);
        let verdict = self.judge_line(&raw);
        // Keep the buffer for the next line unless it was a big one.
        self.line = raw;
        self.line.clear();
        if self.line.capacity() > HEAD_BYTES {
            self.line = Vec::new();
        }
        verdict
    }

    fn judge_line(&mut self, raw: &[u8]) -> Verdict {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Verdict::Ignore;
        }
        let text = match std::str::from_utf8(line) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("Parse error: the message is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to());
                return Verdict::Answer(error_line(None, PARSE_ERROR, message, None));
            }
        };
        if text_depth(line, MAX_MESSAGE_DEPTH) > MAX_MESSAGE_DEPTH {
            if !scan::is_valid_json(line) {
                return Verdict::Answer(error_line(None, PARSE_ERROR, "Parse error: the message is not valid JSON".into(), None));
            }
            let top = scan::top_level(line);
            if top.unanswered() {
                tracing::debug!("ignoring an over-deep notification or response");
                return Verdict::Ignore;
            }
            let message = format!(
                "Parse error: the message is nested more than {MAX_MESSAGE_DEPTH} levels deep; the limit is {MAX_MESSAGE_DEPTH} levels for a message and {MAX_ARGUMENT_DEPTH} for one tool argument"
            );
            let data = json!({"limit": MAX_MESSAGE_DEPTH, "argument_limit": MAX_ARGUMENT_DEPTH});
            return Verdict::Answer(error_line(top.id.as_ref(), PARSE_ERROR, message, Some(data)));
        }
        // A well-formed message is parsed once, straight into its type; only a message that
        // fails is read again as plain JSON, to find its id and say what is wrong.
        if let Some(message) = tool_call(text) {
            return self.deliver(message);
        }
        if let Ok(message) = serde_json::from_str::<ClientJsonRpcMessage>(text) {
            return self.deliver(message);
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => return Verdict::Answer(error_line(None, PARSE_ERROR, format!("Parse error: {e}"), None)),
        };
        let (has, id) = (|key: &str| value.get(key).is_some(), value.get("id").cloned());
        // Notifications and responses are never answered, even when malformed.
        let unanswered = (has("method") && !has("id")) || (!has("method") && (has("result") || has("error")));
        match serde_json::from_value::<ClientJsonRpcMessage>(value) {
            Ok(message) => self.deliver(message),
            Err(e) if unanswered => {
                tracing::debug!("ignoring a malformed notification or response: {e}");
                Verdict::Ignore
            }
            Err(e) => Verdict::Answer(error_line(id.as_ref(), INVALID_REQUEST, format!("Invalid Request: {e}"), None)),
        }
    }

    /// Pass a message on; before `initialize`, only requests.
    fn deliver(&mut self, message: ClientJsonRpcMessage) -> Verdict {
        match &message {
            JsonRpcMessage::Request(request) => {
                self.initialized |= matches!(request.request, ClientRequest::InitializeRequest(_));
                Verdict::Deliver(Box::new(message))
            }
            _ if self.initialized => Verdict::Deliver(Box::new(message)),
            _ => {
                tracing::debug!("ignoring a notification or response before initialize");
                Verdict::Ignore
            }
        }
    }
}

impl<R: AsyncRead + Send + Unpin> Transport<RoleServer> for HardenedStdio<R> {
    type Error = io::Error;

    fn send(&mut self, item: TxJsonRpcMessage<RoleServer>) -> impl Future<Output = Result<(), io::Error>> + Send + 'static {
        let out = self.out.clone();
        async move {
            let mut line = encode(&item).map_err(io::Error::other)?;
            line.push(b'\n');
            let (done, written) = oneshot::channel();
            out.send(Outgoing { line, done: Some(done) }).await.map_err(|_| closed())?;
            written.await.map_err(|_| closed())?
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            if self.pending.is_some() {
                // Reserve first: if this future is dropped while waiting, the answer stays.
                let permit = self.out.reserve().await.ok()?;
                permit.send(Outgoing { line: self.pending.take().unwrap_or_default(), done: None });
            }
            if self.eof && self.line.is_empty() {
                return None;
            }
            match self.read_line().await {
                Err(e) => {
                    tracing::error!("cannot read stdin: {e}");
                    return None;
                }
                Ok(Read::Eof) => return None,
                Ok(Read::TooLarge { head, len }) => {
                    let message = format!(
                        "Invalid Request: the message is {len} bytes or more, over the limit of {MAX_LINE_BYTES} bytes (16 MiB) per message; it was not read"
                    );
                    let data = json!({"limit_bytes": MAX_LINE_BYTES});
                    self.pending = Some(error_line(scan::top_level_id(&head).as_ref(), INVALID_REQUEST, message, Some(data)));
                }
                Ok(Read::Line) => match self.judge() {
                    Verdict::Deliver(message) => return Some(*message),
                    Verdict::Answer(line) => self.pending = Some(line),
                    Verdict::Ignore => {}
                },
            }
        }
    }

    async fn close(&mut self) -> Result<(), io::Error> {
        // Wait until everything queued before is written.
        let (done, written) = oneshot::channel();
        if self.out.send(Outgoing { line: Vec::new(), done: Some(done) }).await.is_ok() {
            let _ = written.await;
        }
        Ok(())
    }
}

/// A well-formed `tools/call` request (most of what a client sends), parsed straight into
/// its type: rmcp's decode of a message buffers it and tries each of its 22 request types
/// in turn, 4.0 us a line against 1.8 us this way (issue 22). A line naming
/// `result` or `error` anywhere is left to that decode, which refuses such stray fields on
/// a request; whatever this does not take, it does too.
fn tool_call(text: &str) -> Option<ClientJsonRpcMessage> {
    if !text.contains("\"tools/call\"") || text.contains("\"result\"") || text.contains("\"error\"") {
        return None;
    }
    let call: JsonRpcRequest<CallToolRequest> = serde_json::from_str(text).ok()?;
    Some(JsonRpcMessage::Request(JsonRpcRequest {
        jsonrpc: call.jsonrpc,
        id: call.id,
        request: ClientRequest::CallToolRequest(call.request),
    }))
}

/// A message as its line, without the newline. A tool result without structured content
/// whose first block is a JSON object as text (as baton's tool results are: see
/// `mcp::tool_result`) gets that text as its `structuredContent` too, copied into the line
/// as it is rather than parsed into a `Value` and encoded again.
fn encode(item: &TxJsonRpcMessage<RoleServer>) -> serde_json::Result<Vec<u8>> {
    const RESULT: &[u8] = b"\"result\":{";
    let line = serde_json::to_vec(item)?;
    if let JsonRpcMessage::Response(response) = item
        && let ServerResult::CallToolResult(result) = &response.result
        && result.structured_content.is_none()
        && let Some(text) = result.content.first().and_then(|block| block.as_text())
        && is_json_object(&text.text)
        // The first such key is the response's own: `jsonrpc` and `id` come before it, and
        // a quote inside a string is escaped, so no string holds this sequence.
        && let Some(at) = line.windows(RESULT.len()).position(|w| w == RESULT)
    {
        let at = at + RESULT.len();
        let mut spliced = Vec::with_capacity(line.len() + text.text.len() + 24);
        spliced.extend_from_slice(&line[..at]);
        spliced.extend_from_slice(b"\"structuredContent\":");
        spliced.extend_from_slice(text.text.as_bytes());
        // A result always has `content` after this, so a comma follows.
        spliced.push(b',');
        spliced.extend_from_slice(&line[at..]);
        return Ok(spliced);
    }
    Ok(line)
}

/// Whether `text` is one whole JSON object (checked without building it).
fn is_json_object(text: &str) -> bool {
    text.trim_start().starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// A JSON-RPC error line. `id` is used if it is a valid request id, else the id is null.
fn error_line(id: Option<&Value>, code: i64, message: String, data: Option<Value>) -> Vec<u8> {
    let id = id
        .and_then(|id| serde_json::from_value::<NumberOrString>(id.clone()).ok())
        .and_then(|id| serde_json::to_value(id).ok())
        .unwrap_or(Value::Null);
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    let mut line = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "error": error})).unwrap_or_default();
    line.push(b'\n');
    line
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stdout is closed")
}

/// Write queued lines in order, flushing each; stop at the first failure.
async fn write_lines<W: AsyncWrite + Unpin>(mut writer: W, mut queue: mpsc::Receiver<Outgoing>) {
    while let Some(Outgoing { line, done }) = queue.recv().await {
        let result = async {
            writer.write_all(&line).await?;
            writer.flush().await
        }
        .await;
        let failed = result.is_err();
        if let Some(done) = done {
            let _ = done.send(result);
        }
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
