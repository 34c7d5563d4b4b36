//! Command-line interface: `serve` for Codex, `install`, and terminal commands for people.
//! The arguments are here; [`process`] takes the process from them to its exit code,
//! [`commands`] runs them, [`render`] writes their answers for a
//! person, and [`errors`] turns failures into messages, JSON and exit codes by kind.

use crate::api::Caller;
use crate::engine::Actor;
use clap::{Parser, Subcommand};
pub use drive::DriveArgs;
use std::path::PathBuf;

pub mod commands;
pub mod drive;
pub mod errors;
mod install;
mod open;
pub mod process;
pub mod render;
pub mod rewind;
mod ui_commands;
mod upkeep;

pub use render::render;

const MAIN_EXAMPLES: &str = "\
Examples:
  baton runs --status awaiting_human     runs waiting for you
  baton show 5ef2ecab                    a run (a unique prefix of its id is enough)
  baton answer 5ef2ecab yes              answer its question
  baton ui                               the live web page
  baton install                          register baton in Codex (~/.codex/config.toml)

Exit codes: 0 ok, 1 other error, 2 invalid argument, 3 not found, 4 conflict,
5 invalid state, 6 too large, 7 unavailable, 8 storage, 9 verify found problems.";

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Durable multi-agent workflows for Codex (stdio MCP server)",
    long_about = "Durable multi-agent workflows for Codex. Codex starts `baton serve` (the MCP server); \
                  the other commands are for people: list and show runs, answer the questions they wait on, \
                  cancel, back up, and serve a live web page.",
    after_help = MAIN_EXAMPLES
)]
pub struct Cli {
    /// Baton home (database, lock, socket). Default: $BATON_HOME, else the home `baton install`
    /// registered in Codex's config.toml, else $CODEX_HOME/baton, else ~/.codex/baton.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdin/stdout (what Codex runs; the default on a pipe).
    Serve,
    /// Own the database and serve the other baton processes (started by them, detached).
    #[command(hide = true)]
    Owner,
    /// Register baton in Codex's config.toml and install the skill.
    #[command(
        after_help = "Examples:\n  baton install\n  baton install --codex-home ~/work/.codex      # database in ~/work/.codex/baton\n  baton install --home ~/baton-runs --command \"$(command -v baton)\"\n  baton install --plugin ~/.codex/baton-market"
    )]
    Install {
        /// Codex home. Default: $CODEX_HOME, else ~/.codex. The database then goes in DIR/baton
        /// unless --home or $BATON_HOME says otherwise.
        #[arg(long, value_name = "DIR")]
        codex_home: Option<PathBuf>,
        /// Absolute path of the baton binary Codex should start (it must exist). Default: this executable.
        #[arg(long, value_name = "PATH")]
        command: Option<PathBuf>,
        /// Only register the MCP server; do not install the skill.
        #[arg(long)]
        no_skill: bool,
        /// Instead of changing a Codex home, write a local plugin marketplace (skill and MCP
        /// server) into DIR, for `codex plugin marketplace add DIR` and `codex plugin add baton@baton-local`.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["codex_home", "no_skill"])]
        plugin: Option<PathBuf>,
        /// Keep runs in this PostgreSQL database (postgres://...) instead of the embedded
        /// store: written to the registration's env as BATON_DATABASE_URL.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Encrypt runs at rest (sled): creates a key file, `db.key` beside the database or
        /// where BATON_KEY_FILE says, for a new or empty database.
        #[arg(long, conflicts_with = "database_url")]
        encrypt: bool,
    },
    /// Remove baton from Codex's config.toml and remove the skill (runs are kept).
    Uninstall {
        /// Codex home to remove baton from. Default: $CODEX_HOME, else ~/.codex.
        #[arg(long, value_name = "DIR")]
        codex_home: Option<PathBuf>,
    },
    /// List runs, most recently changed first.
    #[command(after_help = "Examples:\n  baton runs\n  baton runs --status awaiting_human\n  baton runs --limit 5 --json")]
    Runs {
        /// Which runs: all, open (not finished), active, awaiting_human, completed, failed, cancelled.
        #[arg(long, default_value = "all", value_name = "STATUS")]
        status: String,
        /// Show at most this many runs (the total is still counted).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
        /// Print JSON instead of text (errors too, as {"error": {...}}).
        #[arg(long)]
        json: bool,
    },
    /// Show a run: what it is doing, the question it waits on and how to answer, its tasks, its last events.
    #[command(
        after_help = "Examples:\n  baton show 5ef2ecab\n  baton show 5ef2ecab --history 100\n  baton show 5ef2ecab --graph > flow.mmd\n  baton show 5ef2ecab --graph --svg > flow.svg\n  baton show 5ef2ecab --json"
    )]
    Show {
        /// The run's id, or a unique prefix of it (at least 4 characters, e.g. the 8 of its branches).
        #[arg(value_name = "RUN")]
        run_id: String,
        /// How many of the latest events to show.
        #[arg(long, default_value_t = 20, value_name = "N")]
        history: u32,
        /// Print JSON instead of text (with --graph: the graph model).
        #[arg(long)]
        json: bool,
        /// Print the run's workflow graph as Mermaid (paste it into a PR in a ```mermaid block).
        #[arg(long)]
        graph: bool,
        /// With --graph: print it as an SVG document instead.
        #[arg(long, requires = "graph", conflicts_with = "json")]
        svg: bool,
    },
    /// Answer the question a run (or one of its tasks) waits on; the run goes on.
    #[command(
        after_help = "Examples:\n  baton answer 5ef2ecab yes\n  baton answer 5ef2ecab continue --task api\n  baton answer 5ef2ecab \"use Redis\" --comment \"we run it already\"\n  baton answer 5ef2ecab no --expected-version 7"
    )]
    Answer {
        /// The run's id, or a unique prefix of it.
        #[arg(value_name = "RUN")]
        run_id: String,
        /// Your answer: one of the options `baton show RUN` lists, or free text when it lists none.
        #[arg(value_name = "ANSWER")]
        answer: String,
        /// A remark kept with the answer and shown to the agents.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Answer the question of this task of the run's plan (as `baton show RUN` names it).
        #[arg(long, value_name = "TASK")]
        task: Option<String>,
        /// Refuse if the run changed since this version (as shown by `baton show`).
        #[arg(long, value_name = "VERSION")]
        expected_version: Option<u64>,
        /// Print JSON instead of text (errors too).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run for good (its worktrees are removed; branches stay).
    #[command(after_help = "Examples:\n  baton cancel 5ef2ecab --reason \"superseded by #42\"")]
    Cancel {
        /// The run's id, or a unique prefix of it.
        #[arg(value_name = "RUN")]
        run_id: String,
        /// Why, recorded in the run's history. Default: "cancelled by the user".
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Refuse if the run changed since this version (as shown by `baton show`).
        #[arg(long, value_name = "VERSION")]
        expected_version: Option<u64>,
        /// Print JSON instead of text (errors too).
        #[arg(long)]
        json: bool,
    },
    /// Check the database: every record decodes; runs, events, checkpoints and listings agree.
    Verify {
        /// With no baton process running: accept a damaged database as it is (rewrite a
        /// damaged configuration file, rebuild listings, re-record the integrity witness).
        #[arg(long)]
        repair: bool,
        /// Print JSON instead of text (errors too).
        #[arg(long)]
        json: bool,
    },
    /// Copy the database, consistently, into a new directory (works while sessions run).
    #[command(after_help = "Example:\n  baton backup ~/baton-backups/$(date +%F)")]
    Backup {
        /// A directory that does not exist yet (or is empty).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write every run (with its events and checkpoints) and template as JSON lines.
    Export {
        /// A new file to create (an existing one is never overwritten); default: standard output.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Copy every run (with its history and checkpoints) and template from this store to
    /// another, and verify the copy (sled -> PostgreSQL, or back).
    Migrate {
        /// The target: a postgres:// URL, or a directory for a sled database.
        #[arg(long, value_name = "URL|DIR")]
        to: String,
        /// Overwrite runs that exist in the target (otherwise nothing is copied if any does).
        #[arg(long)]
        replace: bool,
    },
    /// Add the runs and templates of a file written by `baton export` (creates the database if needed).
    Import {
        /// A file written by `baton export`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Overwrite runs whose id exists (otherwise nothing is imported).
        #[arg(long)]
        replace: bool,
    },
    /// Notifications (set up in notify.toml in the baton home): `baton notify test` sends a sample.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Work a run to its end with Codex agents started through `codex app-server`
    /// (exit codes: 0 completed, 3 failed, 4 cancelled, 5 waiting for a human, 6 budget stop,
    /// 7 interrupted, 1 an error of the driver, 2 a usage error).
    Drive(DriveArgs),
    #[command(flatten)]
    Ui(UiCommand),
    #[command(flatten)]
    Rewind(rewind::RewindCommand),
}

/// What `baton notify` does.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a sample event to every channel of notify.toml now, and say how each went.
    #[command(
        after_help = "notify.toml in the baton home, e.g.:\n  command = [\"/usr/local/bin/on-baton\"]   # gets the event JSON as its last argument\n  webhooks = [\"https://hooks.slack.com/services/...\"]   # JSON POST with a Slack `text`\n  desktop = true                            # notify-send\n  events = [\"awaiting_human\", \"completed\", \"failed\", \"cancelled\"]"
    )]
    Test,
}

/// The commands of the local web page and of retention (see `baton::ui`).
#[derive(Debug, Subcommand)]
pub enum UiCommand {
    /// Serve a live web page of the runs on 127.0.0.1 and print its address (with an access
    /// token, valid as long as this server runs) on stdout.
    #[command(after_help = "Examples:\n  baton ui\n  baton ui --port 8765")]
    Ui {
        /// Port to listen on (default: any free port).
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
    },
    /// Delete a finished run and all its records.
    Delete {
        /// The run's id, or a unique prefix of it.
        #[arg(value_name = "RUN")]
        run_id: String,
        /// Print JSON instead of text (errors too).
        #[arg(long)]
        json: bool,
    },
    /// Delete finished runs whose last change is older than an age; runs in progress are kept.
    #[command(after_help = "Examples:\n  baton prune --older-than 30d --dry-run\n  baton prune --older-than 12h")]
    Prune {
        /// A positive age such as 30d, 12h or 90min.
        #[arg(long, value_name = "AGE", allow_hyphen_values = true)]
        older_than: String,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text (errors too).
        #[arg(long)]
        json: bool,
    },
}

/// The person at this terminal, as the actor of the changes they make.
pub fn terminal_caller() -> Caller {
    let user = std::env::var("USER").ok().or_else(|| std::env::var("LOGNAME").ok()).filter(|u| !u.is_empty());
    Caller { actor: Actor::terminal(user), workspace: None }
}

impl Command {
    /// Whether the command was asked for JSON (then errors go to stdout as JSON too).
    pub fn json(&self) -> bool {
        match self {
            Command::Runs { json, .. }
            | Command::Show { json, .. }
            | Command::Answer { json, .. }
            | Command::Cancel { json, .. }
            | Command::Verify { json, .. } => *json,
            Command::Ui(UiCommand::Delete { json, .. } | UiCommand::Prune { json, .. }) => *json,
            _ => false,
        }
    }

    /// The run the command names, as given.
    pub fn run_arg(&self) -> Option<&str> {
        match self {
            Command::Show { run_id, .. } | Command::Answer { run_id, .. } | Command::Cancel { run_id, .. } => Some(run_id),
            Command::Ui(UiCommand::Delete { run_id, .. }) => Some(run_id),
            _ => None,
        }
    }
}

/// What bare `baton` says on a terminal: it is the MCP server Codex starts, which would
/// otherwise wait silently for JSON-RPC on stdin.
pub const TTY_HINT: &str = "\
baton: `baton` alone is the MCP server Codex starts (it speaks JSON-RPC on stdin/stdout), so it
does nothing at a terminal. Try:
  baton runs            list runs          baton show RUN      a run and its question
  baton ui              the live web page  baton --help        every command
(`baton serve` runs the server here anyway.)";
