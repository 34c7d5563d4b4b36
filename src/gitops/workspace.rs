//! The caller's workspace as git sees it, probed in the calling process (the owner of the
//! database may run anywhere). Runs are grouped by repository root so `resume` lists the
//! current project's runs first; checkpoints record the commit and whether the tree was dirty.

use crate::engine::Workspace;
use crate::gitops::git;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    // Spawning git costs about 1.5 ms, most of a `resume`: without a `.git` up the tree
    // there is no repository for it to find, and a root it found stays the root while the
    // same `.git` is there.
    let marker = git_marker(cwd);
    if marker.is_none() && std::env::var_os("GIT_DIR").is_none() && std::env::var_os("GIT_WORK_TREE").is_none() {
        return workspace;
    }
    let cached = marker.as_ref().and_then(|m| roots().get(cwd).filter(|(seen, _)| seen == m).map(|(_, root)| root.clone()));
    let root = match cached {
        Some(root) => Some(root),
        None => {
            let root = git(cwd, &["rev-parse", "--show-toplevel"]).probe().await;
            // Only a root found is kept: a `.git` that is no repository yet may become one.
            if let (Some(marker), Some(found)) = (marker, &root) {
                let mut roots = roots();
                if roots.len() >= MAX_CACHED_ROOTS {
                    roots.clear();
                }
                roots.insert(cwd.to_path_buf(), (marker, found.clone()));
            }
            root
        }
    };
    let Some(root) = root else { return workspace };
    workspace.git_root = Some(root);
    if depth == Probe::Full {
        workspace.git_head = git(cwd, &["rev-parse", "--verify", "-q", "HEAD"]).probe().await;
        workspace.git_dirty = git(cwd, &["status", "--porcelain"]).output().await.ok().map(|status| !status.trim().is_empty());
    }
    workspace
}

/// Most directories whose repository root is remembered (one session sees a few).
const MAX_CACHED_ROOTS: usize = 64;

/// The nearest `.git` (directory or file) at or above a directory, as (path, device, inode).
type Marker = (PathBuf, u64, u64);

/// Roots git reported, by directory, with the `.git` seen then.
type Roots = HashMap<PathBuf, (Marker, String)>;

fn roots() -> std::sync::MutexGuard<'static, Roots> {
    static ROOTS: std::sync::LazyLock<Mutex<Roots>> = std::sync::LazyLock::new(Mutex::default);
    ROOTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where git would start looking for the repository of `dir`: the nearest `.git` entry
/// at or above it (git's own discovery, before `GIT_DIR` and ceilings).
fn git_marker(dir: &Path) -> Option<Marker> {
    dir.ancestors().find_map(|d| {
        let path = d.join(".git");
        std::fs::symlink_metadata(&path).ok().map(|m| (path, m.dev(), m.ino()))
    })
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
