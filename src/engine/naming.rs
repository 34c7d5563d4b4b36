//! How baton names things in git and checks the names it builds them from: task worktrees
//! and branches, fork worktrees, checkpoint refs, short run and commit ids. A leaf every
//! room may use (the engine's briefs, the git code, the page) without importing each other.

use crate::error::{BatonError, BatonResult};

/// Names are short identifiers so they are safe in keys, prompts, branches and file names.
pub fn check_identifier(value: &str, field: &str) -> BatonResult<()> {
    let ok = !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(BatonError::invalid(field, format!("`{value}` is not a valid name"), "Use 1-64 characters from letters, digits, `_` and `-`."))
    }
}

/// Where a task's own git worktree and branch are, when the run's workspace is a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskWorktree {
    pub dir: String,
    pub branch: String,
}

/// The worktree baton keeps for `task` of `run_id` under the repository at `git_root`:
/// named after both, so parallel tasks never share a tree and names never collide.
pub fn task_worktree(git_root: &str, run_id: &str, task: &str) -> Option<TaskWorktree> {
    let short = run_short(run_id);
    Some(TaskWorktree { dir: format!("{git_root}/.baton/worktrees/{short}-{task}"), branch: format!("baton/{short}/{task}") })
}

/// The worktree a run forked from a checkpoint works in, under the repository at
/// `git_root`: the checkpoint's code is restored there, never into the user's own tree.
pub fn fork_worktree(git_root: &str, run_id: &str) -> TaskWorktree {
    let short = run_short(run_id);
    TaskWorktree { dir: format!("{git_root}/.baton/forks/{short}"), branch: format!("baton-fork/{short}") }
}

/// The ref that keeps a checkpoint's code (its snapshot commit, else its HEAD) alive, so
/// `git gc` never drops it.
pub fn checkpoint_ref(run_id: &str, checkpoint: &str) -> String {
    format!("refs/baton/{}/{checkpoint}", run_short(run_id))
}

/// The first 8 characters of a run id, for branch and directory names.
pub fn run_short(run_id: &str) -> &str {
    &run_id[..run_id.len().min(8)]
}

/// Whether `id` looks like a git object id (abbreviated or whole, SHA-1 or SHA-256).
pub fn is_commit_id(id: &str) -> bool {
    (4..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first 10 characters of a commit id, as briefs show it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(10)]
}
