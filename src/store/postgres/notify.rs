//! The change feed over LISTEN/NOTIFY. Every commit calls `pg_notify(channel, 'run:version')`
//! inside its transaction, so the notification is delivered exactly when (and only if)
//! the change commits, to every process listening on that database and schema.
//!
//! A process listens on one dedicated connection (outside the pool: a pooled connection
//! would be handed to other work), opened the first time someone asks for the feed. If
//! that connection breaks, the listener reconnects with backoff and counts one change
//! when it is back, since notifications sent meanwhile are lost: watchers then re-read.

use super::Inner;
use super::read::retrying;
use crate::error::{BatonError, BatonResult};
use futures::StreamExt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_postgres::AsyncMessage;

/// PostgreSQL's longest identifier.
const MAX_CHANNEL: usize = 63;

/// The channel of the database's current schema (two baton schemas in one database
/// never wake each other); checks on the way that the server stores UTF-8.
pub async fn channel(conns: &super::conn::Connections) -> BatonResult<String> {
    let mut retry = super::conn::Retry::new(conns, "read");
    let (schema, encoding): (Option<String>, String) = loop {
        let conn = retry.conn().await?;
        let result = conn.client().query_one("SELECT current_schema(), current_setting('server_encoding')", &[]).await;
        match result {
            Ok(row) => break (row.get(0), row.get(1)),
            Err(e) => retry.failed(e.into()).await?,
        }
    };
    if encoding != "UTF8" {
        return Err(BatonError::storage(
            format!("the PostgreSQL database {} stores text as {encoding}; baton needs UTF8", conns.url.place),
            "Create baton's database with ENCODING 'UTF8' (e.g. `createdb -E UTF8 -T template0 DATABASE`).",
        ));
    }
    let mut channel = format!("baton:{}", schema.unwrap_or_default());
    while channel.len() > MAX_CHANNEL {
        channel.pop();
    }
    Ok(channel)
}

/// The listening task of a store, started on demand and stopped with the store.
#[derive(Default)]
pub struct Listener {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Listener {
    pub fn new(_inner: &Arc<Inner>) -> Listener {
        Listener::default()
    }

    /// Start listening unless already started (needs a tokio runtime; without one the
    /// feed counts nothing).
    pub fn ensure_started(&self, inner: &Arc<Inner>) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            *task = Some(runtime.spawn(listen(Arc::downgrade(inner))));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// Listen until the store is gone, reconnecting as needed.
async fn listen(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(store) = inner.upgrade() else { return };
        let (url, channel) = (store.conns.url.clone(), store.channel.clone());
        drop(store);
        match session(&inner, &url, &channel).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(cause) => {
                tracing::info!("the change feed of {} lost its connection ({}); reconnecting", url.place, url.redact(&cause));
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One listening connection, until it breaks: `Ok` if it ended after working for a while.
async fn session(inner: &Weak<Inner>, url: &super::DatabaseUrl, channel: &str) -> Result<(), String> {
    let tls = url.tls().map_err(|e| e.message)?;
    let (client, mut connection) = url.config.connect(tls).await.map_err(|e| super::errors::describe(&e))?;
    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            if messages_tx.send(message).is_err() {
                return;
            }
        }
    });
    let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
    let listening = client.batch_execute(&format!("LISTEN {quoted}")).await;
    if let Err(e) = listening {
        driver.abort();
        return Err(super::errors::describe(&e));
    }
    // Changes made while no listener was connected were not notified: count one.
    match inner.upgrade() {
        Some(store) => store.bump(),
        None => return Ok(()),
    }
    let outcome = loop {
        match messages.recv().await {
            Some(Ok(AsyncMessage::Notification(_))) => match inner.upgrade() {
                Some(store) => store.bump(),
                None => break Ok(()),
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => break Err(super::errors::describe(&e)),
            None => break Err("connection closed".to_string()),
        }
    };
    driver.abort();
    outcome
}

/// Send a notification outside a change (after an import).
pub async fn notify(inner: &Inner, payload: &str) -> BatonResult<()> {
    retrying!(inner, "write to", |conn| {
        conn.client().execute("SELECT pg_notify($1, $2)", &[&inner.channel, &payload]).await?;
        Ok(())
    })
}
