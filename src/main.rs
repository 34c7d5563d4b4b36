//! The `baton` binary.

use anyhow::{Context, Result};
use baton::api::{
    AnswerHumanParams, BackupParams, CancelRunParams, ExportParams, GetRunParams, ImportParams, ListRunsParams, Request, StatusFilter,
};
use baton::backend::Backend;
use baton::cli::{Cli, Command};
use baton::home::Home;
use baton::mcp::BatonServer;
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Owner) = cli.command {
        // The database owner: a detached process with its own runtime and log.
        return match Home::resolve(cli.home.as_deref()) {
            Ok(home) => baton::backend::daemon::run(home),
            Err(e) => {
                eprintln!("baton: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Drive(args)) = cli.command {
        return drive(cli.home, args);
    }
    let serving = matches!(cli.command, None | Some(Command::Serve));
    baton::logging::init(if serving { "warn,baton=info" } else { "warn" });
    // One thread: this process only talks to the owner.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Let go of the owner connection before printing, so a slow reader of our output
    // holds nothing the other baton processes need.
    drop(runtime);
    match outcome {
        Ok(text) => print(&text),
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `baton drive`: its own exit codes (see `baton::drive::Exit`), a multi-threaded runtime for
/// its agents.
fn drive(home: Option<PathBuf>, args: baton::cli::DriveArgs) -> ExitCode {
    baton::logging::init("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let backend = Backend::new(Home::resolve(home.as_deref())?);
        baton::drive::drive(backend, args.options()).await
    });
    match outcome {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("baton drive: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Write the command's output; a reader that went away (`| head`) is not an error.
fn print(text: &str) -> ExitCode {
    if text.is_empty() {
        return ExitCode::SUCCESS;
    }
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the command; returns what to print on stdout.
async fn run(cli: Cli) -> Result<String> {
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Install { codex_home, command, no_skill, plugin, database_url, encrypt } => {
            if let Some(url) = &database_url {
                // Refuse an unusable URL before writing it anywhere.
                baton::store::postgres::DatabaseUrl::parse(url)?;
            }
            let exe = match command {
                Some(path) => path,
                None => std::env::current_exe()?.canonicalize()?,
            };
            // Pin the data directory in the registration: Codex starts servers with a reduced
            // environment, and the server must use the same database as terminal commands.
            let baton_home = Home::resolve(cli.home.as_deref())?;
            let key_file = if encrypt {
                baton_home.prepare()?;
                Some(baton::install::enable_encryption(&baton_home.db_dir())?)
            } else {
                None
            };
            if let Some(dir) = plugin {
                let dir = std::path::absolute(&dir)?;
                let mut lines = baton::install::write_plugin(&dir, &exe, Some(&baton_home.dir), database_url.as_deref())?;
                lines.extend(key_file.map(|(_, line)| line));
                let marketplace = baton::install::MARKETPLACE;
                lines.push(format!(
                    "Add it to Codex with:\n  codex plugin marketplace add {}\n  codex plugin add baton@{marketplace}\nthen start a new session (run `baton uninstall` first if baton was installed without --plugin).",
                    dir.display()
                ));
                return Ok(lines.join("\n"));
            }
            let codex_home = baton::install::codex_home(codex_home.as_deref())?;
            let mut lines = baton::install::install(&codex_home, &exe, Some(&baton_home.dir), !no_skill)?;
            if let Some(url) = &database_url {
                lines.push(baton::install::register_database_url(&codex_home, url)?);
            }
            if let Some((path, line)) = key_file {
                if baton::store::sled_store::Options::named_key_file().is_some() {
                    baton::install::register_key_file(&codex_home, &path)?;
                }
                lines.push(line);
            }
            lines.push("Restart Codex (or start a new session) to load baton.".into());
            Ok(lines.join("\n"))
        }
        Command::Uninstall { codex_home } => {
            let codex_home = baton::install::codex_home(codex_home.as_deref())?;
            let lines = baton::install::uninstall(&codex_home)?;
            Ok(if lines.is_empty() { "baton was not installed there.".into() } else { lines.join("\n") })
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
            BatonServer::new(backend).serve_stdio().await?;
            Ok(String::new())
        }
        Command::Owner => anyhow::bail!("`baton owner` runs as a process of its own"),
        Command::Drive(_) => anyhow::bail!("`baton drive` runs on its own runtime"),
        Command::Runs { status, limit, json } => {
            let status: StatusFilter = serde_json::from_value(serde_json::Value::String(status.clone())).with_context(|| {
                format!("unknown status `{status}`; use all, open, active, awaiting_human, completed, failed or cancelled")
            })?;
            let request = Request::ListRuns(ListRunsParams { status: Some(status), template: None, limit: Some(limit), workspace: None });
            request_text(&cli.home, request, json).await
        }
        Command::Show { run_id, graph: true, svg, json, .. } => {
            baton::ui::commands::show_graph(cli.home.as_deref(), run_id, svg, json).await
        }
        Command::Show { run_id, history, json, .. } => {
            let request = Request::GetRun(GetRunParams { run_id, history_limit: Some(history), before_seq: None });
            request_text(&cli.home, request, json).await
        }
        Command::Answer { run_id, answer, comment, task, expected_version, json } => {
            let request = Request::AnswerHuman(AnswerHumanParams { run_id, task, answer, comment, expected_version });
            request_text(&cli.home, request, json).await
        }
        Command::Cancel { run_id, reason, expected_version, json } => {
            let request = Request::CancelRun(CancelRunParams { run_id, reason, expected_version });
            request_text(&cli.home, request, json).await
        }
        Command::Verify { repair: true, json } => repair(&cli.home, json).await,
        Command::Verify { repair: false, json } => request_text(&cli.home, Request::Verify(Default::default()), json).await,
        Command::Backup { dir } => {
            let request = Request::Backup(BackupParams { dir: absolute(&dir)? });
            request_text(&cli.home, request, false).await
        }
        Command::Export { file: Some(file) } => {
            request_text(&cli.home, Request::Export(ExportParams { file: absolute(&file)? }), false).await
        }
        Command::Export { file: None } => {
            // The owner writes the file; stream it to stdout from a private temp file.
            let home = Home::resolve(cli.home.as_deref())?;
            home.prepare()?;
            let tmp = home.dir.join(format!(".export-{}.jsonl", uuid::Uuid::new_v4()));
            let result = request_text(&cli.home, Request::Export(ExportParams { file: absolute(&tmp)? }), false).await;
            let text = result.and_then(|_| Ok(std::fs::read_to_string(&tmp)?));
            let _ = std::fs::remove_file(&tmp);
            Ok(text?.trim_end().to_string())
        }
        Command::Import { file, replace } => {
            request_text(&cli.home, Request::Import(ImportParams { file: absolute(&file)?, replace }), false).await
        }
        Command::Migrate { to, replace } => migrate(&cli.home, &to, replace).await,
        Command::Ui(command) => baton::ui::commands::run(cli.home.as_deref(), command).await,
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
    let target = baton::migrate::Target::parse(to)?;
    let home = Home::resolve(home.as_deref())?;
    let backend = Backend::new(home.clone());
    let same = match (&target, backend.direct()) {
        (baton::migrate::Target::Sled(dir), None) => dir == &home.db_dir(),
        (baton::migrate::Target::Postgres(url), Some(Ok(direct))) => url.place == direct.place(),
        _ => false,
    };
    if same {
        anyhow::bail!("{} is the store baton uses now; give another target", target.shown());
    }
    home.prepare()?;
    let tmp = home.dir.join(format!(".migrate-{}.jsonl", uuid::Uuid::new_v4()));
    let copied = async {
        backend.connect().await?;
        baton::gitops::call(&backend, baton::api::Caller::default(), Request::Export(ExportParams { file: absolute(&tmp)? })).await?;
        let store = target.open().await?;
        Ok::<_, anyhow::Error>(baton::migrate::copy(&tmp, store.as_ref(), replace).await?)
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
    if let Some(url) = baton::store::postgres::DatabaseUrl::from_env() {
        anyhow::bail!(
            "baton uses the PostgreSQL database {} (BATON_DATABASE_URL); --repair is for the embedded sled database. `baton verify` checks PostgreSQL, and the server's own tools (pg_dump, PITR) restore it",
            url.map(|u| u.place).unwrap_or_else(|e| e.message)
        );
    }
    let home = Home::resolve(home.as_deref())?;
    home.prepare()?;
    let lock = home.open_lock()?;
    if lock.try_lock().is_err() {
        stop_idle_owner(&home, &lock).await?;
    }
    let report = baton::store::SledStore::repair(&home.db_dir(), baton::store::sled_store::Options::for_dir(&home.db_dir())?)?;
    if json {
        return Ok(serde_json::to_string_pretty(&report)?);
    }
    let mut text = format!("Repaired {}: {} run(s), {} event(s).", home.db_dir().display(), report.runs, report.events);
    for problem in &report.problems {
        text.push_str(&format!("\n- {problem}"));
    }
    Ok(text)
}

/// A repair must have the database to itself. If the owner process serves nobody but
/// us (e.g. it lingers after a terminal command), ask it to shut down (it finishes what is
/// in flight and releases the lock) and take the lock; if sessions use it, refuse.
async fn stop_idle_owner(home: &Home, lock: &std::fs::File) -> Result<()> {
    let owner =
        match baton::gitops::call(&Backend::new(home.clone()), baton::api::Caller::default(), Request::OwnerStatus(Default::default()))
            .await?
        {
            baton::api::Reply::Owner(owner) => owner,
            other => anyhow::bail!("unexpected answer from the baton owner: {other:?}"),
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
    let backend = Backend::new(Home::resolve(home.as_deref())?);
    backend.connect().await?;
    // Through gitops: e.g. `cancel` removes the run's worktrees, `answer` may merge a join.
    let reply = baton::gitops::call(&backend, baton::cli::terminal_caller(), request).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&reply.to_json())?);
    }
    Ok(baton::cli::render(&reply))
}
