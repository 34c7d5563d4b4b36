//! One database, many processes. sled allows a single process per database, so the first
//! baton process to take the owner lock opens it and serves the others over a Unix socket.
//! When the owner dies, the next request of any other process re-elects: it takes the
//! lock (and the database) itself or reconnects to whoever did. Every change carries an
//! `op_id`, so resending it to a new owner never applies it twice.

mod owner;
pub mod wire;

use crate::api::{Caller, Envelope, Reply, Request};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::home::Home;
use crate::limits::MAX_FRAME_BYTES;
use crate::service::Service;
use crate::store::SledStore;
use futures::{SinkExt, StreamExt};
use owner::Owner;
use std::fs::TryLockError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

/// How long a request keeps trying to reach a (new) owner before giving up.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the owner's answer to one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between election attempts while another process is taking over.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// How this process reaches the database.
enum Mode {
    Unconnected,
    Owner(Arc<Owner>),
    Remote(wire::Connection),
}

/// The entry point for every operation, whichever process owns the database.
pub struct Backend {
    home: Home,
    mode: Mutex<Mode>,
}

/// Whether this process owns the database or talks to the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Remote,
}

impl Backend {
    /// A backend for `home`; nothing is opened until [`Backend::connect`] or the first call.
    pub fn new(home: Home) -> Backend {
        Backend { home, mode: Mutex::new(Mode::Unconnected) }
    }

    /// Check the home directory and connect (as owner or client) now, so problems
    /// surface at start-up. Calls retry on their own if this fails.
    pub async fn connect(&self) -> BatonResult<Role> {
        let mut mode = self.mode.lock().await;
        if matches!(*mode, Mode::Unconnected) {
            *mode = self.elect(Instant::now() + TAKEOVER_TIMEOUT).await?;
        }
        Ok(match &*mode {
            Mode::Owner(_) => Role::Owner,
            _ => Role::Remote,
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Execute `request` for an unnamed caller (see [`Backend::call_as`]).
    pub async fn call(&self, request: Request) -> BatonResult<Reply> {
        self.call_as(Caller::default(), request).await
    }

    /// Execute `request` on behalf of `caller`, failing over to a new owner if the current
    /// one disappears.
    pub async fn call_as(&self, caller: Caller, request: Request) -> BatonResult<Reply> {
        let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller, request };
        let line = serde_json::to_string(&envelope).map_err(BatonError::from)?;
        if line.len() > MAX_FRAME_BYTES {
            return Err(wire::oversized_frame());
        }
        let deadline = Instant::now() + TAKEOVER_TIMEOUT;
        loop {
            let mut mode = self.mode.lock().await;
            if matches!(*mode, Mode::Unconnected) {
                *mode = self.elect(deadline).await?;
            }
            match &mut *mode {
                Mode::Owner(owner) => {
                    let owner = Arc::clone(owner);
                    drop(mode);
                    return owner.execute(envelope).await;
                }
                Mode::Remote(conn) => match round_trip(conn, &line).await {
                    Trip::Answer(reply) => return reply,
                    Trip::Lost(reason) => {
                        tracing::warn!("lost the baton owner ({reason}); re-electing");
                        *mode = Mode::Unconnected;
                    }
                },
                Mode::Unconnected => {}
            }
            if Instant::now() >= deadline {
                return Err(unavailable("the owner stopped answering and no process could take over"));
            }
        }
    }

    /// Become the owner if nobody is, else connect to the owner.
    async fn elect(&self, deadline: Instant) -> BatonResult<Mode> {
        self.home.prepare()?;
        loop {
            let lock = self.home.open_lock()?;
            match lock.try_lock() {
                Ok(()) => match self.take_ownership(lock).await {
                    // The previous owner released its lock but is still closing the database.
                    Err(e) if e.code == ErrorCode::Unavailable => tracing::debug!("{e}"),
                    taken => return taken,
                },
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(BatonError::storage(
                        format!("cannot lock {}: {e}", self.home.lock_path().display()),
                        "Check the baton home permissions.",
                    ));
                }
            }
            if let Ok(stream) = UnixStream::connect(self.home.socket_path()).await {
                return Ok(Mode::Remote(wire::client(stream)));
            }
            if Instant::now() >= deadline {
                return Err(unavailable("another process holds the database lock but does not answer on the socket"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn take_ownership(&self, lock: std::fs::File) -> BatonResult<Mode> {
        let db_dir = self.home.db_dir();
        let store = tokio::task::spawn_blocking(move || SledStore::open(&db_dir))
            .await
            .map_err(|e| BatonError::internal(format!("opening the database failed: {e}")))??;
        let owner = Owner::start(Service::new(Arc::new(store)), lock, &self.home.socket_path())?;
        Ok(Mode::Owner(Arc::new(owner)))
    }
}

/// How a request to the owner ended.
enum Trip {
    /// The owner answered (possibly with an error).
    Answer(wire::WireReply),
    /// The connection is unusable: the owner is gone or hung; re-elect and resend.
    Lost(String),
}

/// Send one request line and read its answer.
async fn round_trip(conn: &mut wire::Connection, line: &str) -> Trip {
    if let Err(e) = conn.send(line).await {
        return Trip::Lost(e.to_string());
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, conn.next()).await {
        Err(_) => Trip::Lost("no answer in time".into()),
        Ok(None) => Trip::Lost("connection closed".into()),
        Ok(Some(Err(e))) if wire::is_oversized(&e) => {
            Trip::Answer(Err(BatonError::internal("the owner's answer exceeded the frame limit")))
        }
        Ok(Some(Err(e))) => Trip::Lost(e.to_string()),
        Ok(Some(Ok(text))) => Trip::Answer(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| Err(BatonError::internal(format!("the owner's answer could not be decoded: {e}")))),
        ),
    }
}

fn unavailable(message: &str) -> BatonError {
    BatonError::new(
        ErrorCode::Unavailable,
        message,
        "Retry in a moment; if it persists, check for a hung `baton` process (it holds owner.lock in the baton home).",
    )
}
