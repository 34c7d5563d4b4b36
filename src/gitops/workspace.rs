//! The caller's workspace as git sees it, probed in the calling process (the owner of the
//! database may run anywhere). Runs are grouped by repository root so `resume` lists the
//! current project's runs first; checkpoints record the commit and whether the tree was dirty.

use crate::engine::Workspace;
use crate::gitops::git;
use std::path::Path;

/// How much of the git state to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The repository root only (cheap; enough to group runs).
    Root,
    /// Root, HEAD and whether the tree has uncommitted changes.
    Full,
}

/// The workspace at `cwd`. Without git (or outside a repository) only `cwd` is set.
pub async fn probe(cwd: &Path, depth: Probe) -> Workspace {
    let mut workspace = Workspace { cwd: cwd.to_string_lossy().into_owned(), ..Workspace::default() };
    let Some(root) = git(cwd, &["rev-parse", "--show-toplevel"]).probe().await else { return workspace };
    workspace.git_root = Some(root);
    if depth == Probe::Full {
        workspace.git_head = git(cwd, &["rev-parse", "--verify", "-q", "HEAD"]).probe().await;
        workspace.git_dirty = git(cwd, &["status", "--porcelain"]).output().await.ok().map(|status| !status.trim().is_empty());
    }
    workspace
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;

    #[tokio::test]
    async fn a_repository_is_found_with_its_head_and_dirtiness() {
        let dir = tempfile::tempdir().unwrap();
        let plain = probe(dir.path(), Probe::Full).await;
        assert_eq!((plain.git_root, plain.git_head), (None, None));
        let run = |args: &[&str]| assert!(Command::new("git").arg("-C").arg(dir.path()).args(args).output().unwrap().status.success());
        run(&["init", "-q"]);
        run(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "first"]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let clean = probe(&dir.path().join("sub"), Probe::Full).await;
        assert_eq!(clean.git_root.as_deref().map(Path::new), Some(dir.path().canonicalize().unwrap().as_path()));
        assert_eq!(clean.git_head.as_ref().map(String::len), Some(40));
        assert_eq!(clean.git_dirty, Some(false));
        std::fs::write(dir.path().join("new.txt"), "x").unwrap();
        assert_eq!(probe(dir.path(), Probe::Full).await.git_dirty, Some(true));
        assert_eq!(probe(dir.path(), Probe::Root).await.git_head, None, "the cheap probe reads the root only");
    }
}
