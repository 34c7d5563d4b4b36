//! Command-line interface: `serve` for Codex, `install`, and terminal commands for humans.

use crate::api::{Caller, Reply};
use crate::engine::Actor;
use crate::engine::Brief;
use crate::engine::brief::{EventLine, Guide};
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
        /// Print the run's workflow graph as Mermaid (paste it into a PR in a ```mermaid block).
        #[arg(long)]
        graph: bool,
        /// With --graph: print it as an SVG document instead.
        #[arg(long, requires = "graph")]
        svg: bool,
    },
    /// Answer a run's pending human question.
    Answer {
        run_id: String,
        answer: String,
        #[arg(long)]
        comment: Option<String>,
        /// Answer the question of this task of the run's plan.
        #[arg(long, value_name = "TASK")]
        task: Option<String>,
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
    /// Check the database: every record decodes; runs, events, checkpoints and listings agree.
    Verify {
        /// With no baton process running: accept a damaged database as it is (rewrite a
        /// damaged configuration file, rebuild listings, re-record the integrity witness).
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy the database, consistently, into a new directory (works while sessions run).
    Backup { dir: PathBuf },
    /// Write every run (with its events and checkpoints) and template as JSON lines.
    Export {
        /// The file to create; default: standard output.
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
    /// Add the runs and templates of a file written by `baton export`.
    Import {
        file: PathBuf,
        /// Overwrite runs whose id exists (otherwise nothing is imported).
        #[arg(long)]
        replace: bool,
    },
    /// Work a run to its end with Codex agents started through `codex app-server`
    /// (exit codes: 0 completed, 3 failed, 4 cancelled, 5 waiting for a human, 6 budget stop,
    /// 7 interrupted, 1 an error of the driver, 2 a usage error).
    Drive(DriveArgs),
    #[command(flatten)]
    Ui(UiCommand),
}

/// `baton drive RUN` or `baton drive --goal "..."`.
#[derive(Debug, clap::Args)]
pub struct DriveArgs {
    /// The run to carry on (omit with --goal).
    #[arg(required_unless_present = "goal", conflicts_with = "goal")]
    pub run_id: Option<String>,
    /// Start a run of this goal in the current directory and drive it.
    #[arg(long)]
    pub goal: Option<String>,
    #[arg(long, requires = "goal")]
    pub template: Option<String>,
    #[arg(long, requires = "goal")]
    pub title: Option<String>,
    /// At most N agent turns at once (default: the run's max_agents).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub agents: Option<u32>,
    /// Stop starting steps once the driven turns used this many tokens, and ask a human.
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,
    /// Model for every agent, or ROLE=MODEL for one role (repeatable).
    #[arg(long, value_name = "MODEL|ROLE=MODEL")]
    pub model: Vec<String>,
    /// Reasoning effort for every agent's turns (e.g. low, medium, high), or ROLE=EFFORT for
    /// one role (repeatable). A template step's own `model`/`effort` win over these.
    #[arg(long, value_name = "EFFORT|ROLE=EFFORT")]
    pub effort: Vec<String>,
    /// One JSON event per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// The Codex CLI to start (default: `codex` on PATH).
    #[arg(long, value_name = "PATH", default_value = "codex")]
    pub codex: PathBuf,
    /// Agent turns per step before a human is asked to retry or fail.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Longest agent turn, in seconds, before it is interrupted and retried.
    #[arg(long, default_value_t = 1800)]
    pub turn_timeout: u64,
    /// First retry delay in milliseconds (doubled per attempt).
    #[arg(long, default_value_t = 2000)]
    pub backoff_ms: u64,
    /// Exit with code 5 (6 for a budget stop) instead of waiting when the run needs a human.
    #[arg(long)]
    pub no_wait: bool,
}

impl DriveArgs {
    pub fn options(self) -> crate::drive::DriveOptions {
        let (model, role_models) = per_role(self.model);
        let (effort, role_efforts) = per_role(self.effort);
        crate::drive::DriveOptions {
            run_id: self.run_id,
            goal: self.goal,
            template: self.template,
            title: self.title,
            agents: self.agents,
            budget_tokens: self.budget_tokens,
            model,
            role_models,
            effort,
            role_efforts,
            json: self.json,
            codex: self.codex,
            max_attempts: self.max_attempts,
            turn_timeout: std::time::Duration::from_secs(self.turn_timeout.max(1)),
            backoff: std::time::Duration::from_millis(self.backoff_ms),
            no_wait: self.no_wait,
        }
    }
}

/// The commands of the local web page and of retention (see `baton::ui`).
#[derive(Debug, Subcommand)]
pub enum UiCommand {
    /// Serve a live web page of the runs on 127.0.0.1 and print its address (with a
    /// one-time access token) on stdout.
    Ui {
        /// Port to listen on (default: any free port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Delete a finished run and all its records.
    Delete {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete finished runs whose last change is older than an age; runs in progress are kept.
    Prune {
        /// An age such as 30d, 12h or 90min.
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

/// `VALUE` and `ROLE=VALUE` options: the value for every role (the last one given), and per role.
fn per_role(values: Vec<String>) -> (Option<String>, std::collections::BTreeMap<String, String>) {
    let mut all = None;
    let mut by_role = std::collections::BTreeMap::new();
    for value in values {
        match value.split_once('=') {
            Some((role, v)) => {
                by_role.insert(role.to_string(), v.to_string());
            }
            None => all = Some(value),
        }
    }
    (all, by_role)
}

/// An answer rendered for a person at a terminal.
pub fn render(reply: &Reply) -> String {
    match reply {
        Reply::Brief(brief) => with_note(brief.summary(), brief.note.as_deref()),
        Reply::Task(task) => with_note(
            format!("Run {} task `{}` \"{}\": {}\n{}", task.run_id, task.task, task.title, task.status.as_str(), task.next_action),
            task.note.as_deref(),
        ),
        Reply::Briefing(briefing) => {
            let mut text = briefing.brief.summary();
            for line in &briefing.recent_events {
                text.push('\n');
                text.push_str(&line.render());
            }
            text
        }
        Reply::Runs(list) => {
            let mut text = format!("{} run(s).", list.total);
            for s in &list.runs {
                text.push_str(&format!(
                    "\n- {} v{} {} \"{}\"{}",
                    s.run_id,
                    s.version,
                    s.status.as_str(),
                    s.title,
                    s.step.as_deref().map(|st| format!(" at `{st}`")).unwrap_or_default()
                ));
            }
            text
        }
        Reply::Run(details) => {
            let mut text = Brief::of(&details.run, Guide::FirstTime).summary();
            if let Some(drive) = &details.run.drive {
                text.push('\n');
                text.push_str(&crate::drive::summary(drive));
            }
            text.push_str(&format!("\n{} event(s) shown.", details.events.len()));
            for event in &details.events {
                text.push('\n');
                text.push_str(&EventLine::of(event).render());
            }
            text
        }
        Reply::Event(detail) => {
            let mut text = EventLine::of(&detail.event).render();
            text.push_str(&format!(
                "\n[bytes {}..{} of {}]\n{}",
                detail.offset,
                detail.offset + detail.text.len(),
                detail.total_bytes,
                detail.text
            ));
            text
        }
        Reply::Checkpoint(saved) => {
            format!("Saved checkpoint `{}` of run {} at version {}.", saved.checkpoint, saved.run_id, saved.version)
        }
        Reply::Verified(report) => {
            let mut text = format!(
                "{} run(s), {} event(s), {} checkpoint(s), {} template(s): {}",
                report.runs,
                report.events,
                report.checkpoints,
                report.templates,
                if report.is_sound() { "the database is sound." } else { "PROBLEMS FOUND:" }
            );
            for problem in &report.problems {
                text.push_str(&format!("\n- {problem}"));
            }
            text
        }
        Reply::BackedUp(report) if report.dir.join("baton-export.jsonl").exists() => format!(
            "Backed up {} run(s) from one consistent snapshot to {}. To restore: `baton import` that file (into an empty database, or with --replace).",
            report.records,
            report.dir.join("baton-export.jsonl").display()
        ),
        Reply::BackedUp(report) => format!(
            "Backed up {} records (write batch {}) to {}. To restore: stop baton and put that directory in place of the database directory `db/`.",
            report.records,
            report.batch,
            report.dir.display()
        ),
        Reply::Owner(owner) => format!("The database is owned by pid {}, serving {} connection(s).", owner.pid, owner.connections),
        Reply::Exported(moved) => format!("Exported {} run(s) to {}.", moved.runs, moved.file),
        Reply::Imported(moved) => format!("Imported {} run(s) from {}.", moved.runs, moved.file),
        Reply::Templates(list) => {
            format!("Templates: {}", list.templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "))
        }
        Reply::Graph(graph) => crate::engine::graph_mermaid::to_mermaid(graph),
        Reply::Changes(mark) => format!("Change counter: {}", mark.counter),
        Reply::Deleted(deleted) => {
            let verb = if deleted.dry_run { "Would delete" } else { "Deleted" };
            let mut text = format!("{verb} {} run(s).", deleted.runs.len());
            for s in &deleted.runs {
                text.push_str(&format!("\n- {} {} \"{}\" (last change {})", s.run_id, s.status.as_str(), s.title, s.updated_at));
            }
            text
        }
    }
}

fn with_note(text: String, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{note}\n{text}"),
        None => text,
    }
}

/// The person at this terminal, as the actor of the changes they make.
pub fn terminal_caller() -> Caller {
    let user = std::env::var("USER").ok().or_else(|| std::env::var("LOGNAME").ok()).filter(|u| !u.is_empty());
    Caller { actor: Actor::terminal(user), workspace: None }
}
