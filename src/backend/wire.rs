//! The protocol between baton processes on one machine: one JSON object per line over the
//! owner's Unix socket. A request is an [`Envelope`]; an answer is `{"Ok": Reply}` or
//! `{"Err": BatonError}`. Lines longer than [`MAX_FRAME_BYTES`] are refused.

use crate::api::{Envelope, Reply};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::limits::{MAX_ANSWER_BYTES, MAX_FRAME_BYTES};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// A line-framed socket connection.
pub type Connection = Framed<UnixStream, LinesCodec>;

/// The owner's side of a connection: reads requests of at most [`MAX_FRAME_BYTES`].
pub fn serving(stream: UnixStream) -> Connection {
    Framed::new(stream, LinesCodec::new_with_max_length(MAX_FRAME_BYTES))
}

/// A client's side of a connection: reads answers of at most [`MAX_ANSWER_BYTES`].
pub fn client(stream: UnixStream) -> Connection {
    Framed::new(stream, LinesCodec::new_with_max_length(MAX_ANSWER_BYTES))
}

/// The answer frame.
pub type WireReply = Result<Reply, BatonError>;

/// Decode a request line, or say precisely why it is not one.
pub fn decode_request(line: &str) -> BatonResult<Envelope> {
    let envelope: Envelope = serde_json::from_str(line).map_err(|e| {
        BatonError::invalid(
            "request",
            format!("malformed request frame: {e}"),
            "Send one JSON object {\"op_id\": ..., \"request\": {\"op\": ..., \"params\": {...}}} per line.",
        )
    })?;
    if uuid::Uuid::parse_str(&envelope.op_id).is_err() {
        return Err(BatonError::invalid("op_id", format!("`{}` is not a UUID", envelope.op_id), "Use a fresh UUID per request."));
    }
    Ok(envelope)
}

/// The error for a frame over the size limit.
pub fn oversized_frame() -> BatonError {
    BatonError::new(
        ErrorCode::TooLarge,
        format!("request frame exceeds {MAX_FRAME_BYTES} bytes"),
        "Send smaller payloads; see the documented limits in README.",
    )
    .with_field("request")
}

/// Map a codec failure to whether it was an oversize frame.
pub fn is_oversized(err: &LinesCodecError) -> bool {
    matches!(err, LinesCodecError::MaxLineLengthExceeded)
}
