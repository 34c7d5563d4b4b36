//! The owner as a process of its own (`baton owner`), so that the database's life does not
//! depend on any Codex session: Ctrl-Z, a closed terminal or the end of the session that
//! happened to start it cannot stop or suspend the process every session relies on.
//!
//! A client that finds no owner starts one with [`spawn`]: this executable, in a new
//! session (no controlling terminal, so no terminal signals), with `/` as its working
//! directory, stdin and stderr on /dev/null and stdout a pipe on which the new process
//! reports one [`Status`] line (ready, another owner is serving, or why it cannot serve)
//! before pointing it at /dev/null too. [`run`] is that process: it ignores job-control and
//! hang-up signals, creates files private to its user, logs to `owner.log` in the home,
//! keeps enough file descriptors in reserve for the store, and shuts down in order on
//! SIGTERM or SIGINT, or by itself after an idle period.

use super::owner::{Owner, Settings, Start};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::home::Home;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// File descriptors kept out of the connection limit, for the store, the log and the
/// listening socket: an owner that cannot open its database files breaks for everyone.
const FD_RESERVE: u64 = 64;
/// The most connections an owner serves at once.
const MAX_CONNECTIONS: u64 = 256;
/// The file-descriptor limit an owner raises itself to, when the hard limit allows.
const WANTED_FDS: u64 = 4096;

/// What a starting owner process reports to the process that started it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It owns the database and serves the socket.
    Ready { pid: u32 },
    /// Another owner serves the socket; this process has exited.
    Busy { pid: u32 },
    /// It cannot serve, and says why.
    Failed(BatonError),
    /// It exited (or was killed) before reporting anything: why, as far as the starting
    /// process can tell (its exit status and the last lines of its log). Never sent by an
    /// owner; the starting process may try again.
    Vanished { pid: u32, why: String },
}

/// Start a detached `baton owner` for `home` and wait up to `wait` for its status.
pub async fn spawn(home: &Home, wait: Duration) -> BatonResult<Status> {
    // /proc/self/exe still works after the binary was replaced by an upgrade.
    let exe = match std::fs::metadata("/proc/self/exe") {
        Ok(_) => PathBuf::from("/proc/self/exe"),
        Err(_) => std::env::current_exe().map_err(|e| BatonError::internal(format!("cannot find the baton executable: {e}")))?,
    };
    let mut command = tokio::process::Command::new(exe);
    command
        .arg0("baton")
        .arg("owner")
        .arg("--home")
        .arg(&home.dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // Where its log lines will start: only those say why this process died.
    let log = log_file(home);
    let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut child = command.spawn().map_err(|e| {
        BatonError::new(
            ErrorCode::Unavailable,
            format!("cannot start a baton owner process: {e}"),
            "Check that the baton executable is still installed.",
        )
    })?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take();
    let mut line = String::new();
    let read = match stdout {
        Some(out) => tokio::time::timeout(wait, BufReader::new(out.take(64 * 1024)).read_line(&mut line)).await,
        None => Ok(Ok(0)),
    };
    // A process that closed its pipe without a line has exited: learn how.
    let exited = match &read {
        Ok(Ok(0)) | Ok(Err(_)) => tokio::time::timeout(Duration::from_millis(500), child.wait()).await.ok().and_then(Result::ok),
        _ => None,
    };
    // Reap it whenever it exits; once this process exits, init does.
    if exited.is_none() {
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }
    match read {
        Err(_) => Err(BatonError::new(
            ErrorCode::Unavailable,
            format!("the new baton owner process (pid {pid}) did not report within {wait:?}"),
            format!("Retry; if it persists, see {}.", log.display()),
        )),
        Ok(Ok(n)) if n > 0 => serde_json::from_str(&line)
            .map_err(|e| BatonError::internal(format!("the new baton owner process (pid {pid}) reported {line:?}: {e}"))),
        Ok(_) => {
            use std::os::unix::process::ExitStatusExt;
            let status = match exited {
                Some(status) => match (status.code(), status.signal()) {
                    (_, Some(signal)) => format!("killed by signal {signal}"),
                    (Some(code), _) => format!("exit code {code}"),
                    _ => status.to_string(),
                },
                None => "exit status unknown".into(),
            };
            let tail = last_lines(&log, log_start, 3);
            let why = if tail.is_empty() {
                format!("{status}; it logged nothing to {}", log.display())
            } else {
                format!("{status}; its last lines in {}: {}", log.display(), tail.join(" | "))
            };
            Ok(Status::Vanished { pid, why })
        }
    }
}

/// The file a `baton owner` started from this process logs to.
pub fn log_file(home: &Home) -> PathBuf {
    std::env::var_os("BATON_LOG_FILE").map(PathBuf::from).unwrap_or_else(|| home.log_path())
}

/// The last `n` non-empty lines written to the text file at `path` after offset `start`
/// (reading at most its last 8 KiB; from its start if it was rotated meanwhile).
fn last_lines(path: &std::path::Path, start: u64, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if start > len { 0 } else { start };
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(start.max(len.saturating_sub(8192)))).is_err() || file.read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The `baton owner` process. Returns its exit code.
pub fn run(home: Home) -> ExitCode {
    detach();
    let fds = raise_fd_limit();
    let defaults = Settings::default();
    let settings = Settings {
        max_connections: crate::env::number("BATON_OWNER_MAX_CONNECTIONS")
            .unwrap_or(fds.saturating_sub(FD_RESERVE).clamp(4, MAX_CONNECTIONS)) as usize,
        idle: crate::env::duration("BATON_OWNER_IDLE").unwrap_or(defaults.idle),
        ..defaults
    };
    if let Err(e) = home.prepare() {
        report(&Status::Failed(e));
        return ExitCode::FAILURE;
    }
    log_to_home(&home);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&Status::Failed(BatonError::internal(format!("cannot start the async runtime: {e}"))));
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match Owner::start(&home, settings).await {
            Ok(Start::Owner(mut owner)) => {
                report(&Status::Ready { pid: std::process::id() });
                // Notifications follow what the store made durable, beside the serving.
                let notifier_home = home.clone();
                owner.run_beside(|store| crate::notify::run(notifier_home, store));
                let reason = owner.serve(termination()).await;
                tracing::info!("the baton owner exits: {reason}");
                ExitCode::SUCCESS
            }
            Ok(Start::Busy { pid }) => {
                report(&Status::Busy { pid });
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("cannot serve: {e}");
                report(&Status::Failed(e));
                ExitCode::FAILURE
            }
        }
    });
    // A thread stuck in a store call must not keep the process (and the lock) alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

/// Leave the terminal's job control and hang-ups behind; make every file private.
fn detach() {
    // SAFETY: plain system calls on this process's own state.
    unsafe {
        for signal in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Already done by `spawn`; for an owner started by hand. Fails harmlessly if this
        // process leads a group already.
        libc::setsid();
        // Files the store creates (sled's among them) are then 0600, directories 0700.
        libc::umask(0o077);
    }
    let _ = std::env::set_current_dir("/");
}

/// Set the soft file-descriptor limit to `BATON_OWNER_NOFILE` if given (for tests and
/// constrained systems), else
/// raise it toward [`WANTED_FDS`]; returns the limit in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit to fill and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let wanted = crate::env::number("BATON_OWNER_NOFILE").unwrap_or(WANTED_FDS.max(limit.rlim_cur));
        limit.rlim_cur = wanted.min(limit.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Send logs, and panic messages, to `BATON_LOG_FILE`, else to `owner.log` in the home.
fn log_to_home(home: &Home) {
    if std::env::var_os("BATON_LOG_FILE").is_none()
        && let Ok(log) = home.open_log()
    {
        // SAFETY: duplicating an open descriptor onto stderr.
        unsafe { libc::dup2(log.as_raw_fd(), libc::STDERR_FILENO) };
    }
    crate::logging::init("warn,baton=info");
}

/// Report the status line to the starting process, then let go of its pipe so that
/// nothing written later can block on, or keep open, a pipe nobody reads.
fn report(status: &Status) {
    let line = serde_json::to_string(status).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: duplicating an open descriptor onto stdout.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// Completes on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot watch for SIGTERM; the owner stops only when idle");
            std::future::pending::<()>().await;
        }
    }
}
