//! The git work a request implies, done around it in the calling process:
//!
//! - before a plan is reported: its `base` becomes the commit the run's tree is at;
//! - before a checkpoint: the run's tree's uncommitted state is snapshotted (kept under a ref after);
//! - after a claim: the task's worktree exists before the brief is answered;
//! - before a task step is reported: what the step left uncommitted in the task's worktree
//!   is committed on its branch, and the report carries what was done (`code`); a refused
//!   report takes that commit back;
//! - after a task finishes, or whenever a brief shows it: a joined fan-out's branches are
//!   merged (once, under a repository lock, recorded with `RecordMerge`), and a finished
//!   run's worktrees are removed;
//! - before a run's own step is reported (and when a run starts): the run's tree is
//!   snapshotted as a state commit kept under the run's ref, made only when the tree
//!   changed since the last one, and the report carries it (`code`);
//! - before a fork at a version or from a checkpoint: its code is checked to still exist;
//! - after a fork: the checkpoint's (or version's) code is restored into the fork's worktree;
//! - after `delete`/`prune`: the deleted runs' refs are removed.
//!
//! Git failures never fail the request (it is already recorded): the answer's `note` says
//! what failed, the command, git's message and the fix.

use super::cmd::{git, note_of};
use super::commit::{self, Author, Committed};
use super::lock::lock;
use super::{merge, snapshot, worktree};
use crate::api::{AdvanceParams, AnswerHumanParams, Caller, GetRunParams, Reply, Request, ResumeParams};
use crate::backend::Backend;
use crate::engine::MergeState;
use crate::engine::TaskCode;
use crate::engine::naming::check_identifier;
use crate::engine::naming::{checkpoint_ref, fork_worktree};
use crate::engine::{Brief, TaskBrief, TaskStatus, Workspace};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::workspace::{Probe, probe};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};

/// What to do once the request is answered.
enum After {
    /// A claim: make the task's worktree.
    Claim,
    /// A change that may finish a task, and with it the fan-out or the run; for a step's
    /// report or an answer, what baton committed for it (and what to call it in the note).
    TaskChange(Option<Box<(String, Committed)>>),
    /// A run's briefing: read it again if the git work changed the run.
    Briefing(String),
    /// A fork: restore the checkpoint's code into its worktree.
    Fork,
    /// A run started: keep the state of its tree under the run's ref.
    Started {
        repo: String,
        state: String,
    },
    /// A line for the answer's note (e.g. why the tree's state could not be kept).
    Note(String),
    /// Delete or prune: remove the deleted runs' refs.
    Deleted,
    /// A checkpoint: keep its code under a ref.
    Checkpoint {
        run_id: String,
        name: String,
        repo: String,
        code: Option<String>,
        note: Option<String>,
    },
    Nothing,
}

/// Execute `request` for `caller` through `backend`, with the git work it implies.
pub async fn call(backend: &Backend, mut caller: Caller, mut request: Request) -> BatonResult<Reply> {
    if matches!(request, Request::Import(_)) {
        // An import may replace a run, workspace and all.
        known_workspaces().clear();
    }
    let after = before(backend, &mut caller, &mut request).await?;
    let reply = match backend.call_as(caller.clone(), request).await {
        Ok(reply) => {
            match &reply {
                Reply::Brief(brief) => remember_workspace(&brief.run_id, &brief.workspace),
                Reply::Briefing(briefing) => remember_workspace(&briefing.brief.run_id, &briefing.brief.workspace),
                _ => {}
            }
            reply
        }
        Err(error) => {
            // The report was refused (not lost): its commit must not outlive it.
            let refused = matches!(
                error.code,
                ErrorCode::InvalidArgument | ErrorCode::NotFound | ErrorCode::Conflict | ErrorCode::InvalidState | ErrorCode::TooLarge
            );
            if let After::TaskChange(Some(reported)) = &after
                && let (_, committed) = reported.as_ref()
                && let Some((commit, parent)) = &committed.undo
                && refused
            {
                commit::undo(Path::new(&committed.code.worktree), commit, parent).await;
            }
            return Err(error);
        }
    };
    Ok(settle(backend, &caller, after, reply).await)
}

async fn before(backend: &Backend, caller: &mut Caller, request: &mut Request) -> BatonResult<After> {
    Ok(match request {
        Request::Advance(p) if p.task.is_none() => {
            if let Some(plan) = p.plan.as_mut() {
                plan.base = resolve_base(backend, caller, &p.run_id, plan.base.as_deref()).await?;
            }
            // Only the calling process says what the step left.
            let (code, note) = tree_code(backend, caller, &p.run_id).await;
            p.code = code;
            note.map_or(After::Nothing, After::Note)
        }
        Request::StartWorkflow(_) => {
            let Some(workspace) = caller.workspace.as_mut() else { return Ok(After::Nothing) };
            let (Some(root), Some(head)) = (workspace.git_root.clone(), workspace.git_head.clone()) else { return Ok(After::Nothing) };
            match snapshot::snapshot(Path::new(&workspace.cwd)).await {
                Ok(state) => {
                    workspace.git_snapshot = state.clone();
                    After::Started { repo: root, state: state.unwrap_or(head) }
                }
                Err(e) => After::Note(format!("The run's starting code is only its HEAD: {}", note_of(&e))),
            }
        }
        Request::DeleteRun(_) => After::Deleted,
        Request::Prune(p) if p.dry_run != Some(true) => After::Deleted,
        Request::Advance(p) if p.task.is_some() => {
            // Only the calling process says what it committed.
            p.code = None;
            let committed = commit_report(backend, caller, p).await;
            p.code = committed.as_ref().map(|(_, c)| c.code.clone());
            After::TaskChange(committed.map(Box::new))
        }
        Request::AnswerHuman(p) if p.task.is_some() => {
            p.code = None;
            let committed = commit_answer(backend, caller, p).await;
            p.code = committed.as_ref().map(|(_, c)| c.code.clone());
            After::TaskChange(committed.map(Box::new))
        }
        // An answer without `task` may be for the one task that waits (the service picks
        // it); what its worktree holds is committed with that task's next report.
        Request::AnswerHuman(_) => After::TaskChange(None),
        Request::Resume(ResumeParams { run_id: Some(run_id), checkpoint: None, at_version: Some(version), .. }) => {
            check_code_at(backend, caller, run_id, *version).await?;
            After::Fork
        }
        Request::Resume(ResumeParams { run_id: Some(run_id), checkpoint: Some(name), at_version: None, .. }) => {
            check_checkpoint_code(backend, caller, run_id, name).await?;
            After::Fork
        }
        Request::Resume(p) => match (&p.run_id, &p.checkpoint, &p.claim, &p.task) {
            (Some(_), Some(_), _, _) => After::Fork,
            (Some(_), None, Some(_), _) => After::Claim,
            (Some(run_id), None, None, None) => After::Briefing(run_id.clone()),
            _ => After::Nothing,
        },
        Request::ForkRun(p) => {
            check_checkpoint_code(backend, caller, &p.run_id, &p.checkpoint).await?;
            After::Fork
        }
        // An invalid name is refused by the service; there is no code to keep for it.
        Request::Checkpoint(p) if check_identifier(&p.name, "name").is_err() => After::Nothing,
        Request::Checkpoint(p) => {
            // A checkpoint keeps the code of the run's tree (a fork's is its own worktree),
            // else of the caller's.
            if let Ok(Brief { workspace: Some(run_workspace), .. }) = read_brief(backend, caller, &p.run_id).await
                && run_workspace.git_root.is_some()
            {
                let probed = probe(Path::new(&run_workspace.cwd), Probe::Full).await;
                caller.workspace = Some(Workspace { git_root: run_workspace.git_root, ..probed });
            }
            let Some(workspace) = caller.workspace.as_mut() else { return Ok(After::Nothing) };
            let (Some(root), Some(head)) = (workspace.git_root.clone(), workspace.git_head.clone()) else { return Ok(After::Nothing) };
            let (code, note) = match snapshot::snapshot(Path::new(&workspace.cwd)).await {
                Ok(snapshot) => (snapshot.or(Some(head)), None),
                Err(e) => (Some(head), Some(format!("Only HEAD is kept: {}", note_of(&e)))),
            };
            workspace.git_snapshot = code.clone().filter(|c| Some(c) != workspace.git_head.as_ref());
            After::Checkpoint { run_id: p.run_id.clone(), name: p.name.clone(), repo: root, code, note }
        }
        _ => After::Nothing,
    })
}

async fn settle(backend: &Backend, caller: &Caller, after: After, reply: Reply) -> Reply {
    match (after, reply) {
        (After::Claim, Reply::Task(mut brief)) => {
            if let Err(e) = ensure_worktree(&brief).await {
                add_note(&mut brief.note, note_of(&e));
            }
            Reply::Task(brief)
        }
        (After::TaskChange(committed), Reply::Task(mut brief)) => {
            if let Some(reported) = committed {
                let (subject, committed) = *reported;
                add_note(&mut brief.note, committed.code.line_of(&subject));
            }
            if !matches!(brief.status, TaskStatus::Done | TaskStatus::Skipped | TaskStatus::Failed) {
                return Reply::Task(brief);
            }
            if let Ok(mut run) = read_brief(backend, caller, &brief.run_id).await {
                let notes = reconcile(backend, caller, &mut run).await;
                let merged = run.merge.as_ref().filter(|_| notes.merged).and_then(|m| match m {
                    MergeState::Done(report) => Some(report.summary(&run.run_id, git_root(&run))),
                    MergeState::Pending { .. } => None,
                });
                if let Some(summary) = merged {
                    let at = run
                        .step
                        .as_deref()
                        .map(|s| format!(" The run is at step `{s}`: `resume` with its run_id gives that step's brief."))
                        .unwrap_or_default();
                    add_note(&mut brief.note, format!("All tasks have joined: {summary}{at}"));
                }
                for note in notes.lines {
                    add_note(&mut brief.note, note);
                }
            }
            Reply::Task(brief)
        }
        (After::Briefing(run_id), Reply::Briefing(mut briefing)) => {
            let notes = reconcile(backend, caller, &mut briefing.brief).await;
            if notes.merged
                && let Ok(Reply::Briefing(fresh)) = backend.call_as(caller.clone(), resume_of(&run_id)).await
            {
                briefing = fresh;
            }
            for note in notes.lines {
                add_note(&mut briefing.brief.note, note);
            }
            Reply::Briefing(briefing)
        }
        (After::Deleted, Reply::Deleted(mut deleted)) => {
            for run in &deleted.runs {
                let Some(repo) = run.workspace.as_deref().map(Path::new).filter(|r| r.join(".git").exists()) else { continue };
                if let Err(e) = snapshot::remove_refs(repo, &run.run_id).await {
                    add_note(&mut deleted.note, note_of(&e));
                }
            }
            Reply::Deleted(deleted)
        }
        (after, Reply::Brief(mut brief)) => {
            match &after {
                After::Fork => {
                    if let Some(note) = restore_fork(&brief).await {
                        add_note(&mut brief.note, note);
                    }
                    if let Some(note) = carry_task_branches(backend, caller, &brief).await {
                        add_note(&mut brief.note, note);
                    }
                }
                After::Started { repo, state } => {
                    if let Err(e) = snapshot::adopt_state(Path::new(repo), &brief.run_id, state).await {
                        add_note(&mut brief.note, note_of(&e));
                    }
                }
                After::Note(line) => add_note(&mut brief.note, line.clone()),
                _ => {}
            }
            let notes = reconcile(backend, caller, &mut brief).await;
            for note in notes.lines {
                add_note(&mut brief.note, note);
            }
            Reply::Brief(brief)
        }
        (After::Checkpoint { run_id, name, repo, code, mut note }, Reply::Checkpoint(mut saved)) => {
            if let Some(code) = code {
                let reference = checkpoint_ref(&run_id, &name);
                match snapshot::keep(Path::new(&repo), &reference, &code).await {
                    Ok(()) => add_note(&mut note, format!("The checkpoint's code is kept under {reference}.")),
                    Err(e) => add_note(&mut note, note_of(&e)),
                }
            }
            saved.note = note;
            Reply::Checkpoint(saved)
        }
        (_, reply) => reply,
    }
}

/// The commit a plan's tasks branch from: `base` (or HEAD) of the run's tree, resolved
/// there to a commit id. A run outside git keeps the plan as it is.
async fn resolve_base(backend: &Backend, caller: &Caller, run_id: &str, base: Option<&str>) -> BatonResult<Option<String>> {
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
async fn tree_code(backend: &Backend, caller: &Caller, run_id: &str) -> (Option<TaskCode>, Option<String>) {
    let known = known_workspaces().get(run_id).cloned();
    let workspace = match known {
        Some(workspace) => workspace,
        None => {
            let Ok(brief) = read_brief(backend, caller, run_id).await else { return (None, None) };
            remember_workspace(run_id, &brief.workspace);
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

/// Refuse a fork of run `run_id` at `version` whose code cannot be restored: its
/// repository moved, or its state commit is gone (pruned). Anything else (no such run or
/// version, no git) is the service's to answer.
async fn check_code_at(backend: &Backend, caller: &Caller, run_id: &str, version: u64) -> BatonResult<()> {
    let mut before = version.saturating_add(1);
    let (run, found) = loop {
        let request =
            Request::GetRun(GetRunParams { run_id: run_id.to_string(), history_limit: Some(1000), before_seq: Some(before), step: None });
        let Ok(Reply::Run(details)) = backend.call_as(caller.clone(), request).await else { return Ok(()) };
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
async fn check_checkpoint_code(backend: &Backend, caller: &Caller, run_id: &str, name: &str) -> BatonResult<()> {
    let mut before: Option<u64> = None;
    // The latest save of that name is the one a fork starts from.
    let workspace = loop {
        let request =
            Request::GetRun(GetRunParams { run_id: run_id.to_string(), history_limit: Some(1000), before_seq: before, step: None });
        let Ok(Reply::Run(details)) = backend.call_as(caller.clone(), request).await else { return Ok(()) };
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

/// Longest subject of a step's commit.
const MAX_SUBJECT_CHARS: usize = 100;

/// Commit what the reported step left uncommitted in its task's worktree (see
/// [`commit::commit_step`]); `None` when the task has no worktree of its own or is not
/// held (the report will be refused, and nothing is touched).
async fn commit_report(backend: &Backend, caller: &Caller, p: &AdvanceParams) -> Option<(String, Committed)> {
    let task = p.task.as_deref()?;
    let request = Request::Resume(ResumeParams { run_id: Some(p.run_id.clone()), task: Some(task.to_string()), ..ResumeParams::default() });
    let Ok(Reply::Task(brief)) = backend.call_as(caller.clone(), request).await else { return None };
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
async fn commit_answer(backend: &Backend, caller: &Caller, p: &AnswerHumanParams) -> Option<(String, Committed)> {
    let task = p.task.as_deref()?;
    let request = Request::Resume(ResumeParams { run_id: Some(p.run_id.clone()), task: Some(task.to_string()), ..ResumeParams::default() });
    let Ok(Reply::Task(brief)) = backend.call_as(caller.clone(), request).await else { return None };
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

/// Make the claimed task's worktree, when the run's workspace is a repository.
async fn ensure_worktree(brief: &TaskBrief) -> BatonResult<()> {
    let (Some(repo), Some(branch)) = (&brief.repo, &brief.branch) else { return Ok(()) };
    worktree::ensure(Path::new(repo), Path::new(&brief.workdir), branch, brief.base.as_deref()).await.map(drop)
}

/// Restore a forked run's checkpoint code into its worktree; the note to show.
async fn restore_fork(brief: &Brief) -> Option<String> {
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
async fn carry_task_branches(backend: &Backend, caller: &Caller, brief: &Brief) -> Option<String> {
    let root = git_root(brief)?.to_string();
    let request = Request::GetRun(GetRunParams { run_id: brief.run_id.clone(), history_limit: Some(1), before_seq: None, step: None });
    let Ok(Reply::Run(details)) = backend.call_as(caller.clone(), request).await else { return None };
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
struct Reconciled {
    /// This call merged the task branches (the brief now shows the result).
    merged: bool,
    /// Notes for the answer.
    lines: Vec<String>,
}

/// Do the git work `brief` shows is due: merge a joined fan-out's branches, and remove a
/// finished run's worktrees.
async fn reconcile(backend: &Backend, caller: &Caller, brief: &mut Brief) -> Reconciled {
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
    let request = Request::RecordMerge(crate::api::RecordMergeParams { run_id: run_id.to_string(), report });
    match backend.call_as(caller.clone(), request).await? {
        Reply::Brief(brief) => Ok((*brief, true)),
        other => Err(BatonError::internal(format!("recording a merge answered {other:?}"))),
    }
}

/// Most runs whose workspace a process remembers (an agent works on a few).
const KNOWN_WORKSPACES: usize = 1024;

/// The workspaces of runs this process has seen in answers. A run's workspace is fixed
/// when the run is created, so a step's report looks it up here instead of asking the
/// owner for the whole briefing first (a round trip and ~8 KB decoded per advance).
fn known_workspaces() -> std::sync::MutexGuard<'static, HashMap<String, Option<Workspace>>> {
    static KNOWN: LazyLock<Mutex<HashMap<String, Option<Workspace>>>> = LazyLock::new(Mutex::default);
    KNOWN.lock().unwrap_or_else(|p| p.into_inner())
}

fn remember_workspace(run_id: &str, workspace: &Option<Workspace>) {
    let mut known = known_workspaces();
    if known.get(run_id) == Some(workspace) {
        return;
    }
    if known.len() >= KNOWN_WORKSPACES {
        known.clear();
    }
    known.insert(run_id.to_string(), workspace.clone());
}

/// The run's current brief (as `resume` with its id shows it).
async fn read_brief(backend: &Backend, caller: &Caller, run_id: &str) -> BatonResult<Brief> {
    match backend.call_as(caller.clone(), resume_of(run_id)).await? {
        Reply::Briefing(briefing) => Ok(briefing.brief),
        _ => Err(BatonError::internal(format!("resume {run_id} did not answer with a briefing"))),
    }
}

fn resume_of(run_id: &str) -> Request {
    Request::Resume(ResumeParams { run_id: Some(run_id.to_string()), ..ResumeParams::default() })
}

fn git_root(brief: &Brief) -> Option<&str> {
    brief.workspace.as_ref()?.git_root.as_deref()
}

/// Add `line` to a note.
fn add_note(note: &mut Option<String>, line: String) {
    *note = Some(match note.take() {
        Some(text) => format!("{text} {line}"),
        None => line,
    });
}
