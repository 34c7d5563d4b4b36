//! The one write path: a change to a run is ONE transaction, in two round trips.
//!
//! 1. `BEGIN` and `SELECT snapshot, recent_ops FROM runs WHERE run_id = $1 FOR NO KEY UPDATE`,
//!    pipelined. The row lock serializes changes to this run across every process and
//!    machine; changes to other runs never wait for it.
//! 2. If the op id is the run's id or in its ring of recent op ids, the change was
//!    already applied (this is a retry): roll back and answer with the stored run.
//!    Otherwise the engine's mutation runs against the locked snapshot (it checks
//!    `expected_version` and lease tokens, and may refuse: then roll back, nothing is
//!    written).
//! 3. The template body (if new), the run row (snapshot, listing columns, summary, op
//!    ring), the event, the checkpoint and the named template, `pg_notify`, and `COMMIT`,
//!    pipelined. The answer is given only after COMMIT returned, with
//!    `synchronous_commit=on` (set for every session baton opens): acknowledged means
//!    flushed to the server's WAL.
//!
//! Locks are held only while the statements run (the mutation is pure and takes
//! microseconds), never while waiting for a person or a model, so claims of different
//! tasks of one run queue for a millisecond behind each other rather than conflict, and
//! claims in different runs never touch. `SKIP LOCKED` does not apply: leases live inside
//! the run document, and a claim must see the run's latest state to pick a task and issue
//! the next fencing token; skipping a locked run would only turn a 1 ms wait into a
//! spurious "nothing to claim".
//!
//! If the connection breaks (or the server restarts) at any point, the attempt is re-run
//! on a new connection with the same op id: if the first COMMIT did land, step 2
//! recognises it, so a change is applied once and never lost once acknowledged.

use super::Inner;
use super::conn::Conn;
use super::errors::Failure;
use super::read::{big, decode_run, retrying};
use crate::engine::Run;
use crate::error::{BatonError, BatonResult};
use crate::store::{Commit, Mutation, RECENT_OPS, RunSummary, already_applied, check_commit, record};
use futures::future::BoxFuture;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio_postgres::types::ToSql;

/// `NO KEY UPDATE`: exclusive among writers of the run, yet compatible with the key-share
/// locks that inserting its events and checkpoints takes (foreign keys), so a commit never
/// waits on its own run's history.
const SELECT_FOR_UPDATE: &str = "SELECT snapshot, recent_ops FROM runs WHERE run_id = $1 FOR NO KEY UPDATE";
pub(super) const INSERT_BODY: &str = "INSERT INTO template_bodies (hash, body) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING";
pub(super) const INSERT_RUN: &str = "INSERT INTO runs (run_id, version, status, template_name, workspace, created_ms, updated_ms, template_hash, snapshot, summary, recent_ops) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const UPDATE_RUN: &str = "UPDATE runs SET version = $2, status = $3, template_name = $4, workspace = $5, created_ms = $6, updated_ms = $7, template_hash = $8, snapshot = $9, summary = $10, recent_ops = $11 WHERE run_id = $1";
const INSERT_EVENT: &str = "INSERT INTO events (run_id, seq, body) VALUES ($1, $2, $3)";
pub(super) const UPSERT_CHECKPOINT: &str = "INSERT INTO checkpoints (run_id, name, template_hash, snapshot) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, name) DO UPDATE SET template_hash = EXCLUDED.template_hash, snapshot = EXCLUDED.snapshot";
pub(super) const UPSERT_TEMPLATE: &str =
    "INSERT INTO templates (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// The columns of a run's row.
pub(super) struct RunRow {
    pub run_id: String,
    pub version: i64,
    pub status: &'static str,
    pub template_name: String,
    pub workspace: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub template_hash: String,
    pub snapshot: String,
    pub summary: String,
}

impl RunRow {
    pub fn of(run: &Run, template_hash: &str) -> BatonResult<RunRow> {
        let summary = RunSummary::of(run);
        Ok(RunRow {
            run_id: run.id.clone(),
            version: big(run.version),
            // The listed status (see `RunSummary::status`), so a listing finds a run one of
            // whose tasks waits for a human among the runs awaiting one.
            status: summary.status.as_str(),
            template_name: summary.template.clone(),
            workspace: summary.workspace.clone(),
            created_ms: big(run.created_at.millis()),
            updated_ms: big(run.updated_at.millis()),
            template_hash: template_hash.to_string(),
            snapshot: text(record::run_json(run, template_hash)?),
            summary: serde_json::to_string(&summary)?,
        })
    }

    /// The parameters of [`INSERT_RUN`] (and the update), with the op-id ring.
    pub fn params<'a>(&'a self, ring: &'a Vec<Option<String>>) -> [&'a (dyn ToSql + Sync); 11] {
        [
            &self.run_id,
            &self.version,
            &self.status,
            &self.template_name,
            &self.workspace,
            &self.created_ms,
            &self.updated_ms,
            &self.template_hash,
            &self.snapshot,
            &self.summary,
            ring,
        ]
    }
}

/// JSON bytes as text (serde_json writes UTF-8).
pub(super) fn text(json: Vec<u8>) -> String {
    String::from_utf8(json).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub async fn commit(inner: &Inner, op_id: &str, run_id: &str, change: &Mutation) -> BatonResult<Run> {
    retrying!(inner, "write to", |conn| attempt(inner, &conn, op_id, run_id, change).await)
}

/// A statement's outcome as a row count.
type Write<'a> = BoxFuture<'a, Result<u64, tokio_postgres::Error>>;

async fn attempt(inner: &Inner, conn: &Conn, op_id: &str, run_id: &str, change: &Mutation) -> Result<Run, Failure> {
    let client = conn.client();
    let select = client.prepare_cached(SELECT_FOR_UPDATE).await?;
    let key: [&(dyn ToSql + Sync); 1] = [&run_id];
    let (begun, row) = futures::join!(conn.begin(), client.query_opt(&select, &key));
    begun?;
    let row = row?;
    let (current, mut ring) = match row {
        None => (None, Vec::new()),
        Some(row) => {
            let run = decode_run(inner, client, &format!("runs/{run_id}"), row.get(0)).await?;
            let ring: Vec<Option<String>> = row.get(1);
            (Some(run), ring)
        }
    };
    if let Some(run) = &current
        && already_applied(run, op_id, &ring)
    {
        conn.rollback().await?;
        return Ok(run.clone());
    }
    // The change takes the run itself (no copy); what is checked after is its version.
    let version = current.as_ref().map(|run| run.version);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| change(current)))
        .unwrap_or_else(|_| Err(BatonError::internal(format!("a change to run {run_id} panicked"))))
        .and_then(|commit| check_commit(run_id, version, &commit).map(|_| commit));
    let Commit { run, event, checkpoint, template } = match outcome {
        Ok(commit) => commit,
        Err(refused) => {
            conn.rollback().await?;
            return Err(Failure::Baton(refused));
        }
    };
    let (hash, template_json) = record::template_hash(&run.template)?;
    let new_body = inner.cached_body(&hash).is_none().then(|| text(template_json.clone()));
    ring.resize(RECENT_OPS, None);
    ring[(run.version % RECENT_OPS as u64) as usize] = Some(op_id.to_string());
    let row = RunRow::of(&run, &hash)?;
    let seq = big(event.seq);
    let event_json = serde_json::to_string(&event)?;
    let template_row = template.as_ref().map(|t| serde_json::to_string(t).map(|json| (t.name.clone(), json))).transpose()?;
    let payload = format!("{run_id}:{}", run.version);

    let (body_stmt, run_stmt, event_stmt, checkpoint_stmt, template_stmt, notify_stmt) = futures::try_join!(
        client.prepare_cached(INSERT_BODY),
        client.prepare_cached(if version.is_some() { UPDATE_RUN } else { INSERT_RUN }),
        client.prepare_cached(INSERT_EVENT),
        client.prepare_cached(UPSERT_CHECKPOINT),
        client.prepare_cached(UPSERT_TEMPLATE),
        client.prepare_cached(NOTIFY),
    )?;
    let mut writes: Vec<Write<'_>> = Vec::new();
    if let Some(body) = &new_body {
        writes.push(Box::pin(async { client.execute(&body_stmt, &[&hash, body]).await }));
    }
    let (row, ring) = (&row, &ring);
    writes.push(Box::pin(async move { client.execute(&run_stmt, &row.params(ring)).await }));
    writes.push(Box::pin(async { client.execute(&event_stmt, &[&row.run_id, &seq, &event_json]).await }));
    if let Some(name) = &checkpoint {
        writes.push(Box::pin(async { client.execute(&checkpoint_stmt, &[&row.run_id, name, &hash, &row.snapshot]).await }));
    }
    if let Some((name, json)) = &template_row {
        writes.push(Box::pin(async { client.execute(&template_stmt, &[name, json]).await }));
    }
    writes.push(Box::pin(async { client.query_one(&notify_stmt, &[&inner.channel, &payload]).await.map(|_| 1) }));
    // Sent in order on the connection: the writes, then COMMIT, in one round trip. If a
    // write fails, the transaction is aborted and the server answers COMMIT with a
    // rollback.
    let (written, committed) = futures::join!(futures::future::join_all(writes), client.batch_execute("COMMIT"));
    let written: Result<Vec<u64>, _> = written.into_iter().collect();
    match (written, committed) {
        (Ok(counts), Ok(())) => {
            conn.set_in_tx(false);
            let run_updated = counts[usize::from(new_body.is_some())];
            if run_updated != 1 {
                return Err(Failure::Baton(BatonError::internal(format!("writing run {run_id} changed {run_updated} rows"))));
            }
            if new_body.is_some() {
                inner.remember_body(&hash, Arc::new(template_json));
            }
            Ok(run)
        }
        (Err(e), Ok(())) => {
            conn.set_in_tx(false);
            Err(e.into())
        }
        (_, Err(e)) => {
            // The connection broke, or COMMIT itself failed (the transaction is then
            // over); either way the retry looks for the op id before doing anything.
            if e.as_db_error().is_some() {
                conn.set_in_tx(false);
            }
            Err(e.into())
        }
    }
}
