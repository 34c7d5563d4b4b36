//! Committing a task step's code on its branch, in the calling process, before the step's
//! report is recorded. Under Codex's default `workspace-write` sandbox an agent cannot
//! commit in its worktree (the worktree's index is under the repository's read-only
//! `.git/`); `baton serve` is not sandboxed, so it commits what the agent left: tracked and
//! new files, never ignored ones (`git add -A` respects .gitignore), with the agent as
//! author and baton as committer. Commits the agent made itself stay as they are.
//!
//! Only a task's own worktree (checked out on the task's branch) is ever committed: the
//! user's tree and a fork's tree are not.

use super::cmd::{git, note_of};
use super::worktree::checked_out_branch;
use crate::engine::Actor;
use crate::engine::{FileChange, MAX_CODE_FILES, TaskCode};
use std::path::Path;

/// Who baton says committed (the author is the agent).
const COMMITTER_NAME: &str = "baton";
const COMMITTER_EMAIL: &str = "baton@baton.invalid";

/// The author of a step's commit: the agent's name and a synthetic address that says
/// where the identity came from (`.invalid` never routes mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    /// `codex reviewer-1 0199…` <`0199…@codex.baton.invalid`>: the caller's label, and its
    /// thread id (else its name, else `unknown`) as the address's local part.
    pub fn of(actor: &Actor) -> Author {
        let kind = actor.label().split(' ').next().unwrap_or("unknown").to_string();
        let who = actor.id.as_deref().or(actor.agent.as_deref()).unwrap_or("unknown");
        let local: String = who.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(64).collect();
        let local = if local.trim_matches(['.', '-']).is_empty() { "unknown".to_string() } else { local };
        // Git refuses `<`, `>` and newlines in identities.
        let name: String = actor.label().chars().filter(|c| !"<>\n\r".contains(*c)).take(200).collect();
        Author { name, email: format!("{local}@{kind}.baton.invalid") }
    }
}

/// What [`commit_step`] needs to know about the step.
pub struct Step<'a> {
    /// The task's worktree and the branch it must have checked out.
    pub worktree: &'a Path,
    pub branch: &'a str,
    /// The branch tip the step started from (the last report's, else the base); `None`
    /// takes the worktree's HEAD before baton's commit.
    pub from: Option<&'a str>,
    pub author: &'a Author,
    /// The commit message: subject, then body.
    pub subject: &'a str,
    pub body: &'a str,
}

/// What a step's commit did, and how to take it back if the report is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub code: TaskCode,
    /// The commit baton made and its parent: reset to the parent if the report is refused.
    pub undo: Option<(String, String)>,
}

/// Commit what is left uncommitted in the step's worktree and describe the step's change.
/// Never fails: what went wrong is in the record's `error`.
pub async fn commit_step(step: &Step<'_>) -> Committed {
    let dir = step.worktree;
    let mut code = TaskCode { worktree: dir.to_string_lossy().into_owned(), ..TaskCode::default() };
    match checked_out_branch(dir).await {
        Some(Some(branch)) if branch == step.branch => {}
        found => {
            let what = match found {
                None => "is not a git worktree (it was never made, or was removed)".to_string(),
                Some(None) => "has a detached HEAD".to_string(),
                Some(Some(other)) => format!("has branch {other} checked out"),
            };
            code.error = Some(format!(
                "{} {what}, not the task's branch {}, so baton committed nothing. Fix: claim the task again (baton makes its worktree) and redo the step there.",
                dir.display(),
                step.branch
            ));
            return Committed { code, undo: None };
        }
    }
    let before = git(dir, &["rev-parse", "HEAD"]).text().await.ok();
    let from = step.from.map(str::to_string).or_else(|| before.clone());
    let mut undo = None;
    match stage_and_commit(step).await {
        Ok(true) => {
            let head = git(dir, &["rev-parse", "HEAD"]).text().await.ok();
            code.commit = head.clone();
            undo = head.zip(before.clone());
        }
        Ok(false) => {}
        Err(error) => code.error = Some(error),
    }
    code.head = git(dir, &["rev-parse", "HEAD"]).text().await.ok();
    code.from = from.clone();
    if let (Some(from), Some(before)) = (&from, &before) {
        let count = git(dir, &["rev-list", "--count", &format!("{from}..{before}")]).text().await;
        code.agent_commits = count.ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    }
    if let (Some(from), Some(head)) = (&from, code.head.clone()) {
        diffstat(dir, from, &head, &mut code).await;
    }
    Committed { code, undo }
}

/// `git add -A` and, if anything is staged, commit it as the step's author. `Ok(true)` when
/// a commit was made; on failure the index is put back as it was and the error says why.
async fn stage_and_commit(step: &Step<'_>) -> Result<bool, String> {
    let dir = step.worktree;
    git(dir, &["add", "-A"]).text().await.map_err(|f| {
        note_of(&f.error(
            &format!("baton could not stage the step's changes in {}", dir.display()),
            "Fix what git reports (a stale `index.lock` left by a crashed git can be deleted once no git runs there), then report the next step: baton commits what is left then.",
        ))
    })?;
    // Exit 1 means something is staged.
    if git(dir, &["diff", "--cached", "--quiet"]).output().await.is_ok() {
        return Ok(false);
    }
    let committed = git(dir, &["commit", "-q", "--no-gpg-sign", "-m", step.subject, "-m", step.body])
        // baton commits for an agent that cannot: it cannot sign as the user, and says who it is.
        .env("GIT_AUTHOR_NAME", step.author.name.clone())
        .env("GIT_AUTHOR_EMAIL", step.author.email.clone())
        .env("GIT_COMMITTER_NAME", COMMITTER_NAME)
        .env("GIT_COMMITTER_EMAIL", COMMITTER_EMAIL)
        .text()
        .await;
    match committed {
        Ok(_) => Ok(true),
        Err(failure) => {
            // Leave the agent's changes as they were: in the worktree, not staged.
            let _ = git(dir, &["reset", "-q"]).text().await;
            Err(note_of(&failure.error(
                &format!("baton could not commit the step's changes in {}", dir.display()),
                format!(
                    "Fix what git reports (a hook that refused, or the repository's settings), then commit them yourself from a shell that can write the repository (`git -C {} add -A && git -C {} commit`), or leave them: baton commits what is left at the task's next report.",
                    dir.display(),
                    dir.display()
                ),
            )))
        }
    }
}

/// Fill the record's files and totals from `git diff --numstat from head`.
async fn diffstat(dir: &Path, from: &str, head: &str, code: &mut TaskCode) {
    let Ok(listing) = git(dir, &["diff", "--numstat", "-z", "--no-renames", from, head]).output().await else { return };
    for record in listing.split('\0').filter(|r| !r.is_empty()) {
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (added, removed) = (added.parse::<u64>().ok(), removed.parse::<u64>().ok());
        code.files_total += 1;
        code.added += added.unwrap_or(0);
        code.removed += removed.unwrap_or(0);
        if code.files.len() < MAX_CODE_FILES {
            let path: String = path.chars().take(512).collect();
            code.files.push(FileChange { path, added, removed });
        }
    }
}

/// Take back baton's commit `commit` (child of `parent`) in `worktree` after the report it
/// was made for was refused: its changes are uncommitted again, as the agent left them.
/// Does nothing if the branch moved on since.
pub async fn undo(worktree: &Path, commit: &str, parent: &str) {
    if git(worktree, &["rev-parse", "HEAD"]).probe().await.as_deref() == Some(commit) {
        let _ = git(worktree, &["reset", "-q", parent]).text().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ActorKind;
    use crate::gitops::testing::{head, repo_with_commit, run_git};
    use crate::gitops::worktree::ensure;
    use std::path::PathBuf;

    const BRANCH: &str = "baton/run12345/api";

    /// A repository and a task worktree on [`BRANCH`] from its first commit.
    async fn task_tree() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
        let (tmp, repo) = repo_with_commit();
        let base = head(&repo);
        let dir = repo.join(".baton/worktrees/run12345-api");
        ensure(&repo, &dir, BRANCH, Some(&base)).await.unwrap();
        (tmp, repo, dir, base)
    }

    fn author() -> Author {
        Author::of(&Actor { kind: ActorKind::Codex, id: Some("0199-thread-a".into()), agent: None })
    }

    async fn commit(dir: &Path, from: Option<&str>) -> Committed {
        let author = author();
        commit_step(&Step { worktree: dir, branch: BRANCH, from, author: &author, subject: "api: implement", body: "Added the API." }).await
    }

    #[tokio::test]
    async fn new_and_tracked_files_are_committed_as_the_agent_and_ignored_ones_left() {
        let (_tmp, repo, dir, base) = task_tree().await;
        std::fs::write(dir.join(".gitignore"), "target/\n").unwrap();
        std::fs::write(dir.join("README"), "hello\nworld\n").unwrap();
        std::fs::write(dir.join("api.rs"), "fn api() {}\n").unwrap();
        std::fs::create_dir(dir.join("target")).unwrap();
        std::fs::write(dir.join("target/build.o"), "binary").unwrap();
        let done = commit(&dir, Some(&base)).await;
        let code = &done.code;
        assert_eq!(code.error, None);
        let commit = code.commit.clone().expect("a commit");
        assert_eq!(code.head.as_deref(), Some(commit.as_str()));
        assert_eq!((code.from.as_deref(), code.agent_commits), (Some(base.as_str()), 0));
        assert_eq!(run_git(&repo, &["rev-parse", BRANCH]), commit, "on the task branch");
        let files: Vec<&str> = code.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, [".gitignore", "README", "api.rs"]);
        assert_eq!((code.files_total, code.added, code.removed), (3, 3, 0));
        assert_eq!(run_git(&dir, &["status", "--porcelain", "--ignored"]), "!! target/", "only the ignored file is left");
        assert_eq!(
            run_git(&dir, &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s|%b"]),
            "codex 0199-thread-a <0199-thread-a@codex.baton.invalid>|baton <baton@baton.invalid>|api: implement|Added the API."
        );
        assert_eq!(done.undo, Some((commit.clone(), base.clone())));
        // A refused report takes the commit back: the changes are uncommitted again.
        undo(&dir, &commit, &base).await;
        assert_eq!(head(&dir), base);
        assert!(run_git(&dir, &["status", "--porcelain"]).contains("?? api.rs"));
    }

    #[tokio::test]
    async fn nothing_to_commit_is_recorded_as_nothing_changed() {
        let (_tmp, _repo, dir, base) = task_tree().await;
        let code = commit(&dir, Some(&base)).await.code;
        assert_eq!((code.commit.clone(), code.error.clone(), code.files_total), (None, None, 0));
        assert_eq!(code.head.as_deref(), Some(base.as_str()));
        assert!(!code.changed());
    }

    #[tokio::test]
    async fn an_agents_own_commits_are_kept_and_only_the_rest_is_committed() {
        let (_tmp, _repo, dir, base) = task_tree().await;
        std::fs::write(dir.join("one.txt"), "1\n").unwrap();
        run_git(&dir, &["add", "one.txt"]);
        run_git(&dir, &["commit", "-qm", "agent's own"]);
        let own = head(&dir);
        std::fs::write(dir.join("two.txt"), "2\n").unwrap();
        let code = commit(&dir, Some(&base)).await.code;
        assert_eq!(code.agent_commits, 1);
        assert_eq!(run_git(&dir, &["rev-parse", "HEAD~1"]), own, "the agent's commit is kept under baton's");
        assert_eq!(run_git(&dir, &["log", "-1", "--format=%s", &own]), "agent's own");
        assert_eq!(code.files_total, 2, "the step's change counts both: {code:?}");
        // Only its own commits, nothing left: no commit of baton's.
        std::fs::write(dir.join("three.txt"), "3\n").unwrap();
        run_git(&dir, &["add", "three.txt"]);
        run_git(&dir, &["commit", "-qm", "three"]);
        let from = code.head.clone().unwrap();
        let code = commit(&dir, Some(&from)).await.code;
        assert_eq!((code.commit.clone(), code.agent_commits, code.files_total), (None, 1, 1));
        assert!(code.line("fix", "x").contains("committed its work itself (1 commit"), "{}", code.line("fix", "x"));
    }

    #[tokio::test]
    async fn a_refusing_hook_leaves_the_changes_and_says_why() {
        let (_tmp, repo, dir, base) = task_tree().await;
        let hooks = repo.join(".git/hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::write(hooks.join("pre-commit"), "#!/bin/sh\necho 'no commits today' >&2\nexit 1\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(hooks.join("pre-commit"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.join("api.rs"), "fn api() {}\n").unwrap();
        let done = commit(&dir, Some(&base)).await;
        let error = done.code.error.clone().expect("the failure is recorded");
        assert!(error.contains("no commits today") && error.contains("Fix:"), "{error}");
        assert_eq!((done.code.commit.clone(), done.undo.clone()), (None, None));
        assert_eq!(head(&dir), base);
        assert_eq!(run_git(&dir, &["status", "--porcelain"]), "?? api.rs", "left as the agent left it, unstaged");
        assert!(done.code.line("implement", "x").contains("NOT committed"));
    }

    #[tokio::test]
    async fn only_the_tasks_own_worktree_is_committed() {
        let (_tmp, repo, _dir, base) = task_tree().await;
        std::fs::write(repo.join("user.txt"), "the user's work\n").unwrap();
        let author = author();
        let step = Step { worktree: &repo, branch: BRANCH, from: Some(&base), author: &author, subject: "s", body: "b" };
        let done = commit_step(&step).await;
        assert!(done.code.error.as_deref().unwrap().contains("has branch main checked out"), "{:?}", done.code);
        assert_eq!(run_git(&repo, &["status", "--porcelain"]), "?? user.txt", "the user's tree is never committed");
        assert_eq!(head(&repo), base);
    }
}
