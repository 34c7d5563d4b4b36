//! The embedded store: runs in sled. Every change is one sled transaction across the
//! trees it touches, flushed to disk before the call returns.

mod keys;

use super::{Commit, Mutation, RECENT_OPS, RunPage, RunQuery, RunStore, RunSummary};
use crate::engine::{Event, Run, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::Path;

/// The sled database and its trees.
pub struct SledStore {
    db: sled::Db,
    runs: Tree,
    summaries: Tree,
    events: Tree,
    checkpoints: Tree,
    templates: Tree,
}

type TxError = ConflictableTransactionError<BatonError>;

impl SledStore {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> BatonResult<SledStore> {
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => BatonError::new(
                ErrorCode::Unavailable,
                format!("the database at {} is still held by another process", dir.display()),
                "Retry in a moment; if it persists, look for a stray process using that directory.",
            ),
            e => BatonError::storage(
                format!("cannot open the baton database at {}: {e}", dir.display()),
                "Check the directory exists, is writable by you, and is not used by another program.",
            ),
        })?;
        Ok(SledStore {
            runs: db.open_tree("runs")?,
            summaries: db.open_tree("summaries")?,
            events: db.open_tree("events")?,
            checkpoints: db.open_tree("checkpoints")?,
            templates: db.open_tree("templates")?,
            db,
        })
    }

    fn run_sync(&self, run_id: &str) -> BatonResult<Option<Run>> {
        decode_opt(self.runs.get(run_id)?)
    }

    /// All run summaries, newest change first.
    fn summaries(&self) -> BatonResult<Vec<RunSummary>> {
        let mut all: Vec<RunSummary> = self.summaries.iter().values().map(|v| decode(&v?)).collect::<BatonResult<_>>()?;
        all.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.run_id.cmp(&b.run_id)));
        Ok(all)
    }

    /// The newest events of a run with `seq` in `from..=to` whose stored size fits in
    /// `max_bytes` (at least one, if any), oldest first.
    fn events_sync(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
        if from > to {
            return Ok(Vec::new());
        }
        let range = keys::event_key(run_id, from)..=keys::event_key(run_id, to);
        let mut events = Vec::new();
        let mut used = 0;
        for entry in self.events.range(range).values().rev() {
            let bytes = entry?;
            used += bytes.len();
            if used > max_bytes && !events.is_empty() {
                break;
            }
            events.push(decode::<Event>(&bytes)?);
        }
        events.reverse();
        Ok(events)
    }

    /// The snapshot saved as checkpoint `name` of a run.
    fn checkpoint_sync(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        decode_opt(self.checkpoints.get(keys::checkpoint_key(run_id, name))?)
    }

    fn template_sync(&self, name: &str) -> BatonResult<Option<Template>> {
        decode_opt(self.templates.get(name)?)
    }

    fn templates_sync(&self) -> BatonResult<Vec<Template>> {
        self.templates.iter().values().map(|v| decode(&v?)).collect()
    }

    /// The one write path: idempotency check, then run, summary, event, and any checkpoint
    /// or template in one transaction, then flush. A run remembers the ids of its last
    /// [`RECENT_OPS`] changes; a retry of one of them answers without applying it again.
    fn commit_sync(&self, op_id: &str, run_id: &str, change: &Mutation) -> BatonResult<Run> {
        let trees = (&self.runs, &self.summaries, &self.events, &self.checkpoints, &self.templates);
        let result = trees.transaction(|(runs, summaries, events, checkpoints, templates)| {
            let current = tx_get::<Run>(runs, run_id.as_bytes())?;
            let already_applied = |r: &&Run| r.id == op_id || r.recent_ops.iter().any(|op| op == op_id);
            if let Some(done) = current.as_ref().filter(already_applied) {
                return Ok(done.clone());
            }
            let Commit { mut run, event, checkpoint, template } = change(current).map_err(abort)?;
            run.recent_ops.push(op_id.to_string());
            let excess = run.recent_ops.len().saturating_sub(RECENT_OPS);
            run.recent_ops.drain(..excess);
            runs.insert(run_id.as_bytes(), encode(&run)?)?;
            summaries.insert(run_id.as_bytes(), encode(&RunSummary::of(&run))?)?;
            events.insert(keys::event_key(run_id, event.seq), encode(&event)?)?;
            if let Some(name) = &checkpoint {
                checkpoints.insert(keys::checkpoint_key(run_id, name), encode(&run)?)?;
            }
            if let Some(template) = &template {
                templates.insert(template.name.as_bytes(), encode(template)?)?;
            }
            Ok(run)
        });
        let run = result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => BatonError::from(e),
        })?;
        self.flush()?;
        Ok(run)
    }

    /// Remove a finished run's records in one transaction, then flush. Its events are
    /// `1..=version`; its checkpoints are found by key prefix (a finished run takes no
    /// new ones, so none can appear between the scan and the transaction).
    fn delete_sync(&self, run_id: &str) -> BatonResult<Option<RunSummary>> {
        let saved: Vec<sled::IVec> = self.checkpoints.scan_prefix(keys::run_prefix(run_id)).keys().collect::<Result<_, _>>()?;
        let trees = (&self.runs, &self.summaries, &self.events, &self.checkpoints);
        let result = trees.transaction(|(runs, summaries, events, checkpoints)| {
            let Some(run) = tx_get::<Run>(runs, run_id.as_bytes())? else { return Ok(None) };
            if !run.status.is_finished() {
                return Err(abort(BatonError::invalid_state(
                    format!("run {run_id} is {}; only finished runs can be deleted", run.status.as_str()),
                    "Cancel it first (`cancel_run` or `baton cancel`), or wait until it completes.",
                )));
            }
            runs.remove(run_id.as_bytes())?;
            summaries.remove(run_id.as_bytes())?;
            for seq in 1..=run.version {
                events.remove(keys::event_key(run_id, seq))?;
            }
            for key in &saved {
                checkpoints.remove(key)?;
            }
            Ok(Some(RunSummary::of(&run)))
        });
        let deleted = result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => BatonError::from(e),
        })?;
        self.flush()?;
        Ok(deleted)
    }

    /// Force everything written so far to disk.
    pub fn flush(&self) -> BatonResult<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[async_trait]
impl RunStore for SledStore {
    async fn run(&self, run_id: &str) -> BatonResult<Option<Run>> {
        self.run_sync(run_id)
    }

    async fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
        self.events_sync(run_id, from, to, max_bytes)
    }

    async fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        self.checkpoint_sync(run_id, name)
    }

    async fn template(&self, name: &str) -> BatonResult<Option<Template>> {
        self.template_sync(name)
    }

    async fn templates(&self) -> BatonResult<Vec<Template>> {
        self.templates_sync()
    }

    async fn list(&self, query: &RunQuery) -> BatonResult<RunPage> {
        let matching: Vec<RunSummary> = self.summaries()?.into_iter().filter(|s| query.matches(s)).collect();
        let total = matching.len();
        Ok(RunPage { runs: matching.into_iter().take(query.limit).collect(), total })
    }

    async fn commit(&self, op_id: &str, run_id: &str, change: Mutation) -> BatonResult<Run> {
        self.commit_sync(op_id, run_id, &change)
    }

    async fn delete_run(&self, run_id: &str) -> BatonResult<Option<RunSummary>> {
        self.delete_sync(run_id)
    }
}

fn abort(err: BatonError) -> TxError {
    ConflictableTransactionError::Abort(err)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, TxError> {
    serde_json::to_vec(value).map_err(|e| abort(BatonError::from(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> BatonResult<T> {
    Ok(serde_json::from_slice(bytes)?)
}

fn decode_opt<T: DeserializeOwned>(bytes: Option<sled::IVec>) -> BatonResult<Option<T>> {
    bytes.map(|b| decode(&b)).transpose()
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> Result<Option<T>, TxError> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
