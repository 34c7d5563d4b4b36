//! The worktrees baton keeps under `<repo>/.baton/`: one per claimed task (so parallel
//! agents never edit the same tree) and one per run forked from a checkpoint. Creating is
//! idempotent (two processes may race, a takeover reuses the branch); removing keeps the
//! branches, which are the history, and never forces away uncommitted work.

use super::cmd::{GitFailure, git};
use super::lock::lock;
use crate::engine::naming::{fork_worktree, run_short};
use crate::error::{BatonError, BatonResult};
use std::path::{Path, PathBuf};

/// The line that keeps `.baton/` out of the main tree's `git status`.
const EXCLUDE_LINE: &str = "/.baton/";

/// What [`ensure`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// A new branch from the base, in a new worktree.
    Created,
    /// The branch existed (an earlier holder worked on it): a new worktree on it.
    Reattached,
    /// The worktree was already there on its branch.
    Existing,
}

/// Make sure `dir` is a worktree of `repo` with `branch` checked out: reuse it if it is,
/// else check the branch out there (creating it from `base` if it does not exist). A branch
/// that is already merged into `base` (an earlier fan-out's) is first moved up to `base`.
pub async fn ensure(repo: &Path, dir: &Path, branch: &str, base: Option<&str>) -> BatonResult<Ensured> {
    exclude_baton_dir(repo).await?;
    let _lock = lock(repo, "worktrees").await?;
    if let Some(found) = checked_out_branch(dir).await {
        return match found {
            Some(b) if b == branch => {
                catch_up(dir, branch, base).await?;
                Ok(Ensured::Existing)
            }
            other => Err(BatonError::invalid_state(
                format!(
                    "{} is a worktree of another branch ({}), not of {branch}",
                    dir.display(),
                    other.as_deref().unwrap_or("detached HEAD")
                ),
                format!("Move that directory away (`git worktree remove {}` if it is baton's), then claim again.", dir.display()),
            )
            .with_field("git")),
        };
    }
    check_free(dir)?;
    let branch_ref = format!("refs/heads/{branch}");
    let existed = git(repo, &["rev-parse", "--verify", "-q", &branch_ref]).probe().await.is_some();
    if existed && let Some(base) = base {
        // A branch merged into the new base has nothing of its own left: start it at the base.
        if is_strict_ancestor(repo, &branch_ref, base).await {
            git(repo, &["branch", "-f", branch, base]).text().await.map_err(|f| add_error(&f, dir))?;
        }
    }
    let dir_text = dir.to_string_lossy();
    let args: Vec<&str> = match (existed, base) {
        (true, _) => vec!["worktree", "add", "-q", &dir_text, branch],
        (false, Some(base)) => vec!["worktree", "add", "-q", "-b", branch, &dir_text, base],
        (false, None) => {
            return Err(BatonError::invalid_state(
                format!("no base commit is recorded for branch {branch}: the repository had no commit when the plan was reported"),
                "Commit once in the repository, then report the plan again (or pass `plan.base`).",
            )
            .with_field("git"));
        }
    };
    let added = match git(repo, &args).text().await {
        // The directory was deleted by hand but is still registered: forget it and retry.
        Err(failure) if failure.stderr.contains("missing but") || failure.stderr.contains("already registered") => {
            git(repo, &["worktree", "prune"]).text().await.map_err(|f| add_error(&f, dir))?;
            git(repo, &args).text().await
        }
        other => other,
    };
    added.map_err(|f| add_error(&f, dir))?;
    Ok(if existed { Ensured::Reattached } else { Ensured::Created })
}

/// Refuse a directory that exists with content: baton only creates worktrees in new or empty ones.
pub(super) fn check_free(dir: &Path) -> BatonResult<()> {
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(BatonError::invalid_state(
            format!("{} exists and is not a git worktree", dir.display()),
            "Move that directory away (baton keeps its worktrees under .baton/), then try again.",
        )
        .with_field("git"));
    }
    Ok(())
}

fn add_error(failure: &GitFailure, dir: &Path) -> BatonError {
    failure.error(
        &format!("baton could not create the worktree {}", dir.display()),
        "Fix what git reports (`git worktree list` shows the worktrees; `git worktree prune` forgets deleted ones), then claim the task again. Do not work in the shared tree meanwhile: other agents work there.",
    )
}

/// Whether `dir` is the top of a worktree: `Some(branch)` (`None` if detached), or `None`
/// when it is not a worktree of its own.
pub(super) async fn checked_out_branch(dir: &Path) -> Option<Option<String>> {
    if !dir.is_dir() {
        return None;
    }
    let top = git(dir, &["rev-parse", "--show-toplevel"]).probe().await?;
    if !same_path(Path::new(&top), dir) {
        return None;
    }
    let head = git(dir, &["symbolic-ref", "-q", "HEAD"]).probe().await;
    Some(head.and_then(|h| h.strip_prefix("refs/heads/").map(str::to_string)))
}

/// Move a worktree's branch up to `base` when the branch is already merged into it.
async fn catch_up(dir: &Path, branch: &str, base: Option<&str>) -> BatonResult<()> {
    let Some(base) = base else { return Ok(()) };
    if !is_strict_ancestor(dir, &format!("refs/heads/{branch}"), base).await {
        return Ok(());
    }
    git(dir, &["merge", "-q", "--ff-only", base]).text().await.map(drop).map_err(|f| {
        f.error(
            &format!("baton could not bring {} up to the new base {base}", dir.display()),
            "Commit or stash the changes in that worktree, then claim again.",
        )
    })
}

/// Whether `older` is an ancestor of `newer` and not the same commit.
async fn is_strict_ancestor(dir: &Path, older: &str, newer: &str) -> bool {
    let same = git(dir, &["rev-parse", older]).probe().await == git(dir, &["rev-parse", newer]).probe().await;
    !same && git(dir, &["merge-base", "--is-ancestor", older, newer]).output().await.is_ok()
}

/// Keep `.baton/` (worktrees, forks) out of the repository's `git status`, through the
/// repository's own `info/exclude`, shared by all its worktrees and never committed.
pub async fn exclude_baton_dir(repo: &Path) -> BatonResult<()> {
    let path = git(repo, &["rev-parse", "--git-path", "info/exclude"]).text().await.map_err(|f| {
        f.error("baton could not find the repository's info/exclude", "Check that the run's repository still exists and is readable.")
    })?;
    let path = repo.join(path);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.lines().any(|line| line.trim() == EXCLUDE_LINE) {
        return Ok(());
    }
    let separator = if current.is_empty() || current.ends_with('\n') { "" } else { "\n" };
    let appended = format!("{current}{separator}# baton keeps task worktrees and forks here\n{EXCLUDE_LINE}\n");
    let write = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::write(&path, appended));
    write.map_err(|e| {
        BatonError::invalid_state(
            format!("baton could not add {EXCLUDE_LINE} to {}: {e}", path.display()),
            format!("Add the line `{EXCLUDE_LINE}` to {} yourself.", path.display()),
        )
        .with_field("git")
    })
}

/// What [`remove_run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub removed: Vec<String>,
    /// Worktrees left in place, and why (e.g. uncommitted changes).
    pub kept: Vec<(String, String)>,
}

impl Removal {
    /// A line for a brief's note, if anything happened.
    pub fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.removed.is_empty() {
            parts.push(format!("Removed the run's worktrees {} (their branches are kept).", self.removed.join(", ")));
        }
        for (dir, why) in &self.kept {
            parts.push(format!("Kept the worktree {dir}: {why}. Save what you need from it, then `git worktree remove --force {dir}`."));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// Remove the worktrees of run `run_id` (its tasks' and, for a fork, its own) from the
/// repository at `repo`. Branches stay. A worktree git will not remove without force
/// (uncommitted changes) is kept and reported.
pub async fn remove_run(repo: &Path, run_id: &str) -> BatonResult<Removal> {
    let short = run_short(run_id);
    let tasks_prefix = format!("{short}-");
    let root = repo.to_string_lossy();
    let fork_dir = PathBuf::from(fork_worktree(&root, run_id).dir);
    let task_dirs: Vec<PathBuf> = std::fs::read_dir(repo.join(".baton/worktrees"))
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&tasks_prefix)).map(|e| e.path()).collect())
        .unwrap_or_default();
    if task_dirs.is_empty() && !fork_dir.exists() {
        return Ok(Removal::default());
    }
    let _lock = lock(repo, "worktrees").await?;
    let listing = git(repo, &["worktree", "list", "--porcelain"]).output().await.map_err(|f| {
        f.error("baton could not list the repository's worktrees", "Remove the run's worktrees under .baton/ with `git worktree remove`.")
    })?;
    let registered: Vec<PathBuf> = listing.lines().filter_map(|l| l.strip_prefix("worktree ")).map(PathBuf::from).collect();
    let mut removal = Removal::default();
    for dir in task_dirs.iter().chain(fork_dir.exists().then_some(&fork_dir)) {
        if !registered.iter().any(|r| same_path(r, dir)) {
            continue;
        }
        let shown = dir.to_string_lossy().into_owned();
        // `git worktree remove` deletes ignored files too, such as a fork made from inside it.
        if dir.join(".baton").exists() {
            removal.kept.push((shown, "it holds baton worktrees of its own (under .baton/)".into()));
            continue;
        }
        match git(repo, &["worktree", "remove", &shown]).text().await {
            Ok(_) => removal.removed.push(shown),
            Err(failure) => removal.kept.push((shown, failure.to_string())),
        }
    }
    Ok(removal)
}

/// Whether two paths name the same directory (symlinks resolved when they exist).
pub fn same_path(a: &Path, b: &Path) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || real(a) == real(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::testing::{head, repo_with_commit, run_git};

    #[tokio::test]
    async fn a_task_worktree_is_created_once_reused_and_kept_out_of_status() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        let dir = repo.join(".baton/worktrees/run12345-api");
        assert_eq!(ensure(&repo, &dir, "baton/run12345/api", Some(&base)).await.unwrap(), Ensured::Created);
        assert_eq!(ensure(&repo, &dir, "baton/run12345/api", Some(&base)).await.unwrap(), Ensured::Existing);
        assert_eq!(run_git(&dir, &["rev-parse", "--abbrev-ref", "HEAD"]), "baton/run12345/api");
        assert_eq!(run_git(&repo, &["status", "--porcelain"]), "", ".baton/ is excluded from the main tree's status");
        let exclude = std::fs::read_to_string(repo.join(".git/info/exclude")).unwrap();
        assert_eq!(exclude.matches(EXCLUDE_LINE).count(), 1, "excluded once: {exclude}");

        // A takeover after the directory was lost: the branch (and its commits) come back.
        std::fs::write(dir.join("work.txt"), "half done").unwrap();
        run_git(&dir, &["add", "work.txt"]);
        run_git(&dir, &["commit", "-qm", "half"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(ensure(&repo, &dir, "baton/run12345/api", Some(&base)).await.unwrap(), Ensured::Reattached);
        assert_eq!(std::fs::read_to_string(dir.join("work.txt")).unwrap(), "half done");

        let other = repo.join(".baton/worktrees/run12345-ui");
        let err = ensure(&repo, &other, "baton/run12345/ui", None).await.unwrap_err();
        assert!(err.fix.contains("Commit once"), "{err:?}");
        let err = ensure(&repo, &dir, "baton/run12345/ui", Some(&base)).await.unwrap_err();
        assert!(err.message.contains("another branch"), "{err:?}");
    }

    #[tokio::test]
    async fn racing_processes_end_with_one_worktree() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        let dir = repo.join(".baton/worktrees/run12345-api");
        let (a, b) =
            tokio::join!(ensure(&repo, &dir, "baton/run12345/api", Some(&base)), ensure(&repo, &dir, "baton/run12345/api", Some(&base)));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(run_git(&repo, &["worktree", "list"]).lines().count(), 2);
    }

    #[tokio::test]
    async fn a_merged_branch_starts_again_at_the_new_base() {
        let (_tmp, repo) = repo_with_commit();
        let first = head(&repo);
        let dir = repo.join(".baton/worktrees/run12345-api");
        ensure(&repo, &dir, "baton/run12345/api", Some(&first)).await.unwrap();
        std::fs::write(repo.join("later.txt"), "later").unwrap();
        run_git(&repo, &["add", "later.txt"]);
        run_git(&repo, &["commit", "-qm", "later"]);
        let second = head(&repo);
        ensure(&repo, &dir, "baton/run12345/api", Some(&second)).await.unwrap();
        assert_eq!(head(&dir), second, "the worktree caught up with the new base");
    }

    #[tokio::test]
    async fn removing_a_run_keeps_branches_and_dirty_worktrees() {
        let (_tmp, repo) = repo_with_commit();
        let base = head(&repo);
        let clean = repo.join(".baton/worktrees/run12345-a");
        let dirty = repo.join(".baton/worktrees/run12345-b");
        let other_run = repo.join(".baton/worktrees/other999-a");
        for (dir, branch) in [(&clean, "baton/run12345/a"), (&dirty, "baton/run12345/b"), (&other_run, "baton/other999/a")] {
            ensure(&repo, dir, branch, Some(&base)).await.unwrap();
        }
        std::fs::write(dirty.join("README"), "changed").unwrap();
        let removal = remove_run(&repo, "run12345-rest-of-id").await.unwrap();
        assert_eq!(removal.removed, vec![clean.to_string_lossy().into_owned()]);
        assert_eq!(removal.kept.len(), 1);
        assert!(removal.note().unwrap().contains("git worktree remove --force"), "{:?}", removal.note());
        assert!(!clean.exists() && dirty.exists() && other_run.exists());
        assert!(!run_git(&repo, &["branch", "--list", "baton/run12345/a"]).is_empty(), "branches are kept");
        assert_eq!(remove_run(&repo, "nothing0").await.unwrap(), Removal::default());
    }
}
