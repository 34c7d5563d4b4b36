//! Merging a joined fan-out's task branches into the run's tree: one `--no-ff` merge per
//! task, in the engine's merge order, stopping at the first conflict and leaving that
//! merge in progress for the join step's agent (baton never aborts or resolves it, and
//! never merges over uncommitted changes).

use super::cmd::{GitFailure, git, note_of};
use crate::engine::merge::{MAX_CONFLICT_FILES, MergeConflict, MergeReport};
use crate::engine::task_brief::{run_short, task_worktree};
use std::path::Path;

/// Merge the branches of `tasks` (in that order) of run `run_id`, whose repository is
/// `repo`, into the worktree `tree`. Never fails: what could not be done is in the report.
pub async fn merge_tasks(repo: &Path, tree: &Path, run_id: &str, tasks: &[String]) -> MergeReport {
    let mut report = MergeReport {
        tree: tree.to_string_lossy().into_owned(),
        merged: Vec::new(),
        conflict: None,
        not_merged: Vec::new(),
        no_branch: Vec::new(),
        error: None,
    };
    let root = repo.to_string_lossy();
    let mut branches: Vec<(String, String)> = Vec::new();
    for task in tasks {
        let Some(branch) = task_worktree(&root, run_id, task).map(|w| w.branch) else { continue };
        if git(repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")]).probe().await.is_some() {
            branches.push((task.clone(), branch));
        } else {
            report.no_branch.push(task.clone());
        }
    }
    if let Some(in_progress) = git(tree, &["rev-parse", "-q", "--verify", "MERGE_HEAD"]).probe().await {
        resume_interrupted(&mut report, tree, &branches, &in_progress).await;
        return report;
    }
    match git(tree, &["status", "--porcelain", "--untracked-files=no"]).text().await {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => {
            report.error = Some(format!(
                "{} has uncommitted changes to tracked files ({}), and baton does not merge over them. Fix: commit or stash them.",
                report.tree,
                changes.lines().take(5).map(|l| l.get(3..).unwrap_or(l)).collect::<Vec<_>>().join(", ")
            ));
            report.not_merged = branches.into_iter().map(|(task, _)| task).collect();
            return report;
        }
        Err(failure) => {
            report.error =
                Some(note_of(&failure.error("baton could not read the tree's status", "Check that the run's tree still exists.")));
            report.not_merged = branches.into_iter().map(|(task, _)| task).collect();
            return report;
        }
    }
    let short = run_short(run_id);
    for (i, (task, branch)) in branches.iter().enumerate() {
        let message = format!("baton: merge task {task} of run {short} ({branch})");
        let merged = git(tree, &["merge", "--no-ff", "--no-edit", "-m", &message, branch]).text().await;
        let failure = match merged {
            Ok(_) => {
                report.merged.push(task.clone());
                continue;
            }
            Err(failure) => failure,
        };
        let files = conflicting_files(tree).await;
        if files.is_empty() {
            report.error = Some(merge_error(&failure, branch));
            report.not_merged = branches[i..].iter().map(|(t, _)| t.clone()).collect();
        } else {
            report.conflict = Some(MergeConflict { task: task.clone(), branch: branch.clone(), files });
            report.not_merged = branches[i + 1..].iter().map(|(t, _)| t.clone()).collect();
        }
        break;
    }
    report
}

/// A merge is already in progress in the tree: if it is one of these branches (an earlier
/// merge stopped on a conflict and was not recorded), report it as that conflict.
async fn resume_interrupted(report: &mut MergeReport, tree: &Path, branches: &[(String, String)], merge_head: &str) {
    let mut position = None;
    for (i, (_, branch)) in branches.iter().enumerate() {
        if git(tree, &["rev-parse", branch]).probe().await.as_deref() == Some(merge_head) {
            position = Some(i);
            break;
        }
    }
    let Some(i) = position else {
        report.error = Some(format!(
            "a merge that is not one of this run's task branches is in progress in {}. Fix: conclude it (`git commit`) or abort it (`git merge --abort`).",
            report.tree
        ));
        report.not_merged = branches.iter().map(|(t, _)| t.clone()).collect();
        return;
    };
    report.merged = branches[..i].iter().map(|(t, _)| t.clone()).collect();
    let (task, branch) = &branches[i];
    report.conflict = Some(MergeConflict { task: task.clone(), branch: branch.clone(), files: conflicting_files(tree).await });
    report.not_merged = branches[i + 1..].iter().map(|(t, _)| t.clone()).collect();
}

/// The unmerged files of the tree's index (at most [`MAX_CONFLICT_FILES`]).
async fn conflicting_files(tree: &Path) -> Vec<String> {
    let listed = git(tree, &["diff", "--name-only", "--diff-filter=U"]).text().await.unwrap_or_default();
    listed.lines().filter(|l| !l.is_empty()).take(MAX_CONFLICT_FILES).map(str::to_string).collect()
}

fn merge_error(failure: &GitFailure, branch: &str) -> String {
    note_of(&failure.error(
        &format!("merging {branch} failed"),
        "Fix what git reports (e.g. set user.name and user.email, or move away untracked files the merge would overwrite).",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::testing::{repo_with_commit, run_git};
    use crate::gitops::worktree::ensure;

    const RUN: &str = "run12345-0000";

    /// A task branch of `RUN` with one commit writing `file`.
    async fn task_commit(repo: &Path, task: &str, file: &str, text: &str) {
        let base = run_git(repo, &["rev-parse", "HEAD"]);
        let wt = task_worktree(&repo.to_string_lossy(), RUN, task).unwrap();
        ensure(repo, Path::new(&wt.dir), &wt.branch, Some(&base)).await.unwrap();
        std::fs::write(Path::new(&wt.dir).join(file), text).unwrap();
        run_git(Path::new(&wt.dir), &["add", file]);
        run_git(Path::new(&wt.dir), &["commit", "-qm", task]);
    }

    #[tokio::test]
    async fn branches_merge_in_order_with_one_merge_commit_each() {
        let (_tmp, repo) = repo_with_commit();
        task_commit(&repo, "a", "a.txt", "a").await;
        task_commit(&repo, "b", "b.txt", "b").await;
        let tasks = ["a", "b", "ghost"].map(String::from);
        let report = merge_tasks(&repo, &repo, RUN, &tasks).await;
        assert_eq!((report.merged.clone(), report.no_branch.clone()), (vec!["a".into(), "b".into()], vec!["ghost".into()]));
        assert!(report.conflict.is_none() && report.error.is_none(), "{report:?}");
        assert_eq!(run_git(&repo, &["log", "--merges", "--format=%s"]).lines().count(), 2);
        assert!(repo.join("a.txt").exists() && repo.join("b.txt").exists());
    }

    #[tokio::test]
    async fn a_conflict_is_left_in_progress_and_reported_again_after_a_crash() {
        let (_tmp, repo) = repo_with_commit();
        task_commit(&repo, "a", "README", "from a\n").await;
        task_commit(&repo, "b", "README", "from b\n").await;
        task_commit(&repo, "c", "c.txt", "c").await;
        let tasks = ["a", "b", "c"].map(String::from);
        let report = merge_tasks(&repo, &repo, RUN, &tasks).await;
        assert_eq!(report.merged, vec!["a".to_string()]);
        let conflict = report.conflict.clone().unwrap();
        assert_eq!((conflict.task.as_str(), conflict.files.clone()), ("b", vec!["README".to_string()]));
        assert_eq!(report.not_merged, vec!["c".to_string()]);
        assert!(!run_git(&repo, &["rev-parse", "-q", "--verify", "MERGE_HEAD"]).is_empty(), "the merge is left in progress");
        // Merging again (the first merger died before recording) reports the same state.
        assert_eq!(merge_tasks(&repo, &repo, RUN, &tasks).await, report);
    }

    #[tokio::test]
    async fn uncommitted_changes_are_never_merged_over() {
        let (_tmp, repo) = repo_with_commit();
        task_commit(&repo, "a", "a.txt", "a").await;
        std::fs::write(repo.join("README"), "local edit\n").unwrap();
        let report = merge_tasks(&repo, &repo, RUN, &["a".to_string()]).await;
        assert!(report.merged.is_empty() && report.not_merged == vec!["a".to_string()]);
        assert!(report.error.as_deref().unwrap().contains("uncommitted changes"), "{report:?}");
        assert_eq!(std::fs::read_to_string(repo.join("README")).unwrap(), "local edit\n");
    }
}
