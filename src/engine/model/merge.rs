//! Merging a fan-out's task branches at its join. Each task worked on its own git branch
//! (see [`task_worktree`]); when every task has joined, the branches are merged, one
//! `--no-ff` merge per task in dependency order, into the run's tree before the join step
//! runs. The git work happens in the calling process (`crate::gitops`); the engine only
//! says what is due (`Run::merge_state`) and records what happened ([`MergeReport`],
//! through `Change::RecordMerge`), so the merge is done once and every later brief says
//! what was merged.

use crate::engine::naming::{short_id, task_worktree};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most conflicting files a report lists.
pub const MAX_CONFLICT_FILES: usize = 50;

/// What merging the task branches did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct MergeReport {
    /// The working tree the branches were merged into (the run's tree).
    pub tree: String,
    /// Tasks whose branches were merged, in merge order: each branch's tip was verified to
    /// be in the tree's HEAD afterwards (`git merge-base --is-ancestor`).
    pub merged: Vec<String>,
    /// What each merged task brought: its merge commit and files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merges: Vec<TaskMerge>,
    /// Tasks whose branch has no commit beyond the fan-out's base: there was nothing to
    /// merge (their steps changed nothing, or their changes were never committed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nothing_to_merge: Vec<String>,
    /// The merge that stopped on conflicts: it is left in progress in `tree` for the join
    /// step's agent to resolve and commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<MergeConflict>,
    /// Tasks whose branches are still to be merged, in order (after a conflict or an error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_merged: Vec<String>,
    /// Tasks that joined without a branch of their own (their work is in the shared tree).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_branch: Vec<String>,
    /// Why baton could not merge (anything but a conflict): the git command, its error and the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Most files a merge lists per task.
pub const MAX_MERGE_FILES: usize = 20;

/// What merging one task's branch brought into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskMerge {
    pub task: String,
    pub branch: String,
    /// The branch's tip that was merged.
    pub tip: String,
    /// The `--no-ff` merge commit; absent when the tip was already in HEAD (merged by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Files the merge changed in the tree (the first [`MAX_MERGE_FILES`]), and how many.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default)]
    pub files_total: u32,
}

/// A merge that stopped on conflicting files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MergeConflict {
    pub task: String,
    pub branch: String,
    /// The conflicting files (at most [`MAX_CONFLICT_FILES`]), relative to the tree.
    pub files: Vec<String>,
}

/// Where a joined fan-out's branches stand, as briefs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MergeState {
    /// Every task joined and their branches are not merged yet: the next baton call that
    /// sees this (in a process with access to the repository) merges them into `tree`.
    Pending {
        tree: String,
        /// The tasks to merge, in merge order.
        tasks: Vec<String>,
        /// The commit the task branches started from: a branch with nothing beyond it has
        /// nothing to merge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<String>,
    },
    /// The merge happened: what it did.
    Done(MergeReport),
}

impl MergeReport {
    /// What the merge did and, when it stopped, exactly what to do to finish it (for run
    /// `run_id` in the repository at `repo`).
    pub fn summary(&self, run_id: &str, repo: Option<&str>) -> String {
        let tree = &self.tree;
        let branch = |task: &str| branch_of(run_id, repo, task);
        let mut text = if self.merged.is_empty() {
            format!("baton merged no task branch into {tree}")
        } else {
            let each: Vec<String> = self
                .merged
                .iter()
                .map(|t| match self.merges.iter().find(|m| &m.task == t) {
                    Some(merge) => merge.shown(),
                    None => format!("`{t}`"),
                })
                .collect();
            let (n, s) = (self.merged.len(), if self.merged.len() == 1 { "" } else { "es" });
            format!("baton merged {n} task branch{s} into {tree}, each verified in its HEAD: {}", each.join("; "))
        };
        if !self.nothing_to_merge.is_empty() {
            let tasks = self.nothing_to_merge.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ");
            text.push_str(&format!(
                ". Warning: nothing to merge for task{} {tasks}: {} branch has no commit beyond the fan-out's base, so no change of {} is in {tree} (the steps changed no file, or their work was never committed: look in the task's worktree)",
                if self.nothing_to_merge.len() == 1 { "" } else { "s" },
                if self.nothing_to_merge.len() == 1 { "its" } else { "their" },
                if self.nothing_to_merge.len() == 1 { "it" } else { "theirs" },
            ));
        }
        let rest: Vec<String> = self.not_merged.iter().map(|t| format!("`git merge --no-ff {}`", branch(t))).collect();
        let then_rest =
            if rest.is_empty() { String::new() } else { format!(", then merge the remaining branches in order: {}", rest.join(", ")) };
        if let Some(conflict) = &self.conflict {
            text.push_str(&format!(
                ". The merge of task `{}` (branch {}) stopped on conflicts in {} and is left in progress in {tree}: resolve them there, `git add` the files and `git commit` to conclude the merge{then_rest}; then play this step",
                conflict.task,
                conflict.branch,
                conflict.files.join(", ")
            ));
        } else if let Some(error) = &self.error {
            text.push_str(&format!(
                ". It could not merge the rest: {error} Once that is fixed, merge them yourself in {tree}{}; then play this step",
                if rest.is_empty() { String::new() } else { format!(", in order: {}", rest.join(", ")) }
            ));
        }
        if !self.no_branch.is_empty() {
            text.push_str(&format!(". Tasks {} had no branch of their own (they worked in the shared tree)", self.no_branch.join(", ")));
        }
        text.push('.');
        text
    }
}

impl TaskMerge {
    /// `task `api` as merge commit 1a2b3c4d5e (2 files: src/api.rs, tests/api.rs)`.
    fn shown(&self) -> String {
        let files = match self.files_total {
            0 => "no file changed".to_string(),
            n => {
                let more = n as usize - self.files.len().min(n as usize);
                let listed = self.files.join(", ");
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                format!("{n} file{}: {listed}{more}", if n == 1 { "" } else { "s" })
            }
        };
        match &self.commit {
            Some(commit) => format!("task `{}` as merge commit {} ({files})", self.task, short_id(commit)),
            None => format!("task `{}` was already in HEAD (tip {}, no merge commit needed)", self.task, short_id(&self.tip)),
        }
    }
}

/// The branch of `task` of run `run_id`, or a placeholder when the run has no repository.
fn branch_of(run_id: &str, repo: Option<&str>, task: &str) -> String {
    repo.and_then(|r| task_worktree(r, run_id, task)).map(|w| w.branch).unwrap_or_else(|| format!("<branch of {task}>"))
}
