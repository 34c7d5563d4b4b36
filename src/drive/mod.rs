//! `baton drive`: a supervisor that works a run to its end with Codex agents it starts through
//! `codex app-server`. It decides, the agents report: every agent plays one unit of work (the
//! run's step at one visit, or one task's step at one visit) on a Codex thread of its own and
//! reports it with baton's own MCP tools, so versions, leases and independence hold for it as
//! for a chat session. What the driver decides (assignments, threads, attempts, tokens, why it
//! stopped) is recorded in the run (`Change::Supervise`), so a new driver after a crash knows
//! what was in flight, and two drivers never assign one unit at once.

pub mod app_server;
pub mod progress;
pub mod prompt;

use crate::api::{
    AwaitHumanParams, Caller, CancelRunParams, GetRunParams, Reply, Request, ResumeParams, StartWorkflowParams, SuperviseParams,
};
use crate::backend::Backend;
use crate::engine::templates::AgentFailurePolicy;
use crate::engine::{Actor, ActorKind, Run, RunStatus, TaskStatus};
use crate::engine::{DriveAction, DriveRecord};
use crate::error::BatonResult;
use app_server::AppServer;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How `baton drive` ends; the process exits with [`Exit::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Completed,
    Failed,
    Cancelled,
    /// `--no-wait` and the run waits for a human.
    AwaitingHuman,
    /// The token budget ran out and a human chose to stop (or `--no-wait`).
    BudgetStop,
    /// SIGINT or SIGTERM.
    Interrupted,
}

impl Exit {
    /// 0 completed, 3 failed, 4 cancelled, 5 waiting for a human, 6 budget stop, 7 interrupted
    /// (1 is any error of the driver itself, 2 a usage error, as clap reports it).
    pub fn code(self) -> u8 {
        match self {
            Exit::Completed => 0,
            Exit::Failed => 3,
            Exit::Cancelled => 4,
            Exit::AwaitingHuman => 5,
            Exit::BudgetStop => 6,
            Exit::Interrupted => 7,
        }
    }
}

/// What `baton drive` was asked to do.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    pub run_id: Option<String>,
    pub goal: Option<String>,
    pub template: Option<String>,
    /// A template file (read here, relative to the current directory).
    pub template_file: Option<String>,
    pub title: Option<String>,
    /// At most this many turns at once (default: the run's `max_agents`).
    pub agents: Option<u32>,
    pub budget_tokens: Option<u64>,
    /// Model for every agent, and per role (`role=model`).
    pub model: Option<String>,
    pub role_models: BTreeMap<String, String>,
    pub effort: Option<String>,
    /// Reasoning effort per role (`role=effort`).
    pub role_efforts: BTreeMap<String, String>,
    pub json: bool,
    pub codex: PathBuf,
    /// Turns per unit before a human is asked (default 3).
    pub max_attempts: u32,
    pub turn_timeout: Duration,
    /// First retry delay; doubled per attempt.
    pub backoff: Duration,
    /// Exit (code 4) instead of waiting when the run needs a human.
    pub no_wait: bool,
}

/// One unit of work the run offers now.
#[derive(Debug, Clone)]
struct Unit {
    key: String,
    step: String,
    role: String,
    task: Option<String>,
    instructions: String,
    /// The step's own model and effort (its template's), over the command line's.
    model: Option<String>,
    effort: Option<String>,
    /// What its template says to do when its agents use up their attempts.
    on_failure: AgentFailurePolicy,
    /// Its step's attempt limit, over `--max-attempts`.
    max_attempts: Option<u32>,
}

/// What an agent's turn came to.
struct TurnDone {
    key: String,
    thread: String,
    role: String,
    tokens: u64,
    status: String,
    error: Option<String>,
}

/// The id of a thread's current turn, once `turn/start` answered (for `turn/interrupt`).
type TurnSlot = Arc<std::sync::Mutex<Option<String>>>;

/// Questions the driver asks start with this, so it knows its own answers.
const RETRY_QUESTION: &str = "baton drive: ";
const BUDGET_QUESTION: &str = "baton drive: the token budget";

struct Driver {
    backend: Backend,
    opts: DriveOptions,
    id: String,
    caller: Caller,
    run_id: String,
    app: Arc<AppServer>,
    /// In flight: unit key -> (thread id, turn id once known).
    working: HashMap<String, (String, TurnSlot)>,
    /// Units waiting out their backoff.
    not_before: HashMap<String, Instant>,
    done_tx: mpsc::UnboundedSender<TurnDone>,
    done_rx: mpsc::UnboundedReceiver<TurnDone>,
    shown_question: Option<String>,
    max_in_flight: usize,
    cwd: PathBuf,
    progress: progress::Progress,
}

/// Drive a run (an existing one, or one started from `--goal`) until it ends or needs a human
/// the driver may not wait for.
pub async fn drive(backend: Backend, opts: DriveOptions) -> anyhow::Result<Exit> {
    backend.connect().await?;
    let _notifier = backend.notify_people();
    let cwd = std::env::current_dir()?;
    let host = this_host();
    let id = format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().to_string()[..8]);
    let caller = Caller { actor: Actor { kind: ActorKind::Terminal, id: Some(format!("baton-drive:{id}")), agent: None }, workspace: None };
    // The run's tree (an existing run's, else here), and Codex started there before a new run
    // is created, so a missing or broken Codex leaves no run behind.
    let tree = match &opts.run_id {
        Some(run) => {
            let run = get_run(&backend, run).await?;
            run.workspace.as_ref().map(|w| PathBuf::from(&w.cwd)).filter(|p| p.is_dir()).unwrap_or_else(|| cwd.clone())
        }
        None => cwd.clone(),
    };
    let app = AppServer::start(&opts.codex, &tree).await?;
    let run_id = match (&opts.run_id, &opts.goal) {
        (Some(run), _) => run.clone(),
        (None, Some(goal)) => {
            let workspace = Some(crate::gitops::workspace::probe(&cwd, crate::gitops::workspace::Probe::Full).await);
            let start = Caller { workspace, ..caller.clone() };
            let template_definition = match &opts.template_file {
                Some(path) => Some(crate::template_file::read(path, &cwd)?),
                None => None,
            };
            let params = StartWorkflowParams {
                goal: goal.clone(),
                title: opts.title.clone(),
                template: opts.template.clone(),
                template_definition,
                max_agents: opts.agents,
                ..Default::default()
            };
            crate::calls::call(&backend, start, params).await?.run_id
        }
        (None, None) => anyhow::bail!("give a RUN to drive, or --goal \"...\" to start one"),
    };
    let run = get_run(&backend, &run_id).await?;
    let max_in_flight = opts.agents.unwrap_or(run.max_agents).clamp(1, 64) as usize;
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let driver_json = opts.json;
    let mut driver = Driver {
        backend,
        opts,
        id,
        caller,
        run_id,
        app,
        working: HashMap::new(),
        not_before: HashMap::new(),
        done_tx,
        done_rx,
        shown_question: None,
        max_in_flight,
        cwd: tree,
        progress: progress::Progress::new(driver_json),
    };
    driver.event("started", json!({"run_id": driver.run_id, "driver": driver.id, "agents": max_in_flight}));
    if let Some(budget) = driver.opts.budget_tokens {
        let mut record = DriveRecord::new(DriveAction::Budget, "", &driver.id);
        record.budget_tokens = Some(budget);
        driver.supervise(record).await?;
    }
    let exit = driver.run_loop().await;
    driver.app.shutdown().await;
    exit
}

async fn get_run(backend: &Backend, run_id: &str) -> BatonResult<Run> {
    let request = GetRunParams { run_id: run_id.to_string(), history_limit: Some(1), before_seq: None, step: None };
    Ok(crate::calls::call(backend, Caller::default(), request).await?.run)
}

impl Driver {
    /// A progress line (plain, or one JSON object per line with `--json`), on stdout.
    fn event(&self, kind: &str, detail: Value) {
        self.progress.event(kind, now().to_rfc3339(), detail);
    }

    async fn call(&self, request: Request) -> BatonResult<Reply> {
        crate::calls::call(&self.backend, self.caller.clone(), request).await
    }

    async fn supervise(&self, record: DriveRecord) -> BatonResult<Reply> {
        self.call(Request::Supervise(SuperviseParams { run_id: self.run_id.clone(), record })).await
    }

    async fn run_loop(&mut self) -> anyhow::Result<Exit> {
        let mut interrupt = Interrupt::new()?;
        loop {
            let run = get_run(&self.backend, &self.run_id).await?;
            if run.status.is_finished() && self.working.is_empty() {
                let (cpu_ms, max_rss_kb) = own_cost();
                let turns = run.drive.as_ref().map_or(0, |d| d.turns);
                self.event(
                    "finished",
                    json!({"status": run.status.as_str(), "tokens": run.drive.as_ref().map_or(0, |d| d.tokens), "turns": turns,
                           "driver_cpu_ms": cpu_ms, "driver_max_rss_kb": max_rss_kb}),
                );
                return Ok(match run.status {
                    RunStatus::Completed => Exit::Completed,
                    RunStatus::Failed => Exit::Failed,
                    _ if run.end_reason.as_deref().is_some_and(|r| r.starts_with(BUDGET_QUESTION)) => Exit::BudgetStop,
                    _ => Exit::Cancelled,
                });
            }
            if let Some(exit) = self.handle_humans(&run).await? {
                return Ok(exit);
            }
            if run.status == RunStatus::Active && !self.over_budget(&run).await? {
                self.start_units(&run).await?;
            }
            self.progress.status(&progress_of(&run));
            tokio::select! {
                done = self.done_rx.recv() => if let Some(done) = done { self.turn_done(done).await? },
                signal = interrupt.next() => return self.interrupted(signal).await,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Print a pending question (once) with the command that answers it; act on answers to the
    /// driver's own questions. `Some` when the driver should exit.
    async fn handle_humans(&mut self, run: &Run) -> anyhow::Result<Option<Exit>> {
        let mut asking: Vec<(Option<String>, String)> = Vec::new();
        if run.status == RunStatus::AwaitingHuman
            && let Some(gate) = &run.pending_gate
        {
            asking.push((None, gate.question.clone()));
        }
        for task in run.fanout.iter().flat_map(|f| f.awaiting_human()) {
            if let Some(gate) = &task.gate {
                asking.push((Some(task.id.clone()), gate.question.clone()));
            }
        }
        if let Some((task, question)) = asking.first() {
            let shown = format!("{}:{question}", task.as_deref().unwrap_or(""));
            if self.shown_question.as_deref() != Some(shown.as_str()) {
                let command =
                    format!("baton answer {} ANSWER{}", self.run_id, task.as_deref().map(|t| format!(" --task {t}")).unwrap_or_default());
                self.event("waiting_for_human", json!({"question": question, "task": task, "answer_with": command}));
                self.shown_question = Some(shown);
            }
            if self.opts.no_wait && self.working.is_empty() && run.status == RunStatus::AwaitingHuman {
                let budget = question.starts_with(BUDGET_QUESTION);
                return Ok(Some(if budget { Exit::BudgetStop } else { Exit::AwaitingHuman }));
            }
        } else {
            self.shown_question = None;
        }
        // The answer to the driver's own last question, if that is the latest answer.
        let Some(answer) = run.human_answers.last().filter(|a| a.question.starts_with(RETRY_QUESTION)) else { return Ok(None) };
        if run.status != RunStatus::Active {
            return Ok(None);
        }
        let drive = run.drive.clone().unwrap_or_default();
        if answer.question.starts_with(BUDGET_QUESTION) {
            let used = drive.tokens;
            match answer.answer.trim().parse::<u64>() {
                Ok(budget) if drive.budget_tokens.is_none_or(|b| budget > b) => {
                    let mut record = DriveRecord::new(DriveAction::Budget, "", &self.id);
                    record.budget_tokens = Some(budget);
                    self.supervise(record).await?;
                    self.event("budget_raised", json!({"budget_tokens": budget, "used": used}));
                }
                Ok(_) => {}
                Err(_) if drive.budget_tokens.is_some_and(|b| used >= b) => {
                    let reason = format!("{BUDGET_QUESTION} ran out ({used} tokens used) and a human chose to stop");
                    self.call(Request::CancelRun(CancelRunParams {
                        run_id: self.run_id.clone(),
                        reason: Some(reason),
                        expected_version: None,
                    }))
                    .await?;
                }
                Err(_) => {}
            }
        } else if answer.answer == "fail" && !run.status.is_finished() && drive.units.values().any(|u| u.escalated) {
            let reason = format!("{RETRY_QUESTION}a human chose to fail after: {}", answer.question);
            self.call(Request::CancelRun(CancelRunParams { run_id: self.run_id.clone(), reason: Some(reason), expected_version: None }))
                .await?;
        }
        Ok(None)
    }

    /// Whether the budget is used up; then the run asks a human (once).
    async fn over_budget(&mut self, run: &Run) -> anyhow::Result<bool> {
        let Some(drive) = &run.drive else { return Ok(false) };
        let Some(budget) = drive.budget_tokens else { return Ok(false) };
        if drive.tokens < budget {
            return Ok(false);
        }
        if self.working.is_empty() {
            let question = format!(
                "{BUDGET_QUESTION} of {budget} tokens is used up ({} used). Answer a larger budget in tokens to go on, or `stop`.",
                drive.tokens
            );
            let ask = AwaitHumanParams { run_id: self.run_id.clone(), question, options: None, expected_version: Some(run.version) };
            match self.call(Request::AwaitHuman(ask)).await {
                Ok(_) => self.event("budget_stop", json!({"budget_tokens": budget, "used": drive.tokens})),
                Err(e) if e.code == crate::error::ErrorCode::Conflict => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// The units the run offers now, and the driver's decision for each.
    fn units(&self, run: &Run) -> Vec<Unit> {
        let mut units = Vec::new();
        if let Some(step) = &run.current_step
            && let Some(def) = run.template.step(step)
        {
            let visit = run.visits.get(step).copied().unwrap_or(0);
            let key = format!("step:{step}#{visit}");
            units.push(Unit {
                key,
                step: step.clone(),
                role: def.role.clone(),
                task: None,
                instructions: def.instructions.clone(),
                model: def.model.clone(),
                effort: def.effort.clone(),
                on_failure: def.on_agent_failure.unwrap_or_default(),
                max_attempts: def.max_agent_attempts,
            });
        }
        if let Some(fanout) = run.fanout.as_ref().filter(|f| !f.joined && run.current_step.is_none()) {
            let now = now();
            for task in &fanout.tasks {
                let claimable = match task.status {
                    TaskStatus::Ready => true,
                    TaskStatus::Claimed => task.lease.as_ref().is_some_and(|l| l.is_expired(now)),
                    _ => false,
                };
                let (Some(step), Some(def)) = (&task.step, fanout.step_of(task)) else { continue };
                let visit = task.visits.get(step).copied().unwrap_or(0);
                let key = format!("task:{}:{step}#{visit}", task.id);
                // A claimed task whose lease is live may be ours to resume after a crash.
                if claimable || self.working.contains_key(&key) || run.drive.as_ref().is_some_and(|d| d.units.contains_key(&key)) {
                    units.push(Unit {
                        key,
                        step: step.clone(),
                        role: def.role.clone(),
                        task: Some(task.id.clone()),
                        instructions: def.instructions.clone(),
                        model: def.model.clone(),
                        effort: def.effort.clone(),
                        on_failure: def.on_agent_failure.unwrap_or_default(),
                        max_attempts: def.max_agent_attempts,
                    });
                }
            }
        }
        units
    }

    async fn start_units(&mut self, run: &Run) -> anyhow::Result<()> {
        for unit in self.units(run) {
            if self.working.len() >= self.max_in_flight {
                break;
            }
            if self.working.contains_key(&unit.key) || self.not_before.get(&unit.key).is_some_and(|t| Instant::now() < *t) {
                continue;
            }
            let recorded = run.drive.as_ref().and_then(|d| d.units.get(&unit.key));
            let mut take_over = false;
            // The gone driver, and the Codex thread its agent was working the unit on.
            let mut gone_driver: Option<String> = None;
            let mut gone_thread: Option<String> = None;
            if let Some(rec) = recorded {
                if rec.escalated && run.status == RunStatus::Active && rec.attempts == 0 {
                    // A human answered `retry`: start counting again.
                } else if rec.working && rec.driver != self.id {
                    // Gone: a stopped process of this machine, or (any machine) a driver
                    // overdue to record its turn's end.
                    if !driver_is_gone(&rec.driver) && !rec.overdue(now()) {
                        continue; // Another live driver works it.
                    }
                    take_over = true;
                    gone_driver = Some(rec.driver.clone());
                    gone_thread = rec.thread_id.clone();
                }
            }
            let attempts = recorded.map_or(0, |r| r.attempts);
            if attempts >= unit.max_attempts.unwrap_or(self.opts.max_attempts) {
                if take_over {
                    self.release_lease(run, &unit, gone_thread.as_deref()).await?;
                }
                match unit.on_failure {
                    AgentFailurePolicy::Ask => self.escalate(run, &unit, attempts).await?,
                    AgentFailurePolicy::Fail => self.give_up(run, &unit, attempts).await?,
                }
                return Ok(());
            }
            // A task whose lease some other (live) agent holds is not ours to start.
            if let (Some(task), false) = (&unit.task, take_over) {
                let held = run.fanout.as_ref().and_then(|f| f.task(task)).and_then(|t| t.lease.as_ref());
                if held.is_some_and(|l| !l.is_expired(now())) {
                    continue;
                }
            }
            // Carry the gone driver's thread on where Codex can resume it: the agent keeps what
            // it did and knew (its claim and lease too), and the crash costs the step no attempt.
            // Else the step starts again on a new thread, and the old thread's lease goes back.
            let resumed = match gone_thread.as_deref() {
                Some(thread) => self.resume_thread(&unit, thread).await,
                None => false,
            };
            if take_over && !resumed {
                self.release_lease(run, &unit, gone_thread.as_deref()).await?;
            }
            let attempt = if resumed { attempts.max(1) } else { attempts + 1 };
            self.start_agent(run, unit, attempt, gone_driver, gone_thread.filter(|_| resumed)).await?;
        }
        Ok(())
    }

    /// `thread/resume` of a thread a gone driver started (Codex reloads it from its rollout).
    async fn resume_thread(&self, unit: &Unit, thread: &str) -> bool {
        match self.app.request("thread/resume", json!({"threadId": thread, "cwd": self.cwd})).await {
            Ok(_) => true,
            Err(e) => {
                self.event("resume_failed", json!({"unit": unit.key, "thread": thread, "error": e.to_string()}));
                false
            }
        }
    }

    /// Give back the task lease `thread` holds (its driver is gone, or its turn ended without
    /// the step reported), so a new agent can claim the task now.
    async fn release_lease(&self, run: &Run, unit: &Unit, thread: Option<&str>) -> anyhow::Result<()> {
        let Some(task) = unit.task.as_deref() else { return Ok(()) };
        let lease = run.fanout.as_ref().and_then(|f| f.task(task)).and_then(|t| t.lease.clone());
        if let Some(lease) = lease.filter(|l| thread.is_some() && l.holder.id.as_deref() == thread) {
            let release = ResumeParams {
                run_id: Some(self.run_id.clone()),
                task: Some(task.to_string()),
                lease_token: Some(lease.token),
                release: Some(true),
                ..Default::default()
            };
            self.call(Request::Resume(release)).await?;
            self.event("lease_released", json!({"task": task, "token": lease.token, "holder": thread}));
        }
        Ok(())
    }

    async fn escalate(&mut self, run: &Run, unit: &Unit, attempts: u32) -> anyhow::Result<()> {
        if self.working.contains_key(&unit.key) || run.status != RunStatus::Active {
            return Ok(());
        }
        let question = format!(
            "{RETRY_QUESTION}`{}` ({}) ended {attempts} agent turns without being reported. Retry it, or fail the run?",
            unit.key, unit.role
        );
        let ask = AwaitHumanParams {
            run_id: self.run_id.clone(),
            question,
            options: Some(vec!["retry".into(), "fail".into()]),
            expected_version: Some(run.version),
        };
        match self.call(Request::AwaitHuman(ask)).await {
            Ok(_) => {
                let mut record = DriveRecord::new(DriveAction::Escalated, &unit.key, &self.id);
                record.attempt = attempts;
                self.supervise(record).await?;
                self.event("escalated", json!({"unit": unit.key, "attempts": attempts}));
            }
            Err(e) if e.code == crate::error::ErrorCode::Conflict => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The template says a step whose agents used up their attempts fails: record it (the run
    /// fails, or the task does and its fan-out's policy decides).
    async fn give_up(&mut self, run: &Run, unit: &Unit, attempts: u32) -> anyhow::Result<()> {
        if self.working.contains_key(&unit.key) || run.status != RunStatus::Active {
            return Ok(());
        }
        let mut record = DriveRecord::new(DriveAction::GaveUp, &unit.key, &self.id);
        record.attempt = attempts;
        record.role = Some(unit.role.clone());
        record.note = Some(format!(
            "`{}` ({}) ended {attempts} agent turns without being reported; its template says to fail it (on_agent_failure = \"fail\")",
            unit.key, unit.role
        ));
        match self.supervise(record).await {
            Ok(_) => self.event("gave_up", json!({"unit": unit.key, "attempts": attempts, "task": unit.task})),
            // Reported meanwhile, or another driver gave up first.
            Err(e) if e.code == crate::error::ErrorCode::Conflict => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Give `unit` to an agent: a new thread, or `resumed`, one already resumed.
    /// `from_driver`: the gone driver whose unit this takes over.
    async fn start_agent(
        &mut self,
        run: &Run,
        unit: Unit,
        attempt: u32,
        from_driver: Option<String>,
        resumed: Option<String>,
    ) -> anyhow::Result<()> {
        let model = unit.model.clone().or_else(|| self.opts.role_models.get(&unit.role).cloned()).or_else(|| self.opts.model.clone());
        let effort = unit.effort.clone().or_else(|| self.opts.role_efforts.get(&unit.role).cloned()).or_else(|| self.opts.effort.clone());
        let is_resumed = resumed.is_some();
        let thread = match resumed {
            Some(thread) => thread,
            None => {
                let mut params = json!({"cwd": self.cwd});
                if let Some(model) = &model {
                    params["model"] = json!(model);
                }
                let started = self.app.request("thread/start", params).await?;
                let Some(thread) = started["thread"]["id"].as_str().map(str::to_string) else {
                    anyhow::bail!("codex app-server's thread/start gave no thread id: {started}")
                };
                thread
            }
        };
        let mut record = DriveRecord::new(DriveAction::Assigned, &unit.key, &self.id);
        record.thread_id = Some(thread.clone());
        record.role = Some(unit.role.clone());
        record.attempt = attempt;
        record.take_over = from_driver.is_some();
        record.from_driver = from_driver;
        // A live driver records every turn's end within its turn timeout; the grace covers
        // the recording itself (owner failover, a slow database).
        record.until = Some(now().after(self.opts.turn_timeout + OVERDUE_GRACE));
        record.note = is_resumed.then(|| "resumed the Codex thread of a driver that is gone".to_string());
        match self.supervise(record).await {
            Ok(_) => {}
            Err(e) if e.code == crate::error::ErrorCode::Conflict => return Ok(()), // Another driver took it first.
            Err(e) => return Err(e.into()),
        }
        let assignment = prompt::Assignment {
            run_id: &self.run_id,
            step: &unit.step,
            role: &unit.role,
            task: unit.task.as_deref(),
            goal: &run.goal,
            instructions: &unit.instructions,
        };
        let text = if is_resumed { prompt::resumed(&assignment) } else { prompt::prompt(&assignment) };
        self.event(
            "agent_started",
            json!({"unit": unit.key, "role": unit.role, "thread": thread, "attempt": attempt, "resumed": is_resumed}),
        );
        let live = progress::Agent { role: unit.role.clone(), started: Instant::now(), tokens: 0 };
        progress::lock(&self.progress.agents).insert(unit.key.clone(), live);
        let agents = Arc::clone(&self.progress.agents);
        let turn_id = Arc::new(std::sync::Mutex::new(None));
        self.working.insert(unit.key.clone(), (thread.clone(), Arc::clone(&turn_id)));
        let (app, done, timeout) = (Arc::clone(&self.app), self.done_tx.clone(), self.opts.turn_timeout);
        tokio::spawn(async move {
            let outcome = play_turn(&app, &thread, &text, effort, timeout, &turn_id, (&agents, &unit.key)).await;
            app.unsubscribe(&thread);
            let (tokens, status, error) = match outcome {
                Ok(t) => t,
                Err(e) => (0, "failed".to_string(), Some(e.to_string())),
            };
            let _ = done.send(TurnDone { key: unit.key, thread, role: unit.role, tokens, status, error });
        });
        Ok(())
    }

    /// Record the turn's end; when the unit is still the run's to do, retry after a backoff.
    async fn turn_done(&mut self, done: TurnDone) -> anyhow::Result<()> {
        self.working.remove(&done.key);
        progress::lock(&self.progress.agents).remove(&done.key);
        let mut record = DriveRecord::new(DriveAction::TurnEnded, &done.key, &self.id);
        record.thread_id = Some(done.thread.clone());
        record.role = Some(done.role.clone());
        record.tokens = done.tokens;
        record.turn_status = Some(done.status.clone());
        record.note = done.error.clone();
        match self.supervise(record).await {
            Ok(_) => {}
            Err(e) if e.code == crate::error::ErrorCode::Conflict => {
                // Another driver took the unit over while this turn overran: it is theirs now.
                self.event("agent_ended", json!({"unit": done.key, "thread": done.thread, "status": "taken_over", "tokens": done.tokens}));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let run = get_run(&self.backend, &self.run_id).await?;
        let still = self.units(&run).iter().any(|u| u.key == done.key) && run.status == RunStatus::Active;
        self.event(
            "agent_ended",
            json!({"unit": done.key, "thread": done.thread, "status": done.status, "tokens": done.tokens, "reported": !still, "error": done.error}),
        );
        if still {
            // The thread's turn is over and nobody works the task now: a lease it took goes back,
            // or the retry would wait for the lease to expire.
            if let Some(unit) = self.units(&run).into_iter().find(|u| u.key == done.key) {
                self.release_lease(&run, &unit, Some(&done.thread)).await?;
            }
            let attempts = run.drive.as_ref().and_then(|d| d.units.get(&done.key)).map_or(1, |u| u.attempts.max(1));
            let limited = done.error.as_deref().is_some_and(|e| e.contains("rateLimitExceeded") || e.contains("usageLimitExceeded"));
            let wait = if limited {
                // Wait for the reset Codex named (at most 6 hours), else a minute; a quota
                // stop is no fault of the step, so it uses no attempt.
                let now_s = now().millis() as i64 / 1000;
                let until = self.app.rate_limit_resets_at().filter(|r| *r > now_s).map(|r| (r - now_s).min(6 * 3600) as u64);
                Duration::from_secs(until.unwrap_or(60))
            } else {
                self.opts.backoff.saturating_mul(1 << (attempts - 1).min(6))
            };
            let mut record = DriveRecord::new(DriveAction::Retrying, &done.key, &self.id);
            record.thread_id = Some(done.thread.clone());
            record.role = Some(done.role.clone());
            record.turn_status = Some(if limited { "rate_limited".into() } else { done.status.clone() });
            record.note = Some(format!("retry in {} ms", wait.as_millis()));
            self.supervise(record).await?;
            self.not_before.insert(done.key.clone(), Instant::now() + wait);
            self.event(
                "retrying",
                json!({"unit": done.key, "after_ms": wait.as_millis() as u64, "attempts": attempts, "rate_limited": limited}),
            );
        }
        Ok(())
    }

    /// SIGINT/SIGTERM: interrupt the turns, give back the leases our agents hold, record why.
    async fn interrupted(&mut self, signal: &'static str) -> anyhow::Result<Exit> {
        self.event("interrupted", json!({"signal": signal, "agents": self.working.len()}));
        for (thread, turn) in self.working.values() {
            let turn = turn.lock().map(|t| t.clone()).unwrap_or(None);
            if let Some(turn) = turn {
                let _ = self.app.request("turn/interrupt", json!({"threadId": thread, "turnId": turn})).await;
            }
        }
        let run = get_run(&self.backend, &self.run_id).await?;
        let working: Vec<(String, String)> = self.working.iter().map(|(k, (t, _))| (k.clone(), t.clone())).collect();
        for (key, thread) in working {
            if let Some(unit) = self.units(&run).into_iter().find(|u| u.key == key) {
                self.release_lease(&run, &unit, Some(&thread)).await?;
            }
            let mut record = DriveRecord::new(DriveAction::Released, &key, &self.id);
            record.thread_id = Some(thread);
            record.note = Some(format!("the driver was stopped by {signal}"));
            self.supervise(record).await?;
        }
        self.working.clear();
        Ok(Exit::Interrupted)
    }
}

/// Start one turn on `thread` and wait for its end: (tokens it used, status, error).
async fn play_turn(
    app: &AppServer,
    thread: &str,
    text: &str,
    effort: Option<String>,
    timeout: Duration,
    turn_slot: &std::sync::Mutex<Option<String>>,
    (agents, key): (&progress::Agents, &str),
) -> anyhow::Result<(u64, String, Option<String>)> {
    let mut notes = app.subscribe(thread);
    let mut params = json!({"threadId": thread, "input": [{"type": "text", "text": text}]});
    if let Some(effort) = effort {
        params["effort"] = json!(effort);
    }
    let started = app.request("turn/start", params).await?;
    let turn = started["turn"]["id"].as_str().unwrap_or_default().to_string();
    if let Ok(mut slot) = turn_slot.lock() {
        *slot = Some(turn.clone());
    }
    let mut tokens = 0u64;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let note = match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(note)) => note,
            Ok(None) => return Ok((tokens, "failed".into(), Some("codex app-server exited during the turn".into()))),
            Err(_) => {
                let _ = app.request("turn/interrupt", json!({"threadId": thread, "turnId": turn})).await;
                return Ok((tokens, "timed_out".into(), Some(format!("the turn took longer than {timeout:?}"))));
            }
        };
        match note["method"].as_str() {
            Some("thread/tokenUsage/updated") => {
                tokens = note["params"]["tokenUsage"]["total"]["totalTokens"].as_u64().unwrap_or(tokens);
                if let Some(agent) = progress::lock(agents).get_mut(key) {
                    agent.tokens = tokens;
                }
            }
            Some("turn/completed") if note["params"]["turn"]["id"] == turn.as_str() => {
                let status = note["params"]["turn"]["status"].as_str().unwrap_or("completed").to_string();
                let error = note["params"]["turn"]["error"].as_object().map(|e| {
                    format!(
                        "{} ({})",
                        e.get("message").and_then(Value::as_str).unwrap_or("?"),
                        e.get("codexErrorInfo").map(|c| c.to_string()).unwrap_or_default()
                    )
                });
                return Ok((tokens, status, error));
            }
            _ => {}
        }
    }
}

/// Whether the driver `host:pid:id` is known to have stopped: a process of this machine
/// that no longer runs. A driver on another machine is never known to be gone here (it is
/// never taken over while it may live).
pub fn driver_is_gone(driver: &str) -> bool {
    let mut parts = driver.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next().and_then(|p| p.parse::<i32>().ok())) else { return false };
    let here = this_host();
    if host != here || pid <= 0 {
        return false;
    }
    if pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

/// This machine's name, as driver ids carry it.
pub fn this_host() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// How long past its turn timeout a driver may take to record a turn's end before other
/// drivers take it to be gone.
const OVERDUE_GRACE: Duration = Duration::from_secs(120);

/// SIGINT and SIGTERM as one stream.
struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> anyhow::Result<Interrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupt { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// The run's progress in a few words: its step, or its tasks joined; tokens against the budget.
fn progress_of(run: &Run) -> String {
    let place = match (&run.current_step, &run.fanout) {
        (Some(step), _) => format!("step {step}"),
        (None, Some(f)) => format!("tasks {}/{} joined", f.tasks.iter().filter(|t| t.status.has_joined()).count(), f.tasks.len()),
        (None, None) => run.status.as_str().to_string(),
    };
    let tokens = run.drive.as_ref().map_or(0, |d| d.tokens);
    let budget = run.drive.as_ref().and_then(|d| d.budget_tokens).map(|b| format!("/{b}")).unwrap_or_default();
    format!("{place}, {tokens}{budget} tokens")
}

/// What the drivers recorded, for `baton show`: turns, tokens (per role, against the budget)
/// and the agents working now.
pub fn summary(drive: &crate::engine::DriveState) -> String {
    let budget = drive.budget_tokens.map(|b| format!(" of a budget of {b}")).unwrap_or_default();
    let roles: Vec<String> = drive.tokens_by_role.iter().map(|(role, t)| format!("{role} {t}")).collect();
    let mut text = format!(
        "Driven by `baton drive` (last: {}): {} agent turn(s), {} token(s){budget}{}.",
        drive.last_driver,
        drive.turns,
        drive.tokens,
        if roles.is_empty() { String::new() } else { format!(" ({})", roles.join(", ")) }
    );
    for (key, unit) in drive.units.iter().filter(|(_, u)| u.working) {
        text.push_str(&format!(
            "\n  working: {key} ({}) thread {} attempt {}",
            unit.role.as_deref().unwrap_or("?"),
            unit.thread_id.as_deref().unwrap_or("?"),
            unit.attempts
        ));
    }
    text
}

/// The driver's own CPU time (ms, every thread; the agents and Codex are other processes) and
/// peak resident memory (KiB): what supervising costs, without model time.
fn own_cost() -> (u64, u64) {
    // SAFETY: getrusage fills the zeroed struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0, 0);
    }
    let ms = |t: libc::timeval| (t.tv_sec as u64) * 1000 + (t.tv_usec as u64) / 1000;
    (ms(usage.ru_utime) + ms(usage.ru_stime), usage.ru_maxrss as u64)
}

fn now() -> crate::time::Timestamp {
    use crate::time::Clock;
    crate::time::SystemClock.now()
}
