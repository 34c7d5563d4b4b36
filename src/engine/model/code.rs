//! What became of a task's code when one of its steps reported. Agents under Codex's
//! default sandbox cannot commit in their worktrees (the worktree's index lives under the
//! repository's read-only `.git/`), so the calling `baton serve` commits what the step left
//! uncommitted on the task branch before the report is recorded, and records what it did
//! here. The engine takes it as data from the calling process: it validates and bounds it,
//! stores it with the step's report, and briefs the next roles with it.

use crate::engine::naming::{is_commit_id, short_id};
use crate::error::{BatonError, BatonResult};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most files one record lists (the totals count them all).
pub const MAX_CODE_FILES: usize = 50;
/// Longest path kept for a file.
const MAX_PATH_BYTES: usize = 1024;
/// Longest error kept.
const MAX_ERROR_BYTES: usize = 2048;
/// Files named in a brief's line about a step's code.
const FILES_IN_LINE: usize = 8;

/// The task branch's code as a step reported: its tip before and after, the commit baton
/// made of what was left uncommitted, and the files the step changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct TaskCode {
    /// The task's worktree.
    pub worktree: String,
    /// The branch tip the step started from: the previous report's `head`, else the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The branch tip once the step's changes were committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The commit baton made of the changes the agent left uncommitted (tracked and new
    /// files, not ignored ones), authored by the agent; absent when nothing was left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Commits the agent made itself during the step (kept as they are).
    #[serde(default)]
    pub agent_commits: u32,
    /// Files changed from `from` to `head` (the first [`MAX_CODE_FILES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileChange>,
    /// How many files changed, lines added and removed, from `from` to `head`.
    #[serde(default)]
    pub files_total: u32,
    #[serde(default)]
    pub added: u64,
    #[serde(default)]
    pub removed: u64,
    /// Why baton could not commit what was left (those changes are only in the worktree,
    /// uncommitted): the git command, its message and the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One changed file; no line counts for a binary file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
}

impl TaskCode {
    /// Whether the step changed the branch (committed by the agent or by baton).
    pub fn changed(&self) -> bool {
        self.files_total > 0 || self.from != self.head
    }

    /// Refuse a record no calling process would make: it is stored with the run, so it
    /// must be small and well formed.
    pub fn check(&self, field: &str) -> BatonResult<()> {
        let bad = |what: String| {
            Err(BatonError::invalid(
                field,
                format!("the code record of this report is malformed: {what}"),
                "The code record is made by the calling `baton serve`; send the report without it (upgrade that process if it sent this).",
            ))
        };
        for (name, id) in [("from", &self.from), ("head", &self.head), ("commit", &self.commit)] {
            if let Some(id) = id
                && !is_commit_id(id)
            {
                return bad(format!("`{name}` is not a commit id: {:?}", crate::text::first_line(id, 80)));
            }
        }
        if self.worktree.is_empty() || self.worktree.len() > MAX_PATH_BYTES {
            return bad(format!("`worktree` must be a path of 1 to {MAX_PATH_BYTES} bytes"));
        }
        if self.files.len() > MAX_CODE_FILES {
            return bad(format!("{} files listed, at most {MAX_CODE_FILES}", self.files.len()));
        }
        if (self.files_total as usize) < self.files.len() {
            return bad(format!("`files_total` {} is below the {} files listed", self.files_total, self.files.len()));
        }
        if let Some(file) = self.files.iter().find(|f| f.path.is_empty() || f.path.len() > MAX_PATH_BYTES) {
            return bad(format!("a file path must have 1 to {MAX_PATH_BYTES} bytes, not {}", file.path.len()));
        }
        if self.error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_BYTES) {
            return bad(format!("`error` is longer than {MAX_ERROR_BYTES} bytes"));
        }
        Ok(())
    }

    /// `2 files, +10 -1: a.rs (+9 -1), b.txt (+1 -0)`, or `no file changed`.
    pub fn diffstat(&self) -> String {
        if self.files_total == 0 {
            return "no file changed".to_string();
        }
        let mut named: Vec<String> = self.files.iter().take(FILES_IN_LINE).map(FileChange::shown).collect();
        let more = self.files_total as usize - named.len().min(self.files_total as usize);
        if more > 0 {
            named.push(format!("and {more} more"));
        }
        let files = if self.files_total == 1 { "1 file".to_string() } else { format!("{} files", self.files_total) };
        format!("{files}, +{} -{}: {}", self.added, self.removed, named.join(", "))
    }

    /// One line for the briefs of the roles after `step` (played by `by`): what the step
    /// did to the code and how to see it.
    pub fn line(&self, step: &str, by: &str) -> String {
        self.line_of(&format!("Step `{step}` ({by})"))
    }

    /// [`TaskCode::line`] for what `subject` (e.g. `Step `fix` (codex x)`) did.
    pub fn line_of(&self, subject: &str) -> String {
        let wt = &self.worktree;
        let short = |id: &Option<String>| id.as_deref().map(short_id).unwrap_or("?").to_string();
        let mut line = match (&self.commit, self.changed()) {
            (Some(commit), _) => {
                let own = match self.agent_commits {
                    0 => String::new(),
                    1 => " (after 1 commit of the agent's own)".to_string(),
                    n => format!(" (after {n} commits of the agent's own)"),
                };
                let all = if self.agent_commits > 0 {
                    format!("; all of it: `git -C {wt} log -p {}..{}`", short(&self.from), short(&self.head))
                } else {
                    String::new()
                };
                format!(
                    "{subject}: baton committed what was left uncommitted as {}{own}; changed since {}: {}. See it with `git -C {wt} show {}`{all}",
                    short(&self.commit),
                    short(&self.from),
                    self.diffstat(),
                    short_id(commit)
                )
            }
            (None, true) => format!(
                "{subject} committed its work itself ({} commit{}, nothing was left uncommitted); it changed {}. See it with `git -C {wt} log -p {}..{}`",
                self.agent_commits,
                if self.agent_commits == 1 { "" } else { "s" },
                self.diffstat(),
                short(&self.from),
                short(&self.head)
            ),
            (None, false) if self.error.is_none() => {
                format!("{subject} changed nothing: no commit and no uncommitted change in {wt}")
            }
            (None, false) => format!("{subject} has no commit"),
        };
        if let Some(error) = &self.error {
            line.push_str(&format!(
                ". Its uncommitted changes were NOT committed: {error} They are only in the worktree: `git -C {wt} status` shows them"
            ));
        }
        line.push('.');
        line
    }
}

impl FileChange {
    fn shown(&self) -> String {
        match (self.added, self.removed) {
            (Some(a), Some(r)) => format!("{} (+{a} -{r})", self.path),
            _ => format!("{} (binary)", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TaskCode {
        TaskCode {
            worktree: "/repo/.baton/worktrees/abcdef12-api".into(),
            from: Some("a".repeat(40)),
            head: Some("b".repeat(40)),
            commit: Some("b".repeat(40)),
            agent_commits: 0,
            files: vec![FileChange { path: "src/api.rs".into(), added: Some(9), removed: Some(1) }],
            files_total: 1,
            added: 9,
            removed: 1,
            error: None,
        }
    }

    #[test]
    fn a_record_is_validated_and_bounded() {
        assert!(record().check("code").is_ok());
        let mut bad = record();
        bad.head = Some("not-a-commit; rm -rf /".into());
        assert!(bad.check("code").unwrap_err().message.contains("`head` is not a commit id"));
        let mut many = record();
        many.files = vec![FileChange { path: "f".into(), added: None, removed: None }; MAX_CODE_FILES + 1];
        many.files_total = many.files.len() as u32;
        assert!(many.check("code").is_err());
        let mut short_total = record();
        short_total.files_total = 0;
        assert!(short_total.check("code").is_err());
        let mut long_error = record();
        long_error.error = Some("x".repeat(MAX_ERROR_BYTES + 1));
        assert!(long_error.check("code").is_err());
    }

    #[test]
    fn lines_say_what_was_committed_by_whom_and_how_to_see_it() {
        let line = record().line("implement", "codex thread-a");
        assert!(line.starts_with("Step `implement` (codex thread-a): baton committed what was left uncommitted as bbbbbbbbbb"), "{line}");
        assert!(line.contains("1 file, +9 -1: src/api.rs (+9 -1)"), "{line}");
        assert!(line.contains("`git -C /repo/.baton/worktrees/abcdef12-api show bbbbbbbbbb`"), "{line}");

        let nothing =
            TaskCode { commit: None, head: Some("a".repeat(40)), files: vec![], files_total: 0, added: 0, removed: 0, ..record() };
        assert!(!nothing.changed());
        assert!(nothing.line("implement", "x").contains("changed nothing"), "{}", nothing.line("implement", "x"));

        let own = TaskCode { commit: None, agent_commits: 2, ..record() };
        assert!(own.line("fix", "x").contains("committed its work itself (2 commits"), "{}", own.line("fix", "x"));

        let failed = TaskCode {
            commit: None,
            head: Some("a".repeat(40)),
            error: Some("`git commit` failed: hook said no. Fix: fix it.".into()),
            ..record()
        };
        let line = failed.line("implement", "x");
        assert!(line.contains("were NOT committed: `git commit` failed: hook said no."), "{line}");
        assert!(!line.contains("changed nothing"), "{line}");

        let mut wide = record();
        wide.files = (0..12).map(|i| FileChange { path: format!("f{i}"), added: Some(1), removed: Some(0) }).collect();
        wide.files_total = 70;
        assert!(wide.diffstat().ends_with("f7 (+1 -0), and 62 more"), "{}", wide.diffstat());
    }
}
