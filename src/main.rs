//! The `baton` binary.

use anyhow::{Context, Result};
use baton::api::{AnswerHumanParams, CancelRunParams, GetRunParams, ListRunsParams, Request, StatusFilter};
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
        Command::Install { codex_home, command, no_skill } => {
            let codex_home = baton::install::codex_home(codex_home.as_deref())?;
            let exe = match command {
                Some(path) => path,
                None => std::env::current_exe()?.canonicalize()?,
            };
            // Pin the data directory in the registration: Codex starts servers with a reduced
            // environment, and the server must use the same database as terminal commands.
            let baton_home = Home::resolve(cli.home.as_deref())?;
            let mut lines = baton::install::install(&codex_home, &exe, Some(&baton_home.dir), !no_skill)?;
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
                    Ok(()) => tracing::debug!(home = %early.home().dir.display(), "reached the baton owner"),
                    Err(e) => tracing::error!("{e}"),
                }
            });
            BatonServer::new(backend).serve_stdio().await?;
            Ok(String::new())
        }
        Command::Owner => anyhow::bail!("`baton owner` runs as a process of its own"),
        Command::Runs { status, limit, json } => {
            let status: StatusFilter = serde_json::from_value(serde_json::Value::String(status.clone())).with_context(|| {
                format!("unknown status `{status}`; use all, open, active, awaiting_human, completed, failed or cancelled")
            })?;
            let request = Request::ListRuns(ListRunsParams { status: Some(status), template: None, limit: Some(limit) });
            request_text(&cli.home, request, json).await
        }
        Command::Show { run_id, history, json } => {
            let request = Request::GetRun(GetRunParams { run_id, history_limit: Some(history), before_seq: None });
            request_text(&cli.home, request, json).await
        }
        Command::Answer { run_id, answer, comment, expected_version, json } => {
            let request = Request::AnswerHuman(AnswerHumanParams { run_id, answer, comment, expected_version });
            request_text(&cli.home, request, json).await
        }
        Command::Cancel { run_id, reason, expected_version, json } => {
            let request = Request::CancelRun(CancelRunParams { run_id, reason, expected_version });
            request_text(&cli.home, request, json).await
        }
    }
}

/// Run one request and render its answer for a human (or as JSON).
async fn request_text(home: &Option<PathBuf>, request: Request, json: bool) -> Result<String> {
    let backend = Backend::new(Home::resolve(home.as_deref())?);
    let is_history = matches!(request, Request::GetRun(_));
    let reply = backend.call(request).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&reply.data)?);
    }
    let mut text = reply.text;
    if is_history {
        for event in reply.data["events"].as_array().into_iter().flatten() {
            text.push('\n');
            text.push_str(&baton::cli::render_event(event));
        }
    }
    Ok(text)
}
