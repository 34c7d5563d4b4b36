//! Git repositories for the tests of baton's git work: worktrees, snapshots and merges.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run git in `dir`: its trimmed stdout, panicking on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Make the directory `dir` a repository on `main` with one commit ("first") adding `file`
/// with `text`, by a committer of its own (the machine may have none configured).
pub fn init(dir: &Path, file: &str, text: &str) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["config", "user.name", "Test"]);
    git(dir, &["config", "user.email", "test@example.com"]);
    std::fs::write(dir.join(file), text).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-qm", "first"]);
}

/// A new repository `repo` in `tmp` (see [`init`]), by its canonical path: baton reports
/// worktrees and repositories by theirs.
pub fn repository(tmp: &tempfile::TempDir, file: &str, text: &str) -> PathBuf {
    let repo = tmp.path().canonicalize().unwrap().join("repo");
    std::fs::create_dir(&repo).unwrap();
    init(&repo, file, text);
    repo
}
