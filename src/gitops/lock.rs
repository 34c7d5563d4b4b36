//! A lock per repository for baton's own git work on it, so two baton processes never
//! create the same worktree or merge into the same tree at once. It is an OS file lock in
//! the repository's git directory: released when its holder exits, even by a crash.

use super::cmd::git;
use crate::error::{BatonError, BatonResult};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest wait for another process's git work on the same repository.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Pause between attempts while another process holds the lock.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Held while baton works on a repository; dropping it releases the lock.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

/// Take the lock `name` of the repository at `repo`, waiting at most [`LOCK_WAIT`].
pub async fn lock(repo: &Path, name: &str) -> BatonResult<RepoLock> {
    let common = git(repo, &["rev-parse", "--git-common-dir"])
        .text()
        .await
        .map_err(|f| f.error("baton could not find the repository's git directory", "Check that the run's repository still exists."))?;
    let path = repo.join(common).join(format!("baton-{name}.lock"));
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
        BatonError::invalid_state(format!("baton could not open its lock {}: {e}", path.display()), "Check the repository's permissions.")
            .with_field("git")
    })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(RepoLock { _file: file }),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => tokio::time::sleep(LOCK_POLL).await,
            Err(TryLockError::WouldBlock) => {
                return Err(BatonError::invalid_state(
                    format!(
                        "another baton process has been working on the repository for over {} s ({})",
                        LOCK_WAIT.as_secs(),
                        path.display()
                    ),
                    "Call `resume` with the run_id in a moment; if this persists, look for a hung `git` or `baton` process.",
                )
                .with_field("git"));
            }
            Err(TryLockError::Error(e)) => {
                return Err(BatonError::invalid_state(
                    format!("baton could not lock {}: {e}", path.display()),
                    "Check the repository's permissions.",
                )
                .with_field("git"));
            }
        }
    }
}
