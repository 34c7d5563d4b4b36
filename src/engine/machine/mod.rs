//! The state machine that moves a run. Every change goes through [`Run::apply`]: it
//! decides whether the change is allowed and which [`Event`] records it, then
//! [`Run::evolve`] applies that event. Evolving needs nothing but the event, so the event
//! log alone rebuilds a run ([`Run::replay`]), and `version` always equals the number of
//! events. `fanout.rs` holds the transitions of a fan-out's tasks, `merge.rs` what its join
//! leaves to merge.

mod fanout;
mod merge;

pub use merge::merge_order;

use crate::engine::model::{
    Actor, Change, DEFAULT_MAX_AGENTS, DriveAction, DriveRecord, Event, EventKind, ForkOrigin, GateAnswer, GateKind, HumanExchange,
    HumanGate, MAX_KEPT_ANSWERS, MergeState, NewRun, Run, RunOrigin, RunStatus, SNAPSHOT_OUTPUT_BYTES, StepOutput, StepReport, TaskStatus,
    UnitRef,
};
use crate::engine::templates::{Target, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::limits::{MAX_ARTIFACTS_BYTES, check_json_len};
use crate::text::prefix;
use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

impl Run {
    /// Create a run at the template's start step. The template must be valid.
    pub fn start(new: NewRun, actor: &Actor, now: Timestamp) -> (Run, Event) {
        let origin = RunOrigin {
            title: new.title,
            template: new.template,
            context: new.context,
            workspace: new.workspace,
            max_agents: Some(new.max_agents),
        };
        let kind = EventKind::Started {
            template: origin.template.name.clone(),
            goal: new.goal,
            step: origin.template.start_step().to_string(),
            origin: Some(Box::new(origin)),
        };
        let event = Event { seq: 1, at: now, actor: actor.clone(), kind };
        let run = Run::first(&new.id, &event).expect("a Started event with its origin creates a run");
        (run, event)
    }

    /// A new run continuing from a checkpoint snapshot of another run.
    pub fn fork(snapshot: &Run, checkpoint: &str, id: String, actor: &Actor, now: Timestamp) -> BatonResult<(Run, Event)> {
        if snapshot.status.is_finished() {
            let (what, fix) = if checkpoint.is_empty() {
                (format!("version {}", snapshot.version), "Fork from an earlier version, taken while the run was still in progress.")
            } else {
                (format!("checkpoint `{checkpoint}`"), "Fork from a checkpoint taken while the run was still in progress.")
            };
            return Err(BatonError::invalid_state(
                format!("{what} captured run {} after it had {}", snapshot.id, snapshot.status.as_str()),
                fix,
            )
            .with_field(if checkpoint.is_empty() { "at_version" } else { "checkpoint" }));
        }
        let kind = EventKind::Forked {
            from_run: snapshot.id.clone(),
            checkpoint: checkpoint.to_string(),
            from_version: snapshot.version,
            state: Some(Box::new(snapshot.clone())),
        };
        let event = Event { seq: 1, at: now, actor: actor.clone(), kind };
        let run = Run::first(&id, &event).expect("a Forked event with its state creates a run");
        Ok((run, event))
    }

    /// The run a history's first event creates; `None` if it cannot (not a creation, or
    /// written before baton kept the whole origin in it).
    pub fn first(id: &str, event: &Event) -> Option<Run> {
        let mut run = match &event.kind {
            EventKind::Started { goal, step, origin: Some(origin), .. } => Run {
                id: id.to_string(),
                title: origin.title.clone(),
                goal: goal.clone(),
                template: origin.template.clone(),
                status: RunStatus::Active,
                current_step: Some(step.clone()),
                version: 0,
                visits: BTreeMap::from([(step.clone(), 1)]),
                context: origin.context.clone(),
                artifacts: Map::new(),
                outputs: BTreeMap::new(),
                last_output: None,
                human_answers: Vec::new(),
                pending_gate: None,
                checkpoints: Vec::new(),
                forked_from: None,
                lineage: Vec::new(),
                end_reason: None,
                workspace: origin.workspace.clone(),
                started_by: event.actor.clone(),
                last_actor: event.actor.clone(),
                fanout: None,
                last_token: 0,
                drive: None,
                max_agents: origin.max_agents.unwrap_or(DEFAULT_MAX_AGENTS),
                created_at: event.at,
                updated_at: event.at,
            },
            EventKind::Forked { from_run, checkpoint, from_version, state: Some(state) } => {
                let mut run = (**state).clone();
                run.id = id.to_string();
                run.version = 0;
                run.checkpoints.clear();
                let origin = ForkOrigin { run_id: from_run.clone(), checkpoint: checkpoint.clone(), version: *from_version };
                run.lineage.insert(0, origin.clone());
                run.forked_from = Some(origin);
                // Leases held in the source run belong to its agents: the fork's tasks are
                // claimed afresh (what a task had done by then stays).
                if let Some(fanout) = run.fanout.as_mut() {
                    for task in fanout.tasks.iter_mut().filter(|t| t.status == TaskStatus::Claimed) {
                        task.lease = None;
                        task.status = TaskStatus::Ready;
                    }
                }
                run.started_by = event.actor.clone();
                run.created_at = event.at;
                run
            }
            _ => return None,
        };
        run.version = event.seq;
        run.last_actor = event.actor.clone();
        run.updated_at = event.at;
        Some(run)
    }

    /// The run as it was at `version`: its history replayed up to that event. Refused
    /// (naming `field`) when the history is shorter or cannot be replayed.
    pub fn replay_at(id: &str, events: &[Event], version: u64, field: &str) -> BatonResult<Run> {
        let last = events.last().map_or(0, |e| e.seq);
        if version == 0 || version > last {
            return Err(BatonError::invalid(
                field,
                format!("run {id} has no version {version} (its versions are 1 to {last})"),
                format!("Give a version from 1 to {last}: `baton show {id}` lists its events with their numbers."),
            ));
        }
        let upto: Vec<Event> = events.iter().take_while(|e| e.seq <= version).cloned().collect();
        Run::replay(id, &upto).ok_or_else(|| {
            BatonError::invalid_state(
                format!("run {id}'s history starts with an event baton cannot rebuild a run from (written by an older baton)"),
                "Fork this run from one of its named checkpoints instead.",
            )
            .with_field(field)
        })
    }

    /// Rebuild a run from its whole history.
    pub fn replay(id: &str, events: &[Event]) -> Option<Run> {
        let (first, rest) = events.split_first()?;
        let mut run = Run::first(id, first)?;
        for event in rest {
            run.evolve(event);
        }
        Some(run)
    }

    /// Make `change` if the run allows it: the one entry point for every change to an
    /// existing run. On refusal the run is untouched.
    pub fn apply(&mut self, change: &Change, actor: &Actor, now: Timestamp) -> BatonResult<Event> {
        self.check_version(change.expected_version())?;
        let kind = self.decide(change, actor, now)?;
        let event = Event { seq: self.version + 1, at: now, actor: actor.clone(), kind };
        self.evolve(&event);
        Ok(event)
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

    /// Which event `change` makes, or why the run refuses it.
    fn decide(&self, change: &Change, actor: &Actor, now: Timestamp) -> BatonResult<EventKind> {
        match change {
            Change::Claim { task, lease } => self.decide_claim(task.as_deref(), *lease, actor, now),
            Change::TaskAdvance { task, token, outcome, output, artifacts, code } => {
                self.decide_task_advance(task, *token, outcome, output, artifacts, code.as_ref(), actor, now)
            }
            Change::Renew { task, token, lease } => self.decide_renew(task, *token, *lease, now),
            Change::Release { task, token } => {
                self.holder_task(task, *token, now)?;
                Ok(EventKind::TaskReleased { task: task.clone(), token: *token })
            }
            Change::AnswerHuman { task: Some(task), answer, comment, code, .. } => {
                self.decide_task_answer(task, answer, comment, code.as_ref())
            }
            Change::Advance { outcome, output, artifacts, plan, code, .. } => {
                let step = self.require_active("advance")?;
                if let Some(code) = code {
                    code.check("code")?;
                }
                let mut report = self.report(&self.template, &self.visits, &step, "", outcome, output, artifacts)?;
                report.code = code.clone();
                let plan = self.check_plan(&step, outcome, &report.next, plan.as_ref())?;
                Ok(EventKind::Advanced { report, plan })
            }
            Change::AskHuman { question, options, .. } => {
                self.require_active("await_human")?;
                Ok(EventKind::HumanAsked { question: question.clone(), options: options.clone() })
            }
            Change::AnswerHuman { answer, comment, task: None, .. } => {
                let Some(gate) = self.pending_gate.as_ref().filter(|_| self.status == RunStatus::AwaitingHuman) else {
                    let tasks_asking = self.tasks_asking();
                    let fix = if tasks_asking.is_empty() {
                        "Only answer runs whose status is awaiting_human; `resume` without arguments lists them.".to_string()
                    } else {
                        format!("Tasks {} wait for an answer: pass `task` with the task's id.", tasks_asking.join(", "))
                    };
                    return Err(BatonError::invalid_state(
                        format!("run {} is {} and has no pending question", self.id, self.status.as_str()),
                        fix,
                    ));
                };
                Ok(EventKind::HumanAnswered { answer: gate.choose(answer)?, comment: comment.clone(), task: None, code: None })
            }
            Change::Checkpoint { name, note, workspace, .. } => {
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
                Ok(EventKind::CheckpointSaved { name: name.clone(), note: note.clone(), workspace: workspace.clone() })
            }
            Change::Cancel { reason, .. } => {
                if self.status.is_finished() {
                    return Err(BatonError::invalid_state(
                        format!("run {} is already {}", self.id, self.status.as_str()),
                        "Nothing to cancel; start or fork a new run to continue the work.",
                    ));
                }
                Ok(EventKind::Cancelled { reason: reason.clone() })
            }
            Change::RecordMerge { report } => {
                if !matches!(self.merge_state(), Some(MergeState::Pending { .. })) {
                    return Err(BatonError::invalid_state(
                        format!("run {} has no task branches waiting to be merged", self.id),
                        "Nothing to record: `resume` the run to see what was merged.",
                    ));
                }
                Ok(EventKind::BranchesMerged { report: report.clone() })
            }
            Change::Supervise { record } => {
                self.drive.as_ref().map_or(Ok(()), |d| d.check(record))?;
                if record.action == DriveAction::GaveUp {
                    self.check_give_up(record)?;
                }
                Ok(EventKind::Supervised { record: record.clone() })
            }
        }
    }

    /// Apply an event to the snapshot. Needs nothing but the event: this is how a
    /// history rebuilds a run.
    pub fn evolve(&mut self, event: &Event) {
        let now = event.at;
        match &event.kind {
            EventKind::Started { .. } | EventKind::Forked { .. } => {}
            EventKind::TaskClaimed { .. }
            | EventKind::TaskAdvanced { .. }
            | EventKind::LeaseRenewed { .. }
            | EventKind::TaskReleased { .. }
            | EventKind::HumanAnswered { task: Some(_), .. } => self.evolve_task(event),
            EventKind::Advanced { report, plan } => {
                let recorded = recorded(report, event);
                merge_artifacts(&mut self.artifacts, &report.artifacts);
                self.outputs.insert(report.step.clone(), recorded.clone());
                self.last_output = Some(recorded);
                match (report.limit_reached, &report.next, plan) {
                    (Some(max), next, _) => self.pause_at_limit(next, max, now),
                    (None, Target::FanOut(fan_out), Some(plan)) => self.fan_out(&report.step, fan_out, plan),
                    (None, next, _) => self.move_to(next),
                }
            }
            EventKind::HumanAsked { question, options } => {
                self.status = RunStatus::AwaitingHuman;
                self.pending_gate = Some(HumanGate {
                    kind: GateKind::Question,
                    question: question.clone(),
                    options: options.clone(),
                    step: self.current_step.clone().unwrap_or_default(),
                    asked_at: now,
                });
            }
            EventKind::HumanAnswered { answer, comment, task: None, .. } => {
                let Some(gate) = self.pending_gate.take() else { return };
                if self.human_answers.len() >= MAX_KEPT_ANSWERS {
                    self.human_answers.remove(0);
                }
                self.human_answers.push(HumanExchange {
                    step: gate.step.clone(),
                    question: gate.question.clone(),
                    answer: answer.clone(),
                    comment: comment.clone(),
                    answered_at: now,
                });
                self.status = RunStatus::Active;
                if let GateKind::LoopLimit { target } = &gate.kind {
                    if GateAnswer::parse(answer) == Some(GateAnswer::Continue) {
                        self.visits.insert(target.clone(), 0);
                        self.move_to(&Target::Step(target.clone()));
                    } else {
                        self.finish(RunStatus::Failed, format!("a human stopped the loop at step `{target}`"));
                    }
                }
            }
            EventKind::CheckpointSaved { name, .. } => self.checkpoints.push(name.clone()),
            EventKind::Cancelled { reason } => self.finish(RunStatus::Cancelled, reason.clone()),
            EventKind::BranchesMerged { report } => {
                if let Some(fanout) = self.fanout.as_mut() {
                    fanout.merge = Some(report.clone());
                }
            }
            EventKind::Supervised { record } => {
                self.drive.get_or_insert_with(Default::default).evolve(record, now);
                if record.action == DriveAction::GaveUp {
                    self.give_up(record, now);
                }
            }
        }
        self.version = event.seq;
        self.last_actor = event.actor.clone();
        self.updated_at = now;
    }

    /// Whether `artifacts` merged into the run's stay within [`MAX_ARTIFACTS_BYTES`], so
    /// every brief stays a sensible size.
    fn check_artifacts(&self, update: &Map<String, Value>) -> BatonResult<()> {
        if update.is_empty() {
            return Ok(());
        }
        let mut merged = self.artifacts.clone();
        merge_artifacts(&mut merged, update);
        check_json_len("artifacts", &Value::Object(merged), MAX_ARTIFACTS_BYTES).map_err(|mut e| {
            e.message = format!("with these artifacts the run would keep more than {MAX_ARTIFACTS_BYTES} bytes of artifacts");
            e.fix = "Keep large material in files and report paths; delete artifacts you no longer need by setting them to null.".into();
            e
        })
    }

    /// The step a role is on, or why there is none.
    fn require_active(&self, action: &str) -> BatonResult<String> {
        match (self.status, &self.current_step) {
            (RunStatus::Active, Some(step)) => Ok(step.clone()),
            (RunStatus::Active, None) if action == "await_human" => {
                Ok(self.fanout.as_ref().map(|f| f.from_step.clone()).unwrap_or_default())
            }
            (RunStatus::Active, None) => Err(BatonError::invalid_state(
                format!("run {} is working on the tasks of its plan; the run itself has no step to {action}", self.id),
                "Claim a task with `resume` {run_id, claim: \"next\"} and report it with `advance` {run_id, task, lease_token, ...}.",
            )),
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

    /// The bound of `target` if entering it again would exceed its `max_visits`.
    fn visit_limit(&self, target: &Target) -> Option<u32> {
        visit_limit(&self.template, &self.visits, target)
    }

    /// The report of `outcome` on `step` of `steps` (the run's template, or a task's
    /// pipeline whose visits are `visits`), or why it is refused. `whose` names the task,
    /// if it is one, in messages.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        steps: &Template,
        visits: &BTreeMap<String, u32>,
        step: &str,
        whose: &str,
        outcome: &str,
        output: &str,
        artifacts: &Map<String, Value>,
    ) -> BatonResult<StepReport> {
        let def = steps.step(step).ok_or_else(|| BatonError::internal(format!("run {} is at unknown step `{step}`{whose}", self.id)))?;
        let Some(next) = def.outcomes.get(outcome).cloned() else {
            let allowed: Vec<&str> = def.outcomes.keys().map(String::as_str).collect();
            return Err(BatonError::invalid(
                "outcome",
                format!("`{outcome}` is not an outcome of step `{step}`{whose} (role {})", def.role),
                format!("Use one of: {}.", allowed.join(", ")),
            ));
        };
        self.check_artifacts(artifacts)?;
        Ok(StepReport {
            step: step.to_string(),
            role: def.role.clone(),
            outcome: outcome.to_string(),
            output: output.to_string(),
            limit_reached: visit_limit(steps, visits, &next),
            next,
            artifacts: artifacts.clone(),
            code: None,
        })
    }

    /// Go to `target`: a step (counting the visit), `done` or `failed`.
    fn move_to(&mut self, target: &Target) {
        match target {
            Target::Done => self.finish(RunStatus::Completed, String::new()),
            Target::Failed | Target::Join => {
                let reason = self.last_output.as_ref().map(|o| o.output.clone()).unwrap_or_default();
                self.finish(RunStatus::Failed, reason);
            }
            Target::Step(step) => {
                *self.visits.entry(step.clone()).or_insert(0) += 1;
                self.current_step = Some(step.clone());
            }
            // A fan-out is entered through `fan_out` with its plan, never moved to directly.
            Target::FanOut(fan_out) => self.move_to(&fan_out.join.target()),
        }
    }

    /// Wait for a human to allow more rounds of `target`, which used up its `max_visits`.
    fn pause_at_limit(&mut self, target: &Target, max: u32, now: Timestamp) {
        let step = target.as_str();
        let visits = self.visits.get(step).copied().unwrap_or(0);
        self.status = RunStatus::AwaitingHuman;
        self.pending_gate = Some(HumanGate::loop_limit(step, visits, max, None, self.current_step.clone().unwrap_or_default(), now));
    }

    /// A driver may give up only on a unit the run is at now: the run's current step (at its
    /// current visit), or a task's step that is not finished.
    fn check_give_up(&self, record: &DriveRecord) -> BatonResult<()> {
        let current = match UnitRef::parse(&record.unit) {
            Some(UnitRef::Step { step, visit }) => {
                self.status == RunStatus::Active
                    && self.current_step.as_deref() == Some(step)
                    && self.visits.get(step).copied().unwrap_or(0) == visit
            }
            Some(UnitRef::Task { task, step, visit }) => self.fanout.as_ref().and_then(|f| f.task(task)).is_some_and(|t| {
                self.status == RunStatus::Active
                    && t.step.as_deref() == Some(step)
                    && t.visits.get(step).copied().unwrap_or(0) == visit
                    && matches!(t.status, TaskStatus::Ready | TaskStatus::Claimed)
            }),
            None => false,
        };
        if current {
            return Ok(());
        }
        Err(BatonError::new(
            ErrorCode::Conflict,
            format!("run {} is no longer at `{}`, so it cannot be failed", self.id, record.unit),
            "Read the run again; the step was reported or the run moved on.",
        )
        .with_field("unit"))
    }

    /// Apply a driver's give-up (see [`DriveAction::GaveUp`]).
    fn give_up(&mut self, record: &DriveRecord, now: Timestamp) {
        let why = record.note.clone().unwrap_or_else(|| format!("its agents did not report `{}`", record.unit));
        match UnitRef::parse(&record.unit) {
            Some(UnitRef::Step { .. }) => self.finish(RunStatus::Failed, why),
            Some(UnitRef::Task { task, .. }) => {
                let task = task.to_string();
                if let Some(t) = self.fanout.as_mut().and_then(|f| f.task_mut(&task)) {
                    // The lease of the last agent goes with the step: nobody works it now.
                    t.lease = None;
                }
                self.fail_task_because(&task, Some(why), now);
            }
            None => {}
        }
    }

    fn finish(&mut self, status: RunStatus, reason: String) {
        self.status = status;
        self.current_step = None;
        self.pending_gate = None;
        self.end_reason = (!reason.is_empty()).then_some(reason);
    }
}

/// The bound of `target` (a step of `steps`) if entering it again would exceed its
/// `max_visits`, given how often each step was entered.
fn visit_limit(steps: &Template, visits: &BTreeMap<String, u32>, target: &Target) -> Option<u32> {
    let step = target.step()?;
    let max = steps.step(step)?.max_visits?;
    (visits.get(step).copied().unwrap_or(0) >= max).then_some(max)
}

/// What the snapshot keeps of `report`, recorded by `event`.
fn recorded(report: &StepReport, event: &Event) -> StepOutput {
    let kept = prefix(&report.output, SNAPSHOT_OUTPUT_BYTES);
    StepOutput {
        step: report.step.clone(),
        role: report.role.clone(),
        outcome: report.outcome.clone(),
        output: kept.to_string(),
        output_bytes: (kept.len() < report.output.len()).then_some(report.output.len()),
        version: event.seq,
        at: event.at,
        actor: event.actor.clone(),
        code: report.code.clone(),
    }
}

/// Merge reported artifacts into `into`: a `null` value deletes that name.
fn merge_artifacts(into: &mut Map<String, Value>, update: &Map<String, Value>) {
    for (name, value) in update {
        if value.is_null() {
            into.remove(name);
        } else {
            into.insert(name.clone(), value.clone());
        }
    }
}
