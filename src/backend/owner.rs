//! The owning process: holds the database and serves other baton processes on a Unix socket.

use super::wire::{self, WireReply};
use crate::api::{Envelope, Reply};
use crate::error::{BatonError, BatonResult};
use crate::service::Service;
use futures::{SinkExt, StreamExt};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{UnixListener, UnixStream};

/// The database and the socket other processes reach it through.
pub struct Owner {
    service: Arc<Service>,
    /// Held for the life of the process: the flock that makes this process the owner.
    _lock: File,
    listener: tokio::task::JoinHandle<()>,
}

impl Owner {
    /// Take ownership: `lock` must already be locked by this process.
    pub fn start(service: Service, lock: File, socket: &Path) -> BatonResult<Owner> {
        // The previous owner is gone (we hold its lock), so its socket file is stale.
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(|e| BatonError::storage(format!("cannot listen on {}: {e}", socket.display()), "Check the baton home is writable."))?;
        let service = Arc::new(service);
        let serving = Arc::clone(&service);
        let listener = tokio::spawn(async move { accept_loop(listener, serving).await });
        tracing::info!(socket = %socket.display(), "this process now owns the baton database");
        Ok(Owner { service, _lock: lock, listener })
    }

    /// Execute a request in this process.
    pub async fn execute(&self, envelope: Envelope) -> BatonResult<Reply> {
        execute(Arc::clone(&self.service), envelope).await
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Run a request on the calling thread. The server runs a single-threaded runtime and
/// requests are short (a sled transaction and a flush), so running them inline avoids a
/// thread hand-off per request, the largest cost after the disk itself (see `cargo bench`).
async fn execute(service: Arc<Service>, envelope: Envelope) -> BatonResult<Reply> {
    service.handle(&envelope)
}

async fn accept_loop(listener: UnixListener, service: Arc<Service>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&service)));
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
async fn serve_connection(stream: UnixStream, service: Arc<Service>) {
    let mut conn = wire::serving(stream);
    while let Some(line) = conn.next().await {
        let (reply, close): (WireReply, bool) = match line {
            Ok(line) => match wire::decode_request(&line) {
                Ok(envelope) => (execute(Arc::clone(&service), envelope).await, false),
                Err(e) => (Err(e), false),
            },
            Err(e) if wire::is_oversized(&e) => (Err(wire::oversized_frame()), true),
            Err(e) => {
                tracing::debug!("baton socket connection failed: {e}");
                return;
            }
        };
        let text = serde_json::to_string(&reply)
            .unwrap_or_else(|e| format!("{{\"Err\":{{\"code\":\"internal\",\"message\":\"{e}\",\"fix\":\"\"}}}}"));
        if conn.send(text).await.is_err() || close {
            return;
        }
    }
}
