//! Before a fork at a version or from a checkpoint: refuse it when the code it would
//! restore is gone, so the fork is never recorded without the code it promises.

use super::ask;
use crate::api::{Caller, GetRunParams};
use crate::backend::Backend;
use crate::engine::Workspace;
use crate::error::{BatonError, BatonResult};
use crate::gitops::git;
use std::path::Path;

/// Refuse a fork of run `run_id` at `version` whose code cannot be restored: its
/// repository moved, or its state commit is gone (pruned). Anything else (no such run or
/// version, no git) is the service's to answer.
pub(super) async fn check_code_at(backend: &Backend, caller: &Caller, run_id: &str, version: u64) -> BatonResult<()> {
    let mut before = version.saturating_add(1);
    let (run, found) = loop {
        let request = GetRunParams { run_id: run_id.to_string(), history_limit: Some(1000), before_seq: Some(before), step: None };
        let Ok(details) = ask(backend, caller, request).await else { return Ok(()) };
        if version > details.run.version {
            return Ok(());
        }
        if let Some(found) = crate::engine::tree_state_at(&details.events) {
            break (details.run, found);
        }
        match details.next_before_seq {
            Some(next) if next < before => before = next,
            _ => return Ok(()),
        }
    };
    let Some(root) = run.workspace.as_ref().and_then(|w| w.git_root.clone()) else { return Ok(()) };
    let (_, state) = found;
    let fix = "Fork at a version whose code is still kept, or from a named checkpoint of the run.";
    check_kept(&root, run_id, &format!("at version {version}"), "at_version", &[state], fix).await
}

/// Refuse a fork of run `run_id` from checkpoint `name` whose code cannot be restored, as
/// [`check_code_at`] does for a version: the repository it was saved in moved, or its
/// commits are gone (its refs deleted or pruned). A checkpoint the run does not have, or
/// one saved outside git, is the service's to answer.
pub(super) async fn check_checkpoint_code(backend: &Backend, caller: &Caller, run_id: &str, name: &str) -> BatonResult<()> {
    let mut before: Option<u64> = None;
    // The latest save of that name is the one a fork starts from.
    let workspace = loop {
        let request = GetRunParams { run_id: run_id.to_string(), history_limit: Some(1000), before_seq: before, step: None };
        let Ok(details) = ask(backend, caller, request).await else { return Ok(()) };
        if !details.run.checkpoints.iter().any(|c| c == name) {
            return Ok(());
        }
        let saved = details.events.iter().rev().find_map(|e| match &e.kind {
            crate::engine::EventKind::CheckpointSaved { name: saved, workspace, .. } if saved == name => Some(workspace.clone()),
            _ => None,
        });
        if let Some(workspace) = saved {
            break workspace;
        }
        match details.next_before_seq {
            Some(next) if before.is_none_or(|b| next < b) => before = Some(next),
            _ => return Ok(()),
        }
    };
    let Some(Workspace { git_root: Some(root), git_head: Some(head), git_snapshot, .. }) = workspace else { return Ok(()) };
    let commits: Vec<String> = std::iter::once(head).chain(git_snapshot).collect();
    let fix = "Fork from a checkpoint or a version whose code is still kept (`resume` with `at_version`), or save a new checkpoint.";
    check_kept(&root, run_id, &format!("at checkpoint `{name}`"), "checkpoint", &commits, fix).await
}

/// Refuse restoring run `run_id`'s code `what` (`at version 4`) when its repository `root`
/// is not there any more (field `run_id`), or one of `commits` is gone from it (field
/// `field`, with `fix`).
async fn check_kept(root: &str, run_id: &str, what: &str, field: &str, commits: &[String], fix: &str) -> BatonResult<()> {
    if git(Path::new(root), &["rev-parse", "--git-dir"]).probe().await.is_none() {
        return Err(BatonError::invalid_state(
            format!("run {run_id}'s repository {root} is not there any more (moved or deleted), so its code {what} cannot be restored"),
            format!("Move the repository back to {root} (baton records where it was), then fork again."),
        )
        .with_field("run_id"));
    }
    for commit in commits {
        if git(Path::new(root), &["cat-file", "-e", &format!("{commit}^{{commit}}")]).text().await.is_err() {
            return Err(BatonError::not_found(
                field,
                format!(
                    "the code of run {run_id} {what} (commit {}) is no longer in {root}: its snapshots were removed (refs/baton/{}/ deleted or pruned)",
                    crate::engine::naming::short_id(commit),
                    crate::engine::naming::run_short(run_id)
                ),
                fix,
            ));
        }
    }
    Ok(())
}
