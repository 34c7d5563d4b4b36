//! What a joined fan-out leaves to merge: the engine says which task branches are due, in
//! which order; the calling process merges them (`crate::gitops::merge`) and records the
//! report through `Change::RecordMerge`.

use crate::engine::model::{FanOutState, MergeState, Run, RunStatus, TaskStatus};

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
    use crate::engine::{Change, Event, EventKind, MergeConflict, MergeReport, NewRun, TaskMerge, Workspace, builtin_template};
    use serde_json::Map;
    use std::time::Duration;

    use crate::engine::fixtures::{NOW, actor as agent};

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
        let planned = crate::engine::fixtures::planned(1, crate::engine::fixtures::plan(tasks));
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
        assert!(crate::engine::briefs::merge_instructions(&run).unwrap().contains("call `resume`"), "the join step waits for the merge");
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

        let action = crate::engine::Brief::of(&run, crate::engine::Guide::FirstTime).next_action;
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
