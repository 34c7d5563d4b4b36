//! Running the commands: what `baton COMMAND` does, once its arguments are parsed. The
//! binary's `main` only parses, runs this and prints; failures come back as errors that
//! [`super::errors`] turns into messages, JSON and exit codes.

use super::open::{needs_database, open_backend};
use super::{Cli, Command};
use crate::api::{
    AnswerHumanParams, BackupParams, CancelRunParams, ExportParams, GetRunParams, ImportParams, ListRunsParams, Request, StatusFilter,
};
use crate::backend::Backend;
use crate::error::BatonError;
use crate::home::Home;
use crate::mcp::BatonServer;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run the command; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String> {
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Install { codex_home, command, no_skill, plugin, database_url, encrypt } => {
            if let Some(url) = &database_url {
                // Refuse an unusable URL before writing it anywhere.
                crate::store::postgres::DatabaseUrl::parse(url)?;
            }
            let exe = match command {
                Some(path) => checked_command(&path)?,
                None => std::env::current_exe()?.canonicalize()?,
            };
            // Pin the data directory in the registration: Codex starts servers with a reduced
            // environment, and the server must use the same database as terminal commands.
            // `--codex-home X` keeps the database beside that Codex home (X/baton), unless
            // --home or $BATON_HOME names one.
            let baton_home = install_home(cli.home.as_deref(), codex_home.as_deref())?;
            // The home itself is created by the first `baton serve` (or `baton import`).
            let key_file = if encrypt {
                baton_home.prepare()?;
                Some(crate::install::enable_encryption(&baton_home.db_dir())?)
            } else {
                None
            };
            if let Some(dir) = plugin {
                let dir = std::path::absolute(&dir)?;
                let mut lines = crate::install::write_plugin(&dir, &exe, Some(&baton_home.dir), database_url.as_deref())?;
                lines.extend(key_file.map(|(_, line)| line));
                let marketplace = crate::install::MARKETPLACE;
                lines.push(format!(
                    "Add it to Codex with:\n  codex plugin marketplace add {}\n  codex plugin add baton@{marketplace}\nthen start a new session (run `baton uninstall` first if baton was installed without --plugin).",
                    dir.display()
                ));
                return Ok(lines.join("\n"));
            }
            let codex_home = crate::home::codex_home(codex_home.as_deref())?;
            let mut lines = crate::install::install(&codex_home, &exe, Some(&baton_home.dir), !no_skill)?;
            if let Some(url) = &database_url {
                lines.push(crate::install::register_database_url(&codex_home, url)?);
            }
            if let Some((path, line)) = key_file {
                if crate::store::sled_store::Options::named_key_file().is_some() {
                    crate::install::register_key_file(&codex_home, &path)?;
                }
                lines.push(line);
            }
            lines.push("Restart Codex (or start a new session) to load baton.".into());
            Ok(lines.join("\n"))
        }
        Command::Uninstall { codex_home } => {
            let codex_home = crate::home::codex_home(codex_home.as_deref())?;
            let lines = crate::install::uninstall(&codex_home)?;
            Ok(if lines.is_empty() {
                format!(
                    "baton was not registered in {} (no [mcp_servers.baton], no skill). If you installed it as a plugin (`baton install --plugin`), remove it with `codex plugin remove baton@{}`.",
                    codex_home.join("config.toml").display(),
                    crate::install::MARKETPLACE
                )
            } else {
                lines.join("\n")
            })
        }
        Command::Serve => {
            let backend = Arc::new(Backend::new(Home::resolve(cli.home.as_deref())?));
            // Reach (or start) the owner beside the MCP handshake, so problems surface in the
            // log at start-up without delaying `initialize`. Serve even when this fails: every
            // call then answers with the reason and the fix, and retries, so fixing it needs
            // no restart.
            let early = Arc::clone(&backend);
            tokio::spawn(async move {
                match early.connect().await {
                    Ok(()) => match early.direct() {
                        Some(Ok(direct)) => tracing::debug!("connected to PostgreSQL at {}", direct.place()),
                        _ => tracing::debug!(home = %early.home().dir.display(), "reached the baton owner"),
                    },
                    Err(e) => tracing::error!("{e}"),
                }
            });
            // With PostgreSQL this session also offers to tell people (one process does).
            let _notifier = backend.notify_people();
            BatonServer::new(backend).serve_stdio().await?;
            Ok(String::new())
        }
        Command::Owner => anyhow::bail!("`baton owner` runs as a process of its own"),
        Command::Runs { status, limit, json } => {
            let status: StatusFilter = serde_json::from_value(serde_json::Value::String(status.clone())).map_err(|_| {
                BatonError::invalid(
                    "status",
                    format!("unknown status `{status}`"),
                    "Use one of: all, open, active, awaiting_human, completed, failed, cancelled.",
                )
            })?;
            let request = Request::ListRuns(ListRunsParams { status: Some(status), template: None, limit: Some(limit), workspace: None });
            if json {
                return request_text(&cli.home, request, json).await;
            }
            let backend = open_backend(cli.home.as_deref()).await?;
            let caller = super::terminal_caller();
            let params = ListRunsParams { status: Some(status), template: None, limit: Some(limit), workspace: None };
            let list = crate::calls::call(&backend, caller.clone(), params).await?;
            // Task progress of the unfinished runs shown: the listing keeps no tasks, so each
            // such run is read (a handful, for a person's terminal).
            let mut progress = std::collections::BTreeMap::new();
            for summary in list.runs.iter().filter(|s| !s.status.is_finished()) {
                let get = GetRunParams { run_id: summary.run_id.clone(), history_limit: Some(1), before_seq: None, step: None };
                if let Ok(details) = crate::calls::call(&backend, caller.clone(), get).await
                    && let Some(line) = super::render::task_progress(&details.run)
                {
                    progress.insert(summary.run_id.clone(), line);
                }
            }
            Ok(super::render::runs_text(&list, &progress, super::render::now()))
        }
        Command::Show { run_id, graph: true, svg, json, .. } => {
            super::ui_commands::show_graph(cli.home.as_deref(), run_id, svg, json).await
        }
        Command::Show { run_id, history, json, .. } => {
            let request = Request::GetRun(GetRunParams { run_id, history_limit: Some(history), before_seq: None, step: None });
            request_text(&cli.home, request, json).await
        }
        Command::Answer { run_id, answer, comment, task, expected_version, json } => {
            let request = Request::AnswerHuman(AnswerHumanParams { run_id, task, answer, comment, expected_version, code: None });
            request_text(&cli.home, request, json).await
        }
        Command::Cancel { run_id, reason, expected_version, json } => {
            let request = Request::CancelRun(CancelRunParams { run_id, reason, expected_version });
            request_text(&cli.home, request, json).await
        }
        Command::Verify { repair: true, json } => repair(&cli.home, json).await,
        Command::Verify { repair: false, json } => verify(&cli.home, json).await,
        Command::Backup { dir } => {
            let request = Request::Backup(BackupParams { dir: absolute(&dir)? });
            request_text(&cli.home, request, false).await
        }
        Command::Export { file: Some(file) } => {
            let path = absolute(&file)?;
            if std::fs::symlink_metadata(&path).is_ok() {
                return Err(BatonError::new(
                    crate::error::ErrorCode::Conflict,
                    format!("{path} already exists; `baton export` never overwrites a file"),
                    "Give the name of a new file, or remove that one first.",
                )
                .with_field("file")
                .into());
            }
            request_text(&cli.home, Request::Export(ExportParams { file: path }), false).await
        }
        Command::Export { file: None } => {
            // The owner writes the file; stream it to stdout from a private temp file.
            let home = Home::resolve(cli.home.as_deref())?;
            needs_database(&home)?;
            home.prepare()?;
            let tmp = home.dir.join(format!(".export-{}.jsonl", uuid::Uuid::new_v4()));
            let result = request_text(&cli.home, Request::Export(ExportParams { file: absolute(&tmp)? }), false).await;
            let text = result.and_then(|_| Ok(std::fs::read_to_string(&tmp)?));
            let _ = std::fs::remove_file(&tmp);
            Ok(text?.trim_end().to_string())
        }
        Command::Import { file, replace } => {
            // The one terminal command that may create a database: it fills a new home.
            let request = Request::Import(ImportParams { file: absolute(&file)?, replace });
            let backend = Backend::new(Home::resolve(cli.home.as_deref())?);
            backend.connect().await?;
            let reply = crate::calls::call(&backend, super::terminal_caller(), request).await?;
            Ok(super::render(&reply))
        }
        Command::Migrate { to, replace } => migrate(&cli.home, &to, replace).await,
        Command::Notify(super::NotifyCommand::Test) => {
            let home = Home::resolve(cli.home.as_deref())?;
            let results = crate::notify::send_test(&home).await?;
            let failed = results.iter().filter(|(_, r)| r.is_err()).count();
            let lines: Vec<String> = results
                .iter()
                .map(|(channel, result)| match result {
                    Ok(()) => format!("sent to {channel}"),
                    Err(why) => format!("FAILED {channel}: {why}"),
                })
                .collect();
            if failed > 0 {
                return Err(BatonError::new(
                    crate::error::ErrorCode::Unavailable,
                    format!("{failed} of {} channel(s) failed:\n{}", results.len(), lines.join("\n")),
                    "Check the URLs and commands in notify.toml (the owner's log, owner.log in the home, shows real deliveries).",
                )
                .into());
            }
            Ok(lines.join("\n"))
        }
        Command::Drive(_) => anyhow::bail!("`baton drive` runs on its own runtime"),
        Command::Ui(command) => super::ui_commands::run(cli.home.as_deref(), command).await,
        Command::Rewind(command) => super::rewind::run(cli.home.as_deref(), command).await,
    }
}

/// The home `baton install` registers: `--home`, else `$BATON_HOME`, else beside the Codex
/// home (`X/baton` for `--codex-home X`; `$CODEX_HOME/baton` or `~/.codex/baton` without).
fn install_home(explicit: Option<&Path>, codex_home: Option<&Path>) -> Result<Home> {
    if explicit.is_some() || std::env::var_os("BATON_HOME").is_some_and(|v| !v.is_empty()) {
        return Ok(Home::resolve(explicit)?);
    }
    let codex = std::path::absolute(crate::home::codex_home(codex_home)?)?;
    Ok(Home { dir: codex.join("baton") })
}

/// `install --command PATH`: Codex starts the server from its own working directory, so
/// the path must be absolute and name an executable file.
fn checked_command(path: &Path) -> Result<PathBuf> {
    let fix = |why: &str| {
        BatonError::invalid(
            "command",
            format!("--command {}: {why}", path.display()),
            format!(
                "Pass the absolute path of the baton binary, e.g. `--command \"$(realpath {})\"` or `--command \"$(command -v baton)\"`.",
                path.display()
            ),
        )
    };
    if !path.is_absolute() {
        return Err(fix("the path is relative, and Codex starts servers from another directory").into());
    }
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) => Err(fix(&format!("cannot use it: {e}")).into()),
        Ok(meta) if !meta.is_file() => Err(fix("it is not a file").into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(fix("it is not executable").into()),
        Ok(_) => Ok(path.to_path_buf()),
    }
}

/// `path` made absolute against this process's working directory.
fn absolute(path: &std::path::Path) -> Result<String> {
    let path = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    path.to_str().map(String::from).context("the path is not valid UTF-8")
}

/// `baton migrate --to TARGET`: export the current store (through the owner, or directly
/// from PostgreSQL), import into the target, verify.
async fn migrate(home: &Option<PathBuf>, to: &str, replace: bool) -> Result<String> {
    let target = crate::migrate::Target::parse(to)?;
    let home = Home::resolve(home.as_deref())?;
    needs_database(&home)?;
    let backend = Backend::new(home.clone());
    let same = match (&target, backend.direct()) {
        (crate::migrate::Target::Sled(dir), None) => dir == &home.db_dir(),
        (crate::migrate::Target::Postgres(url), Some(Ok(direct))) => url.place == direct.place(),
        _ => false,
    };
    if same {
        anyhow::bail!("{} is the store baton uses now; give another target", target.shown());
    }
    home.prepare()?;
    let tmp = home.dir.join(format!(".migrate-{}.jsonl", uuid::Uuid::new_v4()));
    let copied = async {
        backend.connect().await?;
        crate::calls::call(&backend, crate::api::Caller::default(), Request::Export(ExportParams { file: absolute(&tmp)? })).await?;
        let store = target.open().await?;
        Ok::<_, anyhow::Error>(crate::migrate::copy(&tmp, store.as_ref(), replace).await?)
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let copied = copied?;
    Ok(format!(
        "Copied {} run(s) with {} event(s), {} checkpoint(s) and {} template(s) to {}; verified: every run, checkpoint and template matches, and every event's content hash.",
        copied.runs,
        copied.events,
        copied.checkpoints,
        copied.templates,
        target.shown()
    ))
}

/// `baton verify --repair`: only with no other baton process using the database.
async fn repair(home: &Option<PathBuf>, json: bool) -> Result<String> {
    if let Some(url) = crate::store::postgres::DatabaseUrl::from_env() {
        anyhow::bail!(
            "baton uses the PostgreSQL database {} (BATON_DATABASE_URL); --repair is for the embedded sled database. `baton verify` checks PostgreSQL, and the server's own tools (pg_dump, PITR) restore it",
            url.map(|u| u.place).unwrap_or_else(|e| e.message)
        );
    }
    let home = Home::resolve(home.as_deref())?;
    needs_database(&home)?;
    home.prepare()?;
    let lock = home.open_lock()?;
    if lock.try_lock().is_err() {
        stop_idle_owner(&home, &lock).await?;
    }
    let report = crate::store::SledStore::repair(&home.db_dir(), crate::store::sled_store::Options::for_dir(&home.db_dir())?)?;
    let text = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut text = format!("Repaired {}: {} run(s), {} event(s).", home.db_dir().display(), report.runs, report.events);
        for problem in &report.problems {
            text.push_str(&format!("\n- {problem}"));
        }
        text
    };
    if report.is_sound() { Ok(text) } else { Err(ProblemsFound(text).into()) }
}

/// The report of a verify that found problems: printed on stdout like a sound one, then
/// the process exits with [`PROBLEMS_FOUND`](super::errors::PROBLEMS_FOUND), so a script
/// cannot take a damaged database for a sound one.
#[derive(Debug)]
pub struct ProblemsFound(pub String);

impl std::fmt::Display for ProblemsFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProblemsFound {}

/// `baton verify`: the report, as an error carrying it when problems were found.
async fn verify(home: &Option<PathBuf>, json: bool) -> Result<String> {
    let backend = open_backend(home.as_deref()).await?;
    let reply = crate::calls::call(&backend, super::terminal_caller(), Request::Verify(Default::default())).await?;
    let sound = matches!(&reply, crate::api::Reply::Verified(report) if report.is_sound());
    let text = if json { serde_json::to_string_pretty(&reply.to_json())? } else { super::render(&reply) };
    if sound { Ok(text) } else { Err(ProblemsFound(text).into()) }
}

/// A repair must have the database to itself. If the owner process serves nobody but
/// us (e.g. it lingers after a terminal command), ask it to shut down (it finishes what is
/// in flight and releases the lock) and take the lock; if sessions use it, refuse.
async fn stop_idle_owner(home: &Home, lock: &std::fs::File) -> Result<()> {
    let backend = Backend::new(home.clone());
    // A terminal command that just exited may still be counted until the owner sees its
    // connection close: ask again for a moment before blaming a session.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let owner = loop {
        let owner = crate::calls::call(&backend, crate::api::Caller::default(), crate::api::AskOwner).await?;
        if owner.connections <= 1 || std::time::Instant::now() >= settle {
            break owner;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if owner.connections > 1 {
        anyhow::bail!(
            "{} other connection(s) to the baton owner (pid {}) are open: baton sessions are using {}; stop every baton session (and Codex) first, then rerun `baton verify --repair`",
            owner.connections - 1,
            owner.pid,
            home.dir.display()
        );
    }
    // SAFETY: kill sends a signal to the process recorded as the owner; nothing is dereferenced.
    if unsafe { libc::kill(owner.pid as i32, libc::SIGTERM) } != 0 {
        anyhow::bail!("cannot stop the baton owner (pid {}): {}", owner.pid, std::io::Error::last_os_error());
    }
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lock.try_lock().is_err() {
        if std::time::Instant::now() > give_up {
            anyhow::bail!("the baton owner (pid {}) did not stop within 10 s; stop it with `kill {}` and retry", owner.pid, owner.pid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Run one request and render its answer for a human (or as JSON).
async fn request_text(home: &Option<PathBuf>, request: Request, json: bool) -> Result<String> {
    let backend = open_backend(home.as_deref()).await?;
    // Through gitops: e.g. `cancel` removes the run's worktrees, `answer` may merge a join.
    let reply = crate::calls::call(&backend, super::terminal_caller(), request).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&reply.to_json())?);
    }
    Ok(super::render(&reply))
}
