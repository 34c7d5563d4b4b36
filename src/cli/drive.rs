//! The arguments of `baton drive` (the supervisor itself is `crate::drive`).

use std::path::PathBuf;

/// `baton drive RUN` or `baton drive --goal "..."`.
#[derive(Debug, clap::Args)]
pub struct DriveArgs {
    /// The run to carry on (omit with --goal).
    #[arg(required_unless_present = "goal", conflicts_with = "goal")]
    pub run_id: Option<String>,
    /// Start a run of this goal in the current directory and drive it.
    #[arg(long)]
    pub goal: Option<String>,
    #[arg(long, requires = "goal", conflicts_with = "template_file")]
    pub template: Option<String>,
    /// Start the run from this template file (TOML or JSON) instead of a named template.
    #[arg(long, value_name = "PATH", requires = "goal")]
    pub template_file: Option<String>,
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
            template_file: self.template_file,
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
