//! The pinned Codex CLI and the process plumbing every Codex test needs.
//!
//! Codex is `$CODEX_BIN`, else a pinned `@openai/codex` that the tests install with npm under
//! target/tmp, else `codex` on `PATH`. Without any, a test is skipped, unless `CI` is set.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

/// The Codex CLI version the tests pin; `cargo test` installs it under target/ with npm.
pub const CODEX_VERSION: &str = "0.169.0";

/// Upper bound for any single answer from Codex or any helper command; generous on purpose.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// SKILL.md as shipped, for the skill description Codex must report and show the model.
pub const SKILL_MD: &str = include_str!("../../../SKILL.md");

/// `$CODEX_BIN`, else the pinned Codex installed (once) under target/tmp with npm, else
/// `codex` on `PATH`. `None` (after saying so) means skip; under CI a missing Codex fails.
#[track_caller]
pub fn find_codex() -> Option<PathBuf> {
    // The test that asks, to name in a skip.
    let test = std::panic::Location::caller().file();
    if let Some(bin) = std::env::var_os("CODEX_BIN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    // Installed once per process: the Codex tests run in parallel and must not run npm
    // into one prefix at the same time.
    static PINNED: OnceLock<Option<PathBuf>> = OnceLock::new();
    if let Some(pinned) = PINNED.get_or_init(install_pinned_codex) {
        return Some(pinned.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).map(|dir| dir.join("codex")).find(|p| is_executable(p));
    if found.is_none() {
        let why = "the Codex CLI could not be installed (npm failed or is missing) and is not on PATH; set CODEX_BIN or `npm install -g @openai/codex`";
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        assert!(!ci, "CI is set but {why}");
        // Write past libtest's output capture so the skip is visible in a normal `cargo test`.
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
    }
    found
}

/// `npm install @openai/codex@CODEX_VERSION` into target/tmp (kept between runs).
fn install_pinned_codex() -> Option<PathBuf> {
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("codex-cli-{CODEX_VERSION}"));
    let bin = prefix.join("node_modules").join(".bin").join("codex");
    if is_executable(&bin) {
        return Some(bin);
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("@openai/codex@{CODEX_VERSION}"))
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && is_executable(&bin) => Some(bin),
        other => {
            let _ = writeln!(std::io::stderr().lock(), "npm install of @openai/codex@{CODEX_VERSION} failed: {other:?}");
            None
        }
    }
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("cannot resolve {}: {e}", path.display()))
}

/// The `description:` of SKILL.md's front matter, as Codex should report it.
pub fn skill_description() -> String {
    let front = SKILL_MD.strip_prefix("---").and_then(|rest| rest.split("\n---").next()).expect("SKILL.md starts with front matter");
    let line = front.lines().find_map(|l| l.strip_prefix("description:")).expect("SKILL.md front matter has a description");
    let value = line.trim();
    let unquoted =
        value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
    unquoted.unwrap_or(value).to_string()
}

/// Output of a finished helper command.
pub struct Finished {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn describe(&self) -> String {
        format!(
            "{} -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Run a command to completion with no stdin, killing it after [`TIMEOUT`].
pub fn run(command: &mut Command, what: &str) -> Finished {
    run_within(command, what, TIMEOUT)
}

/// Run a command to completion with no stdin, killing it after `limit`. The exit is awaited on a
/// thread and reported over a channel, so the deadline is a real timeout rather than polling.
pub fn run_within(command: &mut Command, what: &str, limit: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({:?}): {e}", command.get_program()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let pid = child.id();
    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let status = match exit.recv_timeout(limit) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for {what} failed: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {limit:?}");
        }
    };
    Finished { what: what.to_string(), status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}
