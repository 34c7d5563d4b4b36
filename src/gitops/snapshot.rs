//! Checkpoints keep the code. A checkpoint records HEAD and a snapshot commit of the
//! working tree's uncommitted state, kept alive under a baton ref; a fork restores both
//! into a fresh worktree, never into the user's own tree.
//!
//! The snapshot is a plain commit on top of HEAD whose tree is the working tree as
//! `git add -A` sees it (tracked changes and new files; ignored files are not kept),
//! built in a temporary index so the user's index and files are never touched. This keeps
//! new files, which `git stash create` would leave out.

use super::cmd::git;
use super::lock::lock;
use super::worktree::{check_free, checked_out_branch, exclude_baton_dir};
use crate::error::{BatonError, BatonResult};
use std::path::Path;

/// Who the snapshot commits name: they are baton's records, not the user's commits.
const SNAPSHOT_IDENTITY: (&str, &str) = ("baton", "baton@localhost");

/// A commit holding the uncommitted state of the worktree containing `root` on top of its
/// HEAD; `None` when there is nothing uncommitted (or no commit yet).
pub async fn snapshot(root: &Path) -> BatonResult<Option<String>> {
    let Some(head) = git(root, &["rev-parse", "--verify", "-q", "HEAD"]).probe().await else { return Ok(None) };
    let fail = |doing: &str| {
        let doing = format!("baton could not snapshot the uncommitted changes in {} ({doing})", root.display());
        move |f: super::GitFailure| f.error(&doing, "Fix what git reports, then checkpoint again.")
    };
    let tree = scratch_tree(root).await?;
    if git(root, &["rev-parse", "HEAD^{tree}"]).probe().await.as_deref() == Some(tree.as_str()) {
        return Ok(None);
    }
    let commit = commit_tree(root, &["commit-tree", &tree, "-p", &head, "-m", "baton checkpoint: uncommitted changes"])
        .await
        .map_err(fail("git commit-tree"))?;
    Ok(Some(commit))
}

/// The ref that keeps the states of run `run_id`'s tree alive: the latest state commit,
/// each of which has the previous state as its second parent, so one ref per run keeps
/// them all (`git log --first-parent` of a state is the user's history as it was).
pub fn states_ref(run_id: &str) -> String {
    // `.` never occurs in a checkpoint name, so this never clashes with a checkpoint's ref.
    format!("refs/baton/{}/code.states", crate::engine::naming::run_short(run_id))
}

/// The state of a run's tree as a step left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeState {
    /// The tree's HEAD.
    pub head: String,
    /// A commit whose files are the tree's (HEAD plus uncommitted tracked and new files).
    pub state: String,
    /// Whether this call made `state` (else the tree had not changed since the last one).
    pub made: bool,
}

/// Snapshot the tree `root` of run `run_id` as a commit kept under [`states_ref`], made in
/// a scratch index (the user's index, files and branches are untouched) and only when the
/// tree changed since the run's last state. `None` outside git or before the first commit.
pub async fn step_state(root: &Path, run_id: &str) -> BatonResult<Option<TreeState>> {
    let Some(head) = git(root, &["rev-parse", "--verify", "-q", "HEAD"]).probe().await else { return Ok(None) };
    let fail = |doing: &str| {
        let doing = format!("baton could not snapshot the run's tree {} ({doing})", root.display());
        move |f: super::GitFailure| f.error(&doing, "Fix what git reports; the next step report snapshots the tree again.")
    };
    let tree = scratch_tree(root).await?;
    let reference = states_ref(run_id);
    let last = git(root, &["rev-parse", "--verify", "-q", &format!("{reference}^{{commit}}")]).probe().await;
    if let Some(last) = &last {
        let same_tree = git(root, &["rev-parse", &format!("{last}^{{tree}}")]).probe().await.as_deref() == Some(tree.as_str());
        let same_head = git(root, &["rev-parse", "--verify", "-q", &format!("{last}^1")]).probe().await.as_deref() == Some(head.as_str());
        if same_tree && same_head {
            return Ok(Some(TreeState { head, state: last.clone(), made: false }));
        }
    }
    let mut args = vec!["commit-tree", tree.as_str(), "-p", head.as_str()];
    if let Some(last) = last.as_deref().filter(|l| *l != head) {
        args.extend(["-p", last]);
    }
    args.extend(["-m", "baton: the run's tree as a step left it"]);
    let state = commit_tree(root, &args).await.map_err(fail("git commit-tree"))?;
    keep(root, &reference, &state).await?;
    Ok(Some(TreeState { head, state, made: true }))
}

/// Keep `state` (a state another run left, e.g. the one a fork starts from) as the first
/// of run `run_id`'s states, so its code outlives the run it came from.
pub async fn adopt_state(repo: &Path, run_id: &str, state: &str) -> BatonResult<()> {
    keep(repo, &states_ref(run_id), state).await
}

/// Remove every ref baton keeps for run `run_id` (its states and checkpoints); how many.
pub async fn remove_refs(repo: &Path, run_id: &str) -> BatonResult<usize> {
    let prefix = format!("refs/baton/{}/", crate::engine::naming::run_short(run_id));
    let listed = git(repo, &["for-each-ref", "--format=%(refname)", &prefix]).text().await.map_err(|f| {
        f.error(
            &format!("baton could not list the refs of run {run_id}"),
            format!("Remove them with `git for-each-ref {prefix}` and `git update-ref -d`."),
        )
    })?;
    let mut removed = 0;
    for reference in listed.lines().filter(|l| !l.is_empty()) {
        git(repo, &["update-ref", "-d", reference]).text().await.map_err(|f| {
            f.error(&format!("baton could not remove {reference}"), format!("Run `git update-ref -d {reference}` in {}.", repo.display()))
        })?;
        removed += 1;
    }
    Ok(removed)
}

/// The tree id of the working tree containing `root` as `git add -A` sees it, written
/// from a scratch copy of its index.
async fn scratch_tree(root: &Path) -> BatonResult<String> {
    exclude_baton_dir(root).await?;
    let fail = |doing: &str| {
        let doing = format!("baton could not snapshot the working tree {} ({doing})", root.display());
        move |f: super::GitFailure| f.error(&doing, "Fix what git reports, then try again.")
    };
    let index = root.join(git(root, &["rev-parse", "--git-path", "index"]).text().await.map_err(fail("finding the index"))?);
    let scratch = git(root, &["rev-parse", "--git-path", &format!("baton-snapshot-{}.index", uuid::Uuid::new_v4())])
        .text()
        .await
        .map_err(fail("finding the git directory"))?;
    let scratch = root.join(scratch);
    // Starting from a copy of the real index spares re-hashing unchanged files.
    if index.exists() {
        std::fs::copy(&index, &scratch).map_err(|e| {
            BatonError::invalid_state(format!("baton could not copy {}: {e}", index.display()), "Check the repository's permissions.")
                .with_field("git")
        })?;
    }
    let scratch_text = scratch.to_string_lossy().into_owned();
    let tree = async {
        git(root, &["add", "-A"]).env("GIT_INDEX_FILE", scratch_text.clone()).text().await.map_err(fail("git add"))?;
        git(root, &["write-tree"]).env("GIT_INDEX_FILE", scratch_text.clone()).text().await.map_err(fail("git write-tree"))
    }
    .await;
    let _ = std::fs::remove_file(&scratch);
    tree
}

/// Point `reference` at `commit` so `git gc` keeps it.
pub async fn keep(repo: &Path, reference: &str, commit: &str) -> BatonResult<()> {
    git(repo, &["update-ref", reference, commit]).text().await.map(drop).map_err(|f| {
        f.error(
            &format!("baton could not keep the checkpoint's code under {reference}"),
            format!("Run `git update-ref {reference} {commit}` in the repository, or git may drop that commit after two weeks."),
        )
    })
}

/// Restore a checkpoint into the new worktree `dir` of `repo` on `branch`: HEAD at `head`,
/// with `snapshot`'s files in the working tree as uncommitted changes. Idempotent: an
/// existing worktree of `branch` at `dir` is left as it is.
pub async fn restore(repo: &Path, dir: &Path, branch: &str, head: &str, snapshot: Option<&str>) -> BatonResult<()> {
    exclude_baton_dir(repo).await?;
    let _lock = lock(repo, "worktrees").await?;
    if checked_out_branch(dir).await.flatten().as_deref() == Some(branch) {
        return Ok(());
    }
    check_free(dir)?;
    let fail = |doing: String| {
        move |f: super::GitFailure| {
            f.error(&doing, "Fix what git reports; `git worktree remove --force` the half-made directory, then fork the checkpoint again.")
        }
    };
    let dir_text = dir.to_string_lossy().into_owned();
    let exists = git(repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")]).probe().await.is_some();
    let add: Vec<&str> = if exists {
        vec!["worktree", "add", "-q", "--no-checkout", &dir_text, branch]
    } else {
        vec!["worktree", "add", "-q", "--no-checkout", "-b", branch, &dir_text, head]
    };
    git(repo, &add).text().await.map_err(fail(format!("baton could not create the worktree {dir_text}")))?;
    let files = snapshot.unwrap_or(head);
    git(dir, &["read-tree", "-u", "--reset", files])
        .text()
        .await
        .map_err(fail(format!("baton could not restore {files} into {dir_text}")))?;
    // The index goes back to HEAD, so the snapshot's changes show as uncommitted again.
    git(dir, &["reset", "-q"]).text().await.map_err(fail(format!("baton could not reset the index of {dir_text}")))?;
    Ok(())
}

/// `git commit-tree ARGS` as baton (snapshots are baton's, never the user's commits):
/// the new commit's id.
async fn commit_tree(root: &Path, args: &[&str]) -> Result<String, super::GitFailure> {
    let (name, email) = SNAPSHOT_IDENTITY;
    git(root, args)
        .env("GIT_AUTHOR_NAME", name)
        .env("GIT_AUTHOR_EMAIL", email)
        .env("GIT_COMMITTER_NAME", name)
        .env("GIT_COMMITTER_EMAIL", email)
        .text()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::testing::{head, repo_with_commit, run_git};

    #[tokio::test]
    async fn a_snapshot_restores_changes_and_new_files_without_touching_the_tree() {
        let (_tmp, repo) = repo_with_commit();
        assert_eq!(snapshot(&repo).await.unwrap(), None, "a clean tree needs no snapshot");
        let at = head(&repo);
        std::fs::write(repo.join("README"), "changed\n").unwrap();
        std::fs::write(repo.join("new.txt"), "new\n").unwrap();
        run_git(&repo, &["add", "new.txt"]);
        std::fs::write(repo.join("untracked.txt"), "untracked\n").unwrap();
        let status_before = run_git(&repo, &["status", "--porcelain"]);
        let commit = snapshot(&repo).await.unwrap().expect("a snapshot of the changes");
        assert_eq!(run_git(&repo, &["status", "--porcelain"]), status_before, "the user's index and files are untouched");
        assert_eq!(run_git(&repo, &["rev-parse", &format!("{commit}^")]), at, "the snapshot sits on HEAD");
        keep(&repo, "refs/baton/run12345/cp", &commit).await.unwrap();
        assert_eq!(run_git(&repo, &["rev-parse", "refs/baton/run12345/cp"]), commit);

        let dir = repo.join(".baton/forks/fork1234");
        restore(&repo, &dir, "baton-fork/fork1234", &at, Some(&commit)).await.unwrap();
        restore(&repo, &dir, "baton-fork/fork1234", &at, Some(&commit)).await.unwrap();
        assert_eq!(head(&dir), at);
        assert_eq!(std::fs::read_to_string(dir.join("README")).unwrap(), "changed\n");
        assert_eq!(std::fs::read_to_string(dir.join("untracked.txt")).unwrap(), "untracked\n");
        let status = run_git(&dir, &["status", "--porcelain"]);
        assert!(status.contains("M README") && status.contains("?? new.txt") && status.contains("?? untracked.txt"), "{status}");
    }
}
