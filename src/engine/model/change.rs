//! The changes a run accepts, as data: [`Run::apply`](crate::engine::Run::apply) takes any of
//! them, so every caller (MCP, terminal, web page) changes runs the same way.

use super::actor::Workspace;
use super::code::TaskCode;
use super::drive::DriveRecord;
use super::merge::MergeReport;
use crate::engine::templates::Plan;
use serde_json::{Map, Value};
use std::time::Duration;

/// A change to an existing run. Each names the version its author saw, when it did.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The current role finished its step with `outcome` (and the `plan`, if that fans out).
    /// `code` is the state of the run's tree the step left, as the calling process
    /// snapshotted it (see `crate::gitops::snapshot::step_state`).
    Advance {
        expected_version: u64,
        outcome: String,
        output: String,
        artifacts: Map<String, Value>,
        plan: Option<Plan>,
        code: Option<TaskCode>,
    },
    /// Take a lease on a task of the fan-out: the given one, or the first one claimable.
    Claim { task: Option<String>, lease: Duration },
    /// The holder of `token` finished the task's current step with `outcome`; `code` is
    /// what the calling process found and committed in the task's worktree.
    TaskAdvance { task: String, token: u64, outcome: String, output: String, artifacts: Map<String, Value>, code: Option<TaskCode> },
    /// The holder of `token` keeps the lease for another `lease`.
    Renew { task: String, token: u64, lease: Duration },
    /// The holder of `token` gives the task back unfinished.
    Release { task: String, token: u64 },
    /// Pause for a human's answer to `question`.
    AskHuman { expected_version: Option<u64>, question: String, options: Vec<String> },
    /// The human's answer to the pending question (of the run, or of one task).
    /// For a task: `code` is what the calling process committed in its worktree first.
    AnswerHuman { expected_version: Option<u64>, task: Option<String>, answer: String, comment: Option<String>, code: Option<TaskCode> },
    /// Keep a named snapshot to fork from later.
    Checkpoint { expected_version: Option<u64>, name: String, note: Option<String>, workspace: Option<Workspace> },
    /// Stop the run for good.
    Cancel { expected_version: Option<u64>, reason: String },
    /// Record what merging the joined fan-out's task branches did (once per fan-out).
    RecordMerge { report: MergeReport },
    /// Record what `baton drive` decided (an agent's assignment, its turn's end, tokens).
    Supervise { record: DriveRecord },
}

impl Change {
    /// The run version the author saw, if they named one.
    pub fn expected_version(&self) -> Option<u64> {
        match self {
            Change::Advance { expected_version, .. } => Some(*expected_version),
            Change::Claim { .. }
            | Change::TaskAdvance { .. }
            | Change::Renew { .. }
            | Change::Release { .. }
            | Change::RecordMerge { .. }
            | Change::Supervise { .. } => None,
            Change::AskHuman { expected_version, .. }
            | Change::AnswerHuman { expected_version, .. }
            | Change::Checkpoint { expected_version, .. }
            | Change::Cancel { expected_version, .. } => *expected_version,
        }
    }
}
