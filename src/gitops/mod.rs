//! Git work for runs whose workspace is a git repository: a worktree and branch per
//! claimed task, merging the task branches at the join, removing the worktrees when the
//! run ends, and keeping a checkpoint's uncommitted code so a fork can restore it.
//!
//! All of it runs in the calling process (the `baton serve` MCP server, or the `baton`
//! command), never in the process that owns the database: that one may run anywhere, and
//! git must run where the agent's repository is. The request pipeline (`crate::calls`)
//! does this git work around every request, and baton never touches the user's own
//! working tree except for the deliberate merge at a join. [`workspace`] probes the
//! caller's workspace.

mod cmd;
pub mod commit;
pub mod lock;
pub mod merge;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod workspace;
pub mod worktree;

pub use cmd::{GitFailure, git, note_of};
