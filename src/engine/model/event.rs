//! The facts a run's history is made of. Every accepted change yields exactly one
//! [`Event`] carrying everything it changed, so replaying the log rebuilds the run.

use super::actor::{Actor, ActorKind, Workspace};
use super::code::TaskCode;
use super::drive::DriveRecord;
use super::merge::MergeReport;
use super::run::Run;
use super::step::StepReport;
use crate::engine::templates::{Plan, Template};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
        record: DriveRecord,
    },
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

/// The state of the run's own tree as of the last of `events` (oldest first): `(HEAD,
/// state)`, where `state` is the commit holding the tree's files (HEAD plus what was
/// uncommitted). It is what the latest run step's report recorded (for the run's tree a
/// report's `code` has `from` = HEAD and `head` = the state commit, see
/// `crate::gitops::snapshot::step_state`), else what the run started or was forked with.
pub fn tree_state_at(events: &[Event]) -> Option<(String, String)> {
    for event in events.iter().rev() {
        let found = match &event.kind {
            EventKind::Advanced { report, .. } => {
                report.code.as_ref().filter(|c| c.error.is_none()).and_then(|c| Some((c.from.clone()?, c.head.clone()?)))
            }
            EventKind::Started { .. } | EventKind::Forked { .. } => {
                let workspace = workspace_of(event)?;
                let head = workspace.git_head?;
                return Some((head.clone(), workspace.git_snapshot.unwrap_or(head)));
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The workspace a run's first event names (where it started, or the fork's own tree).
pub fn workspace_of(event: &Event) -> Option<Workspace> {
    match &event.kind {
        EventKind::Started { origin: Some(origin), .. } => origin.workspace.clone(),
        EventKind::Forked { state: Some(state), .. } => state.workspace.clone(),
        _ => None,
    }
}
