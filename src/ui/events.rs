//! Live updates. One task per `baton ui` process long-polls the owner with
//! [`Request::WaitForChange`] on a connection of its own, and mirrors the database's
//! change counter into a local watch; every open page listens to that mirror through
//! server-sent events and re-reads itself when the counter moves.

use super::AppState;
use crate::api::{Caller, WaitForChangeParams};
use crate::backend::{Backend, Timeouts};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait of one long-poll at the owner. A change answers it at once, so this only
/// sets how often an idle page's server asks again.
const MAX_WAIT: Duration = Duration::from_secs(3);

/// How long one long-poll waits: at most half the time a client gives the owner to
/// answer any request (`BATON_ANSWER_TIMEOUT`), so a quiet database never looks like a
/// hung owner.
fn wait_ms() -> u64 {
    (Timeouts::from_env().answer / 2).min(MAX_WAIT).as_millis() as u64
}
/// Pause before asking again after a failed long-poll (the owner may be changing hands).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Mirror the owner's change counter into `counter` until the process ends. `backend` is
/// this task's own: a waiting request holds a connection for up to [`MAX_WAIT`], and the
/// pages' requests never wait behind it.
pub async fn follow_changes(backend: Backend, caller: Caller, counter: watch::Sender<u64>) {
    let mut after = 0;
    let wait = wait_ms();
    loop {
        let request = WaitForChangeParams { after, timeout_ms: Some(wait) };
        match crate::calls::call(&backend, caller.clone(), request).await {
            Ok(mark) => {
                after = mark.counter;
                counter.send_if_modified(|shown| std::mem::replace(shown, after) != after);
            }
            Err(e) => {
                tracing::debug!("waiting for changes failed: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// `GET /events`: a `change` event with the counter at once, then at every change,
/// until the client leaves or the server stops.
pub async fn stream(State(state): State<Arc<AppState>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = state.changes.clone();
    let stopping = state.stopping.clone();
    let events = futures::stream::unfold((changes, stopping, true), |(mut changes, mut stopping, first)| async move {
        if !first {
            tokio::select! {
                changed = changes.changed() => changed.ok()?,
                _ = stopping.wait_for(|stop| *stop) => return None,
            }
        }
        let counter = *changes.borrow_and_update();
        Some((Ok(Event::default().event("change").data(counter.to_string())), (changes, stopping, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
