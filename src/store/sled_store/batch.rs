//! What one writer batch is made of: its writes, the runs and op-id rings as the batch
//! leaves them, counter changes and template bodies, plus the listing counters and the
//! template-body cache every planner of a batch uses. The writer executes batches;
//! commits, imports and deletions plan them here, so none of those planners needs the
//! writer itself (and the writer may call them without an import circle).

use super::keys::{self, TreeId};
use super::{Db, Overlay, StoreCore};
use crate::engine::{Run, Template};
use crate::error::BatonResult;
use crate::store::RunSummary;
use std::collections::HashMap;

/// One write of a batch: tree, key, new value (`None` removes).
pub(super) type Write = (TreeId, Vec<u8>, Option<Vec<u8>>);

/// Everything one batch writes and answers.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) writes: Vec<Write>,
    /// Runs as the batch leaves them so far.
    pub(super) runs: HashMap<String, Option<Run>>,
    /// Op-id rings of the runs the batch touches (slot -> op id).
    pub(super) rings: HashMap<String, Vec<Option<String>>>,
    /// Counter changes.
    pub(super) counts: HashMap<Vec<u8>, i64>,
    /// Template bodies written by this batch.
    pub(super) bodies: Vec<String>,
    pub(super) overlay: Overlay,
}

/// Content hashes of recently committed templates. Only hashes whose body is durable are
/// kept, so a hit never skips writing a body that a failed batch lost.
#[derive(Default)]
pub(super) struct Bodies {
    hashes: Vec<(Template, String)>,
}

/// Most template hashes [`Bodies`] keeps (templates are few).
const KEPT_HASHES: usize = 64;

impl Bodies {
    /// The content hash of `template`, writing its body into `batch` if it is not stored yet.
    pub(super) fn body_in(&mut self, shared: &StoreCore, db: &Db, batch: &mut Batch, template: &Template) -> BatonResult<String> {
        if let Some((_, hash)) = self.hashes.iter().find(|(t, _)| t == template) {
            return Ok(hash.clone());
        }
        let (hash, json) = super::codec::template_hash(template)?;
        if batch.bodies.contains(&hash) {
            return Ok(hash);
        }
        if db.contains_key(TreeId::Bodies, hash.as_bytes())? {
            if self.hashes.len() >= KEPT_HASHES {
                self.hashes.remove(0);
            }
            self.hashes.push((template.clone(), hash.clone()));
            return Ok(hash);
        }
        let record = shared.codec.encode_json(TreeId::Bodies.name(), hash.as_bytes(), &json)?;
        batch.writes.push((TreeId::Bodies, hash.as_bytes().to_vec(), Some(record)));
        batch.bodies.push(hash.clone());
        Ok(hash)
    }
}

/// Record the counter changes of adding (`delta` 1) or removing (-1) a run's summary.
pub(super) fn count_into(counts: &mut HashMap<Vec<u8>, i64>, summary: &RunSummary, delta: i64) {
    for template in [None, Some(summary.template.as_str())] {
        *counts.entry(keys::count_key(summary.status, template)).or_default() += delta;
    }
}

/// Add to `batch` the removal of every event, checkpoint and op id kept for `run_id`.
pub(super) fn remove_history(db: &Db, batch: &mut Batch, run_id: &str) -> BatonResult<()> {
    for tree in [TreeId::Events, TreeId::Checkpoints, TreeId::Ops] {
        for entry in db.scan_prefix(tree, &keys::run_prefix(run_id)) {
            batch.writes.push((tree, entry?.0.to_vec(), None));
        }
    }
    Ok(())
}

/// Apply writes in one transaction, keeping no undo (a repair, a journal replay).
pub(super) fn apply(db: &Db, writes: &[Write]) -> Result<(), String> {
    use sled::Transactional;
    db.trees
        .as_slice()
        .transaction(|trees| {
            for (tree, key, value) in writes {
                match value {
                    Some(v) => trees[*tree as usize].insert(key.as_slice(), v.as_slice())?,
                    None => trees[*tree as usize].remove(key.as_slice())?,
                };
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(|e| format!("{e:?}"))
}
