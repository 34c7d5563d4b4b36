//! After an answer: the git work its brief shows is due (a claimed task's worktree, a
//! fork's restored code, a joined fan-out's merge, a finished run's worktrees removed).

use super::{ask, git_root, read_brief};
use crate::api::{Caller, GetRunParams, RecordMergeParams};
use crate::backend::Backend;
use crate::engine::MergeState;
use crate::engine::naming::fork_worktree;
use crate::engine::{Brief, TaskBrief};
use crate::error::BatonResult;
use crate::gitops::lock::lock;
use crate::gitops::{git, merge, note_of, snapshot, worktree};
use std::path::Path;

/// Make the claimed task's worktree, when the run's workspace is a repository.
pub(super) async fn ensure_worktree(brief: &TaskBrief) -> BatonResult<()> {
    let (Some(repo), Some(branch)) = (&brief.repo, &brief.branch) else { return Ok(()) };
    worktree::ensure(Path::new(repo), Path::new(&brief.workdir), branch, brief.base.as_deref()).await.map(drop)
}

/// Restore a forked run's checkpoint code into its worktree; the note to show.
pub(super) async fn restore_fork(brief: &Brief) -> Option<String> {
    let workspace = brief.workspace.as_ref()?;
    let (root, head) = (workspace.git_root.as_deref()?, workspace.git_head.as_deref()?);
    let fork = fork_worktree(root, &brief.run_id);
    if workspace.cwd != fork.dir {
        return None;
    }
    let snapshot = workspace.git_snapshot.as_deref().filter(|s| *s != head);
    let restored = async {
        snapshot::restore(Path::new(root), Path::new(&fork.dir), &fork.branch, head, snapshot).await?;
        // The fork keeps the state it starts from, so it outlives the run it came from.
        snapshot::adopt_state(Path::new(root), &brief.run_id, snapshot.unwrap_or(head)).await
    };
    let what = "The code it was forked at";
    Some(match restored.await {
        Ok(()) => format!(
            "{what} (HEAD {head}{}) is restored in {} on branch {}: work there; your own working tree is untouched.",
            if snapshot.is_some() { " plus its uncommitted changes" } else { "" },
            fork.dir,
            fork.branch
        ),
        Err(e) => note_of(&e),
    })
}

/// A fork inside a fan-out keeps the tasks' work done by then: each task's branch of the
/// fork starts at the commit its last step left on the source run's branch, so the tasks
/// that had joined are merged at the fork's join and the others go on from there. The note
/// to show, if something could not be done.
pub(super) async fn carry_task_branches(backend: &Backend, caller: &Caller, brief: &Brief) -> Option<String> {
    let root = git_root(brief)?.to_string();
    let request = GetRunParams { run_id: brief.run_id.clone(), history_limit: Some(1), before_seq: None, step: None };
    let Ok(details) = ask(backend, caller, request).await else { return None };
    let fanout = details.run.fanout.as_ref().filter(|f| !f.joined)?;
    let mut failed = Vec::new();
    for task in &fanout.tasks {
        let Some(head) = task.last_code.as_ref().and_then(|(code, _)| code.head.clone()) else { continue };
        let Some(branch) = crate::engine::naming::task_worktree(&root, &brief.run_id, &task.id).map(|w| w.branch) else { continue };
        let exists = git(Path::new(&root), &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")]).probe().await.is_some();
        if !exists && let Err(e) = git(Path::new(&root), &["branch", &branch, &head]).text().await {
            failed.push(format!("task `{}` ({})", task.id, e.stderr));
        }
    }
    (!failed.is_empty()).then(|| {
        format!(
            "baton could not give these tasks of the fork their branch at the code they had reached: {}. Fix: create them with `git branch baton/{}/<task> <commit>`.",
            failed.join("; "),
            crate::engine::naming::run_short(&brief.run_id)
        )
    })
}

/// What [`reconcile`] did.
#[derive(Default)]
pub(super) struct Reconciled {
    /// This call merged the task branches (the brief now shows the result).
    pub(super) merged: bool,
    /// Notes for the answer.
    pub(super) lines: Vec<String>,
}

/// Do the git work `brief` shows is due: merge a joined fan-out's branches, and remove a
/// finished run's worktrees.
pub(super) async fn reconcile(backend: &Backend, caller: &Caller, brief: &mut Brief) -> Reconciled {
    let mut done = Reconciled::default();
    let Some(root) = git_root(brief).map(str::to_string) else { return done };
    if matches!(brief.merge, Some(MergeState::Pending { .. })) {
        match merge_once(backend, caller, Path::new(&root), &brief.run_id).await {
            Ok((fresh, merged)) => {
                let note = brief.note.take();
                *brief = fresh;
                brief.note = note;
                done.merged = merged;
            }
            Err(e) => done.lines.push(note_of(&e)),
        }
    }
    if brief.status.is_finished() {
        match worktree::remove_run(Path::new(&root), &brief.run_id).await {
            Ok(removal) => done.lines.extend(removal.note()),
            Err(e) => done.lines.push(note_of(&e)),
        }
    }
    done
}

/// Merge the run's task branches unless another process already has: under the
/// repository's merge lock, re-read the run, merge, record. Returns the run's brief after,
/// and whether this call merged.
async fn merge_once(backend: &Backend, caller: &Caller, root: &Path, run_id: &str) -> BatonResult<(Brief, bool)> {
    let _lock = lock(root, "merge").await?;
    let fresh = read_brief(backend, caller, run_id).await?;
    let Some(MergeState::Pending { tree, tasks, base }) = &fresh.merge else { return Ok((fresh, false)) };
    let report = merge::merge_tasks(root, Path::new(tree), run_id, tasks, base.as_deref()).await;
    let recorded = ask(backend, caller, RecordMergeParams { run_id: run_id.to_string(), report }).await?;
    Ok((recorded, true))
}
