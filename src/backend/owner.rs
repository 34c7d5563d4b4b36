//! The owning process: holds the database and serves other baton processes on a Unix socket.

use super::wire::{self, WireReply};
use crate::api::{Envelope, Reply};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::limits::MAX_ANSWER_BYTES;
use crate::service::Service;
use futures::{SinkExt, StreamExt};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{UnixListener, UnixStream};

/// The open database together with the flock that entitles this process to it. Fields
/// drop in order, so the database is closed before the lock is released and a successor
/// never finds sled's own file lock still held.
struct Owned {
    service: Service,
    _lock: File,
}

/// The database and the socket other processes reach it through.
pub struct Owner {
    owned: Arc<Owned>,
    listener: tokio::task::JoinHandle<()>,
}

impl Owner {
    /// Take ownership: `lock` must already be locked by this process.
    pub fn start(service: Service, lock: File, socket: &Path) -> BatonResult<Owner> {
        // The previous owner is gone (we hold its lock), so its socket file is stale.
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(|e| BatonError::storage(format!("cannot listen on {}: {e}", socket.display()), "Check the baton home is writable."))?;
        let owned = Arc::new(Owned { service, _lock: lock });
        let serving = Arc::clone(&owned);
        let listener = tokio::spawn(async move { accept_loop(listener, serving).await });
        tracing::info!(socket = %socket.display(), "this process now owns the baton database");
        Ok(Owner { owned, listener })
    }

    /// Execute a request in this process.
    pub async fn execute(&self, envelope: Envelope) -> BatonResult<Reply> {
        self.owned.service.handle(&envelope).await
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn accept_loop(listener: UnixListener, owned: Arc<Owned>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&owned)));
            }
            Err(e) => {
                tracing::warn!("accept on baton socket failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answer requests on one connection until it closes. Bad frames get an error answer;
/// an oversized frame also ends the connection, since the stream cannot be resynchronised.
async fn serve_connection(stream: UnixStream, owned: Arc<Owned>) {
    let mut conn = wire::serving(stream);
    while let Some(line) = conn.next().await {
        let (reply, close): (WireReply, bool) = match line {
            Ok(line) => match wire::decode_request(&line) {
                Ok(envelope) => (owned.service.handle(&envelope).await, false),
                Err(e) => (Err(e), false),
            },
            Err(e) if wire::is_oversized(&e) => (Err(wire::oversized_frame()), true),
            Err(e) => {
                tracing::debug!("baton socket connection failed: {e}");
                return;
            }
        };
        let text = encode_answer(&reply);
        if conn.send(text).await.is_err() || close {
            return;
        }
    }
}

/// Serialize an answer, replacing one the client could not accept by an error.
fn encode_answer(reply: &WireReply) -> String {
    let refusal = |e: BatonError| serde_json::to_string(&WireReply::Err(e)).unwrap_or_default();
    match serde_json::to_string(reply) {
        Ok(text) if text.len() <= MAX_ANSWER_BYTES => text,
        Ok(text) => refusal(
            BatonError::new(
                ErrorCode::TooLarge,
                format!("the answer is {} bytes, over the {MAX_ANSWER_BYTES}-byte limit between processes", text.len()),
                "Ask for less: a smaller history_limit or limit.",
            )
            .with_field("request"),
        ),
        Err(e) => refusal(BatonError::internal(format!("answer could not be encoded: {e}"))),
    }
}
