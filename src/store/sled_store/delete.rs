//! Deleting a finished run: every record kept for it (snapshot, events, checkpoints, op
//! ids, index entry and counters) removed in one durable batch by the writer. Readers see
//! the run, through the overlay, until that batch is durable.

use super::batch::{Batch, count_into};
use super::keys::TreeId;
use super::{Db, StoreCore, index};
use crate::error::{BatonError, BatonResult};
use crate::store::RunSummary;

/// Add the removals of run `run_id` to `batch`; its summary, or `None` if there is no
/// such run. A run in progress is refused and nothing is added.
pub(super) fn plan_delete(shared: &StoreCore, db: &Db, batch: &mut Batch, run_id: &str) -> BatonResult<Option<RunSummary>> {
    let Some(run) = shared.stored_run(db, run_id)? else { return Ok(None) };
    if !run.status.is_finished() {
        return Err(BatonError::invalid_state(
            format!("run {run_id} is {}; only finished runs can be deleted", run.status.as_str()),
            "Cancel it first (`cancel_run` or `baton cancel`), or wait until it completes.",
        ));
    }
    let summary = RunSummary::of(&run);
    batch.writes.push((TreeId::Runs, run_id.as_bytes().to_vec(), None));
    super::batch::remove_history(db, batch, run_id)?;
    batch.writes.push((TreeId::Index, index::key_of(&summary), None));
    count_into(&mut batch.counts, &summary, -1);
    batch.overlay.runs.insert(run_id.to_string(), Some(run));
    batch.overlay.summaries.insert(run_id.to_string(), (Some(summary.clone()), None));
    Ok(Some(summary))
}
