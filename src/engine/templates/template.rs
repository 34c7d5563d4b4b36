//! Workflow templates: named steps, each played by a role, joined by outcomes (the data;
//! `validate.rs` checks them).
//!
//! An outcome may also fan out: the role reports a plan of tasks, each task runs a
//! pipeline (a small template whose steps end at `join`), and when every task has joined
//! the run goes on at the fan-out's `join` target.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Outcome target that completes the run successfully.
pub const DONE: &str = "done";
/// Outcome target that ends the run as failed (in a pipeline: the task fails).
pub const FAILED: &str = "failed";
/// Outcome target that finishes a task of a fan-out (pipelines only).
pub const JOIN: &str = "join";
/// Most steps a template may have.
pub const MAX_STEPS: usize = 100;
/// Most pipelines a template may define.
pub const MAX_PIPELINES: usize = 10;
/// Most tasks one plan may have (the bound of a fan-out's `max_tasks`).
pub const MAX_TASKS: usize = 100;
/// The built-in pipeline tasks run unless a fan-out or task names another.
pub const DEFAULT_PIPELINE: &str = "task";

/// Where an outcome leads. Written as a string (a step name, `done`, `failed`, or in a
/// pipeline `join`) or, to fan out, as a table `{ fan_out = "task", join = "integrate" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "TargetText", into = "TargetText")]
pub enum Target {
    /// Another step of the template.
    Step(String),
    /// The run completes.
    Done,
    /// The run ends as failed (in a pipeline, the task fails).
    Failed,
    /// The task is finished and joins its fan-out (pipelines only).
    Join,
    /// Expand the plan the role reported into parallel tasks.
    FanOut(Box<FanOut>),
}

/// A fan-out: the plan's tasks each run a pipeline; the run continues at `join` once all
/// of them have joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOut {
    /// The pipeline each task runs unless its plan entry names another: `task` (built in:
    /// implement -> independent review -> test) or one of the template's `pipelines`.
    #[serde(default = "default_pipeline")]
    pub fan_out: String,
    /// Where the run goes when every task has joined: a step, `done` or `failed`.
    #[schemars(with = "String")]
    pub join: JoinTarget,
    /// What a task that fails for good does: `fail` the run, or `ask` a human whether to
    /// retry it, skip it or fail the run.
    #[serde(default)]
    pub on_task_failure: TaskFailurePolicy,
    /// Most tasks a plan may have (at most, and by default, 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
}

fn default_pipeline() -> String {
    DEFAULT_PIPELINE.to_string()
}

/// Where a fan-out's run goes once every task has joined. Written as a string: a step's
/// name, `done` or `failed`; read once, when the template is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JoinTarget {
    /// A step of the template. `join` is a name too here (a run has no fan-out to join),
    /// which validation refuses.
    Step(String),
    Done,
    Failed,
}

impl JoinTarget {
    pub fn as_str(&self) -> &str {
        match self {
            JoinTarget::Step(step) => step,
            JoinTarget::Done => DONE,
            JoinTarget::Failed => FAILED,
        }
    }

    /// Where the run moves when the tasks have joined.
    pub fn target(&self) -> Target {
        match self {
            JoinTarget::Step(step) => Target::Step(step.clone()),
            JoinTarget::Done => Target::Done,
            JoinTarget::Failed => Target::Failed,
        }
    }
}

impl From<&str> for JoinTarget {
    fn from(text: &str) -> JoinTarget {
        match text {
            DONE => JoinTarget::Done,
            FAILED => JoinTarget::Failed,
            step => JoinTarget::Step(step.to_string()),
        }
    }
}

impl From<String> for JoinTarget {
    fn from(text: String) -> JoinTarget {
        JoinTarget::from(text.as_str())
    }
}

impl From<JoinTarget> for String {
    fn from(join: JoinTarget) -> String {
        join.as_str().to_string()
    }
}

impl std::fmt::Display for JoinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when a task of a fan-out fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskFailurePolicy {
    /// The whole run fails.
    #[default]
    Fail,
    /// A human decides: retry the task, skip it, or fail the run.
    Ask,
}

/// What `baton drive` does when a step's agents use up their attempts.
// (Attempts are turns that failed, timed out or ended without the step being reported. The
// doc lines here are short on purpose: they are published in start_workflow's input schema,
// which models load with the tool list.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentFailurePolicy {
    /// Ask a human: retry or fail.
    #[default]
    Ask,
    /// Fail the step (for a task's step, the task; then `on_task_failure` decides).
    Fail,
}

/// How a target is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum TargetText {
    Name(String),
    FanOut(Box<FanOut>),
}

impl From<TargetText> for Target {
    fn from(text: TargetText) -> Target {
        match text {
            TargetText::Name(name) => Target::parse(&name),
            TargetText::FanOut(fan_out) => Target::FanOut(fan_out),
        }
    }
}

impl From<Target> for TargetText {
    fn from(target: Target) -> TargetText {
        match target {
            Target::FanOut(fan_out) => TargetText::FanOut(fan_out),
            other => TargetText::Name(other.as_str().to_string()),
        }
    }
}

impl Target {
    pub fn parse(text: &str) -> Target {
        match text {
            DONE => Target::Done,
            FAILED => Target::Failed,
            JOIN => Target::Join,
            step => Target::Step(step.to_string()),
        }
    }

    /// The target as written; a fan-out is named by where it joins.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Step(step) => step,
            Target::Done => DONE,
            Target::Failed => FAILED,
            Target::Join => JOIN,
            Target::FanOut(fan_out) => fan_out.join.as_str(),
        }
    }

    /// The step this leads to, if it is one.
    pub fn step(&self) -> Option<&str> {
        match self {
            Target::Step(step) => Some(step),
            _ => None,
        }
    }

    /// The node this leads to in the template's graph: a step, an end, or for a fan-out
    /// its join target (the run continues there once the tasks are done).
    pub(super) fn successor(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::FanOut(fan_out) => write!(f, "fan_out({}) -> {}", fan_out.fan_out, fan_out.join),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A workflow definition. Runs embed a copy, so editing a template never breaks a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Identifier, e.g. `feature`. Letters, digits, `_` and `-`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The first step; defaults to the first one listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    pub steps: Vec<StepDef>,
    /// Pipelines the tasks of this template's fan-outs may run (besides the built-in `task`):
    /// small templates whose steps end at `join` (task done) or `failed` (task failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<Template>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Identifier, unique in the template; `done`, `failed` and `join` are reserved.
    pub name: String,
    /// Who plays it: `architect`, `implementer`, `reviewer`, `tester` or any custom role.
    pub role: String,
    /// What this step must achieve, shown to the agent playing the role.
    #[serde(default)]
    pub instructions: String,
    /// Outcome name -> next step name, `done` / `failed` (`join` in pipelines), or a fan-out.
    pub outcomes: BTreeMap<String, Target>,
    /// How often the step may run before a human must allow more rounds.
    /// Every loop in a template needs at least one step with a bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u32>,
    /// Steps whose player may not play this one (e.g. a review independent of `implement`):
    /// baton refuses the same agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub independent_of: Vec<String>,
    /// The Codex model `baton drive` gives this step's agents (over `--model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The reasoning effort `baton drive` gives this step's agents' turns (over `--effort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// When `baton drive`'s agents use up their attempts here (default `ask`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_agent_failure: Option<AgentFailurePolicy>,
    /// Agent turns `baton drive` gives this step, 1-20 (default `--max-attempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agent_attempts: Option<u32>,
}

impl Template {
    /// Name of the first step.
    pub fn start_step(&self) -> &str {
        self.start.as_deref().unwrap_or_else(|| self.steps.first().map(|s| s.name.as_str()).unwrap_or(""))
    }

    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }
}
