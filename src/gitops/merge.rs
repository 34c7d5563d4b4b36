//! Merging a joined fan-out's task branches into the run's tree: one `--no-ff` merge per
//! task that has commits beyond the fan-out's base, in the engine's merge order, stopping at
//! the first conflict and leaving that merge in progress for the join step's agent (baton
//! never aborts or resolves it, and never merges over uncommitted changes). A merge counts
//! only once the branch's tip is verified to be in the tree's HEAD.

use super::cmd::{GitFailure, git, note_of};
use crate::engine::naming::{run_short, task_worktree};
use crate::engine::{MAX_CONFLICT_FILES, MAX_MERGE_FILES, MergeConflict, MergeReport, TaskMerge};
use std::path::Path;

/// Merge the branches of `tasks` (in that order) of run `run_id`, whose repository is
/// `repo`, into the worktree `tree`; `base` is the commit the branches started from. Never
/// fails: what could not be done is in the report.
pub async fn merge_tasks(repo: &Path, tree: &Path, run_id: &str, tasks: &[String], base: Option<&str>) -> MergeReport {
    let mut report = MergeReport { tree: tree.to_string_lossy().into_owned(), ..MergeReport::default() };
    let root = repo.to_string_lossy();
    let mut branches: Vec<(String, String)> = Vec::new();
    for task in tasks {
        let Some(branch) = task_worktree(&root, run_id, task).map(|w| w.branch) else { continue };
        if git(repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")]).probe().await.is_none() {
            report.no_branch.push(task.clone());
        } else if !has_commits_beyond(repo, &branch, base).await {
            report.nothing_to_merge.push(task.clone());
        } else {
            branches.push((task.clone(), branch));
        }
    }
    if let Some(in_progress) = git(tree, &["rev-parse", "-q", "--verify", "MERGE_HEAD"]).probe().await {
        resume_interrupted(&mut report, tree, &branches, &in_progress).await;
        return report;
    }
    if branches.is_empty() {
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
        let before = git(tree, &["rev-parse", "HEAD"]).text().await.ok();
        let tip = git(tree, &["rev-parse", branch]).text().await.ok();
        let merged = git(tree, &["merge", "--no-ff", "--no-edit", "-m", &message, branch]).text().await;
        let failure = match (merged, tip) {
            (Ok(_), Some(tip)) => match verified(tree, task, branch, &tip, before.as_deref()).await {
                Ok(merge) => {
                    report.merged.push(task.clone());
                    report.merges.push(merge);
                    continue;
                }
                Err(error) => {
                    report.error = Some(error);
                    report.not_merged = branches[i..].iter().map(|(t, _)| t.clone()).collect();
                    break;
                }
            },
            (Ok(_), None) => {
                report.error = Some(format!("baton could not read the tip of {branch}. Fix: check the branch with `git log {branch}`."));
                report.not_merged = branches[i..].iter().map(|(t, _)| t.clone()).collect();
                break;
            }
            (Err(failure), _) => failure,
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

/// Whether `branch` has a commit `base` does not (without a base, assume so: the merge and
/// its check say what is in HEAD).
async fn has_commits_beyond(repo: &Path, branch: &str, base: Option<&str>) -> bool {
    let Some(base) = base else { return true };
    let range = format!("{base}..{branch}");
    // An unreadable count is taken as "has commits": the merge then says what git thinks.
    git(repo, &["rev-list", "--count", &range]).text().await.map(|n| n != "0").unwrap_or(true)
}

/// After `git merge` of `branch` (tip `tip`) exited 0: the tip must be in HEAD, else it
/// was not merged. What it brought: the merge commit (when HEAD moved) and its files.
async fn verified(tree: &Path, task: &str, branch: &str, tip: &str, before: Option<&str>) -> Result<TaskMerge, String> {
    if git(tree, &["merge-base", "--is-ancestor", tip, "HEAD"]).output().await.is_err() {
        return Err(format!(
            "`git merge {branch}` exited 0 in {} but the branch's tip {tip} is not in its HEAD, so it is not merged. Fix: merge it by hand (`git -C {} merge --no-ff {branch}`) and check `git log`.",
            tree.display(),
            tree.display()
        ));
    }
    let head = git(tree, &["rev-parse", "HEAD"]).text().await.ok();
    let mut merge = unrecorded(task, branch, tip);
    if let (Some(before), Some(head)) = (before, head)
        && before != head
    {
        files_of(tree, before, &head, &mut merge).await;
        merge.commit = Some(head);
    }
    Ok(merge)
}

/// The merge of `task`'s branch at `tip`, before its commit and files are known.
fn unrecorded(task: &str, branch: &str, tip: &str) -> TaskMerge {
    TaskMerge { task: task.to_string(), branch: branch.to_string(), tip: tip.to_string(), commit: None, files: Vec::new(), files_total: 0 }
}

/// The merge commit in HEAD's history that brought `tip` in (its second parent), with its files.
async fn merge_of(tree: &Path, task: &str, branch: &str, tip: &str) -> TaskMerge {
    let mut merge = unrecorded(task, branch, tip);
    let listed = git(tree, &["log", "--merges", "--format=%H %P", "-n", "200", "HEAD"]).text().await.unwrap_or_default();
    let found = listed.lines().find_map(|line| {
        let ids: Vec<&str> = line.split(' ').collect();
        (ids.get(2) == Some(&tip)).then(|| (ids[0].to_string(), ids[1].to_string()))
    });
    if let Some((commit, parent)) = found {
        files_of(tree, &parent, &commit, &mut merge).await;
        merge.commit = Some(commit);
    }
    merge
}

/// The files `from..to` changed, into `merge`.
async fn files_of(tree: &Path, from: &str, to: &str, merge: &mut TaskMerge) {
    let listed = git(tree, &["diff", "--name-only", "--no-renames", "-z", from, to]).output().await.unwrap_or_default();
    let files: Vec<&str> = listed.split('\0').filter(|f| !f.is_empty()).collect();
    merge.files_total = files.len() as u32;
    merge.files = files.iter().take(MAX_MERGE_FILES).map(|f| f.chars().take(512).collect()).collect();
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
    // The merges before it were made by the earlier call: count those whose tip is in HEAD.
    for (task, branch) in &branches[..i] {
        if let Some(tip) = git(tree, &["rev-parse", branch]).probe().await
            && git(tree, &["merge-base", "--is-ancestor", &tip, "HEAD"]).output().await.is_ok()
        {
            report.merged.push(task.clone());
            report.merges.push(merge_of(tree, task, branch, &tip).await);
        }
    }
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
    use crate::gitops::testing::{head, repo_with_commit, run_git};
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
        let base = head(&repo);
        task_commit(&repo, "a", "a.txt", "a").await;
        task_commit(&repo, "b", "b.txt", "b").await;
        let tasks = ["a", "b", "ghost"].map(String::from);
        let report = merge_tasks(&repo, &repo, RUN, &tasks, Some(&base)).await;
        assert_eq!((report.merged.clone(), report.no_branch.clone()), (vec!["a".into(), "b".into()], vec!["ghost".into()]));
        assert!(report.conflict.is_none() && report.error.is_none(), "{report:?}");
        assert_eq!(run_git(&repo, &["log", "--merges", "--format=%s"]).lines().count(), 2);
        assert!(repo.join("a.txt").exists() && repo.join("b.txt").exists());
        let merges: Vec<(&str, Vec<String>, u32)> =
            report.merges.iter().map(|m| (m.task.as_str(), m.files.clone(), m.files_total)).collect();
        assert_eq!(merges, [("a", vec!["a.txt".to_string()], 1), ("b", vec!["b.txt".to_string()], 1)]);
        for merge in &report.merges {
            let commit = merge.commit.as_deref().unwrap();
            assert_eq!(run_git(&repo, &["rev-parse", &format!("{commit}^2")]), merge.tip, "a merge commit of the task's tip");
        }
        let text = report.summary(RUN, repo.to_str());
        assert!(
            text.starts_with(&format!(
                "baton merged 2 task branches into {}, each verified in its HEAD: task `a` as merge commit",
                repo.display()
            )),
            "{text}"
        );
        assert!(text.contains("(1 file: b.txt)") && text.contains("Tasks ghost had no branch"), "{text}");
    }

    #[tokio::test]
    async fn a_branch_with_no_commit_beyond_its_base_is_nothing_to_merge() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        task_commit(&repo, "a", "a.txt", "a").await;
        // Task `idle` has its worktree and branch, and changed nothing.
        let idle = task_worktree(&repo.to_string_lossy(), RUN, "idle").unwrap();
        ensure(&repo, Path::new(&idle.dir), &idle.branch, Some(&base)).await.unwrap();
        let tasks = ["idle", "a"].map(String::from);
        let report = merge_tasks(&repo, &repo, RUN, &tasks, Some(&base)).await;
        assert_eq!((report.merged.clone(), report.nothing_to_merge.clone()), (vec!["a".to_string()], vec!["idle".to_string()]));
        assert_eq!(run_git(&repo, &["log", "--merges", "--format=%s"]).lines().count(), 1, "no merge for the idle task");
        let text = report.summary(RUN, repo.to_str());
        assert!(text.contains("Warning: nothing to merge for task `idle`: its branch has no commit beyond the fan-out's base"), "{text}");
        assert!(!text.contains("`idle` as merge commit"), "{text}");

        // Only idle tasks: nothing is merged, HEAD does not move, and the summary says so.
        let head_before = head(&repo);
        let report = merge_tasks(&repo, &repo, RUN, &["idle".to_string()], Some(&base)).await;
        assert!(report.merged.is_empty() && report.merges.is_empty() && report.error.is_none(), "{report:?}");
        assert_eq!(head(&repo), head_before);
        assert!(report.summary(RUN, repo.to_str()).starts_with("baton merged no task branch into"));
    }

    #[tokio::test]
    async fn a_merge_whose_tip_is_not_in_head_afterwards_is_not_counted() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        task_commit(&repo, "a", "a.txt", "a").await;
        // A post-merge hook that throws the merge away: git exits 0, HEAD lacks the branch.
        let hook = repo.join(".git/hooks/post-merge");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(
            &hook,
            "#!/bin/sh
git reset -q --hard HEAD~1
",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let report = merge_tasks(&repo, &repo, RUN, &["a".to_string()], Some(&base)).await;
        assert!(report.merged.is_empty() && report.merges.is_empty(), "{report:?}");
        assert_eq!(report.not_merged, vec!["a".to_string()]);
        assert!(report.error.as_deref().unwrap().contains("is not in its HEAD, so it is not merged"), "{report:?}");
        assert_eq!(head(&repo), base);
        assert!(report.summary(RUN, repo.to_str()).starts_with("baton merged no task branch"), "never says merged");
    }

    #[tokio::test]
    async fn a_conflict_is_left_in_progress_and_reported_again_after_a_crash() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        task_commit(&repo, "a", "README", "from a\n").await;
        task_commit(&repo, "b", "README", "from b\n").await;
        task_commit(&repo, "c", "c.txt", "c").await;
        let tasks = ["a", "b", "c"].map(String::from);
        let report = merge_tasks(&repo, &repo, RUN, &tasks, Some(&base)).await;
        assert_eq!(report.merged, vec!["a".to_string()]);
        let conflict = report.conflict.clone().unwrap();
        assert_eq!((conflict.task.as_str(), conflict.files.clone()), ("b", vec!["README".to_string()]));
        assert_eq!(report.not_merged, vec!["c".to_string()]);
        assert!(!run_git(&repo, &["rev-parse", "-q", "--verify", "MERGE_HEAD"]).is_empty(), "the merge is left in progress");
        // Merging again (the first merger died before recording) reports the same state.
        assert_eq!(merge_tasks(&repo, &repo, RUN, &tasks, Some(&base)).await, report);
    }

    #[tokio::test]
    async fn uncommitted_changes_are_never_merged_over() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        task_commit(&repo, "a", "a.txt", "a").await;
        std::fs::write(repo.join("README"), "local edit\n").unwrap();
        let report = merge_tasks(&repo, &repo, RUN, &["a".to_string()], Some(&base)).await;
        assert!(report.merged.is_empty() && report.not_merged == vec!["a".to_string()]);
        assert!(report.error.as_deref().unwrap().contains("uncommitted changes"), "{report:?}");
        assert_eq!(std::fs::read_to_string(repo.join("README")).unwrap(), "local edit\n");
    }
}
