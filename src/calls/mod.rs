//! The calling process's request pipeline: every request a baton process sends (from
//! the MCP server, the terminal commands and the web page alike) goes through [`call`],
//! which sends it with the caller's identity and workspace and does the git work it
//! implies around it. It runs where the agent's repository is, never in the process that
//! owns the database (that one may run anywhere).
//!
//! The git work a request implies:
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

mod checks;
mod commits;
mod known;
mod reconcile;

use crate::api::{Call, Caller, ForkAt, ForkCheckpoint, Reply, Request, Resume, RunBriefing};
use crate::backend::Backend;
use crate::engine::MergeState;
use crate::engine::naming::check_identifier;
use crate::engine::naming::checkpoint_ref;
use crate::engine::{Brief, TaskStatus, Workspace};
use crate::error::{BatonResult, ErrorCode};
use crate::gitops::commit::{self, Committed};
use crate::gitops::workspace::{Probe, probe};
use crate::gitops::{note_of, snapshot};
use checks::{check_checkpoint_code, check_code_at};
use commits::{commit_answer, commit_report, resolve_base, tree_code};
use reconcile::{carry_task_branches, ensure_worktree, reconcile, restore_fork};
use std::path::Path;

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

/// Send `request` for `caller` through `backend`, with the git work it implies, and hand
/// back its own reply.
pub async fn call<C: Call>(backend: &Backend, caller: Caller, request: C) -> BatonResult<C::Reply> {
    C::reply(pipeline(backend, caller, request.into_request()).await?)
}

/// [`call`] on the wire's terms.
async fn pipeline(backend: &Backend, mut caller: Caller, mut request: Request) -> BatonResult<Reply> {
    if matches!(request, Request::Import(_)) {
        known::forget_all();
    }
    let after = before(backend, &mut caller, &mut request).await?;
    let reply = match backend.call_as(caller.clone(), request).await {
        Ok(reply) => {
            known::learn_from(&reply);
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
        // Arguments that ask for nothing are the service's to refuse.
        Request::Resume(p) => match p.intent() {
            Ok(Resume::ForkAt(ForkAt { run_id, version, .. })) => {
                check_code_at(backend, caller, &run_id, version).await?;
                After::Fork
            }
            Ok(Resume::Fork(ForkCheckpoint { run_id, checkpoint, .. })) => {
                check_checkpoint_code(backend, caller, &run_id, &checkpoint).await?;
                After::Fork
            }
            Ok(Resume::Claim(_)) => After::Claim,
            Ok(Resume::Briefing(RunBriefing { run_id })) => After::Briefing(run_id),
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
                && let Ok(fresh) = ask(backend, caller, RunBriefing { run_id }).await
            {
                *briefing = fresh;
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

/// The run's current brief (as `resume` with its id shows it).
async fn read_brief(backend: &Backend, caller: &Caller, run_id: &str) -> BatonResult<Brief> {
    Ok(ask(backend, caller, RunBriefing { run_id: run_id.to_string() }).await?.brief)
}

/// Ask the owner directly, without the git work [`call`] adds: the pipeline's own reads
/// and records.
async fn ask<C: Call>(backend: &Backend, caller: &Caller, request: C) -> BatonResult<C::Reply> {
    C::reply(backend.call_as(caller.clone(), request.into_request()).await?)
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
