//! Before a report or an answer: what the code it carries is (the run's tree's state, or
//! what baton committed in the task's worktree), and the commit a plan's tasks start from.

use super::{ask, read_brief};
use crate::api::{AdvanceParams, AnswerHumanParams, Caller, ShowTask};
use crate::backend::Backend;
use crate::engine::{TaskCode, TaskStatus};
use crate::error::{BatonError, BatonResult};
use crate::gitops::commit::{self, Author, Committed};
use crate::gitops::{git, note_of, snapshot};
use std::path::Path;

/// The commit a plan's tasks branch from: `base` (or HEAD) of the run's tree, resolved
/// there to a commit id. A run outside git keeps the plan as it is.
pub(super) async fn resolve_base(backend: &Backend, caller: &Caller, run_id: &str, base: Option<&str>) -> BatonResult<Option<String>> {
    let Ok(brief) = read_brief(backend, caller, run_id).await else { return Ok(base.map(str::to_string)) };
    let Some(tree) = brief.workspace.as_ref().filter(|w| w.git_root.is_some()).map(|w| w.cwd.clone()) else {
        return Ok(base.map(str::to_string));
    };
    let rev = base.unwrap_or("HEAD");
    match git(Path::new(&tree), &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")]).probe().await {
        Some(commit) => Ok(Some(commit)),
        None if base.is_some() => Err(BatonError::invalid(
            "plan.base",
            format!("`{rev}` is not a commit of the repository at {tree}"),
            "Give a branch, tag or commit id of the run's repository, or omit `base` to start the tasks from its HEAD.",
        )),
        // No commit yet: claims will say so.
        None => Ok(None),
    }
}

/// The state of run `run_id`'s own tree as its current step leaves it (see
/// [`snapshot::step_state`]), as a report's code record; `None` outside git. A failure
/// records nothing and says why in the note.
pub(super) async fn tree_code(backend: &Backend, caller: &Caller, run_id: &str) -> (Option<TaskCode>, Option<String>) {
    let workspace = match super::known::workspace_of(run_id) {
        Some(workspace) => workspace,
        None => {
            let Ok(brief) = read_brief(backend, caller, run_id).await else { return (None, None) };
            super::known::remember(run_id, &brief.workspace);
            brief.workspace
        }
    };
    let Some(tree) = workspace.as_ref().filter(|w| w.git_root.is_some()).map(|w| w.cwd.clone()) else { return (None, None) };
    if !Path::new(&tree).is_dir() {
        return (None, Some(format!("The run's tree {tree} is gone, so this step's code is not kept.")));
    }
    match snapshot::step_state(Path::new(&tree), run_id).await {
        Ok(Some(state)) => {
            let code = TaskCode { worktree: tree, from: Some(state.head), head: Some(state.state), ..TaskCode::default() };
            (Some(code), None)
        }
        Ok(None) => (None, None),
        Err(e) => (None, Some(format!("This step's code is not kept: {}", note_of(&e)))),
    }
}

/// Longest subject of a step's commit.
const MAX_SUBJECT_CHARS: usize = 100;

/// Commit what the reported step left uncommitted in its task's worktree (see
/// [`commit::commit_step`]); `None` when the task has no worktree of its own or is not
/// held (the report will be refused, and nothing is touched).
pub(super) async fn commit_report(backend: &Backend, caller: &Caller, p: &AdvanceParams) -> Option<(String, Committed)> {
    let task = p.task.as_deref()?;
    let request = ShowTask { run_id: p.run_id.clone(), task: task.to_string() };
    let Ok(brief) = ask(backend, caller, request).await else { return None };
    let (Some(_), Some(branch)) = (&brief.repo, &brief.branch) else { return None };
    if brief.status != TaskStatus::Claimed {
        return None;
    }
    let step = brief.step.as_deref().unwrap_or("?");
    let role = brief.role.as_deref().unwrap_or("?");
    let first = crate::text::first_line(&p.output, MAX_SUBJECT_CHARS);
    let subject: String = format!("{task}: {step} ({role}) {}: {first}", p.outcome).chars().take(MAX_SUBJECT_CHARS).collect();
    let body = format!(
        "Committed by baton for {}: what step `{step}` of task `{task}` (run {}) left uncommitted in the task's worktree when it reported `{}`.",
        caller.actor.label(),
        p.run_id,
        p.outcome
    );
    let author = Author::of(&caller.actor);
    let from = brief.head.as_deref().or(brief.base.as_deref());
    let worktree = Path::new(&brief.workdir);
    let committed = commit::commit_step(&commit::Step { worktree, branch, from, author: &author, subject: &subject, body: &body }).await;
    Some((format!("Step `{step}` ({})", caller.actor.label()), committed))
}

/// Before a task's question is answered: commit what was left uncommitted in its worktree
/// (someone fixed things by hand, or a step's commit had failed), authored by whoever
/// answers. Recorded only when there was something to commit.
pub(super) async fn commit_answer(backend: &Backend, caller: &Caller, p: &AnswerHumanParams) -> Option<(String, Committed)> {
    let task = p.task.as_deref()?;
    let request = ShowTask { run_id: p.run_id.clone(), task: task.to_string() };
    let Ok(brief) = ask(backend, caller, request).await else { return None };
    let (Some(_), Some(branch)) = (&brief.repo, &brief.branch) else { return None };
    if brief.status != TaskStatus::AwaitingHuman || !Path::new(&brief.workdir).is_dir() {
        return None;
    }
    let answer = crate::text::first_line(&p.answer, MAX_SUBJECT_CHARS);
    let subject: String = format!("{task}: answered `{answer}`").chars().take(MAX_SUBJECT_CHARS).collect();
    let body = format!(
        "Committed by baton for {}: what was left uncommitted in the worktree of task `{task}` (run {}) when its question was answered.",
        caller.actor.label(),
        p.run_id
    );
    let author = Author::of(&caller.actor);
    let from = brief.head.as_deref().or(brief.base.as_deref());
    let worktree = Path::new(&brief.workdir);
    let committed = commit::commit_step(&commit::Step { worktree, branch, from, author: &author, subject: &subject, body: &body }).await;
    let worth = committed.code.commit.is_some() || committed.code.error.is_some();
    worth.then(|| (format!("The answer to the task's question ({})", caller.actor.label()), committed))
}
