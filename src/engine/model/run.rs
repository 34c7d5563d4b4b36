//! A run's snapshot: where it stands, what its roles reported, who works on it. The
//! machine (`engine::machine`) is the only thing that changes it, one event at a time.

use super::actor::{Actor, Workspace};
use super::drive::DriveState;
use super::step::{HumanExchange, HumanGate, StepOutput};
use super::task::FanOutState;
use crate::engine::templates::Template;
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A role is working on the current step.
    Active,
    /// Paused until a human answers the pending question.
    AwaitingHuman,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Active => "active",
            RunStatus::AwaitingHuman => "awaiting_human",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a forked run came from: a run and the version it was forked at (named by the
/// checkpoint it was forked from, if it was; empty for a fork at a version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForkOrigin {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checkpoint: String,
    pub version: u64,
}

impl ForkOrigin {
    /// `3f2a… at version 7 (checkpoint `design`)`.
    pub fn label(&self) -> String {
        let named = if self.checkpoint.is_empty() { String::new() } else { format!(" (checkpoint `{}`)", self.checkpoint) };
        format!("{} at version {}{named}", self.run_id, self.version)
    }
}

/// The current state of a run (the snapshot kept beside its event log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    pub id: String,
    pub title: String,
    pub goal: String,
    pub template: Template,
    pub status: RunStatus,
    /// `None` once the run has finished.
    pub current_step: Option<String>,
    /// Number of events so far; a change must name the version it saw.
    pub version: u64,
    /// How often each step has been entered.
    pub visits: BTreeMap<String, u32>,
    /// Caller-supplied context given at start.
    pub context: Map<String, Value>,
    /// Named artifacts reported by roles (latest value per name; at most 1 MiB in all).
    pub artifacts: Map<String, Value>,
    /// Latest output of each step.
    pub outputs: BTreeMap<String, StepOutput>,
    /// The output that moved the run to its current step (e.g. a review asking for changes).
    pub last_output: Option<StepOutput>,
    pub human_answers: Vec<HumanExchange>,
    pub pending_gate: Option<HumanGate>,
    pub checkpoints: Vec<String>,
    pub forked_from: Option<ForkOrigin>,
    /// Where `forked_from`'s run came from, and so on: the whole lineage, nearest first,
    /// `forked_from` included (forks of forks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<ForkOrigin>,
    /// Why the run ended, for failed and cancelled runs.
    pub end_reason: Option<String>,
    /// Where the run was started: the workspace its agents work in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    /// Who started the run.
    #[serde(default)]
    pub started_by: Actor,
    /// Who made the latest change.
    #[serde(default)]
    pub last_actor: Actor,
    /// The latest fan-out: the plan's tasks, their leases and progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanOutState>,
    /// The last fencing token handed out with a lease; each claim takes the next.
    #[serde(default)]
    pub last_token: u64,
    /// Most sub-agents the run's briefs suggest running at once.
    #[serde(default = "default_max_agents")]
    pub max_agents: u32,
    /// What `baton drive` recorded: agents, threads, attempts, tokens, budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<DriveState>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Sub-agents a run suggests at once unless its starter sets another limit.
pub const DEFAULT_MAX_AGENTS: u32 = 4;

fn default_max_agents() -> u32 {
    DEFAULT_MAX_AGENTS
}

/// Everything a new run starts from.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub template: Template,
    pub goal: String,
    pub title: String,
    pub context: Map<String, Value>,
    pub workspace: Option<Workspace>,
    pub max_agents: u32,
}
