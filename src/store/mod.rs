//! Durable storage of runs in sled. Every change is one sled transaction across the
//! trees it touches, flushed to disk before the call returns.

mod keys;

use crate::engine::{Event, Run, RunStatus, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::Path;

/// A compact listing entry, kept beside each run so listing never loads full runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub title: String,
    pub template: String,
    pub status: RunStatus,
    pub step: Option<String>,
    pub role: Option<String>,
    pub version: u64,
    /// The pending human question, if any.
    pub question: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl RunSummary {
    pub fn of(run: &Run) -> RunSummary {
        RunSummary {
            run_id: run.id.clone(),
            title: run.title.clone(),
            template: run.template.name.clone(),
            status: run.status,
            step: run.current_step.clone(),
            role: run.current_step.as_deref().and_then(|s| run.template.step(s)).map(|s| s.role.clone()),
            version: run.version,
            question: run.pending_gate.as_ref().map(|g| g.question.clone()),
            created_at: run.created_at.clone(),
            updated_at: run.updated_at.clone(),
        }
    }
}

/// What one change writes besides the run snapshot and its event.
#[derive(Debug, Default, Clone)]
pub struct Extra {
    /// Save the run (as it is after the change) as this checkpoint name.
    pub checkpoint: Option<String>,
    /// Remember this template by name for later runs.
    pub template: Option<Template>,
}

/// The sled database and its trees.
pub struct Store {
    db: sled::Db,
    runs: Tree,
    summaries: Tree,
    events: Tree,
    checkpoints: Tree,
    templates: Tree,
}

/// How many change ids a run remembers for deduplicating retries. Retries follow an owner
/// failover within seconds, long before 32 further changes; a creation is recognised by
/// its run id, which is its op id, however old.
pub const RECENT_OPS: usize = 32;

type TxError = ConflictableTransactionError<BatonError>;

impl Store {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> BatonResult<Store> {
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
        Ok(Store {
            runs: db.open_tree("runs")?,
            summaries: db.open_tree("summaries")?,
            events: db.open_tree("events")?,
            checkpoints: db.open_tree("checkpoints")?,
            templates: db.open_tree("templates")?,
            db,
        })
    }

    pub fn run(&self, run_id: &str) -> BatonResult<Option<Run>> {
        decode_opt(self.runs.get(run_id)?)
    }

    /// All run summaries, newest change first.
    pub fn summaries(&self) -> BatonResult<Vec<RunSummary>> {
        let mut all: Vec<RunSummary> = self.summaries.iter().values().map(|v| decode(&v?)).collect::<BatonResult<_>>()?;
        all.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.run_id.cmp(&b.run_id)));
        Ok(all)
    }

    /// The newest events of a run with `seq` in `from..=to` whose stored size fits in
    /// `max_bytes` (at least one, if any), oldest first.
    pub fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
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
    pub fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        decode_opt(self.checkpoints.get(keys::checkpoint_key(run_id, name))?)
    }

    pub fn template(&self, name: &str) -> BatonResult<Option<Template>> {
        decode_opt(self.templates.get(name)?)
    }

    pub fn templates(&self) -> BatonResult<Vec<Template>> {
        self.templates.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Store a brand-new run with its first event. The run's id must be `op_id`, so a
    /// retried creation finds the run it already created.
    pub fn create_run(&self, op_id: &str, run: &Run, event: &Event, extra: Extra) -> BatonResult<Run> {
        if run.id != op_id {
            return Err(BatonError::internal(format!("run id {} is not its creating op id {op_id}", run.id)));
        }
        self.commit(op_id, op_id, |current| match current {
            Some(_) => Err(BatonError::internal(format!("run id {op_id} already exists"))),
            None => Ok((run.clone(), event.clone(), extra.clone())),
        })
    }

    /// Apply `change` to the stored run atomically. `change` may be called more than
    /// once (sled retries conflicting transactions), so it must be pure.
    pub fn update_run<F>(&self, op_id: &str, run_id: &str, change: F) -> BatonResult<Run>
    where
        F: Fn(&mut Run) -> BatonResult<(Event, Extra)>,
    {
        self.commit(op_id, run_id, |current| {
            let mut run = current.ok_or_else(|| unknown_run(run_id))?;
            let (event, extra) = change(&mut run)?;
            Ok((run, event, extra))
        })
    }

    /// The one write path: idempotency check, then run, summary, event, and any checkpoint
    /// or template in one transaction, then flush. A run remembers the ids of its last
    /// [`RECENT_OPS`] changes; a retry of one of them answers without applying it again.
    fn commit<F>(&self, op_id: &str, run_id: &str, change: F) -> BatonResult<Run>
    where
        F: Fn(Option<Run>) -> BatonResult<(Run, Event, Extra)>,
    {
        let trees = (&self.runs, &self.summaries, &self.events, &self.checkpoints, &self.templates);
        let result = trees.transaction(|(runs, summaries, events, checkpoints, templates)| {
            let current = tx_get::<Run>(runs, run_id.as_bytes())?;
            let already_applied = |r: &&Run| r.id == op_id || r.recent_ops.iter().any(|op| op == op_id);
            if let Some(done) = current.as_ref().filter(already_applied) {
                return Ok(done.clone());
            }
            let (mut run, event, extra) = change(current).map_err(abort)?;
            run.recent_ops.push(op_id.to_string());
            let excess = run.recent_ops.len().saturating_sub(RECENT_OPS);
            run.recent_ops.drain(..excess);
            runs.insert(run_id.as_bytes(), encode(&run)?)?;
            summaries.insert(run_id.as_bytes(), encode(&RunSummary::of(&run))?)?;
            events.insert(keys::event_key(run_id, event.seq), encode(&event)?)?;
            if let Some(name) = &extra.checkpoint {
                checkpoints.insert(keys::checkpoint_key(run_id, name), encode(&run)?)?;
            }
            if let Some(template) = &extra.template {
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

    /// Force everything written so far to disk.
    pub fn flush(&self) -> BatonResult<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// The error for a run id that is not in the database.
pub fn unknown_run(run_id: &str) -> BatonError {
    BatonError::not_found(
        "run_id",
        format!("no run with id `{run_id}`"),
        "Call `list_runs` (or `resume` without arguments) to see existing run ids.",
    )
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
