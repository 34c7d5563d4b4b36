//! Command-line interface: `serve` for Codex, `install`, and terminal commands for humans.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "baton", version, about = "Durable multi-agent workflows for Codex (stdio MCP server)")]
pub struct Cli {
    /// Baton home (database, lock, socket). Default: $BATON_HOME, else $CODEX_HOME/baton, else ~/.codex/baton.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdin/stdout (what Codex runs; the default).
    Serve,
    /// Own the database and serve the other baton processes (started by them, detached).
    #[command(hide = true)]
    Owner,
    /// Register baton in Codex's config.toml and install the skill.
    Install {
        /// Codex home. Default: $CODEX_HOME, else ~/.codex.
        #[arg(long, value_name = "DIR")]
        codex_home: Option<PathBuf>,
        /// Path of the baton binary Codex should start. Default: this executable.
        #[arg(long, value_name = "PATH")]
        command: Option<PathBuf>,
        /// Only register the MCP server; do not install the skill.
        #[arg(long)]
        no_skill: bool,
    },
    /// Remove baton from Codex's config.toml and remove the skill (runs are kept).
    Uninstall {
        #[arg(long, value_name = "DIR")]
        codex_home: Option<PathBuf>,
    },
    /// List runs.
    Runs {
        /// all, open, active, awaiting_human, completed, failed, cancelled.
        #[arg(long, default_value = "all")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's state and recent history.
    Show {
        run_id: String,
        #[arg(long, default_value_t = 20)]
        history: u32,
        #[arg(long)]
        json: bool,
    },
    /// Answer a run's pending human question.
    Answer {
        run_id: String,
        answer: String,
        #[arg(long)]
        comment: Option<String>,
        /// Refuse if the run changed since this version (as shown by `baton show`).
        #[arg(long, value_name = "VERSION")]
        expected_version: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel {
        run_id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Refuse if the run changed since this version (as shown by `baton show`).
        #[arg(long, value_name = "VERSION")]
        expected_version: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

/// One history line for the terminal, e.g. `#4 2026-.. advanced review -> implement (changes_requested)`.
pub fn render_event(event: &serde_json::Value) -> String {
    let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
    let detail = match field("type").as_str() {
        "advanced" => {
            format!("{} ({}) -> {} [{}]: {}", field("step"), field("role"), field("next"), field("outcome"), first_line(&field("output")))
        }
        "started" => format!("template {} at {}: {}", field("template"), field("step"), first_line(&field("goal"))),
        "human_asked" => format!("asked: {}", field("question")),
        "human_answered" => format!("answered: {}", field("answer")),
        "checkpoint_saved" => format!("checkpoint {}", field("name")),
        "cancelled" => format!("cancelled: {}", field("reason")),
        "forked" => format!("forked from {} at checkpoint {}", field("from_run"), field("checkpoint")),
        _ => String::new(),
    };
    format!("#{} {} {} {}", event["seq"], field("at"), field("type"), detail)
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 100 { format!("{}…", line.chars().take(100).collect::<String>()) } else { line.to_string() }
}
