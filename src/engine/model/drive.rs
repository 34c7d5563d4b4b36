//! What `baton drive` decided, kept in the run: which Codex thread works which unit of work
//! (the run's step at a visit, or a task's step at a visit), attempts, tokens, and why a driver
//! stopped. Recorded through `Change::Supervise` like any other change, so the event log alone
//! rebuilds it ([`Run::replay`](super::Run::replay)) and a new driver after a crash knows what
//! was in flight.

use crate::error::{BatonError, BatonResult};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a driver did or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriveAction {
    /// A Codex thread was given the unit; recorded before its turn starts.
    Assigned,
    /// The thread's turn ended (`turn_status` says how); `tokens` it used in that turn.
    TurnEnded,
    /// The unit's turn ended without the step being reported, or failed: it will be tried again.
    Retrying,
    /// Out of attempts: the run asks a human (see the run's question).
    Escalated,
    /// The driver stopped (a signal, a budget stop, a human wait) and let go of the unit.
    Released,
    /// The token budget of the run was set or raised (`budget_tokens`).
    Budget,
    /// Out of attempts, and the step's template says `on_agent_failure = "fail"`: the step
    /// fails (`note` says why). A run's step fails the run; a task's step fails the task, and
    /// its fan-out's `on_task_failure` decides what follows.
    GaveUp,
}

/// One supervision record (the payload of a `supervised` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriveRecord {
    pub action: DriveAction,
    /// `step:<name>#<visit>` or `task:<id>:<step>#<visit>`; empty for run-wide records.
    #[serde(default)]
    pub unit: String,
    /// The driver process: `host:pid:uuid`.
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    /// Tokens this record adds (a turn's usage, from Codex's `thread/tokenUsage/updated`).
    #[serde(default)]
    pub tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    /// Take the unit over from another driver that is known to be gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub take_over: bool,
    /// With `take_over`: the gone driver. Refused when the unit has passed to yet another
    /// driver since, so two drivers that find the same one gone never both take its unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_driver: Option<String>,
    /// With `assigned`: the driver records the turn's end before this; past it, any driver
    /// (on any machine) may take the unit over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a unit key names: the run's step, or a task's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitRef<'a> {
    Step { step: &'a str, visit: u32 },
    Task { task: &'a str, step: &'a str, visit: u32 },
}

impl<'a> UnitRef<'a> {
    /// `step:<name>#<visit>` or `task:<id>:<step>#<visit>` (names and ids are identifiers,
    /// so they hold neither `:` nor `#`).
    pub fn parse(key: &'a str) -> Option<UnitRef<'a>> {
        let (head, visit) = key.rsplit_once('#')?;
        let visit = visit.parse().ok()?;
        if let Some(step) = head.strip_prefix("step:") {
            return Some(UnitRef::Step { step, visit });
        }
        let (task, step) = head.strip_prefix("task:")?.split_once(':')?;
        Some(UnitRef::Task { task, step, visit })
    }
}

impl DriveRecord {
    pub fn new(action: DriveAction, unit: &str, driver: &str) -> DriveRecord {
        DriveRecord {
            action,
            unit: unit.to_string(),
            driver: driver.to_string(),
            thread_id: None,
            role: None,
            attempt: 0,
            tokens: 0,
            turn_status: None,
            budget_tokens: None,
            take_over: false,
            from_driver: None,
            until: None,
            note: None,
        }
    }
}

/// One unit of work as the drivers left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriveUnit {
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Every thread that worked it, oldest first.
    #[serde(default)]
    pub threads: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub attempts: u32,
    pub tokens: u64,
    /// A thread's turn is in flight (assigned and not yet ended or released).
    pub working: bool,
    /// While working: when its driver is overdue (see [`DriveRecord::until`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    pub escalated: bool,
    pub updated_at: Timestamp,
}

impl DriveUnit {
    /// Worked by a driver that is past the time it promised to record the turn's end by:
    /// taken to be gone, wherever it runs.
    pub fn overdue(&self, now: Timestamp) -> bool {
        self.working && self.until.is_some_and(|until| until < now)
    }
}

/// Everything the drivers recorded in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
pub struct DriveState {
    /// The driver that recorded last.
    #[serde(default)]
    pub last_driver: String,
    pub units: BTreeMap<String, DriveUnit>,
    /// Tokens every driven turn of the run used.
    pub tokens: u64,
    /// Tokens per role.
    #[serde(default)]
    pub tokens_by_role: BTreeMap<String, u64>,
    /// The run's token budget, once a driver set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    pub turns: u64,
}

impl DriveState {
    /// Whether `record` may be recorded: an assignment of a unit another driver is working is
    /// refused (so two drivers never play one step at once) unless it takes over from the
    /// gone driver that still holds it; a turn's end is refused from a driver whose unit
    /// another driver took over meanwhile (that turn is no longer the unit's).
    pub fn check(&self, record: &DriveRecord) -> BatonResult<()> {
        if record.action == DriveAction::TurnEnded {
            return match self.units.get(&record.unit) {
                Some(unit) if unit.driver != record.driver => Err(BatonError::new(
                    crate::error::ErrorCode::Conflict,
                    format!("`{}` was taken over by driver {}", record.unit, unit.driver),
                    "Nothing to record: the unit's turn is that driver's now.",
                )
                .with_field("unit")),
                _ => Ok(()),
            };
        }
        if record.action != DriveAction::Assigned {
            return Ok(());
        }
        // Records written before `from_driver` existed name no gone driver: they took over
        // from whoever held the unit, as they did then.
        let takes_from = |holder: &str| record.take_over && record.from_driver.as_deref().is_none_or(|gone| gone == holder);
        match self.units.get(&record.unit) {
            Some(unit) if unit.working && unit.driver != record.driver && !takes_from(&unit.driver) => Err(BatonError::new(
                crate::error::ErrorCode::Conflict,
                format!(
                    "`{}` is being worked by driver {} (thread {})",
                    record.unit,
                    unit.driver,
                    unit.thread_id.as_deref().unwrap_or("?")
                ),
                "Leave it to that driver; take it over only when that driver is gone.",
            )
            .with_field("unit")),
            _ => Ok(()),
        }
    }

    /// Apply a recorded supervision event.
    pub fn evolve(&mut self, record: &DriveRecord, now: Timestamp) {
        self.last_driver = record.driver.clone();
        self.tokens = self.tokens.saturating_add(record.tokens);
        if record.tokens > 0 {
            let role = record.role.clone().unwrap_or_default();
            let by_role = self.tokens_by_role.entry(role).or_default();
            *by_role = by_role.saturating_add(record.tokens);
        }
        if let Some(budget) = record.budget_tokens.filter(|_| record.action == DriveAction::Budget) {
            self.budget_tokens = Some(budget);
        }
        if record.unit.is_empty() {
            return;
        }
        let unit = self.units.entry(record.unit.clone()).or_insert_with(|| DriveUnit {
            driver: record.driver.clone(),
            thread_id: None,
            threads: Vec::new(),
            role: record.role.clone(),
            attempts: 0,
            tokens: 0,
            working: false,
            until: None,
            escalated: false,
            updated_at: now,
        });
        unit.updated_at = now;
        unit.tokens = unit.tokens.saturating_add(record.tokens);
        if record.role.is_some() {
            unit.role = record.role.clone();
        }
        match record.action {
            DriveAction::Assigned => {
                self.turns += 1;
                unit.driver = record.driver.clone();
                unit.attempts = unit.attempts.max(record.attempt);
                unit.working = true;
                unit.until = record.until;
                if let Some(thread) = &record.thread_id {
                    unit.thread_id = Some(thread.clone());
                    if !unit.threads.contains(thread) {
                        unit.threads.push(thread.clone());
                    }
                }
            }
            DriveAction::Retrying => {
                unit.working = false;
                // Waiting out a rate limit or quota is no failed attempt of the step.
                if record.turn_status.as_deref() == Some("rate_limited") {
                    unit.attempts = unit.attempts.saturating_sub(1);
                }
            }
            DriveAction::TurnEnded | DriveAction::Released | DriveAction::GaveUp => unit.working = false,
            DriveAction::Escalated => {
                unit.working = false;
                unit.escalated = true;
                // A human decides now; if they answer `retry`, the attempts count again.
                unit.attempts = 0;
            }
            DriveAction::Budget => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(unit: &str, driver: &str, thread: &str) -> DriveRecord {
        let mut record = DriveRecord::new(DriveAction::Assigned, unit, driver);
        record.thread_id = Some(thread.into());
        record.attempt = 1;
        record.role = Some("implementer".into());
        record
    }

    #[test]
    fn a_unit_another_driver_works_is_refused_until_its_turn_ends_or_it_is_taken_over() {
        let mut state = DriveState::default();
        let first = assigned("step:implement#1", "a", "t1");
        state.check(&first).unwrap();
        state.evolve(&first, Timestamp(1));
        let second = assigned("step:implement#1", "b", "t2");
        assert_eq!(state.check(&second).unwrap_err().code, crate::error::ErrorCode::Conflict);
        let mut take_over = second.clone();
        take_over.take_over = true;
        take_over.from_driver = Some("a".into());
        state.check(&take_over).unwrap();
        // A second driver that also found `a` gone is refused once `b` has its unit.
        let mut late = assigned("step:implement#1", "c", "t9");
        late.take_over = true;
        late.from_driver = Some("a".into());
        state.check(&late).unwrap();
        let mut taken = state.clone();
        taken.evolve(&take_over, Timestamp(2));
        assert_eq!(taken.check(&late).unwrap_err().code, crate::error::ErrorCode::Conflict);
        // The overrun turn of `a` ends after `b` took its unit: not `a`'s to record.
        let overran = DriveRecord::new(DriveAction::TurnEnded, "step:implement#1", "a");
        assert_eq!(taken.check(&overran).unwrap_err().code, crate::error::ErrorCode::Conflict);
        let mut ended = DriveRecord::new(DriveAction::TurnEnded, "step:implement#1", "a");
        ended.tokens = 40;
        ended.role = Some("implementer".into());
        state.evolve(&ended, Timestamp(2));
        state.check(&second).unwrap();
        state.evolve(&second, Timestamp(3));
        let unit = &state.units["step:implement#1"];
        assert_eq!((unit.attempts, unit.tokens, unit.working), (1, 40, true));
        assert_eq!(unit.threads, ["t1", "t2"]);
        assert_eq!((state.tokens, state.turns, state.tokens_by_role["implementer"]), (40, 2, 40));
    }

    #[test]
    fn a_unit_whose_driver_is_past_its_promise_is_overdue_until_its_turn_ends() {
        let mut state = DriveState::default();
        let mut first = assigned("step:implement#1", "far-host:7:a", "t1");
        first.until = Some(Timestamp(1_000));
        state.evolve(&first, Timestamp(10));
        let unit = &state.units["step:implement#1"];
        assert!(!unit.overdue(Timestamp(999)) && unit.overdue(Timestamp(1_001)));
        state.evolve(&DriveRecord::new(DriveAction::TurnEnded, "step:implement#1", "far-host:7:a"), Timestamp(20));
        assert!(!state.units["step:implement#1"].overdue(Timestamp(5_000)), "an ended turn is nobody's to take over");
        let unpromised = assigned("step:review#1", "far-host:7:a", "t2");
        state.evolve(&unpromised, Timestamp(30));
        assert!(!state.units["step:review#1"].overdue(Timestamp(u64::MAX)), "a record without `until` never goes overdue");
    }

    #[test]
    fn escalation_resets_the_attempts_and_a_budget_record_sets_the_budget() {
        let mut state = DriveState::default();
        let mut third = assigned("u", "a", "t3");
        third.attempt = 3;
        state.evolve(&third, Timestamp(1));
        state.evolve(&DriveRecord::new(DriveAction::Escalated, "u", "a"), Timestamp(2));
        assert_eq!((state.units["u"].attempts, state.units["u"].escalated, state.units["u"].working), (0, true, false));
        let mut budget = DriveRecord::new(DriveAction::Budget, "", "a");
        budget.budget_tokens = Some(900);
        state.evolve(&budget, Timestamp(3));
        assert_eq!(state.budget_tokens, Some(900));
        // A rate-limited turn gives its attempt back; an unreported one does not.
        state.evolve(&assigned("v", "a", "t4"), Timestamp(4));
        let mut limited = DriveRecord::new(DriveAction::Retrying, "v", "a");
        limited.turn_status = Some("rate_limited".into());
        state.evolve(&limited, Timestamp(5));
        assert_eq!(state.units["v"].attempts, 0);
        state.evolve(&assigned("v", "a", "t5"), Timestamp(6));
        let mut unreported = DriveRecord::new(DriveAction::Retrying, "v", "a");
        unreported.turn_status = Some("completed".into());
        state.evolve(&unreported, Timestamp(7));
        assert_eq!(state.units["v"].attempts, 1);
    }

    #[test]
    fn a_template_step_names_its_agents_model_and_effort_and_blank_ones_are_refused() {
        use crate::engine::Template;
        let toml = "name = \"t\"\n[[steps]]\nname = \"a\"\nrole = \"implementer\"\nmodel = \"gpt-5.5\"\neffort = \"high\"\noutcomes = { ok = \"done\" }\n";
        let template = Template::parse(toml, true, "template").unwrap();
        template.validate("template").unwrap();
        assert_eq!((template.steps[0].model.as_deref(), template.steps[0].effort.as_deref()), (Some("gpt-5.5"), Some("high")));
        // Parsing validates: a blank effort is refused with its path.
        let error = Template::parse(&toml.replace("\"high\"", "\" \""), true, "template").unwrap_err();
        assert_eq!(error.field.as_deref(), Some("template.steps[0].effort"), "{error:?}");
    }

    #[test]
    fn a_template_says_what_to_do_when_agents_use_up_their_attempts_and_bad_limits_are_refused() {
        use crate::engine::Template;
        use crate::engine::templates::AgentFailurePolicy;
        let toml = "name = \"t\"\n[[steps]]\nname = \"a\"\nrole = \"implementer\"\non_agent_failure = \"fail\"\nmax_agent_attempts = 2\noutcomes = { ok = \"done\" }\n";
        let template = Template::parse(toml, true, "template").unwrap();
        assert_eq!((template.steps[0].on_agent_failure, template.steps[0].max_agent_attempts), (Some(AgentFailurePolicy::Fail), Some(2)));
        let error = Template::parse(&toml.replace("max_agent_attempts = 2", "max_agent_attempts = 0"), true, "template").unwrap_err();
        assert_eq!(error.field.as_deref(), Some("template.steps[0].max_agent_attempts"), "{error:?}");
        assert!(error.message.contains("1 to 20") && !error.fix.is_empty(), "{error:?}");
        let error = Template::parse(&toml.replace("max_agent_attempts = 2", "max_agent_attempts = 21"), true, "template").unwrap_err();
        assert_eq!(error.field.as_deref(), Some("template.steps[0].max_agent_attempts"), "{error:?}");
        // Unset, the driver's defaults hold: ask, after --max-attempts turns.
        let plain = Template::parse(&toml.replace("on_agent_failure = \"fail\"\nmax_agent_attempts = 2\n", ""), true, "template").unwrap();
        assert_eq!((plain.steps[0].on_agent_failure, plain.steps[0].max_agent_attempts), (None, None));
        assert_eq!(AgentFailurePolicy::default(), AgentFailurePolicy::Ask);
        let error = Template::parse(&toml.replace("\"fail\"", "\"maybe\""), true, "template").unwrap_err();
        assert!(error.message.contains("maybe") && error.fix.contains("on_agent_failure"), "{error:?}");
    }

    #[test]
    fn giving_up_fails_the_run_at_its_step_or_the_task_at_its_step_and_a_stale_give_up_is_refused() {
        use crate::engine::{Actor, Change, NewRun, Run, RunStatus, TaskStatus, builtin_template};
        let start = |template: &str| {
            let new = NewRun {
                id: "r1".into(),
                template: builtin_template(template).unwrap(),
                goal: "g".into(),
                title: "t".into(),
                context: Default::default(),
                workspace: None,
                max_agents: 4,
            };
            Run::start(new, &Actor::default(), Timestamp(1)).0
        };
        let give_up = |unit: &str| {
            let mut record = DriveRecord::new(DriveAction::GaveUp, unit, "d");
            record.note = Some("its agents never reported".into());
            Change::Supervise { record }
        };
        // The run's step: the run fails, with the driver's reason.
        let mut run = start("feature");
        let stale = run.apply(&give_up("step:design#2"), &Actor::default(), Timestamp(2)).unwrap_err();
        assert_eq!((stale.code, stale.field.as_deref()), (crate::error::ErrorCode::Conflict, Some("unit")), "{stale:?}");
        run.apply(&give_up("step:design#1"), &Actor::default(), Timestamp(3)).unwrap();
        assert_eq!((run.status, run.end_reason.as_deref()), (RunStatus::Failed, Some("its agents never reported")));
        // A task's step: the task fails and the fan-out's policy (the built-in `ask`) asks.
        let mut run = start("parallel");
        let advance = crate::engine::fixtures::planned(1, crate::engine::fixtures::plan(&[("api", &[]), ("ui", &[])]));
        run.apply(&advance, &Actor::default(), Timestamp(2)).unwrap();
        run.apply(&give_up("task:api:implement#1"), &Actor::default(), Timestamp(3)).unwrap();
        let api = run.fanout.as_ref().and_then(|f| f.task("api")).unwrap();
        assert_eq!(api.status, TaskStatus::AwaitingHuman);
        assert!(api.lease.is_none() && api.gate.as_ref().is_some_and(|g| g.question.contains("its agents never reported")), "{api:?}");
        assert_eq!(run.status, RunStatus::Active, "the other task goes on");
        let again = run.apply(&give_up("task:api:implement#1"), &Actor::default(), Timestamp(4)).unwrap_err();
        assert_eq!(again.code, crate::error::ErrorCode::Conflict);
        assert_eq!(UnitRef::parse("task:ui:review#2"), Some(UnitRef::Task { task: "ui", step: "review", visit: 2 }));
        assert_eq!(UnitRef::parse("step:x"), None);
    }
}
