//! The protocol between baton processes on one machine: one JSON object per line over the
//! owner's Unix socket. A request is an [`Envelope`]; an answer is `{"Ok": Reply}` or
//! `{"Err": BatonError}`. Request lines are at most [`MAX_FRAME_BYTES`] and
//! [`MAX_MESSAGE_DEPTH`] deep; every line, even garbage, gets exactly one answer line.
//!
//! The owner reads requests through a [`FrameReader`], which holds the partial frames of all
//! connections within one shared memory budget and gives each frame a few seconds to arrive,
//! so slow or stopped clients cannot grow the owner without bound or hold memory forever.

use super::socket::Socket;
use crate::api::{Envelope, Reply, Request};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::limits::{MAX_ANSWER_BYTES, MAX_ARGUMENT_DEPTH, MAX_FRAME_BYTES, MAX_MESSAGE_DEPTH, check_argument_depths, text_depth};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{Framed, LinesCodec};

/// The answer frame.
pub type WireReply = Result<Reply, BatonError>;

/// A client's side of a connection: reads answers of at most [`MAX_ANSWER_BYTES`].
pub type Connection = Framed<Socket, LinesCodec>;

pub fn client(stream: UnixStream) -> std::io::Result<Connection> {
    Ok(Framed::new(Socket::new(stream)?, LinesCodec::new_with_max_length(MAX_ANSWER_BYTES)))
}

/// The start of every frame is read into this much memory outside the budget, so small
/// requests never wait for it and an idle connection can always notice its peer leaving.
const FREE_BYTES: usize = 4096;

/// Memory for partially received request frames, shared by all connections of one owner.
#[derive(Clone)]
pub struct FrameBudget(Arc<Semaphore>);

impl FrameBudget {
    pub fn new(bytes: usize) -> FrameBudget {
        FrameBudget(Arc::new(Semaphore::new(bytes)))
    }

    /// Bytes not currently lent to a frame.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Why a request frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// Longer than [`MAX_FRAME_BYTES`]; the rest of the stream cannot be trusted.
    TooLarge,
    /// Started but not finished within the frame timeout (or no memory became free for it).
    Stalled(Duration),
    /// The connection failed.
    Io(std::io::Error),
}

impl FrameError {
    /// The answer a client gets before the connection is closed, if any.
    pub fn answer(&self) -> Option<BatonError> {
        match self {
            FrameError::TooLarge => Some(oversized_frame()),
            FrameError::Stalled(limit) => Some(
                BatonError::invalid(
                    "request",
                    format!("the request frame did not arrive completely within {limit:?}; the connection is closed"),
                    "Send each request as one line, in one go.",
                )
                .with_field("request"),
            ),
            FrameError::Io(_) => None,
        }
    }
}

/// Reads newline-terminated request frames, borrowing memory beyond the first
/// [`FREE_BYTES`] of a frame from a shared [`FrameBudget`].
pub struct FrameReader<R> {
    stream: R,
    buf: Vec<u8>,
    /// Budget lent for `buf`'s capacity beyond [`FREE_BYTES`].
    lent: Option<OwnedSemaphorePermit>,
    budget: FrameBudget,
    /// How far `buf` has been searched for a newline.
    scanned: usize,
    /// Length (with its newline) of the frame last returned, dropped by [`FrameReader::finish`].
    frame_len: usize,
    /// When the first byte of the frame being received arrived.
    started: Option<Instant>,
    timeout: Duration,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(stream: R, budget: FrameBudget, timeout: Duration) -> Self {
        FrameReader { stream, buf: Vec::with_capacity(FREE_BYTES), lent: None, budget, scanned: 0, frame_len: 0, started: None, timeout }
    }

    /// The next frame (without its newline), or `None` when the peer closed the connection.
    /// Call [`FrameReader::finish`] once the frame is handled, to free its memory.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + pos;
                self.frame_len = end + 1;
                return Ok(Some(&self.buf[..end]));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_FRAME_BYTES {
                return Err(FrameError::TooLarge);
            }
            if self.buf.len() == self.buf.capacity() {
                self.grow().await?;
            }
            let read = match self.started {
                None => self.stream.read_buf(&mut self.buf).await,
                Some(started) => match tokio::time::timeout_at(started + self.timeout, self.stream.read_buf(&mut self.buf)).await {
                    Ok(read) => read,
                    Err(_) => return Err(FrameError::Stalled(self.timeout)),
                },
            };
            match read {
                Ok(0) => return Ok(None), // closed; a torn frame is dropped unanswered
                Ok(_) => {
                    self.started.get_or_insert_with(Instant::now);
                }
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }

    /// The stream, to answer on between frames.
    pub fn stream_mut(&mut self) -> &mut R {
        &mut self.stream
    }

    /// Drop the frame last returned, and give back the memory it used.
    pub fn finish(&mut self) {
        self.buf.drain(..self.frame_len.min(self.buf.len()));
        self.frame_len = 0;
        self.scanned = 0;
        if self.buf.is_empty() {
            self.started = None;
            if self.buf.capacity() > FREE_BYTES {
                self.buf = Vec::with_capacity(FREE_BYTES);
                self.lent = None;
            }
        } else {
            // The next frame already started arriving (pipelined).
            self.started = Some(Instant::now());
        }
    }

    /// Double the buffer, borrowing the extra memory from the budget; waits for it no
    /// longer than the frame may take.
    async fn grow(&mut self) -> Result<(), FrameError> {
        let capacity = (self.buf.capacity() * 2).clamp(FREE_BYTES, MAX_FRAME_BYTES + 1);
        let lent = self.lent.as_ref().map_or(0, |p| p.num_permits());
        let needed = (capacity - FREE_BYTES).saturating_sub(lent);
        if needed > 0 {
            let started = *self.started.get_or_insert_with(Instant::now);
            let acquire = Arc::clone(&self.budget.0).acquire_many_owned(needed as u32);
            let permit = match tokio::time::timeout_at(started + self.timeout, acquire).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) | Err(_) => return Err(FrameError::Stalled(self.timeout)),
            };
            match &mut self.lent {
                Some(lent) => lent.merge(permit),
                None => self.lent = Some(permit),
            }
        }
        self.buf.reserve_exact(capacity - self.buf.len());
        Ok(())
    }
}

/// Decode a request line, or say precisely why it is not one.
pub fn decode_request(line: &[u8]) -> BatonResult<Envelope> {
    // The common frame is parsed once, straight into its type, instead of into a `Value`
    // tree first (that was most of the owner's decoding time per request). It is taken
    // only where it cannot answer differently from the careful way (see
    // [`fast_decodable`]); a frame it refuses is decoded again the careful way, whose
    // error is the answer.
    if fast_decodable(line)
        && let Ok(text) = std::str::from_utf8(line)
        && let Ok(envelope) = serde_json::from_str::<Envelope>(text)
    {
        return checked_op_id(envelope);
    }
    decode_carefully(line)
}

/// [`decode_request`] through a `Value`, so each check can say what is wrong: UTF-8, the
/// frame's depth, each argument's depth, then the request's shape.
fn decode_carefully(line: &[u8]) -> BatonResult<Envelope> {
    const FIX: &str = "Send one JSON object {\"op_id\": ..., \"request\": {\"op\": ..., \"params\": {...}}} per line.";
    let malformed = |e: String| BatonError::invalid("request", format!("malformed request frame: {e}"), FIX);
    let text = std::str::from_utf8(line).map_err(|e| malformed(format!("not UTF-8 ({e})")))?;
    if text_depth(line, MAX_MESSAGE_DEPTH) > MAX_MESSAGE_DEPTH {
        return Err(BatonError::new(
            ErrorCode::TooLarge,
            format!("the request frame is nested more than {MAX_MESSAGE_DEPTH} levels deep; the limit is {MAX_MESSAGE_DEPTH} levels"),
            "Flatten the arguments: keep deeply nested data in a file and pass its path.",
        )
        .with_field("request"));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    if let Some(params) = value.pointer("/request/params") {
        check_argument_depths(params)?;
    }
    let envelope: Envelope = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    checked_op_id(envelope)
}

fn checked_op_id(envelope: Envelope) -> BatonResult<Envelope> {
    if uuid::Uuid::parse_str(&envelope.op_id).is_err() {
        return Err(BatonError::invalid("op_id", format!("`{}` is not a UUID", envelope.op_id), "Use a fresh UUID per request."));
    }
    Ok(envelope)
}

/// Whether a frame can be decoded straight into an [`Envelope`] with the same outcome as
/// through a [`serde_json::Value`] and the argument depth checks:
/// - nested at most [`MAX_ARGUMENT_DEPTH`] + 3 levels: the arguments sit 3 levels down
///   (`{"request": {"params": {...}}}`), so none of them can be too deep;
/// - no number with an exponent or of more than 300 digits, and no `\u` escape of a UTF-16
///   surrogate: a typed decode skips unknown fields without checking that their numbers fit
///   an f64 or that their surrogates pair up, which the `Value` parse refuses.
///
/// Baton's own clients never write such numbers or escapes (serde_json writes non-ASCII
/// text as UTF-8); a frame that has them takes the careful path, so nothing changes for it.
/// Within the depth bound the frame is also within [`MAX_MESSAGE_DEPTH`], and invalid
/// UTF-8 fails the fast path, so those checks need no fast twin.
fn fast_decodable(bytes: &[u8]) -> bool {
    const MAX_DIGITS: usize = 300;
    let (mut depth, mut in_string, mut escaped, mut digits) = (0usize, false, false, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                // `\u` then `d8`..`df`: a surrogate (a lone `\` before it is over-cautious, never wrong).
                b'u' if escaped
                    && matches!(bytes.get(i + 1), Some(b'd' | b'D'))
                    && matches!(bytes.get(i + 2), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')) =>
                {
                    return false;
                }
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'0'..=b'9' => {
                digits += 1;
                if digits > MAX_DIGITS {
                    return false;
                }
                continue;
            }
            b'e' | b'E' if digits > 0 => return false,
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_ARGUMENT_DEPTH + 3 {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        // A fraction's digits count on from the integer's: `.` keeps the run going.
        if b != b'.' {
            digits = 0;
        }
    }
    true
}

/// Serialize an answer, replacing one the client could not accept (too large, or too
/// deep to parse) by an error.
pub fn encode_answer(reply: &WireReply) -> String {
    let refusal = |e: BatonError| serde_json::to_string(&WireReply::Err(e)).unwrap_or_default();
    match serde_json::to_string(reply) {
        Ok(text) if text.len() > MAX_ANSWER_BYTES => refusal(
            BatonError::new(
                ErrorCode::TooLarge,
                format!("the answer is {} bytes, over the {MAX_ANSWER_BYTES}-byte limit between processes", text.len()),
                "Ask for less: a smaller history_limit or limit.",
            )
            .with_field("request"),
        ),
        Ok(text) if text_depth(text.as_bytes(), MAX_MESSAGE_DEPTH) > MAX_MESSAGE_DEPTH => refusal(BatonError::new(
            ErrorCode::TooLarge,
            format!(
                "the answer would be nested more than {MAX_MESSAGE_DEPTH} levels deep (the run holds deeply nested artifacts or context), which other processes cannot read"
            ),
            "Ask for less of the run (a smaller history_limit), or replace the nested value with a flatter one.",
        )),
        Ok(text) => text,
        Err(e) => refusal(BatonError::internal(format!("answer could not be encoded: {e}"))),
    }
}

/// The error for a frame over the size limit, when the argument at fault is unknown.
pub fn oversized_frame() -> BatonError {
    BatonError::new(
        ErrorCode::TooLarge,
        format!("request frame exceeds {MAX_FRAME_BYTES} bytes"),
        "Send smaller payloads; see the documented limits in README.",
    )
    .with_field("request")
}

/// Refuse a request line over [`MAX_FRAME_BYTES`], naming its largest argument.
pub fn check_frame_size(line_len: usize, request: &Request) -> BatonResult<()> {
    if line_len <= MAX_FRAME_BYTES {
        return Ok(());
    }
    let params = serde_json::to_value(request).ok().and_then(|v| v.get("params").cloned());
    let largest = params
        .as_ref()
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.clone(), serde_json::to_string(value).map_or(0, |s| s.len())))
        .max_by_key(|(_, len)| *len);
    let Some((field, len)) = largest else { return Err(oversized_frame()) };
    Err(BatonError::new(
        ErrorCode::TooLarge,
        format!(
            "the request is {line_len} bytes, over the {MAX_FRAME_BYTES}-byte limit for one request; `{field}` alone is {len} bytes (as JSON)"
        ),
        format!("Make `{field}` smaller: put large material in files in the repository and pass their paths instead."),
    )
    .with_field(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AdvanceParams, ListRunsParams};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn partial_frames_borrow_from_one_budget_and_give_it_back() {
        let budget = FrameBudget::new(1024 * 1024);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(server, budget.clone(), Duration::from_secs(5));
        let big = vec![b'x'; 300 * 1024];
        let writer = tokio::spawn(async move {
            client.write_all(&big).await.unwrap();
            client.write_all(b"\nsmall\n").await.unwrap();
            client
        });
        assert_eq!(reader.next().await.unwrap().unwrap().len(), 300 * 1024);
        assert!(budget.available() < 1024 * 1024 - 256 * 1024, "the large frame holds budget while it is handled");
        reader.finish();
        assert_eq!(reader.next().await.unwrap().unwrap(), b"small");
        reader.finish();
        assert_eq!(budget.available(), 1024 * 1024, "everything is given back");
        drop(writer.await.unwrap());
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stalls_or_finds_no_budget_is_refused_in_time() {
        let budget = FrameBudget::new(8 * 1024);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(server, budget, Duration::from_secs(5));
        client.write_all(&[b'x'; 40 * 1024]).await.unwrap();
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, FrameError::Stalled(_)), "{err:?}");
        assert!(err.answer().unwrap().message.contains("within 5s"));
    }

    #[test]
    fn hostile_frames_are_explained() {
        let err = decode_request(b"\xff\xfe").unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{err}");
        let deep = format!(r#"{{"op_id":"x","request":{{"op":"list_runs","params":{{"a":{}1{}}}}}}}"#, "[".repeat(120), "]".repeat(120));
        let err = decode_request(deep.as_bytes()).unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::TooLarge, Some("request")));
        let deep_artifacts = format!(
            r#"{{"op_id":"x","request":{{"op":"advance","params":{{"run_id":"r","expected_version":1,"outcome":"o","output":"","artifacts":{{"a":{}1{}}}}}}}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        let err = decode_request(deep_artifacts.as_bytes()).unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::TooLarge, Some("artifacts")), "{err}");
    }

    /// The fast typed decode answers every frame exactly as the careful one: frames baton
    /// sends, and the same frames broken in the ways that make the two parsers differ.
    #[test]
    fn the_typed_decode_answers_as_the_careful_one() {
        let op = "6b0e5c3e-8f7a-4d7e-9a55-0d6c2c1f4b11";
        let advance = format!(
            r#"{{"op_id":"{op}","caller":{{"actor":{{"kind":"codex","id":"t-1","agent":null}},"workspace":null}},"request":{{"op":"advance","params":{{"run_id":"r","expected_version":3,"outcome":"next","output":"done é \n \u0041","artifacts":{{"n":1.5,"deep":[[[1]]]}}}}}},"deadline_ms":12}}"#
        );
        let mut frames = vec![
            advance.clone(),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}}}}"#),
            format!(r#"{{"request":{{"params":{{}},"op":"list_runs"}},"op_id":"{op}"}}"#),
            format!(r#"{{"op_id":"not-a-uuid","request":{{"op":"list_runs","params":{{}}}}}}"#),
            format!(r#"{{"op_id":"{op}","op_id":"{op}","request":{{"op":"list_runs","params":{{}}}}}}"#),
            format!(r#"{{"op_id":"x","op_id":"{op}","request":{{"op":"list_runs","params":{{}}}}}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{"bogus":1}}}}}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"nope","params":{{}}}}}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}},"extra":1e400}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}},"extra":1{}}}"#, "0".repeat(400)),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}},"extra":"\ud800"}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}},"extra":"\ud83d\ude00"}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}},"extra":2.5e-3}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}},"extra":01}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{}}}}}} trailing"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{"limit":1e2}}}}}}"#),
            format!(r#"{{"op_id":"{op}","request":{{"op":"list_runs","params":{{"limit":-1}}}}}}"#),
        ];
        for levels in [60, 63, 64, 65, 66, 97, 98, 120] {
            let nested = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            frames.push(advance.replace(r#""deep":[[[1]]]"#, &format!(r#""deep":{nested}"#)));
            frames.push(advance.replace(r#""artifacts":{"#, &format!(r#""artifacts":{{"x":{nested}}},"ignored":{{"#)));
            frames.push(format!(r#"{{"op_id":"{op}","x":{nested},"request":{{"op":"list_runs","params":{{}}}}}}"#));
        }
        // Every frame cut short, and with each byte replaced by bytes that break parsers.
        let mut all: Vec<Vec<u8>> = frames.iter().map(|f| f.clone().into_bytes()).collect();
        for frame in &frames {
            let bytes = frame.as_bytes();
            for at in (0..bytes.len()).step_by(7) {
                all.push(bytes[..at].to_vec());
                for spice in [&b"\xff"[..], b"\"", b"\\", b"e5", b"{", b"]", b"\\ud800", b"9"] {
                    let mut broken = bytes.to_vec();
                    broken.splice(at..at + 1, spice.iter().copied());
                    all.push(broken);
                }
            }
        }
        for line in &all {
            assert_eq!(decode_request(line), decode_carefully(line), "{}", String::from_utf8_lossy(line));
        }
        assert!(decode_request(advance.as_bytes()).is_ok());
    }

    #[test]
    fn an_oversized_request_names_its_largest_argument() {
        let request = Request::Advance(AdvanceParams {
            run_id: "r".into(),
            expected_version: Some(1),
            outcome: "o".into(),
            output: "x".repeat(100),
            artifacts: Some(serde_json::from_value(serde_json::json!({"blob": "y".repeat(MAX_FRAME_BYTES)})).unwrap()),
            plan: None,
            task: None,
            lease_token: None,
            code: None,
        });
        let line = serde_json::to_string(&request).unwrap();
        let err = check_frame_size(line.len(), &request).unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::TooLarge, Some("artifacts")), "{err}");
        assert!(check_frame_size(100, &Request::ListRuns(ListRunsParams::default())).is_ok());
    }
}
