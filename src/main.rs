//! The `baton` binary.

use anyhow::{Context, Result};
use baton::api::{AnswerHumanParams, CancelRunParams, GetRunParams, ListRunsParams, Reply, Request, StatusFilter};
use baton::backend::Backend;
use baton::cli::{Cli, Command};
use baton::home::Home;
use baton::mcp::BatonServer;
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, None | Some(Command::Serve)));
    // One thread: requests run inline (see backend::owner), which is faster than hand-offs.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries only MCP messages), or to `$BATON_LOG_FILE`.
/// The filter comes from `$BATON_LOG` (default: info for the server, warn for terminal commands).
fn init_logging(serving: bool) {
    let default = if serving { "warn,baton=info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let file = std::env::var_os("BATON_LOG_FILE").and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    match file {
        Some(file) => builder.with_writer(std::sync::Mutex::new(file)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Install { codex_home, command, no_skill } => {
            let codex_home = baton::install::codex_home(codex_home.as_deref())?;
            let exe = match command {
                Some(path) => path,
                None => std::env::current_exe()?.canonicalize()?,
            };
            // Pin the data directory in the registration: Codex starts servers with a reduced
            // environment, and the server must use the same database as terminal commands.
            let baton_home = Home::resolve(cli.home.as_deref())?;
            for line in baton::install::install(&codex_home, &exe, Some(&baton_home.dir), !no_skill)? {
                println!("{line}");
            }
            println!("Restart Codex (or start a new session) to load baton.");
            Ok(())
        }
        Command::Uninstall { codex_home } => {
            let codex_home = baton::install::codex_home(codex_home.as_deref())?;
            for line in baton::install::uninstall(&codex_home)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Serve => {
            let backend = Backend::new(Home::resolve(cli.home.as_deref())?);
            // Serve even when the database cannot be opened yet: every call then answers
            // with the reason and the fix, and retries, so fixing it needs no restart.
            match backend.connect().await {
                Ok(role) => tracing::debug!(?role, home = %backend.home().dir.display(), "connected"),
                Err(e) => tracing::error!("{e}"),
            }
            BatonServer::new(Arc::new(backend)).serve_stdio().await
        }
        Command::Runs { status, limit, json } => {
            let status: StatusFilter = serde_json::from_value(serde_json::Value::String(status.clone())).with_context(|| {
                format!("unknown status `{status}`; use all, open, active, awaiting_human, completed, failed or cancelled")
            })?;
            let request = Request::ListRuns(ListRunsParams { status: Some(status), template: None, limit: Some(limit) });
            print_reply(&cli.home, request, json).await
        }
        Command::Show { run_id, history, json } => {
            let request = Request::GetRun(GetRunParams { run_id, history_limit: Some(history), before_seq: None });
            print_reply(&cli.home, request, json).await
        }
        Command::Answer { run_id, answer, comment, json } => {
            let request = Request::AnswerHuman(AnswerHumanParams { run_id, answer, comment, expected_version: None });
            print_reply(&cli.home, request, json).await
        }
        Command::Cancel { run_id, reason, json } => {
            let request = Request::CancelRun(CancelRunParams { run_id, reason, expected_version: None });
            print_reply(&cli.home, request, json).await
        }
    }
}

async fn open_backend(home: &Option<std::path::PathBuf>) -> Result<Backend> {
    let backend = Backend::new(Home::resolve(home.as_deref())?);
    backend.connect().await?;
    Ok(backend)
}

/// Run one request and print its answer for a human (or as JSON).
async fn print_reply(home: &Option<std::path::PathBuf>, request: Request, json: bool) -> Result<()> {
    let backend = open_backend(home).await?;
    let is_history = matches!(request, Request::GetRun(_));
    let reply: Reply = backend.call(request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply.data)?);
        return Ok(());
    }
    println!("{}", reply.text);
    if is_history {
        for event in reply.data["events"].as_array().into_iter().flatten() {
            println!("{}", baton::cli::render_event(event));
        }
    }
    Ok(())
}
