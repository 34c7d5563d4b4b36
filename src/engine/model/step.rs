//! What happens at a step, as the run and its tasks keep it: a role's report, the output
//! the snapshot keeps of it, and the questions a human must answer (with their answers).
//! Below both the run and its tasks, which hold these alike.

use super::actor::Actor;
use super::code::TaskCode;
use crate::engine::templates::Target;
use crate::error::{BatonError, BatonResult};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Human answers kept in the snapshot (all of them stay in the event history).
pub const MAX_KEPT_ANSWERS: usize = 50;

/// Why a run (or a task) waits for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateKind {
    /// A role asked a question with `await_human`.
    Question,
    /// A loop hit `max_visits` of `target`; answer `continue` for another round or `fail`.
    LoopLimit { target: String },
    /// A task failed for good; answer `retry`, `skip` or `fail_run`.
    TaskFailed,
}

/// A pending question to a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HumanGate {
    #[serde(flatten)]
    pub kind: GateKind,
    pub question: String,
    /// Allowed answers; empty means free text.
    pub options: Vec<String>,
    /// The step that was current when the question was asked.
    pub step: String,
    pub asked_at: Timestamp,
}

/// An answer to a question baton itself asks (a loop at its limit, a failed task), with
/// the meaning the machine gives it. A role's own question's answers mean what the role
/// says, so they stay text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAnswer {
    /// A loop at its limit: allow another round of visits.
    Continue,
    /// A loop at its limit: stop (the run, or the task, fails).
    Fail,
    /// A failed task: start it again from its pipeline's first step.
    Retry,
    /// A failed task: go on without it.
    Skip,
    /// A failed task: fail the whole run.
    FailRun,
}

impl GateAnswer {
    /// The options of a loop's question, as offered.
    pub const AT_LOOP_LIMIT: [GateAnswer; 2] = [GateAnswer::Continue, GateAnswer::Fail];
    /// The options of a failed task's question, as offered.
    pub const FOR_FAILED_TASK: [GateAnswer; 3] = [GateAnswer::Retry, GateAnswer::Skip, GateAnswer::FailRun];

    /// The answer as a human gives it (and as the event history keeps it).
    pub fn as_str(self) -> &'static str {
        match self {
            GateAnswer::Continue => "continue",
            GateAnswer::Fail => "fail",
            GateAnswer::Retry => "retry",
            GateAnswer::Skip => "skip",
            GateAnswer::FailRun => "fail_run",
        }
    }

    /// The meaning of `text`, if it is one of baton's answers.
    pub fn parse(text: &str) -> Option<GateAnswer> {
        [GateAnswer::AT_LOOP_LIMIT.as_slice(), GateAnswer::FOR_FAILED_TASK.as_slice()].concat().into_iter().find(|a| a.as_str() == text)
    }

    /// `answers` as a question's options.
    pub fn options(answers: &[GateAnswer]) -> Vec<String> {
        answers.iter().map(|a| a.as_str().to_string()).collect()
    }
}

impl HumanGate {
    /// The question asked when step `target` used up its `max_visits` (`visits` so far):
    /// allow another `max` rounds, or fail (the run, or task `task` of a fan-out).
    pub fn loop_limit(target: &str, visits: u32, max: u32, task: Option<&str>, step: String, now: Timestamp) -> HumanGate {
        let question = match task {
            Some(id) => format!(
                "Task `{id}`: step `{target}` has already run {visits} times (its max_visits is {max}). Allow another {max} rounds, or fail the task?"
            ),
            None => format!(
                "Step `{target}` has already run {visits} times (its max_visits is {max}). Allow another {max} rounds, or stop the run as failed?"
            ),
        };
        HumanGate {
            kind: GateKind::LoopLimit { target: target.to_string() },
            question,
            options: GateAnswer::options(&GateAnswer::AT_LOOP_LIMIT),
            step,
            asked_at: now,
        }
    }
}

/// A question and the human's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HumanExchange {
    pub step: String,
    pub question: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub answered_at: Timestamp,
}

/// Bytes of a report the snapshot keeps; the whole report stays in its event, so the
/// snapshot (rewritten on every change) stays small however long reports are.
pub const SNAPSHOT_OUTPUT_BYTES: usize = 4096;

/// What a role reported when it finished a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepOutput {
    pub step: String,
    pub role: String,
    pub outcome: String,
    /// The report, or its first [`SNAPSHOT_OUTPUT_BYTES`] when `output_bytes` is set.
    pub output: String,
    /// The whole report's length, when `output` holds only its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    /// Run version at which this output was recorded (the `seq` of its event).
    pub version: u64,
    pub at: Timestamp,
    #[serde(default)]
    pub actor: Actor,
    /// For a task's step: what became of the task's code (see [`TaskCode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<TaskCode>,
}

impl StepOutput {
    /// The whole report's length.
    pub fn full_len(&self) -> usize {
        self.output_bytes.unwrap_or(self.output.len())
    }
}

impl HumanGate {
    /// The answer as recorded: the matching option (any case), or free text when the gate
    /// offers none; an answer outside the options is refused.
    pub fn choose(&self, answer: &str) -> BatonResult<String> {
        match self.options.iter().find(|o| o.eq_ignore_ascii_case(answer.trim())) {
            Some(option) => Ok(option.clone()),
            None if self.options.is_empty() => Ok(answer.to_string()),
            None => Err(BatonError::invalid(
                "answer",
                format!("`{answer}` is not one of the offered options"),
                format!("Answer with one of: {} (add details in `comment`).", self.options.join(", ")),
            )),
        }
    }
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
