//! Merging a fan-out's task branches at its join. Each task worked on its own git branch
//! (see [`task_worktree`]); when every task has joined, the branches are merged, one
//! `--no-ff` merge per task in dependency order, into the run's tree before the join step
//! runs. The git work happens in the calling process (`crate::gitops`); the engine only
//! says what is due ([`Run::merge_state`]) and records what happened ([`MergeReport`],
//! through `Change::RecordMerge`), so the merge is done once and every later brief says
//! what was merged.

use super::code::short_id;
use super::run::{Run, RunStatus};
use super::task::{FanOutState, TaskStatus};
use super::task_brief::task_worktree;
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

impl Run {
    /// The merge of the latest fan-out's branches, once every task has joined, for runs
    /// whose workspace is a git repository. A failed or cancelled run merges nothing.
    pub fn merge_state(&self) -> Option<MergeState> {
        let fanout = self.fanout.as_ref().filter(|f| f.joined)?;
        let workspace = self.workspace.as_ref().filter(|w| w.git_root.is_some())?;
        match &fanout.merge {
            Some(report) => Some(MergeState::Done(report.clone())),
            None if matches!(self.status, RunStatus::Failed | RunStatus::Cancelled) => None,
            None => Some(MergeState::Pending { tree: workspace.cwd.clone(), tasks: merge_order(fanout), base: fanout.base.clone() }),
        }
    }

    /// What the join step's agent must know about the merge before playing the step, when
    /// the run is at that step.
    pub(super) fn merge_instructions(&self) -> Option<String> {
        let fanout = self.fanout.as_ref()?;
        if fanout.join.step().is_none() || fanout.join.step() != self.current_step.as_deref() {
            return None;
        }
        Some(match self.merge_state()? {
            MergeState::Pending { tree, .. } => format!(
                "The task branches are not merged into {tree} yet: call `resume` with run_id \"{}\" (baton merges them) before playing this step.",
                self.id
            ),
            MergeState::Done(report) => report.summary(&self.id, self.workspace.as_ref().and_then(|w| w.git_root.as_deref())),
        })
    }
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

/// The done tasks in merge order: each after the tasks it depends on, otherwise in plan
/// order. Skipped and failed tasks are not merged.
pub fn merge_order(fanout: &FanOutState) -> Vec<String> {
    let done: Vec<_> = fanout.tasks.iter().filter(|t| t.status == TaskStatus::Done).collect();
    let mut order: Vec<String> = Vec::with_capacity(done.len());
    while order.len() < done.len() {
        let ready = done
            .iter()
            .find(|t| !order.contains(&t.id) && t.depends_on.iter().all(|d| order.contains(d) || !done.iter().any(|o| &o.id == d)));
        match ready {
            Some(task) => order.push(task.id.clone()),
            // Plans are acyclic; should one not be, merge what is left in plan order.
            None => {
                let rest: Vec<String> = done.iter().filter(|t| !order.contains(&t.id)).map(|t| t.id.clone()).collect();
                order.extend(rest);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Actor, ActorKind, Change, Event, EventKind, NewRun, Plan, PlanTask, Workspace, builtin_template};
    use crate::time::Timestamp;
    use serde_json::Map;
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_795_000_000_000);

    fn agent(name: &str) -> Actor {
        Actor { kind: ActorKind::Codex, id: Some(name.into()), agent: None }
    }

    /// A `parallel` run in a repository whose plan (`(id, depends_on)`, in plan order) has
    /// been worked until every task joined; with its events.
    fn joined_run(tasks: &[(&str, &[&str])]) -> (Run, Vec<Event>) {
        let workspace =
            Workspace { cwd: "/repo".into(), git_root: Some("/repo".into()), git_head: Some("c0ffee".into()), ..Workspace::default() };
        let new = NewRun {
            id: "abcdef12-run".into(),
            template: builtin_template("parallel").unwrap(),
            goal: "g".into(),
            title: "t".into(),
            context: Map::new(),
            workspace: Some(workspace),
            max_agents: 4,
        };
        let (mut run, first) = Run::start(new, &agent("lead"), NOW);
        let mut events = vec![first];
        let plan = Plan {
            tasks: tasks
                .iter()
                .map(|(id, deps)| PlanTask {
                    id: id.to_string(),
                    title: id.to_string(),
                    description: String::new(),
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    pipeline: None,
                })
                .collect(),
            base: None,
        };
        let planned = Change::Advance {
            expected_version: 1,
            outcome: "planned".into(),
            output: "plan".into(),
            artifacts: Map::new(),
            plan: Some(plan),
        };
        events.push(run.apply(&planned, &agent("lead"), NOW).unwrap());
        // Implement (a), review (b), test (a), task after task in the order they get ready.
        for (who, outcome) in [("a", "implemented"), ("b", "approved"), ("a", "passed")].iter().cycle().take(3 * tasks.len()) {
            let claim = run.apply(&Change::Claim { task: None, lease: Duration::from_secs(60) }, &agent(who), NOW).unwrap();
            let EventKind::TaskClaimed { task, token, .. } = &claim.kind else { panic!("{claim:?}") };
            let report = Change::TaskAdvance {
                task: task.clone(),
                token: *token,
                outcome: outcome.to_string(),
                output: String::new(),
                artifacts: Map::new(),
                code: None,
            };
            events.push(claim.clone());
            events.push(run.apply(&report, &agent(who), NOW).unwrap());
        }
        assert_eq!(run.current_step.as_deref(), Some("integrate"));
        (run, events)
    }

    #[test]
    fn branches_merge_after_their_dependencies_else_in_plan_order() {
        let (run, _) = joined_run(&[("ui", &["api"]), ("docs", &[]), ("api", &[])]);
        let fanout = run.fanout.as_ref().unwrap();
        assert_eq!(merge_order(fanout), vec!["docs", "api", "ui"]);
        assert_eq!(fanout.base.as_deref(), Some("c0ffee"), "without a plan base, the run's HEAD at start");
        assert_eq!(
            run.merge_state(),
            Some(MergeState::Pending {
                tree: "/repo".into(),
                tasks: vec!["docs".into(), "api".into(), "ui".into()],
                base: Some("c0ffee".into())
            })
        );
        assert!(run.merge_instructions().unwrap().contains("call `resume`"), "the join step waits for the merge");
    }

    #[test]
    fn a_merge_is_recorded_once_replays_and_tells_the_join_step_what_to_do() {
        let (mut run, mut events) = joined_run(&[("api", &[]), ("ui", &[])]);
        let report = MergeReport {
            tree: "/repo".into(),
            merged: vec!["api".into()],
            merges: vec![TaskMerge {
                task: "api".into(),
                branch: "baton/abcdef12/api".into(),
                tip: "1".repeat(40),
                commit: Some("2".repeat(40)),
                files: vec!["src/api.rs".into()],
                files_total: 1,
            }],
            conflict: Some(MergeConflict { task: "ui".into(), branch: "baton/abcdef12/ui".into(), files: vec!["src/app.rs".into()] }),
            not_merged: Vec::new(),
            no_branch: Vec::new(),
            error: None,
            ..MergeReport::default()
        };
        let change = Change::RecordMerge { report: report.clone() };
        events.push(run.apply(&change, &agent("c"), NOW).unwrap());
        assert_eq!(run.merge_state(), Some(MergeState::Done(report)));
        let err = run.apply(&change, &agent("c"), NOW).unwrap_err();
        assert!(err.message.contains("no task branches waiting"), "recorded once: {}", err.message);
        assert_eq!(Run::replay(&run.id, &events).as_ref(), Some(&run), "the log rebuilds the merge");

        let action = crate::engine::Brief::of(&run, crate::engine::brief::Guide::FirstTime).next_action;
        assert!(
            action.starts_with("baton merged 1 task branch into /repo, each verified in its HEAD: task `api` as merge commit 2222222222 (1 file: src/api.rs)"),
            "{action}"
        );
        assert!(action.contains("task `ui` (branch baton/abcdef12/ui) stopped on conflicts in src/app.rs"), "{action}");
        assert!(action.contains("`git commit` to conclude the merge; then play this step. Play the tester"), "{action}");
    }

    #[test]
    fn runs_without_git_or_not_joined_or_cancelled_merge_nothing() {
        let (mut run, _) = joined_run(&[("api", &[])]);
        let mut no_git = run.clone();
        no_git.workspace = None;
        assert_eq!(no_git.merge_state(), None);
        run.apply(&Change::Cancel { expected_version: None, reason: "stop".into() }, &agent("lead"), NOW).unwrap();
        assert_eq!(run.merge_state(), None);
        let err = run.apply(
            &Change::RecordMerge {
                report: MergeReport {
                    tree: String::new(),
                    merged: vec![],
                    conflict: None,
                    not_merged: vec![],
                    no_branch: vec![],
                    error: None,
                    ..MergeReport::default()
                },
            },
            &agent("c"),
            NOW,
        );
        assert!(err.is_err());
    }

    #[test]
    fn an_error_says_how_to_finish_by_hand() {
        let report = MergeReport {
            tree: "/repo".into(),
            merged: vec![],
            conflict: None,
            not_merged: vec!["api".into(), "ui".into()],
            no_branch: vec!["docs".into()],
            error: Some("/repo has uncommitted changes.".into()),
            ..MergeReport::default()
        };
        let text = report.summary("abcdef12-run", Some("/repo"));
        assert!(text.contains("could not merge the rest: /repo has uncommitted changes."), "{text}");
        assert!(text.contains("in order: `git merge --no-ff baton/abcdef12/api`, `git merge --no-ff baton/abcdef12/ui`"), "{text}");
        assert!(text.contains("Tasks docs had no branch"), "{text}");
    }
}
