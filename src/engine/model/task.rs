//! The tasks of a fan-out: each runs its own pipeline, is claimed by one agent at a time
//! under a lease with a fencing token, and joins when its pipeline ends.

use super::actor::Actor;
use super::code::TaskCode;
use super::merge::MergeReport;
use super::step::{HumanGate, StepOutput};
use crate::engine::templates::{StepDef, Target, TaskFailurePolicy, Template};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Stands in for a missing pipeline so lookups never panic (it has no steps).
static EMPTY_PIPELINE: Template =
    Template { name: String::new(), description: String::new(), start: None, steps: Vec::new(), pipelines: Vec::new() };

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Some task it depends on has not joined yet.
    Waiting,
    /// Its current step can be claimed.
    Ready,
    /// An agent holds the lease on its current step.
    Claimed,
    /// A human must decide (a loop used up its rounds, or the task failed).
    AwaitingHuman,
    /// Its pipeline reached `join`.
    Done,
    /// Its pipeline reached `failed` and nobody retried it.
    Failed,
    /// A human chose to go on without it.
    Skipped,
}

impl TaskStatus {
    /// Done or skipped: dependents may start, and it counts for the join.
    pub fn has_joined(self) -> bool {
        matches!(self, TaskStatus::Done | TaskStatus::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Ready => "ready",
            TaskStatus::Claimed => "claimed",
            TaskStatus::AwaitingHuman => "awaiting_human",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
        }
    }
}

/// The right to work on a task's current step until `expires_at`. Changes to the task
/// must carry `token`; a newer claim gets a larger token, so a stale worker is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Lease {
    pub holder: Actor,
    pub token: u64,
    pub expires_at: Timestamp,
}

impl Lease {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// One task of a fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub description: String,
    pub depends_on: Vec<String>,
    /// The name of the pipeline it runs (kept once in [`FanOutState::pipelines`]).
    pub pipeline: String,
    pub status: TaskStatus,
    /// The pipeline step it is at; `None` once it has joined, failed or been skipped.
    pub step: Option<String>,
    pub visits: BTreeMap<String, u32>,
    /// Latest output of each step of its pipeline.
    pub outputs: BTreeMap<String, StepOutput>,
    /// The output that moved it to its current step (e.g. a review asking for changes).
    pub last_output: Option<StepOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Who last played each step (to keep independent steps independent).
    pub players: BTreeMap<String, Actor>,
    /// The question a human must answer for this task, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<HumanGate>,
    /// Changes made to this task; agents on different tasks never conflict.
    pub version: u64,
    /// The agent whose expired lease the current holder took over, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<Actor>,
    /// The latest record of the task's code (a step's report, or a human's answer), and
    /// who made it: its `head` is the branch tip the next step starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_code: Option<(TaskCode, Actor)>,
}

impl Task {
    /// Whether `actor` may claim the task at `now`: it waits for nobody, no live lease
    /// is held on it, and the actor did not play a step the current one is independent of.
    pub fn claimable_by(&self, pipeline: &Template, actor: &Actor, now: Timestamp) -> Result<(), String> {
        match self.status {
            TaskStatus::Ready => {}
            TaskStatus::Claimed if self.lease.as_ref().is_some_and(|l| l.is_expired(now)) => {}
            TaskStatus::Claimed => {
                let lease = self.lease.as_ref();
                return Err(format!(
                    "task `{}` is claimed by {} until {}",
                    self.id,
                    lease.map(|l| l.holder.label()).unwrap_or_default(),
                    lease.map(|l| l.expires_at.to_string()).unwrap_or_default()
                ));
            }
            status => return Err(format!("task `{}` is {}", self.id, status.as_str())),
        }
        self.check_independent(pipeline, actor)
    }

    /// Refuse `actor` for the current step if it played a step this one is independent of.
    pub fn check_independent(&self, pipeline: &Template, actor: &Actor) -> Result<(), String> {
        let Some(def) = self.step.as_deref().and_then(|s| pipeline.step(s)) else { return Ok(()) };
        if def.independent_of.is_empty() {
            return Ok(());
        }
        if actor.id.is_none() && actor.agent.is_none() {
            return Err(format!(
                "step `{}` of task `{}` must be played by an agent independent of {}, and this caller does not say who it is",
                def.name,
                self.id,
                def.independent_of.join(", ")
            ));
        }
        for other in &def.independent_of {
            if self.players.get(other).is_some_and(|player| player.same_agent(actor)) {
                return Err(format!(
                    "step `{}` of task `{}` must be played by someone other than the agent who played `{other}` ({})",
                    def.name,
                    self.id,
                    actor.label()
                ));
            }
        }
        Ok(())
    }
}

/// A fan-out in progress (or finished: then `joined` is set and the tasks stay for history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FanOutState {
    /// The step whose outcome fanned out.
    pub from_step: String,
    /// Where the run goes when every task has joined.
    pub join: Target,
    pub on_task_failure: TaskFailurePolicy,
    /// The plan's tasks, in plan order.
    pub tasks: Vec<Task>,
    /// The pipelines the tasks run, by name (copies, like a run's template).
    pub pipelines: BTreeMap<String, Template>,
    pub joined: bool,
    /// The commit the tasks' git branches start from (for runs in a git repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// What merging the tasks' branches did, once it happened after the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeReport>,
}

impl FanOutState {
    /// The pipeline `task` runs.
    pub fn pipeline_of(&self, task: &Task) -> &Template {
        // Every task's pipeline is stored when the fan-out starts.
        self.pipelines.get(&task.pipeline).unwrap_or(&EMPTY_PIPELINE)
    }

    /// The definition of the step `task` is at, if any.
    pub fn step_of(&self, task: &Task) -> Option<&StepDef> {
        task.step.as_deref().and_then(|s| self.pipeline_of(task).step(s))
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    pub fn task_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    /// Whether every task has joined (done or skipped).
    pub fn all_joined(&self) -> bool {
        self.tasks.iter().all(|t| t.status.has_joined())
    }

    /// The tasks waiting for a human's answer, in plan order.
    pub fn awaiting_human(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.status == TaskStatus::AwaitingHuman)
    }

    /// Make waiting tasks whose dependencies have all joined ready.
    pub fn release_waiting(&mut self) {
        let joined: Vec<String> = self.tasks.iter().filter(|t| t.status.has_joined()).map(|t| t.id.clone()).collect();
        for task in &mut self.tasks {
            if task.status == TaskStatus::Waiting && task.depends_on.iter().all(|d| joined.contains(d)) {
                task.status = TaskStatus::Ready;
            }
        }
    }
}
