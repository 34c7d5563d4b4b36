//! A run's snapshot and the state machine that moves it. Every accepted change bumps
//! `version` by one and yields exactly one [`Event`] with `seq == version`, so the event
//! log is a dense, append-only history of every change; the snapshot is the current state.

use super::template::{DONE, FAILED, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::limits::{MAX_ARTIFACTS_BYTES, check_json_len};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Human answers kept in the snapshot (all of them stay in the event history).
pub const MAX_KEPT_ANSWERS: usize = 50;

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

/// Why a run waits for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateKind {
    /// A role asked a question with `await_human`.
    Question,
    /// A loop hit `max_visits` of `target`; answer `continue` for another round or `fail`.
    LoopLimit { target: String },
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
    pub asked_at: String,
}

/// A question and the human's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HumanExchange {
    pub step: String,
    pub question: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub answered_at: String,
}

/// What a role reported when it finished a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepOutput {
    pub step: String,
    pub role: String,
    pub outcome: String,
    pub output: String,
    /// Run version at which this output was recorded.
    pub version: u64,
    pub at: String,
}

/// Where a forked run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForkOrigin {
    pub run_id: String,
    pub checkpoint: String,
    pub version: u64,
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
    /// Why the run ended, for failed and cancelled runs.
    pub end_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One entry of a run's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Started {
        template: String,
        goal: String,
        step: String,
    },
    Forked {
        from_run: String,
        checkpoint: String,
        from_version: u64,
    },
    Advanced {
        step: String,
        role: String,
        outcome: String,
        output: String,
        /// The next step, `done` or `failed`.
        next: String,
        /// Set when `next` hit its `max_visits` and the run now waits for a human.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_reached: Option<u32>,
    },
    HumanAsked {
        question: String,
        options: Vec<String>,
    },
    HumanAnswered {
        answer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    CheckpointSaved {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Cancelled {
        reason: String,
    },
}

/// Everything `advance` needs besides the run.
pub struct AdvanceInput<'a> {
    pub expected_version: u64,
    pub outcome: &'a str,
    pub output: &'a str,
    pub artifacts: Map<String, Value>,
}

impl Run {
    /// Create a run at the template's start step. The template must be valid.
    pub fn start(id: String, template: Template, goal: String, title: String, context: Map<String, Value>, now: &str) -> (Run, Event) {
        let step = template.start_step().to_string();
        let mut run = Run {
            id,
            title,
            goal: goal.clone(),
            template,
            status: RunStatus::Active,
            current_step: Some(step.clone()),
            version: 0,
            visits: BTreeMap::from([(step.clone(), 1)]),
            context,
            artifacts: Map::new(),
            outputs: BTreeMap::new(),
            last_output: None,
            human_answers: Vec::new(),
            pending_gate: None,
            checkpoints: Vec::new(),
            forked_from: None,
            end_reason: None,
            created_at: now.to_string(),
            updated_at: now.to_string(),
        };
        let kind = EventKind::Started { template: run.template.name.clone(), goal, step };
        let event = run.record(kind, now);
        (run, event)
    }

    /// A new run continuing from a checkpoint snapshot of another run.
    pub fn fork(snapshot: &Run, checkpoint: &str, id: String, now: &str) -> BatonResult<(Run, Event)> {
        if snapshot.status.is_finished() {
            return Err(BatonError::invalid_state(
                format!("checkpoint `{checkpoint}` captured run {} after it had {}", snapshot.id, snapshot.status.as_str()),
                "Fork from a checkpoint taken while the run was still in progress.",
            ));
        }
        let mut run = snapshot.clone();
        run.id = id;
        run.version = 0;
        run.checkpoints.clear();
        run.forked_from = Some(ForkOrigin { run_id: snapshot.id.clone(), checkpoint: checkpoint.to_string(), version: snapshot.version });
        run.created_at = now.to_string();
        let kind = EventKind::Forked { from_run: snapshot.id.clone(), checkpoint: checkpoint.to_string(), from_version: snapshot.version };
        let event = run.record(kind, now);
        Ok((run, event))
    }

    /// Refuse a change based on a stale view of the run.
    pub fn check_version(&self, expected: Option<u64>) -> BatonResult<()> {
        match expected {
            Some(seen) if seen != self.version => Err(BatonError::new(
                ErrorCode::Conflict,
                format!(
                    "run {} is at version {} but the request expected version {seen}: it changed since you looked (now {}{})",
                    self.id,
                    self.version,
                    self.status.as_str(),
                    self.current_step.as_deref().map(|s| format!(" at step `{s}`")).unwrap_or_default()
                ),
                format!(
                    "Call `resume` with this run_id to see what changed, then retry with expected_version {} only if your change still applies.",
                    self.version
                ),
            )
            .with_field("expected_version")),
            _ => Ok(()),
        }
    }

    /// Submit the current role's outcome and move to the next step.
    pub fn advance(&mut self, input: AdvanceInput<'_>, now: &str) -> BatonResult<Event> {
        self.check_version(Some(input.expected_version))?;
        let step = self.require_active("advance")?;
        let def = self.template.step(&step).ok_or_else(|| BatonError::internal(format!("run {} is at unknown step `{step}`", self.id)))?;
        let Some(target) = def.outcomes.get(input.outcome).cloned() else {
            let allowed: Vec<&str> = def.outcomes.keys().map(String::as_str).collect();
            return Err(BatonError::invalid(
                "outcome",
                format!("`{}` is not an outcome of step `{step}` (role {})", input.outcome, def.role),
                format!("Use one of: {}.", allowed.join(", ")),
            ));
        };
        let output = StepOutput {
            step: step.clone(),
            role: def.role.clone(),
            outcome: input.outcome.to_string(),
            output: input.output.to_string(),
            version: self.version + 1,
            at: now.to_string(),
        };
        let role = def.role.clone();
        self.merge_artifacts(input.artifacts)?;
        self.outputs.insert(step.clone(), output.clone());
        self.last_output = Some(output);
        let limit_reached = self.move_to(&target, now);
        let kind = EventKind::Advanced {
            step,
            role,
            outcome: input.outcome.to_string(),
            output: input.output.to_string(),
            next: target,
            limit_reached,
        };
        Ok(self.record(kind, now))
    }

    /// Pause the run with a question for a human.
    pub fn ask_human(&mut self, expected: Option<u64>, question: &str, options: Vec<String>, now: &str) -> BatonResult<Event> {
        self.check_version(expected)?;
        let step = self.require_active("await_human")?;
        self.status = RunStatus::AwaitingHuman;
        self.pending_gate = Some(HumanGate {
            kind: GateKind::Question,
            question: question.to_string(),
            options: options.clone(),
            step,
            asked_at: now.to_string(),
        });
        let kind = EventKind::HumanAsked { question: question.to_string(), options };
        Ok(self.record(kind, now))
    }

    /// Record a human's answer and let the run go on.
    pub fn answer_human(&mut self, expected: Option<u64>, answer: &str, comment: Option<String>, now: &str) -> BatonResult<Event> {
        self.check_version(expected)?;
        let Some(gate) = self.pending_gate.clone().filter(|_| self.status == RunStatus::AwaitingHuman) else {
            return Err(BatonError::invalid_state(
                format!("run {} is {} and has no pending question", self.id, self.status.as_str()),
                "Only answer runs whose status is awaiting_human; `list_runs` with status awaiting_human shows them.",
            ));
        };
        let answer = match gate.options.iter().find(|o| o.eq_ignore_ascii_case(answer.trim())) {
            Some(option) => option.clone(),
            None if gate.options.is_empty() => answer.to_string(),
            None => {
                return Err(BatonError::invalid(
                    "answer",
                    format!("`{answer}` is not one of the offered options"),
                    format!("Answer with one of: {} (add details in `comment`).", gate.options.join(", ")),
                ));
            }
        };
        if self.human_answers.len() >= MAX_KEPT_ANSWERS {
            self.human_answers.remove(0);
        }
        self.human_answers.push(HumanExchange {
            step: gate.step.clone(),
            question: gate.question.clone(),
            answer: answer.clone(),
            comment: comment.clone(),
            answered_at: now.to_string(),
        });
        self.pending_gate = None;
        self.status = RunStatus::Active;
        if let GateKind::LoopLimit { target } = &gate.kind {
            if answer == "continue" {
                self.visits.insert(target.clone(), 0);
                self.move_to(target, now);
            } else {
                self.finish(RunStatus::Failed, format!("a human stopped the loop at step `{target}`"));
            }
        }
        Ok(self.record(EventKind::HumanAnswered { answer, comment }, now))
    }

    /// Record a named checkpoint of a run in progress (checkpoints exist to fork from).
    pub fn add_checkpoint(&mut self, expected: Option<u64>, name: &str, note: Option<String>, now: &str) -> BatonResult<Event> {
        self.check_version(expected)?;
        if self.status.is_finished() {
            return Err(BatonError::invalid_state(
                format!("run {} has {}; a checkpoint of it could never be forked", self.id, self.status.as_str()),
                "Checkpoint runs while they are in progress; fork an existing checkpoint with `resume` to continue.",
            ));
        }
        if self.checkpoints.iter().any(|c| c == name) {
            return Err(BatonError::invalid(
                "name",
                format!("run {} already has a checkpoint named `{name}`", self.id),
                "Choose another checkpoint name.",
            ));
        }
        self.checkpoints.push(name.to_string());
        Ok(self.record(EventKind::CheckpointSaved { name: name.to_string(), note }, now))
    }

    /// Stop a run for good.
    pub fn cancel(&mut self, expected: Option<u64>, reason: &str, now: &str) -> BatonResult<Event> {
        self.check_version(expected)?;
        if self.status.is_finished() {
            return Err(BatonError::invalid_state(
                format!("run {} has already {}", self.id, self.status.as_str()),
                "Nothing to cancel; start or fork a new run to continue the work.",
            ));
        }
        self.finish(RunStatus::Cancelled, reason.to_string());
        Ok(self.record(EventKind::Cancelled { reason: reason.to_string() }, now))
    }

    /// Merge reported artifacts (a `null` value deletes that name), keeping the total
    /// within [`MAX_ARTIFACTS_BYTES`] so every brief stays a sensible size.
    fn merge_artifacts(&mut self, update: Map<String, Value>) -> BatonResult<()> {
        let mut merged = self.artifacts.clone();
        for (name, value) in update {
            if value.is_null() {
                merged.remove(&name);
            } else {
                merged.insert(name, value);
            }
        }
        check_json_len("artifacts", &Value::Object(merged.clone()), MAX_ARTIFACTS_BYTES).map_err(|mut e| {
            e.message = format!("with these artifacts the run would keep more than {MAX_ARTIFACTS_BYTES} bytes of artifacts");
            e.fix = "Keep large material in files and report paths; delete artifacts you no longer need by setting them to null.".into();
            e
        })?;
        self.artifacts = merged;
        Ok(())
    }

    /// The step a role is on, or why there is none.
    fn require_active(&self, action: &str) -> BatonResult<String> {
        match (self.status, &self.current_step) {
            (RunStatus::Active, Some(step)) => Ok(step.clone()),
            (RunStatus::AwaitingHuman, _) => Err(BatonError::invalid_state(
                format!(
                    "run {} is waiting for a human to answer: {}",
                    self.id,
                    self.pending_gate.as_ref().map(|g| g.question.as_str()).unwrap_or("?")
                ),
                format!("Ask the user, then call `answer_human` before `{action}`."),
            )),
            _ => Err(BatonError::invalid_state(
                format!("run {} has {}", self.id, self.status.as_str()),
                "A finished run cannot change; fork it from a checkpoint with `resume` to continue.",
            )),
        }
    }

    /// Go to `target` (a step, `done` or `failed`). Returns the bound if the step's
    /// `max_visits` is used up, in which case the run waits for a human instead.
    fn move_to(&mut self, target: &str, now: &str) -> Option<u32> {
        match target {
            DONE => {
                self.finish(RunStatus::Completed, String::new());
                None
            }
            FAILED => {
                let reason = self.last_output.as_ref().map(|o| o.output.clone()).unwrap_or_default();
                self.finish(RunStatus::Failed, reason);
                None
            }
            _ => {
                let visits = self.visits.get(target).copied().unwrap_or(0);
                let bound = self.template.step(target).and_then(|s| s.max_visits);
                if let Some(max) = bound.filter(|max| visits >= *max) {
                    self.status = RunStatus::AwaitingHuman;
                    self.pending_gate = Some(HumanGate {
                        kind: GateKind::LoopLimit { target: target.to_string() },
                        question: format!(
                            "Step `{target}` has already run {visits} times (its max_visits is {max}). Allow another {max} rounds, or stop the run as failed?"
                        ),
                        options: vec!["continue".into(), "fail".into()],
                        step: self.current_step.clone().unwrap_or_default(),
                        asked_at: now.to_string(),
                    });
                    return Some(max);
                }
                self.visits.insert(target.to_string(), visits + 1);
                self.current_step = Some(target.to_string());
                None
            }
        }
    }

    fn finish(&mut self, status: RunStatus, reason: String) {
        self.status = status;
        self.current_step = None;
        self.pending_gate = None;
        self.end_reason = (!reason.is_empty()).then_some(reason);
    }

    fn record(&mut self, kind: EventKind, now: &str) -> Event {
        self.version += 1;
        self.updated_at = now.to_string();
        Event { seq: self.version, at: now.to_string(), kind }
    }
}
