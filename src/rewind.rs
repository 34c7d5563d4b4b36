//! Comparing two versions of a run, and where a fork came from: what `baton diff RUN --from
//! N --to M` (see `crate::cli::rewind`) and the page's compare show: the step the run was
//! at, the outcomes, the artifacts, the events in between and the code diff of the two
//! versions' tree states.
//!
//! Everything here runs in the calling process: the history comes from the owner like any
//! answer, and git runs where the repository is.

use crate::api::{Caller, GetRunParams};
use crate::backend::Backend;
use crate::engine::EventLine;
use crate::engine::{Event, Run};
use crate::engine::{naming::short_id, tree_state_at};
use crate::error::{BatonError, BatonResult};
use crate::gitops::git;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Bytes of the code diff a `baton diff` prints (the stat always covers it all).
pub const MAX_PATCH_BYTES: usize = 256 * 1024;
/// Events one history page asks for.
const PAGE: u32 = 1000;

/// What changed in a run between two versions.
#[derive(Debug, Serialize)]
pub struct RunDiff {
    pub run_id: String,
    pub from: Side,
    pub to: Side,
    /// The events after `from` up to `to`.
    pub events: Vec<EventLine>,
    /// Steps whose latest outcome differs.
    pub outcomes: Vec<OutcomeChange>,
    pub artifacts: ArtifactChanges,
    /// The code diff of the two versions' tree states; absent outside git.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeDiff>,
}

/// A run at one version.
#[derive(Debug, Serialize)]
pub struct Side {
    pub version: u64,
    pub status: &'static str,
    pub step: Option<String>,
    pub visits: BTreeMap<String, u32>,
    /// `task: status` for each task of the fan-out, if any.
    pub tasks: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeChange {
    pub step: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ArtifactChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct CodeDiff {
    pub repo: String,
    /// The state commits of the two versions.
    pub from: String,
    pub to: String,
    /// `git diff --stat` of the two.
    pub stat: String,
    /// `git diff` of the two (its first [`MAX_PATCH_BYTES`]).
    pub patch: String,
    pub truncated: bool,
}

/// The run's events up to `upto` (oldest first), with the run as it is now.
pub async fn history(backend: &Backend, caller: &Caller, run_id: &str, upto: u64) -> BatonResult<(Run, Vec<Event>)> {
    let mut before = upto.saturating_add(1);
    let mut events: Vec<Event> = Vec::new();
    loop {
        let request = GetRunParams { run_id: run_id.to_string(), history_limit: Some(PAGE), before_seq: Some(before), step: None };
        // Through the calling pipeline, as every read of the terminal and the page.
        let details = crate::calls::call(backend, caller.clone(), request).await?;
        let mut page = details.events;
        page.append(&mut events);
        events = page;
        match details.next_before_seq {
            Some(next) if next < before => before = next,
            _ => return Ok((details.run, events)),
        }
    }
}

/// What changed in run `run_id` from version `from` to version `to`.
pub async fn diff(backend: &Backend, caller: &Caller, run_id: &str, from: u64, to: u64) -> BatonResult<RunDiff> {
    let (now, events) = history(backend, caller, run_id, from.max(to)).await?;
    for (field, version) in [("from", from), ("to", to)] {
        if version == 0 || version > now.version {
            return Err(BatonError::invalid(
                field,
                format!("run {run_id} has no version {version} (its versions are 1 to {})", now.version),
                format!("Give versions from 1 to {}: `baton show {run_id}` lists its events with their numbers.", now.version),
            ));
        }
    }
    let old = Run::replay_at(run_id, &events, from, "from")?;
    let new = Run::replay_at(run_id, &events, to, "to")?;
    let (low, high) = (from.min(to), from.max(to));
    let between = events.iter().filter(|e| e.seq > low && e.seq <= high).map(EventLine::of).collect();
    let mut steps: Vec<&String> = old.outputs.keys().chain(new.outputs.keys()).collect();
    steps.sort();
    steps.dedup();
    let outcomes = steps
        .into_iter()
        .filter_map(|step| {
            let outcome = |run: &Run| run.outputs.get(step).map(|o| (o.outcome.clone(), o.version));
            let (a, b) = (outcome(&old), outcome(&new));
            (a != b).then(|| OutcomeChange { step: step.clone(), from: a.map(|(o, _)| o), to: b.map(|(o, _)| o) })
        })
        .collect();
    let mut artifacts = ArtifactChanges::default();
    for (name, value) in &new.artifacts {
        match old.artifacts.get(name) {
            None => artifacts.added.push(name.clone()),
            Some(before) if before != value => artifacts.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    artifacts.removed = old.artifacts.keys().filter(|n| !new.artifacts.contains_key(*n)).cloned().collect();
    let code = code_diff(&now, run_id, &events, from, to).await?;
    Ok(RunDiff { run_id: run_id.to_string(), from: Side::of(&old), to: Side::of(&new), events: between, outcomes, artifacts, code })
}

/// `git diff` of the tree states of versions `from` and `to`, refused when the repository
/// moved or the snapshots were pruned.
async fn code_diff(run: &Run, run_id: &str, events: &[Event], from: u64, to: u64) -> BatonResult<Option<CodeDiff>> {
    let Some(repo) = run.workspace.as_ref().and_then(|w| w.git_root.clone()) else { return Ok(None) };
    let state = |v: u64| {
        let upto: Vec<Event> = events.iter().take_while(|e| e.seq <= v).cloned().collect();
        tree_state_at(&upto).map(|(_, state)| state)
    };
    let (Some(a), Some(b)) = (state(from), state(to)) else { return Ok(None) };
    let root = Path::new(&repo);
    if git(root, &["rev-parse", "--git-dir"]).probe().await.is_none() {
        return Err(BatonError::invalid_state(
            format!("run {run_id}'s repository {repo} is not there any more (moved or deleted), so its code cannot be compared"),
            format!("Move the repository back to {repo} (baton records where it was)."),
        )
        .with_field("run_id"));
    }
    for (field, version, commit) in [("from", from, &a), ("to", to, &b)] {
        if git(root, &["cat-file", "-e", &format!("{commit}^{{commit}}")]).text().await.is_err() {
            return Err(BatonError::not_found(
                field,
                format!(
                    "the code of run {run_id} at version {version} (commit {}) is no longer in {repo}: its snapshots were removed",
                    short_id(commit)
                ),
                "The repository lost baton's refs/baton/ snapshot refs (a fresh clone, or refs deleted by hand): compare versions whose code is still there, or fetch those refs back from a copy of the repository that has them.",
            ));
        }
    }
    let fail =
        |f: crate::gitops::GitFailure| f.error("baton could not diff the two versions' code", "Fix what git reports, then try again.");
    let stat = git(root, &["diff", "--stat", &a, &b]).output().await.map_err(fail)?;
    let mut patch = git(root, &["diff", &a, &b]).output().await.map_err(fail)?;
    let truncated = patch.len() > MAX_PATCH_BYTES;
    if truncated {
        patch = crate::text::prefix(&patch, MAX_PATCH_BYTES).to_string();
    }
    Ok(Some(CodeDiff { repo, from: a, to: b, stat, patch, truncated }))
}

impl Side {
    fn of(run: &Run) -> Side {
        Side {
            version: run.version,
            status: run.status.as_str(),
            step: run.current_step.clone(),
            visits: run.visits.clone(),
            tasks: run.fanout.iter().flat_map(|f| &f.tasks).map(|t| format!("{}: {}", t.id, t.status.as_str())).collect(),
        }
    }

    /// One line for a person: the version, its status, its step and tasks.
    pub fn line(&self) -> String {
        let at = match &self.step {
            Some(step) => format!("at step `{step}` (visit {})", self.visits.get(step).copied().unwrap_or(0)),
            None => "at no step".to_string(),
        };
        let tasks = if self.tasks.is_empty() { String::new() } else { format!("; tasks {}", self.tasks.join(", ")) };
        format!("v{} {} {at}{tasks}", self.version, self.status)
    }
}

/// `Forked from A at version 5 (checkpoint `x`), itself forked from B at version 3`.
pub fn lineage(run: &Run) -> Option<String> {
    let origins = if run.lineage.is_empty() { run.forked_from.iter().cloned().collect() } else { run.lineage.clone() };
    let (first, rest) = origins.split_first()?;
    let mut text = format!("Forked from {}", first.label());
    for origin in rest {
        text.push_str(&format!(", itself forked from {}", origin.label()));
    }
    Some(text)
}
