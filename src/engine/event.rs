//! The facts a run's history is made of. Every accepted change yields exactly one
//! [`Event`] carrying everything it changed, so replaying the log rebuilds the run.

use super::code::TaskCode;
use super::merge::MergeReport;
use super::plan::Plan;
use super::run::Run;
use super::template::{Target, Template};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Actor {
    pub kind: ActorKind,
    /// The Codex thread id (`codex resume <id>` continues it), or the user name at a terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The name an agent gave itself, e.g. `reviewer-1` for a sub-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A Codex session (or another MCP client).
    Codex,
    /// A person at a terminal, through the `baton` command.
    Terminal,
    /// A person on the local web page.
    Web,
    /// Not recorded (changes made before baton recorded actors).
    #[default]
    Unknown,
}

impl Actor {
    pub fn terminal(user: Option<String>) -> Actor {
        Actor { kind: ActorKind::Terminal, id: user, agent: None }
    }

    /// Whether `other` is the same agent: same kind, id and self-given name.
    pub fn same_agent(&self, other: &Actor) -> bool {
        self.kind == other.kind && self.id == other.id && self.agent == other.agent
    }

    /// A short label for listings, e.g. `codex 0199…` or `terminal alice`.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            ActorKind::Codex => "codex",
            ActorKind::Terminal => "terminal",
            ActorKind::Web => "web",
            ActorKind::Unknown => "unknown",
        };
        let mut label = kind.to_string();
        for part in [&self.agent, &self.id].into_iter().flatten() {
            label.push(' ');
            label.push_str(part);
        }
        label
    }
}

/// Where the work happens: the directory a run was started from and its git state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Workspace {
    /// The working directory of the Codex session.
    pub cwd: String,
    /// The root of the git repository containing `cwd`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_root: Option<String>,
    /// The commit checked out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_head: Option<String>,
    /// Whether the working tree had uncommitted changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// A commit holding the working tree's uncommitted state (tracked and untracked files,
    /// not ignored ones) on top of `git_head`: checkpoints keep the code, not just HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_snapshot: Option<String>,
}

impl Workspace {
    /// The key runs are grouped by: the repository root, else the directory.
    pub fn key(&self) -> &str {
        self.git_root.as_deref().unwrap_or(&self.cwd)
    }
}

/// One entry of a run's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub seq: u64,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "is_unknown")]
    pub actor: Actor,
    #[serde(flatten)]
    pub kind: EventKind,
}

fn is_unknown(actor: &Actor) -> bool {
    actor.kind == ActorKind::Unknown && actor.id.is_none()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Started {
        /// The template's name.
        template: String,
        goal: String,
        step: String,
        /// The whole run as it started (absent in histories written before baton kept it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Box<RunOrigin>>,
    },
    Forked {
        from_run: String,
        checkpoint: String,
        from_version: u64,
        /// The checkpoint's state the fork starts from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Box<Run>>,
    },
    Advanced {
        #[serde(flatten)]
        report: StepReport,
        /// The tasks `next` fans out into.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<Plan>,
    },
    TaskClaimed {
        task: String,
        step: String,
        /// The fencing token every change under this lease must carry.
        token: u64,
        expires_at: Timestamp,
        /// The agent whose expired lease this claim took over.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taken_over_from: Option<Actor>,
    },
    TaskAdvanced {
        task: String,
        #[serde(flatten)]
        report: StepReport,
    },
    LeaseRenewed {
        task: String,
        token: u64,
        expires_at: Timestamp,
    },
    TaskReleased {
        task: String,
        token: u64,
    },
    HumanAsked {
        question: String,
        options: Vec<String>,
    },
    HumanAnswered {
        answer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// The task whose question this answers; none for the run's own question.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        /// For a task: what the calling process committed in the task's worktree before the
        /// answer (changes someone left there), when it committed or failed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<TaskCode>,
    },
    CheckpointSaved {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// The code's state when the checkpoint was taken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workspace: Option<Workspace>,
    },
    Cancelled {
        reason: String,
    },
    /// The joined fan-out's task branches were merged into the run's tree (by the caller
    /// that saw the join; see `engine::merge`).
    BranchesMerged {
        report: MergeReport,
    },
    /// What `baton drive` decided (see `engine::drive`).
    Supervised {
        record: super::drive::DriveRecord,
    },
}

/// A role's report on a step, as the run (or a task) records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    pub step: String,
    pub role: String,
    pub outcome: String,
    pub output: String,
    /// The next step, or an end: `done`/`failed` for a run, `join`/`failed` for a task.
    pub next: Target,
    /// Set when `next` used up its `max_visits`: a human decides whether to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_reached: Option<u32>,
    /// The artifacts this change reported (`null` deletes one).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub artifacts: Map<String, Value>,
    /// For a task's step in a git worktree: what the calling process found and committed
    /// there before the report was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<TaskCode>,
}

impl StepReport {
    /// `review (reviewer) -> implement [changes_requested]: first line of the report`.
    pub fn line(&self, max: usize) -> String {
        let StepReport { step, role, outcome, output, next, .. } = self;
        format!("{step} ({role}) -> {next} [{outcome}]: {}", crate::text::first_line(output, max))
    }
}

/// What a run started from: everything besides its id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunOrigin {
    pub title: String,
    pub template: Template,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u32>,
}

impl EventKind {
    /// The event's type as written in the history, e.g. `advanced`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::Forked { .. } => "forked",
            EventKind::Advanced { .. } => "advanced",
            EventKind::TaskClaimed { .. } => "task_claimed",
            EventKind::TaskAdvanced { .. } => "task_advanced",
            EventKind::LeaseRenewed { .. } => "lease_renewed",
            EventKind::TaskReleased { .. } => "task_released",
            EventKind::HumanAsked { .. } => "human_asked",
            EventKind::HumanAnswered { .. } => "human_answered",
            EventKind::CheckpointSaved { .. } => "checkpoint_saved",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::BranchesMerged { .. } => "branches_merged",
            EventKind::Supervised { .. } => "supervised",
        }
    }
}
