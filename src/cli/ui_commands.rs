//! The terminal commands of the page and the graph: `baton ui` (serves `crate::ui`),
//! `baton delete`, `baton prune` and `baton show RUN --graph [--svg]`.

use super::{UiCommand, render, terminal_caller};
use crate::api::{Call, DeleteRunParams, GetGraphParams, PruneParams, Request};
use crate::graph::to_mermaid;
use crate::graph::to_svg;
use crate::home::Home;
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// Run one of the commands; returns what to print once the database is let go.
pub async fn run(home: Option<&Path>, command: UiCommand) -> Result<String> {
    match command {
        UiCommand::Ui { port } => {
            let home = Home::resolve(home)?;
            super::open::needs_database(&home)?;
            crate::ui::serve(home, port, |url| {
                // stdout carries the address only; anything else goes to stderr.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{url}");
                let _ = out.flush();
                eprintln!("baton ui: open the address above; Ctrl-C stops the server.");
            })
            .await?;
            Ok(String::new())
        }
        UiCommand::Delete { run_id, json } => text(home, Request::DeleteRun(DeleteRunParams { run_id }), json).await,
        UiCommand::Prune { older_than, dry_run, json } => {
            if older_than.trim_start().starts_with('-') {
                return Err(crate::error::BatonError::invalid(
                    "older_than",
                    format!("`{older_than}` is a negative age"),
                    "Give how old a finished run must be, as a positive age: e.g. `--older-than 5d`.",
                )
                .into());
            }
            text(home, Request::Prune(PruneParams { older_than, dry_run: Some(dry_run), workspace: None }), json).await
        }
    }
}

/// The workflow graph of a run: Mermaid, SVG, or the graph model as JSON.
pub async fn show_graph(home: Option<&Path>, run_id: String, svg: bool, json: bool) -> Result<String> {
    let graph = call(home, GetGraphParams { run_id }).await?;
    Ok(if json {
        serde_json::to_string_pretty(&graph)?
    } else if svg {
        to_svg(&graph)
    } else {
        to_mermaid(&graph)
    })
}

async fn text(home: Option<&Path>, request: Request, json: bool) -> Result<String> {
    let reply = call(home, request).await?;
    Ok(if json { serde_json::to_string_pretty(&reply.to_json())? } else { render(&reply) })
}

async fn call<C: Call>(home: Option<&Path>, request: C) -> Result<C::Reply> {
    let backend = super::open::open_backend(home).await?;
    Ok(crate::calls::call(&backend, terminal_caller(), request).await?)
}
