//! The PostgreSQL store: runs in a database server that many baton processes on many
//! machines share (`BATON_DATABASE_URL=postgres://...`). It keeps the sled store's
//! semantics behind the same trait:
//!
//! - [`commit`]: one transaction per change, under the run's row lock, idempotent by op
//!   id, acknowledged only after COMMIT returned with `synchronous_commit` on.
//! - [`read`]: snapshots, events paged by seq, checkpoints, templates, and listings by
//!   status and time with cursors and counted totals, from indexes.
//! - [`conn`]: a small pool per process and the retry loop (races, lost connections).
//! - [`schema`]: versioned migrations under an advisory lock.
//! - [`notify`]: the change feed from LISTEN/NOTIFY.
//! - [`maintenance`]: export, import, verify, backup.
//! - [`url`]: the URL, TLS, and redaction of the password from everything shown.
//!
//! Records are the sled store's shapes ([`crate::store::record`]): JSON snapshots that
//! name their template by content hash, JSON events and summaries. They are kept as
//! `text` (not `jsonb`, which would reorder object keys) so a run reads back exactly as
//! written and `baton migrate` round-trips byte for byte.

mod commit;
mod conn;
mod errors;
mod maintenance;
mod notify;
mod outbox;
mod read;
pub mod schema;
pub mod url;

use crate::engine::{Event, Run, Template};
use crate::error::BatonResult;
use crate::store::{BackupReport, Mutation, RunPage, RunQuery, RunStore, RunSummary, VerifyReport};
use async_trait::async_trait;
use conn::Connections;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
pub use url::DatabaseUrl;

/// Template bodies kept decoded (templates are few).
const BODY_CACHE: usize = 256;

/// What the store's operations share.
pub(crate) struct Inner {
    conns: Connections,
    /// The NOTIFY channel of this database and schema.
    channel: String,
    /// Template JSON by content hash: bodies known to be committed.
    bodies: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    changes: tokio::sync::watch::Sender<u64>,
}

/// The store: cheap to share behind an `Arc`. Dropping it closes its connections (and
/// stops its listener).
pub struct PgStore {
    inner: Arc<Inner>,
    listener: notify::Listener,
}

impl PgStore {
    /// Connect to `url`, check the server, and create or upgrade baton's tables. Waits
    /// (within `BATON_DATABASE_TIMEOUT`) for a server that is starting up.
    pub async fn open(url: DatabaseUrl) -> BatonResult<PgStore> {
        let conns = Connections::new(url)?;
        schema::migrate(&conns).await?;
        let channel = notify::channel(&conns).await?;
        let inner = Arc::new(Inner { conns, channel, bodies: Mutex::new(HashMap::new()), changes: tokio::sync::watch::Sender::new(0) });
        let listener = notify::Listener::new(&inner);
        Ok(PgStore { inner, listener })
    }

    /// Where the database is (`host:port/db`, no password).
    pub fn place(&self) -> &str {
        &self.inner.conns.url.place
    }
}

impl Inner {
    fn url(&self) -> &DatabaseUrl {
        &self.conns.url
    }

    fn cached_body(&self, hash: &str) -> Option<Arc<Vec<u8>>> {
        self.bodies.lock().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    fn remember_body(&self, hash: &str, json: Arc<Vec<u8>>) {
        let mut cache = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BODY_CACHE {
            cache.clear();
        }
        cache.insert(hash.to_string(), json);
    }

    /// Count a change seen (NOTIFY, or a reconnect of the listener).
    fn bump(&self) {
        self.changes.send_modify(|c| *c += 1);
    }
}

#[async_trait]
impl RunStore for PgStore {
    async fn run(&self, run_id: &str) -> BatonResult<Option<Run>> {
        read::run(&self.inner, run_id).await
    }

    async fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
        read::events(&self.inner, run_id, from, to, max_bytes).await
    }

    async fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        read::checkpoint(&self.inner, run_id, name).await
    }

    async fn template(&self, name: &str) -> BatonResult<Option<Template>> {
        read::template(&self.inner, name).await
    }

    async fn templates(&self) -> BatonResult<Vec<Template>> {
        read::templates(&self.inner).await
    }

    async fn list(&self, query: &RunQuery) -> BatonResult<RunPage> {
        read::list(&self.inner, query).await
    }

    async fn commit(&self, op_id: &str, run_id: &str, change: Mutation) -> BatonResult<Run> {
        commit::commit(&self.inner, op_id, run_id, &change).await
    }

    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> BatonResult<u64> {
        maintenance::export(&self.inner, out).await
    }

    async fn import(&self, input: &mut (dyn std::io::BufRead + Send), replace: bool) -> BatonResult<u64> {
        let records = crate::store::export::read_export(input)?;
        maintenance::import(&self.inner, records, replace).await
    }

    async fn backup(&self, dir: &std::path::Path) -> BatonResult<BackupReport> {
        maintenance::backup(&self.inner, dir).await
    }

    async fn verify(&self) -> BatonResult<VerifyReport> {
        maintenance::verify(&self.inner).await
    }

    /// One transaction; the events and checkpoints go with the run row (`ON DELETE CASCADE`).
    async fn delete_run(&self, run_id: &str) -> BatonResult<Option<RunSummary>> {
        maintenance::delete_run(&self.inner, run_id).await
    }

    fn shared_outbox(&self) -> Option<Box<dyn crate::store::SharedOutbox>> {
        Some(Box::new(outbox::PgOutbox::new(self.inner.conns.url.clone(), self.inner.channel.clone())))
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.listener.ensure_started(&self.inner);
        self.inner.changes.subscribe()
    }
}
