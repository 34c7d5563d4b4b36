//! The one way baton runs git: bounded in time, never prompting, and failing with an
//! error that names the command, its (bounded) stderr and the fix.

use crate::error::BatonError;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Longest a git command may take (a hook or a foreign lock could otherwise hang a call).
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of a failed command's stderr kept in its error.
const MAX_STDERR_BYTES: usize = 1024;

/// A git invocation in one directory.
pub struct Git<'a> {
    dir: &'a Path,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

/// Start a git command run in `dir` (as `git -C dir ...`).
pub fn git<'a>(dir: &'a Path, args: &[&str]) -> Git<'a> {
    Git { dir, args: args.iter().map(|a| a.to_string()).collect(), env: Vec::new() }
}

impl Git<'_> {
    /// Set an environment variable for this command only.
    pub fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    /// Run it; its stdout (untrimmed) on success.
    pub async fn output(self) -> Result<String, GitFailure> {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(self.dir)
            .args(&self.args)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = format!("git -C {} {}", self.dir.display(), self.args.join(" "));
        let failure = |stderr: String, code: Option<i32>| GitFailure { command: shown.clone(), stderr, code };
        let out = match tokio::time::timeout(GIT_TIMEOUT, command.output()).await {
            Err(_) => return Err(failure(format!("timed out after {} s", GIT_TIMEOUT.as_secs()), None)),
            Ok(Err(e)) => return Err(failure(format!("could not run git: {e}"), None)),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(failure(bounded(String::from_utf8_lossy(&out.stderr).trim()), out.status.code()))
    }

    /// Run it; its trimmed stdout on success.
    pub async fn text(self) -> Result<String, GitFailure> {
        self.output().await.map(|out| out.trim().to_string())
    }

    /// Run it; its trimmed stdout if it succeeded with some output, else `None` (for probes
    /// whose failure just means "no": not a repository, no such ref, ...).
    pub async fn probe(self) -> Option<String> {
        self.text().await.ok().filter(|out| !out.is_empty())
    }
}

/// A git command that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFailure {
    /// The command as run, e.g. `git -C /repo worktree add ...`.
    pub command: String,
    /// What it said on stderr (at most about 1 KiB), or why it did not run.
    pub stderr: String,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
}

impl GitFailure {
    /// The failure as baton's error: what was attempted, the command and its stderr, and `fix`.
    pub fn error(&self, doing: &str, fix: impl Into<String>) -> BatonError {
        BatonError::invalid_state(format!("{doing}: {self}"), fix).with_field("git")
    }
}

impl std::fmt::Display for GitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.code.map(|c| format!(" (exit {c})")).unwrap_or_default();
        write!(f, "`{}` failed{code}: {}", self.command, if self.stderr.is_empty() { "no message" } else { &self.stderr })
    }
}

/// `text` cut to [`MAX_STDERR_BYTES`] at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_STDERR_BYTES {
        return text.to_string();
    }
    let mut end = MAX_STDERR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A baton error as one line for a brief's note: the message and its fix.
pub fn note_of(error: &BatonError) -> String {
    format!("{} Fix: {}", error.message, error.fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_name_the_command_its_stderr_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let failure = git(dir.path(), &["rev-parse", "--show-toplevel"]).text().await.unwrap_err();
        assert!(failure.command.ends_with("rev-parse --show-toplevel"), "{failure}");
        assert!(failure.stderr.contains("not a git repository"), "{failure}");
        assert_eq!(failure.code, Some(128));
        let error = failure.error("finding the repository", "Run it in a repository.");
        assert_eq!(error.field.as_deref(), Some("git"));
        assert!(error.message.starts_with("finding the repository: `git -C "), "{}", error.message);
        assert_eq!(git(dir.path(), &["rev-parse", "--show-toplevel"]).probe().await, None);
        assert_eq!(bounded(&"é".repeat(1000)).len(), MAX_STDERR_BYTES + "…".len());
    }
}
