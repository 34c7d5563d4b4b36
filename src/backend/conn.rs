//! One connection to the owner: read a request frame, execute it, write its answer, until
//! the client leaves or the owner shuts down. Every frame gets exactly one answer; frames
//! that cannot be trusted (too large, or stalled) get theirs and end the connection. A
//! request whose deadline passed before it was read is refused, never executed.

use super::deadline;
use super::socket::Socket;
use super::wire::{self, FrameBudget, FrameReader, WireReply};
use crate::api::{OwnerStatus, Reply, Request};
use crate::error::{BatonError, ErrorCode};
use crate::service::Service;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// Serve one admitted connection. Between frames it stops as soon as `stop` is cancelled;
/// a request already read is executed and answered first.
/// What an owner's connections share. The lock and the release signal live here, not in
/// the owner, so the database stays locked until the last connection still answering lets
/// go of it, however the owner itself ends. Fields drop in order: the store closes before
/// the lock is released, and `released` fires last.
pub(super) struct OwnerState {
    pub service: Service,
    /// A request frame must arrive completely within this time once it has started.
    pub frame_timeout: std::time::Duration,
    /// A client must take its answer within this time, else it is disconnected.
    pub answer_timeout: std::time::Duration,
    pub budget: FrameBudget,
    /// Connections being served now (idle pooled ones included): who else is using the database.
    pub connections: AtomicUsize,
    pub _lock: std::fs::File,
    pub _released: tokio::sync::watch::Sender<()>,
}

pub(super) async fn serve(stream: UnixStream, shared: Arc<OwnerState>, stop: CancellationToken) {
    let _counted = Counted::new(&shared.connections);
    let socket = match Socket::new(stream) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!("cannot poll a baton socket connection: {e}");
            return;
        }
    };
    let mut frames = FrameReader::new(socket, shared.budget.clone(), shared.frame_timeout);
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            frame = frames.next() => frame,
        };
        let (reply, last) = match frame {
            Ok(Some(line)) => (execute(line, &shared).await, false),
            Ok(None) => return,
            Err(e) => match e.answer() {
                Some(refusal) => (Err(refusal), true),
                None => {
                    tracing::debug!("baton socket connection failed: {e:?}");
                    return;
                }
            },
        };
        let mut text = wire::encode_answer(&reply);
        text.push('\n');
        let written = tokio::time::timeout(shared.answer_timeout, frames.stream_mut().write_all(text.as_bytes())).await;
        frames.finish();
        if last || !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
}

/// Counts a connection for as long as it is served.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Counted<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Decode and execute one request. A panic while executing becomes an `internal` answer.
async fn execute(line: &[u8], shared: &OwnerState) -> WireReply {
    let envelope = wire::decode_request(line)?;
    if let Some(late) = envelope.deadline_ms.and_then(deadline::overdue) {
        return Err(expired(late));
    }
    // About the owner itself, not the database: answered here.
    if matches!(envelope.request, Request::OwnerStatus(_)) {
        let connections = shared.connections.load(Ordering::SeqCst);
        return Ok(Reply::Owner(OwnerStatus { pid: std::process::id(), connections }));
    }
    AssertUnwindSafe(shared.service.handle(&envelope)).catch_unwind().await.unwrap_or_else(|_| {
        Err(BatonError::internal(
            "executing the request panicked in the baton owner (see owner.log in the baton home); check the run before retrying",
        ))
    })
}

/// Refuse a connection with one answer line, without waiting for the client.
pub(super) fn refuse(stream: UnixStream, refusal: &BatonError) {
    tracing::info!("refused a connection: {}", refusal.message);
    let mut text = wire::encode_answer(&Err(refusal.clone()));
    text.push('\n');
    let _ = stream.try_write(text.as_bytes());
}

/// The refusal of a request read after its deadline. It names `deadline_ms`, so a client
/// that gets it back (it was itself suspended, and has told its caller nothing yet) knows
/// it may resend.
pub(super) fn expired(late: std::time::Duration) -> BatonError {
    BatonError::new(
        ErrorCode::Unavailable,
        format!("the request reached the owner {late:?} after its caller's deadline; it was not applied"),
        "Retry: the caller has already been told that this request failed.",
    )
    .with_field("deadline_ms")
}
