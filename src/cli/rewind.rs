//! Going back in a run, from the terminal: `baton fork RUN --at N` forks a new run from any
//! version (its state replayed up to that event, its code restored into the fork's own
//! worktree; see `crate::gitops`), and `baton diff RUN --from N --to M` shows what changed
//! between two versions (computed by `crate::rewind`, as the page's compare is).

use super::{render, terminal_caller};
use crate::api::{Request, ResumeParams};
use crate::backend::Backend;
use crate::engine::naming::short_id;
use crate::home::Home;
use crate::rewind::{MAX_PATCH_BYTES, RunDiff, diff};
use clap::Subcommand;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum RewindCommand {
    /// Fork a new run from any version of a run (an event's number, as `baton show` lists
    /// them): its state is the run replayed up to that event, and its code is restored
    /// into the fork's own worktree.
    Fork {
        run_id: String,
        /// The version to fork at.
        #[arg(long, value_name = "VERSION")]
        at: u64,
        /// Title of the new run.
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// What changed in a run between two versions: steps, outcomes, artifacts, the events
    /// in between and the code diff.
    Diff {
        run_id: String,
        #[arg(long, value_name = "VERSION")]
        from: u64,
        #[arg(long, value_name = "VERSION")]
        to: u64,
        #[arg(long)]
        json: bool,
    },
}

/// Run one of the commands; returns what to print.
pub async fn run(home: Option<&Path>, command: RewindCommand) -> anyhow::Result<String> {
    let backend = Backend::new(Home::resolve(home)?);
    backend.connect().await?;
    let caller = terminal_caller();
    match command {
        RewindCommand::Fork { run_id, at, title, json } => {
            let request = Request::Resume(ResumeParams { run_id: Some(run_id), at_version: Some(at), title, ..ResumeParams::default() });
            let reply = crate::calls::call(&backend, caller, request).await?;
            Ok(if json { serde_json::to_string_pretty(&reply.to_json())? } else { render(&reply) })
        }
        RewindCommand::Diff { run_id, from, to, json } => {
            let diff = diff(&backend, &caller, &run_id, from, to).await?;
            Ok(if json { serde_json::to_string_pretty(&diff)? } else { render_diff(&diff) })
        }
    }
}

/// The diff for a person at a terminal.
pub fn render_diff(diff: &RunDiff) -> String {
    let mut text = format!("Run {}: {}\n     -> {}", diff.run_id, diff.from.line(), diff.to.line());
    text.push_str(&format!("\n{} event(s) in between:", diff.events.len()));
    for line in &diff.events {
        text.push_str(&format!("\n  {}", line.render()));
    }
    if !diff.outcomes.is_empty() {
        text.push_str("\nOutcomes:");
        for o in &diff.outcomes {
            let show = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".to_string());
            text.push_str(&format!("\n  {}: {} -> {}", o.step, show(&o.from), show(&o.to)));
        }
    }
    let a = &diff.artifacts;
    if !(a.added.is_empty() && a.changed.is_empty() && a.removed.is_empty()) {
        text.push_str(&format!(
            "\nArtifacts: added [{}], changed [{}], removed [{}]",
            a.added.join(", "),
            a.changed.join(", "),
            a.removed.join(", ")
        ));
    }
    match &diff.code {
        Some(code) if code.from == code.to => {
            text.push_str(&format!("\nCode: unchanged ({} in {})", short_id(&code.from), code.repo));
        }
        Some(code) => {
            text.push_str(&format!(
                "\nCode: git -C {} diff {} {}\n{}{}",
                code.repo,
                short_id(&code.from),
                short_id(&code.to),
                code.stat,
                code.patch
            ));
            if code.truncated {
                text.push_str(&format!("\n[diff cut at {MAX_PATCH_BYTES} bytes: run the command above for all of it]"));
            }
        }
        None => text.push_str("\nCode: not recorded (the run is not in a git repository)"),
    }
    text
}
