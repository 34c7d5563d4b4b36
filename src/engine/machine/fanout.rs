//! The fan-out half of the run state machine: expanding a plan into tasks, claiming
//! them under leases, advancing each through its pipeline, and joining.

use super::{merge_artifacts, recorded};
use crate::engine::model::{
    Actor, Event, EventKind, FanOutState, GateAnswer, GateKind, HumanExchange, HumanGate, Lease, MAX_KEPT_ANSWERS, Run, RunStatus,
    StepReport, Task, TaskCode, TaskStatus,
};
use crate::engine::templates::{FanOut, Plan, Target, TaskFailurePolicy};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

impl Run {
    /// The tasks of the open fan-out that wait for a human's answer, in plan order.
    pub fn tasks_waiting(&self) -> Vec<&Task> {
        match &self.fanout {
            Some(fanout) if !fanout.joined && !self.status.is_finished() => fanout.awaiting_human().collect(),
            _ => Vec::new(),
        }
    }

    /// The plan an advance must carry when (and only when) its outcome fans out.
    pub(super) fn check_plan(&self, step: &str, outcome: &str, next: &Target, plan: Option<&Plan>) -> BatonResult<Option<Plan>> {
        match (next, plan) {
            (Target::FanOut(fan_out), Some(plan)) => {
                plan.validate("plan", fan_out, &self.template)?;
                Ok(Some(plan.clone()))
            }
            (Target::FanOut(_), None) => Err(BatonError::invalid(
                "plan",
                format!("outcome `{outcome}` of step `{step}` fans out into tasks, and no plan was given"),
                "Pass `plan` with `tasks`: [{\"id\", \"title\", \"description\", \"depends_on\": [...]}, ...].",
            )),
            (_, Some(_)) => Err(BatonError::invalid(
                "plan",
                format!("outcome `{outcome}` of step `{step}` does not fan out, so it takes no plan"),
                "Omit `plan`, or report the outcome that fans out.",
            )),
            (_, None) => Ok(None),
        }
    }

    /// Expand `plan` into the tasks of a new fan-out; the run's own cursor waits.
    pub(super) fn fan_out(&mut self, from_step: &str, fan_out: &FanOut, plan: &Plan) {
        let mut pipelines = BTreeMap::new();
        for t in &plan.tasks {
            let name = t.pipeline.as_deref().unwrap_or(&fan_out.fan_out);
            // Validated before the event was made: every name resolves.
            if let Some(pipeline) = self.template.pipeline(name) {
                pipelines.entry(name.to_string()).or_insert(pipeline);
            }
        }
        let tasks = plan
            .tasks
            .iter()
            .map(|t| {
                let pipeline = t.pipeline.clone().unwrap_or_else(|| fan_out.fan_out.clone());
                let start = pipelines.get(&pipeline).map(|p| p.start_step().to_string()).unwrap_or_default();
                Task {
                    id: t.id.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    depends_on: t.depends_on.clone(),
                    status: if t.depends_on.is_empty() { TaskStatus::Ready } else { TaskStatus::Waiting },
                    visits: BTreeMap::from([(start.clone(), 1)]),
                    step: Some(start),
                    pipeline,
                    outputs: BTreeMap::new(),
                    last_output: None,
                    lease: None,
                    players: BTreeMap::new(),
                    gate: None,
                    version: 0,
                    taken_over_from: None,
                    last_code: None,
                }
            })
            .collect();
        self.current_step = None;
        self.fanout = Some(FanOutState {
            from_step: from_step.to_string(),
            join: fan_out.join.target(),
            on_task_failure: fan_out.on_task_failure,
            tasks,
            pipelines,
            joined: false,
            base: plan.base.clone().or_else(|| self.workspace.as_ref().and_then(|w| w.git_head.clone())),
            merge: None,
        });
    }

    /// The fan-out whose tasks can change now, or why there is none.
    fn open_fanout(&self) -> BatonResult<&FanOutState> {
        if self.status.is_finished() {
            return Err(BatonError::invalid_state(
                format!("run {} has {}; its tasks can no longer change", self.id, self.status.as_str()),
                "Fork it from a checkpoint with `resume` to continue.",
            ));
        }
        match &self.fanout {
            Some(fanout) if !fanout.joined => Ok(fanout),
            _ => Err(BatonError::invalid_state(
                format!(
                    "run {} has no tasks to work on{}",
                    self.id,
                    self.current_step.as_deref().map(|s| format!(": it is at step `{s}`")).unwrap_or_default()
                ),
                "Call `resume` with the run_id for its brief, and play its step with `advance`.",
            )),
        }
    }

    fn task(&self, id: &str) -> BatonResult<&Task> {
        let fanout = self.open_fanout()?;
        fanout.task(id).ok_or_else(|| {
            let ids: Vec<&str> = fanout.tasks.iter().map(|t| t.id.as_str()).collect();
            BatonError::not_found("task", format!("run {} has no task `{id}`", self.id), format!("Use one of: {}.", ids.join(", ")))
        })
    }

    /// The task `id` if `token` is its current lease: refuses stale workers.
    pub(super) fn holder_task(&self, id: &str, token: u64, now: Timestamp) -> BatonResult<&Task> {
        let task = self.task(id)?;
        match &task.lease {
            Some(lease) if lease.token == token => Ok(task),
            current => {
                let now_held = match current {
                    Some(lease) if !lease.is_expired(now) => format!("{} holds it now (token {})", lease.holder.label(), lease.token),
                    _ => format!("nobody holds it now (it is {})", task.status.as_str()),
                };
                Err(BatonError::new(
                    ErrorCode::Conflict,
                    format!("lease token {token} of task `{id}` is stale: {now_held}"),
                    "Your lease ended (it expired and was taken over, or the step was already reported). Call `resume` with run_id for the current state; claim the task again if it is ready.",
                )
                .with_field("lease_token"))
            }
        }
    }

    pub(super) fn decide_claim(&self, wanted: Option<&str>, lease: Duration, actor: &Actor, now: Timestamp) -> BatonResult<EventKind> {
        let fanout = self.open_fanout().map_err(|e| e.with_field("claim"))?;
        let held_by_caller = |t: &Task| t.lease.as_ref().is_some_and(|l| l.holder.same_agent(actor)) && t.status == TaskStatus::Claimed;
        let task = match wanted {
            Some(id) => {
                let task = self.task(id)?;
                if !held_by_caller(task) {
                    task.claimable_by(fanout.pipeline_of(task), actor, now).map_err(|why| {
                        BatonError::invalid_state(
                            why.to_string(),
                            "Claim another task (`claim: \"next\"`), or wait for this one's lease to end.",
                        )
                        .with_field("claim")
                    })?;
                }
                task
            }
            None => match fanout.tasks.iter().find(|t| t.claimable_by(fanout.pipeline_of(t), actor, now).is_ok()) {
                Some(task) => task,
                None => {
                    return Err(BatonError::invalid_state(
                        format!("no task of run {} can be claimed by {} now: {}", self.id, actor.label(), describe_blocked(fanout, actor, now)),
                        "Wait for claimed tasks to be reported or their leases to expire, then claim again; a task that needs an independent agent must be claimed by another agent (spawn a sub-agent).",
                    )
                    .with_field("claim"));
                }
            },
        };
        let step = task.step.clone().unwrap_or_default();
        let taken_over_from = task.lease.as_ref().filter(|l| !l.holder.same_agent(actor)).map(|l| l.holder.clone());
        Ok(EventKind::TaskClaimed {
            task: task.id.clone(),
            step,
            token: self.last_token + 1,
            expires_at: now.after(lease),
            taken_over_from,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide_task_advance(
        &self,
        id: &str,
        token: u64,
        outcome: &str,
        output: &str,
        artifacts: &Map<String, Value>,
        code: Option<&TaskCode>,
        actor: &Actor,
        now: Timestamp,
    ) -> BatonResult<EventKind> {
        if let Some(code) = code {
            code.check("code")?;
        }
        let task = self.holder_task(id, token, now)?;
        let pipeline = self.fanout.as_ref().map(|f| f.pipeline_of(task)).ok_or_else(|| BatonError::internal("a task without a fan-out"))?;
        let step = task.step.clone().unwrap_or_default();
        task.check_independent(pipeline, actor).map_err(|why| {
            BatonError::invalid_state(why.to_string(), "Have another agent (a sub-agent) claim and play this step.")
                .with_field("lease_token")
        })?;
        let mut report = self.report(pipeline, &task.visits, &step, &format!(" of task `{id}`"), outcome, output, artifacts)?;
        report.code = code.cloned();
        Ok(EventKind::TaskAdvanced { task: id.to_string(), report })
    }

    pub(super) fn decide_renew(&self, id: &str, token: u64, lease: Duration, now: Timestamp) -> BatonResult<EventKind> {
        self.holder_task(id, token, now)?;
        Ok(EventKind::LeaseRenewed { task: id.to_string(), token, expires_at: now.after(lease) })
    }

    pub(super) fn decide_task_answer(
        &self,
        id: &str,
        answer: &str,
        comment: &Option<String>,
        code: Option<&TaskCode>,
    ) -> BatonResult<EventKind> {
        if let Some(code) = code {
            code.check("code")?;
        }
        let task = self.task(id)?;
        let gate = task.gate.as_ref().ok_or_else(|| {
            BatonError::invalid_state(
                format!("task `{id}` of run {} has no pending question (it is {})", self.id, task.status.as_str()),
                "Answer only tasks whose status is awaiting_human.",
            )
        })?;
        Ok(EventKind::HumanAnswered {
            answer: gate.choose(answer)?,
            comment: comment.clone(),
            task: Some(id.to_string()),
            code: code.cloned(),
        })
    }

    /// Ids of tasks waiting for a human.
    pub(super) fn tasks_asking(&self) -> Vec<String> {
        let tasks = self.fanout.iter().flat_map(|f| &f.tasks);
        tasks.filter(|t| t.gate.is_some()).map(|t| t.id.clone()).collect()
    }

    /// Apply a task event (see [`Run::evolve`]).
    pub(super) fn evolve_task(&mut self, event: &Event) {
        let now = event.at;
        match self.evolve_task_state(event) {
            Aftermath::Nothing => {}
            Aftermath::TaskFailed(id) => self.fail_task(&id, now),
            Aftermath::RunFailed(reason) => self.finish(RunStatus::Failed, reason),
        }
        self.join_if_done();
    }

    /// The change `event` makes to its task, and what that means for the run.
    fn evolve_task_state(&mut self, event: &Event) -> Aftermath {
        let now = event.at;
        if let EventKind::TaskAdvanced { report, .. } = &event.kind {
            merge_artifacts(&mut self.artifacts, &report.artifacts);
        }
        if let EventKind::HumanAnswered { task: Some(id), answer, comment, .. } = &event.kind
            && let Some(gate) = self.fanout.as_ref().and_then(|f| f.task(id)).and_then(|t| t.gate.as_ref())
        {
            if self.human_answers.len() >= MAX_KEPT_ANSWERS {
                self.human_answers.remove(0);
            }
            self.human_answers.push(HumanExchange {
                step: format!("{id}/{}", gate.step),
                question: gate.question.clone(),
                answer: answer.clone(),
                comment: comment.clone(),
                answered_at: now,
            });
        }
        let Some(fanout) = self.fanout.as_mut() else { return Aftermath::Nothing };
        let FanOutState { tasks, pipelines, .. } = fanout;
        match &event.kind {
            EventKind::TaskClaimed { task, token, expires_at, taken_over_from, .. } => {
                if let Some(task) = find_task(tasks, task) {
                    task.lease = Some(Lease { holder: event.actor.clone(), token: *token, expires_at: *expires_at });
                    task.status = TaskStatus::Claimed;
                    task.taken_over_from = taken_over_from.clone();
                    task.version += 1;
                }
                self.last_token = self.last_token.max(*token);
                Aftermath::Nothing
            }
            EventKind::LeaseRenewed { task, expires_at, .. } => {
                if let Some(lease) = find_task(tasks, task).and_then(|t| {
                    t.version += 1;
                    t.lease.as_mut()
                }) {
                    lease.expires_at = *expires_at;
                }
                Aftermath::Nothing
            }
            EventKind::TaskReleased { task, .. } => {
                if let Some(task) = find_task(tasks, task) {
                    task.lease = None;
                    task.status = TaskStatus::Ready;
                    task.version += 1;
                }
                Aftermath::Nothing
            }
            EventKind::TaskAdvanced { task: id, report } => {
                let StepReport { step, next, limit_reached, .. } = report;
                let Some(task) = find_task(tasks, id) else { return Aftermath::Nothing };
                let recorded = recorded(report, event);
                task.outputs.insert(step.clone(), recorded.clone());
                task.last_output = Some(recorded);
                task.players.insert(step.clone(), event.actor.clone());
                if let Some(code) = &report.code {
                    task.last_code = Some((code.clone(), event.actor.clone()));
                }
                task.lease = None;
                task.version += 1;
                match (limit_reached, next) {
                    (Some(max), Target::Step(target)) => {
                        let visits = task.visits.get(target).copied().unwrap_or(0);
                        task.status = TaskStatus::AwaitingHuman;
                        task.gate = Some(HumanGate::loop_limit(target, visits, *max, Some(id), step.clone(), now));
                        Aftermath::Nothing
                    }
                    (_, Target::Step(target)) => {
                        enter_step(task, target);
                        Aftermath::Nothing
                    }
                    (_, Target::Join) => {
                        task.status = TaskStatus::Done;
                        task.step = None;
                        Aftermath::Nothing
                    }
                    (_, _) => Aftermath::TaskFailed(id.clone()),
                }
            }
            EventKind::HumanAnswered { task: Some(id), answer, code, .. } => {
                let Some(task) = find_task(tasks, id) else { return Aftermath::Nothing };
                if let Some(code) = code {
                    task.last_code = Some((code.clone(), event.actor.clone()));
                }
                let Some(gate) = task.gate.take() else { return Aftermath::Nothing };
                task.version += 1;
                match (&gate.kind, GateAnswer::parse(answer)) {
                    (GateKind::LoopLimit { target }, Some(GateAnswer::Continue)) => {
                        task.visits.insert(target.clone(), 0);
                        enter_step(task, target);
                        Aftermath::Nothing
                    }
                    (GateKind::TaskFailed, Some(GateAnswer::Retry)) => {
                        let start = pipelines.get(&task.pipeline).map(|p| p.start_step().to_string()).unwrap_or_default();
                        task.visits.clear();
                        enter_step(task, &start);
                        Aftermath::Nothing
                    }
                    (GateKind::TaskFailed, Some(GateAnswer::Skip)) => {
                        task.status = TaskStatus::Skipped;
                        task.step = None;
                        Aftermath::Nothing
                    }
                    (GateKind::TaskFailed, _) => Aftermath::RunFailed(format!("a human failed the run after task `{id}` failed")),
                    (_, _) => Aftermath::TaskFailed(id.clone()),
                }
            }
            _ => Aftermath::Nothing,
        }
    }

    /// A task reached `failed`: the fan-out's policy decides.
    fn fail_task(&mut self, id: &str, now: Timestamp) {
        self.fail_task_because(id, None, now);
    }

    /// A task failed for `why` (by default its last report): the fan-out's policy decides.
    pub(super) fn fail_task_because(&mut self, id: &str, why: Option<String>, now: Timestamp) {
        let Some(fanout) = self.fanout.as_mut() else { return };
        let policy = fanout.on_task_failure;
        let Some(task) = fanout.task_mut(id) else { return };
        let why = why.unwrap_or_else(|| task.last_output.as_ref().map(|o| o.output.clone()).unwrap_or_default());
        let why = crate::text::first_line(&why, 200);
        task.step = None;
        match policy {
            TaskFailurePolicy::Fail => {
                task.status = TaskStatus::Failed;
                self.finish(RunStatus::Failed, format!("task `{id}` failed: {why}"));
            }
            TaskFailurePolicy::Ask => {
                task.status = TaskStatus::AwaitingHuman;
                task.gate = Some(HumanGate {
                    kind: GateKind::TaskFailed,
                    question: format!(
                        "Task `{id}` failed ({why}). Retry it from the start, skip it (the run goes on without it), or fail the run?"
                    ),
                    options: GateAnswer::options(&GateAnswer::FOR_FAILED_TASK),
                    step: task.last_output.as_ref().map(|o| o.step.clone()).unwrap_or_default(),
                    asked_at: now,
                });
            }
        }
    }

    /// Start waiting tasks whose dependencies joined; when every task has joined, move the
    /// run on to the fan-out's join target.
    fn join_if_done(&mut self) {
        if self.status.is_finished() {
            return;
        }
        let Some(fanout) = self.fanout.as_mut() else { return };
        fanout.release_waiting();
        if fanout.joined || !fanout.all_joined() {
            return;
        }
        fanout.joined = true;
        let target = fanout.join.clone();
        match self.visit_limit(&target) {
            Some(max) => self.pause_at_limit(&target, max, self.updated_at),
            None => self.move_to(&target),
        }
    }
}

/// What a task event means for the run beyond its task.
enum Aftermath {
    Nothing,
    /// The task reached `failed`: apply the fan-out's failure policy.
    TaskFailed(String),
    /// A human chose to fail the whole run.
    RunFailed(String),
}

fn find_task<'a>(tasks: &'a mut [Task], id: &str) -> Option<&'a mut Task> {
    tasks.iter_mut().find(|t| t.id == id)
}

/// Move a task to `step` of its pipeline, ready to be claimed.
fn enter_step(task: &mut Task, step: &str) {
    *task.visits.entry(step.to_string()).or_insert(0) += 1;
    task.step = Some(step.to_string());
    task.status = TaskStatus::Ready;
}

/// Why no task is claimable, counted by reason.
fn describe_blocked(fanout: &FanOutState, actor: &Actor, now: Timestamp) -> String {
    let count = |f: &dyn Fn(&Task) -> bool| fanout.tasks.iter().filter(|t| f(t)).count();
    let claimed = count(&|t| t.status == TaskStatus::Claimed && t.lease.as_ref().is_some_and(|l| !l.is_expired(now)));
    let waiting = count(&|t| t.status == TaskStatus::Waiting);
    let asking = count(&|t| t.status == TaskStatus::AwaitingHuman);
    let independent = count(&|t| t.status == TaskStatus::Ready && t.check_independent(fanout.pipeline_of(t), actor).is_err());
    let joined = count(&|t| t.status.has_joined());
    format!(
        "{claimed} claimed by others, {waiting} waiting for dependencies, {asking} waiting for a human, {independent} needing an agent other than you, {joined} of {} joined",
        fanout.tasks.len()
    )
}
