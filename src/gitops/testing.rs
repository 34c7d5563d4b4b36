//! Temporary repositories for the git tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh repository with one commit (`README`), and the directory that holds it.
pub fn repo_with_commit() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().canonicalize().unwrap().join("repo");
    std::fs::create_dir(&repo).unwrap();
    run_git(&repo, &["init", "-q", "-b", "main"]);
    run_git(&repo, &["config", "user.name", "Test"]);
    run_git(&repo, &["config", "user.email", "test@example.com"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    run_git(&repo, &["add", "README"]);
    run_git(&repo, &["commit", "-qm", "first"]);
    (tmp, repo)
}

/// Run git in `dir`; its trimmed stdout, panicking on failure.
pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn head(dir: &Path) -> String {
    run_git(dir, &["rev-parse", "HEAD"])
}
