//! Running the commands: what `baton COMMAND` does, once its arguments are parsed. The
//! binary's `main` only parses, runs this and prints; failures come back as errors that
//! [`super::errors`] turns into messages, JSON and exit codes.

use super::open::{open_backend, request_text};
use super::{Cli, Command};
use crate::api::{AnswerHumanParams, CancelRunParams, GetRunParams, ListRunsParams, Request, StatusFilter};
use crate::backend::Backend;
use crate::error::BatonError;
use crate::home::Home;
use crate::mcp::BatonServer;
use anyhow::Result;
use std::sync::Arc;

/// Run the command; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String> {
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Install { codex_home, command, no_skill, plugin, database_url, encrypt } => {
            let options = super::install::Install { codex_home, command, no_skill, plugin, database_url, encrypt };
            super::install::install(cli.home.as_deref(), options)
        }
        Command::Uninstall { codex_home } => super::install::uninstall(codex_home.as_deref()),
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
        Command::Verify { repair: true, json } => super::upkeep::repair(&cli.home, json).await,
        Command::Verify { repair: false, json } => super::upkeep::verify(&cli.home, json).await,
        Command::Backup { dir } => super::upkeep::backup(&cli.home, &dir).await,
        Command::Export { file } => super::upkeep::export(&cli.home, file.as_deref()).await,
        Command::Import { file, replace } => super::upkeep::import(&cli.home, &file, replace).await,
        Command::Migrate { to, replace } => super::upkeep::migrate(&cli.home, &to, replace).await,
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
