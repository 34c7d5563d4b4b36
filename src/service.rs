//! Executes [`Request`]s against a [`RunStore`]: validation, the engine's state machine,
//! and the shape of every answer.

use crate::api::*;
use crate::engine::DEFAULT_MAX_AGENTS;
use crate::engine::naming::check_identifier;
use crate::engine::naming::fork_worktree;
use crate::engine::{Brief, Change, Event, EventKind, NewRun, Run, RunStatus, Template, Workspace, builtin_template, builtin_templates};
use crate::engine::{EventLine, Guide, TaskBrief, codex_threads};
use crate::error::{BatonError, BatonResult};
use crate::limits::{MAX_ARTIFACTS_BYTES, MAX_HISTORY_BYTES, MAX_OUTPUT_BYTES, MAX_TEXT_BYTES, bounded, check_json_len, check_len};
use crate::store::{Commit, Mutation, RunQuery, RunStore, RunSummary, unknown_run};
use crate::time::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

mod changes;
mod graph;
mod retention;
pub mod run_ids;
mod upkeep;

const DEFAULT_TEMPLATE: &str = "feature";
const DEFAULT_LIST_LIMIT: u32 = 50;
const MAX_LIST_LIMIT: u32 = 1000;
/// Events shown in a resume briefing.
const BRIEFING_EVENTS: u64 = 10;
/// Most options a human question may offer, and the longest option.
const MAX_OPTIONS: usize = 20;
const MAX_OPTION_BYTES: usize = 200;
/// Bytes of an event's long text one `inspect` answer carries.
const EVENT_WINDOW_BYTES: usize = 16 * 1024;
/// Most sub-agents a run may ask for at once.
const MAX_AGENTS: u32 = 16;

/// The operations, over one store.
pub struct Service {
    store: Arc<dyn RunStore>,
    clock: Arc<dyn Clock>,
    /// The store's change feed, so live views can wait for a change.
    changes: changes::ChangeFeed,
}

impl Service {
    pub fn new(store: Arc<dyn RunStore>) -> Service {
        Service::with_clock(store, Arc::new(SystemClock))
    }

    /// A service whose notion of "now" comes from `clock` (tests move time by hand).
    pub fn with_clock(store: Arc<dyn RunStore>, clock: Arc<dyn Clock>) -> Service {
        Service { store, clock, changes: changes::ChangeFeed::new() }
    }

    /// The store it works on (the owner's notifier reads it too).
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Execute one request.
    pub async fn handle(&self, envelope: &Envelope) -> BatonResult<Reply> {
        let op = envelope.op_id.as_str();
        let caller = &envelope.caller;
        // A unique prefix of a run id stands for the whole id, in every request.
        let request = run_ids::resolve(self.store.as_ref(), &envelope.request).await?;
        match request.as_ref() {
            Request::StartWorkflow(p) => self.start_workflow(op, caller, p).await,
            Request::Advance(p) => self.advance(op, caller, p).await,
            Request::Checkpoint(p) => self.checkpoint(op, caller, p).await,
            Request::Resume(p) => self.resume(op, caller, p).await,
            Request::ForkRun(p) => self.fork(op, caller, &p.run_id, &p.checkpoint, p.title.clone()).await,
            Request::AwaitHuman(p) => {
                require_text("question", &p.question)?;
                check_len("question", p.question.len(), MAX_TEXT_BYTES)?;
                let options = p.options.clone().unwrap_or_default();
                check_options(&options)?;
                let change = Change::AskHuman { expected_version: p.expected_version, question: p.question.clone(), options };
                self.change(op, caller, &p.run_id, change).await
            }
            Request::AnswerHuman(p) => {
                require_text("answer", &p.answer)?;
                check_len("answer", p.answer.len(), MAX_TEXT_BYTES)?;
                check_len("comment", p.comment.as_ref().map_or(0, String::len), MAX_TEXT_BYTES)?;
                let task = match &p.task {
                    Some(task) => Some(task.clone()),
                    None => self.waiting_task(&p.run_id).await?,
                };
                let change = Change::AnswerHuman {
                    expected_version: p.expected_version,
                    task: task.clone(),
                    answer: p.answer.clone(),
                    comment: p.comment.clone(),
                    code: p.code.clone(),
                };
                match &task {
                    Some(task) => self.task_change(op, caller, &p.run_id, task, change, None).await,
                    None => self.change(op, caller, &p.run_id, change).await,
                }
            }
            Request::CancelRun(p) => {
                let reason = p.reason.clone().unwrap_or_else(|| "cancelled by the user".into());
                check_len("reason", reason.len(), MAX_TEXT_BYTES)?;
                self.change(op, caller, &p.run_id, Change::Cancel { expected_version: p.expected_version, reason }).await
            }
            Request::ListRuns(p) => self.list_runs(p).await,
            Request::GetRun(p) => self.get_run(p).await,
            Request::GetEvent(p) => self.get_event(p).await,
            Request::ListTemplates(_) => Ok(Reply::Templates(TemplateList { templates: self.all_templates().await? })),
            Request::RecordMerge(p) => {
                check_json_len("report", &serde_json::to_value(&p.report)?, MAX_TEXT_BYTES * 8)?;
                self.change(op, caller, &p.run_id, Change::RecordMerge { report: p.report.clone() }).await
            }
            Request::Supervise(p) => {
                check_json_len("record", &serde_json::to_value(&p.record)?, MAX_TEXT_BYTES)?;
                self.change(op, caller, &p.run_id, Change::Supervise { record: p.record.clone() }).await
            }
            Request::Verify(_) | Request::Backup(_) | Request::Export(_) | Request::Import(_) => {
                upkeep::handle(self.store.as_ref(), &envelope.request).await
            }
            Request::GetGraph(p) => self.get_graph(p).await,
            Request::WaitForChange(p) => self.changes.wait(|| self.store.changes(), p).await,
            Request::DeleteRun(p) => self.delete_run(p).await,
            Request::Prune(p) => self.prune(p).await,
            Request::OwnerStatus(_) => Err(BatonError::internal("the owner's status is answered by the owner process, not the service")),
        }
    }

    /// Apply `change` to a run and answer with the brief for whoever acts next.
    async fn change(&self, op: &str, caller: &Caller, run_id: &str, change: Change) -> BatonResult<Reply> {
        let run = self.commit_change(op, caller, run_id, change, None).await?;
        Ok(Reply::Brief(Box::new(Brief::of(&run, Guide::FirstTime))))
    }

    /// Report the run's current step, or (with `task`) a task of its fan-out.
    async fn advance(&self, op: &str, caller: &Caller, p: &AdvanceParams) -> BatonResult<Reply> {
        check_len("output", p.output.len(), MAX_OUTPUT_BYTES)?;
        let artifacts = p.artifacts.clone().unwrap_or_default();
        let (outcome, output) = (p.outcome.clone(), p.output.clone());
        let Some(task) = &p.task else {
            let expected_version = p.expected_version.ok_or_else(|| {
                BatonError::invalid(
                    "expected_version",
                    "`expected_version` is required to advance a run",
                    "Pass the `version` of the brief you are acting on (for a task, pass `task` and `lease_token` instead).",
                )
            })?;
            let change = Change::Advance { expected_version, outcome, output, artifacts, plan: p.plan.clone(), code: p.code.clone() };
            return self.change(op, caller, &p.run_id, change).await;
        };
        if p.plan.is_some() {
            return Err(BatonError::invalid("plan", "a task's outcome never fans out", "Omit `plan` when reporting a task."));
        }
        let token = p.lease_token.ok_or_else(|| {
            BatonError::invalid(
                "lease_token",
                "reporting a task needs the lease token of your claim",
                "Pass the `lease_token` from the task's brief.",
            )
        })?;
        let change = Change::TaskAdvance { task: task.clone(), token, outcome, output, artifacts, code: p.code.clone() };
        self.task_change(op, caller, &p.run_id, task, change, None).await
    }

    /// Apply a change to a task and answer with that task's brief (with `token` when the
    /// caller holds its lease).
    async fn task_change(
        &self,
        op: &str,
        caller: &Caller,
        run_id: &str,
        task: &str,
        change: Change,
        token: Option<u64>,
    ) -> BatonResult<Reply> {
        let run = self.commit_change(op, caller, run_id, change, None).await?;
        task_reply(&run, task, token)
    }

    /// The one path by which requests change existing runs.
    async fn commit_change(&self, op: &str, caller: &Caller, run_id: &str, change: Change, checkpoint: Option<String>) -> BatonResult<Run> {
        let (actor, now, id) = (caller.actor.clone(), self.clock.now(), run_id.to_string());
        let mutation: Mutation = Box::new(move |current| {
            let mut run = current.ok_or_else(|| unknown_run(&id))?;
            let event = run.apply(&change, &actor, now)?;
            Ok(Commit { checkpoint: checkpoint.clone(), ..Commit::new(run, event) })
        });
        self.commit(op, run_id, mutation).await
    }

    /// Write a mutation (live views learn of it through the store's change feed).
    async fn commit(&self, op: &str, run_id: &str, mutation: Mutation) -> BatonResult<Run> {
        self.store.commit(op, run_id, mutation).await
    }

    /// Store a new run, created by request `op` (whose id becomes the run's id).
    async fn create(&self, op: &str, commit: Commit) -> BatonResult<Run> {
        let mutation: Mutation = Box::new(move |current| match current {
            // A retried creation is recognised by its op id before the mutation runs.
            Some(existing) => Err(BatonError::internal(format!("run id {} already exists", existing.id))),
            None => Ok(commit.clone()),
        });
        self.commit(op, op, mutation).await
    }

    async fn start_workflow(&self, op: &str, caller: &Caller, p: &StartWorkflowParams) -> BatonResult<Reply> {
        require_text("goal", &p.goal)?;
        check_len("goal", p.goal.len(), MAX_TEXT_BYTES)?;
        let title = title_or(p.title.clone(), || default_title(&p.goal))?;
        let context = p.context.clone().unwrap_or_default();
        check_json_len("context", &serde_json::Value::Object(context.clone()), MAX_ARTIFACTS_BYTES)?;
        let (template, is_new) = self.resolve_template(p).await?;
        let replaces = is_new && self.store.template(&template.name).await?.is_some_and(|stored| stored != template);
        let new = NewRun {
            id: op.to_string(),
            template: template.clone(),
            goal: p.goal.clone(),
            title,
            context,
            workspace: caller.workspace.clone(),
            max_agents: bounded("max_agents", p.max_agents, DEFAULT_MAX_AGENTS, 1..=MAX_AGENTS)?,
        };
        let (run, event) = Run::start(new, &caller.actor, self.clock.now());
        let run = self.create(op, Commit { template: is_new.then_some(template), ..Commit::new(run, event) }).await?;
        let mut brief = Brief::of(&run, Guide::FirstTime);
        if replaces {
            brief.note =
                Some(format!("Saved template `{}`, replacing its previous definition (earlier runs keep theirs).", run.template.name));
        }
        Ok(Reply::Brief(Box::new(brief)))
    }

    /// The template to run, and whether it is user-defined (to be remembered by name).
    async fn resolve_template(&self, p: &StartWorkflowParams) -> BatonResult<(Template, bool)> {
        let (custom, field) = match (&p.template, &p.template_definition, &p.template_file) {
            (None, None, None) | (Some(_), None, None) => {
                let name = p.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
                if let Some(builtin) = builtin_template(name) {
                    return Ok((builtin, false));
                }
                return match self.store.template(name).await? {
                    Some(stored) => Ok((stored, false)),
                    None => Err(BatonError::not_found(
                        "template",
                        format!("no template named `{name}`"),
                        format!("Use one of: {}; or pass `template_definition` / `template_file`.", names_of(&self.all_templates().await?)),
                    )),
                };
            }
            (None, Some(definition), None) => (definition, "template_definition"),
            // The calling process read the file into `template_definition` (see crate::template_file).
            (None, Some(definition), Some(_)) => (definition, "template_file"),
            (None, None, Some(path)) => {
                return Err(BatonError::invalid(
                    "template_file",
                    format!("template file {path} was not read by the calling process"),
                    "Send the template's content as `template_definition` (baton's MCP server and CLI read files for you).",
                ));
            }
            _ => {
                return Err(BatonError::invalid(
                    "template",
                    "more than one of `template`, `template_definition` and `template_file` was given",
                    "Give only one: a template name, an inline definition, or a file path.",
                ));
            }
        };
        custom.validate(field)?;
        if builtin_template(&custom.name).is_some() {
            return Err(BatonError::invalid(
                if field == "template_file" { field.to_string() } else { format!("{field}.name") },
                format!("`{}` is a built-in template name", custom.name),
                "Give your template another name.",
            ));
        }
        Ok((custom.clone(), true))
    }

    /// Built-in templates, then the ones users defined.
    async fn all_templates(&self) -> BatonResult<Vec<Template>> {
        let mut templates = builtin_templates();
        templates.extend(self.store.templates().await?);
        Ok(templates)
    }

    async fn checkpoint(&self, op: &str, caller: &Caller, p: &CheckpointParams) -> BatonResult<Reply> {
        check_identifier(&p.name, "name")?;
        check_len("note", p.note.as_ref().map_or(0, String::len), MAX_TEXT_BYTES)?;
        let change = Change::Checkpoint {
            expected_version: p.expected_version,
            name: p.name.clone(),
            note: p.note.clone(),
            workspace: caller.workspace.clone().filter(|w| w.git_head.is_some()),
        };
        let run = self.commit_change(op, caller, &p.run_id, change, Some(p.name.clone())).await?;
        Ok(Reply::Checkpoint(CheckpointSaved {
            run_id: run.id.clone(),
            checkpoint: p.name.clone(),
            version: run.version,
            workspace: caller.workspace.clone().filter(|w| w.git_head.is_some()),
            how_to_fork: format!("Call `resume` with run_id \"{}\" and checkpoint \"{}\" to start a new run from here.", run.id, p.name),
            note: None,
        }))
    }

    async fn resume(&self, op: &str, caller: &Caller, p: &ResumeParams) -> BatonResult<Reply> {
        match p.intent()? {
            Resume::List(ListOpen { all_workspaces }) => self.open_runs(caller, all_workspaces).await,
            Resume::Briefing(RunBriefing { run_id }) => self.briefing(&run_id).await,
            Resume::Fork(ForkCheckpoint { run_id, checkpoint, title }) => self.fork(op, caller, &run_id, &checkpoint, title).await,
            Resume::ForkAt(ForkAt { run_id, version, title }) => self.fork_at(op, caller, &run_id, version, title).await,
            Resume::Claim(Claim { run_id, target, lease_seconds }) => {
                let change =
                    Change::Claim { task: target.task().map(str::to_string), lease: Duration::from_secs(u64::from(lease_seconds)) };
                let run = self.commit_change(op, caller, &run_id, change, None).await?;
                let claimed =
                    run.fanout.iter().flat_map(|f| &f.tasks).find(|t| t.lease.as_ref().is_some_and(|l| l.token == run.last_token));
                match claimed {
                    Some(task) => task_reply(&run, &task.id.clone(), Some(run.last_token)),
                    None => Err(BatonError::internal(format!("run {run_id} recorded a claim but no task holds its lease"))),
                }
            }
            Resume::Release(Release { run_id, task, lease_token: token }) => {
                self.task_change(op, caller, &run_id, &task, Change::Release { task: task.clone(), token }, None).await
            }
            Resume::Renew(Renew { run_id, task, lease_token: token, lease_seconds }) => {
                let change = Change::Renew { task: task.clone(), token, lease: Duration::from_secs(u64::from(lease_seconds)) };
                self.task_change(op, caller, &run_id, &task, change, Some(token)).await
            }
            Resume::Show(ShowTask { run_id, task }) => task_reply(&self.load(&run_id).await?, &task, None),
        }
    }

    /// Unfinished runs: the caller's workspace's, unless it has none or all are asked for.
    async fn open_runs(&self, caller: &Caller, all_workspaces: bool) -> BatonResult<Reply> {
        let everywhere = RunQuery { status: StatusFilter::Open, limit: DEFAULT_LIST_LIMIT as usize, ..RunQuery::default() };
        let here = caller.workspace.as_ref().map(|w| w.key().to_string()).filter(|_| !all_workspaces);
        let Some(workspace) = here else {
            let page = self.store.list(&everywhere).await?;
            return Ok(Reply::Runs(run_list(page.runs, page.total, None, None)));
        };
        let local = self.store.list(&RunQuery { workspace: Some(workspace.clone()), ..everywhere.clone() }).await?;
        let all = self.store.list(&RunQuery { limit: 0, ..everywhere }).await?;
        let others = all.total.saturating_sub(local.total);
        Ok(Reply::Runs(run_list(local.runs, local.total, Some(workspace), Some(others))))
    }

    async fn briefing(&self, run_id: &str) -> BatonResult<Reply> {
        let run = self.load(run_id).await?;
        let from = run.version.saturating_sub(BRIEFING_EVENTS - 1).max(1);
        let events = self.store.events(run_id, from, run.version, MAX_HISTORY_BYTES).await?;
        Ok(Reply::Briefing(Box::new(Briefing {
            brief: Brief::of(&run, Guide::Always),
            codex_threads: codex_threads(&run, &events),
            recent_events: events.iter().map(EventLine::of).collect(),
            checkpoints: run.checkpoints.clone(),
            forked_from: run.forked_from.clone(),
        })))
    }

    async fn fork(&self, op: &str, caller: &Caller, run_id: &str, checkpoint: &str, title: Option<String>) -> BatonResult<Reply> {
        let source = self.load(run_id).await?;
        let snapshot = self.store.checkpoint(run_id, checkpoint).await?.ok_or_else(|| {
            let known = if source.checkpoints.is_empty() { "it has none".to_string() } else { source.checkpoints.join(", ") };
            BatonError::not_found(
                "checkpoint",
                format!("run {run_id} has no checkpoint `{checkpoint}` ({known})"),
                "Use a checkpoint name listed by `resume` or `inspect`, or save one with `checkpoint`.",
            )
        })?;
        let title = title_or(title, || format!("{} (fork of {checkpoint})", snapshot.title))?;
        let code = self.checkpoint_code(run_id, &snapshot).await?.and_then(|w| fork_workspace(w, op));
        let (mut run, event) = Run::fork(&snapshot, checkpoint, op.to_string(), &caller.actor, self.clock.now())?;
        run.title = title.clone();
        let mut event = event;
        if let EventKind::Forked { state: Some(state), .. } = &mut event.kind {
            state.title = title;
            if let Some(code) = &code {
                state.workspace = Some(code.clone());
            }
        }
        if code.is_some() {
            run.workspace = code;
        }
        let run = self.create(op, Commit::new(run, event)).await?;
        Ok(Reply::Brief(Box::new(Brief::of(&run, Guide::Always))))
    }

    /// Fork `run_id` at `version`: the new run's state is the replay of the run's events
    /// up to that version, its code the run's tree as the last step report up to there
    /// left it (restored into the fork's worktree by the caller, see `crate::gitops`).
    async fn fork_at(&self, op: &str, caller: &Caller, run_id: &str, version: u64, title: Option<String>) -> BatonResult<Reply> {
        let source = self.load(run_id).await?;
        let events = self.store.events(run_id, 1, version.min(source.version), usize::MAX).await?;
        if version > source.version {
            return Err(BatonError::invalid(
                "at_version",
                format!("run {run_id} has no version {version} (its versions are 1 to {})", source.version),
                format!("Give a version from 1 to {}: `baton show {run_id}` lists its events with their numbers.", source.version),
            ));
        }
        let mut snapshot = Run::replay_at(run_id, &events, version, "at_version")?;
        let label = source_label(&source, &events, version);
        let title = title_or(title, || format!("{} (fork at version {version}{label})", snapshot.title))?;
        let code = code_at(&events, &source).and_then(|w| fork_workspace(w, op));
        if let Some(code) = &code {
            snapshot.workspace = Some(code.clone());
        }
        snapshot.title = title;
        let (run, event) = Run::fork(&snapshot, "", op.to_string(), &caller.actor, self.clock.now())?;
        let run = self.create(op, Commit::new(run, event)).await?;
        Ok(Reply::Brief(Box::new(Brief::of(&run, Guide::Always))))
    }

    /// The code a checkpoint recorded (the caller's git state when it was taken), from the
    /// checkpoint's event: the snapshot of a checkpoint is the run right after that event.
    async fn checkpoint_code(&self, run_id: &str, snapshot: &Run) -> BatonResult<Option<Workspace>> {
        let events = self.store.events(run_id, snapshot.version, snapshot.version, usize::MAX).await?;
        Ok(events.into_iter().find_map(|e| match e.kind {
            EventKind::CheckpointSaved { workspace, .. } => workspace,
            _ => None,
        }))
    }

    async fn list_runs(&self, p: &ListRunsParams) -> BatonResult<Reply> {
        let limit = bounded_limit("limit", p.limit, DEFAULT_LIST_LIMIT)?;
        let query = RunQuery {
            status: p.status.unwrap_or_default(),
            template: p.template.clone(),
            workspace: p.workspace.clone(),
            limit: limit as usize,
            cursor: None,
        };
        let page = self.store.list(&query).await?;
        Ok(Reply::Runs(run_list(page.runs, page.total, p.workspace.clone(), None)))
    }

    async fn get_run(&self, p: &GetRunParams) -> BatonResult<Reply> {
        let limit = u64::from(bounded_limit("history_limit", p.history_limit, DEFAULT_LIST_LIMIT)?);
        let run = self.load(&p.run_id).await?;
        if let Some(step) = &p.step {
            return self.step_visits(run, step, limit, p.before_seq).await;
        }
        let end = p.before_seq.map_or(run.version, |b| b.saturating_sub(1).min(run.version));
        let start = end.saturating_sub(limit - 1).max(1);
        let events = self.store.events(&run.id, start, end, MAX_HISTORY_BYTES).await?;
        let first = events.first().map_or(start, |e| e.seq);
        Ok(Reply::Run(Box::new(RunDetails { summary: RunSummary::of(&run), events, next_before_seq: (first > 1).then_some(first), run })))
    }

    /// The reports of `step` (every visit: the run's own, and its tasks' steps of that
    /// name), oldest first: the last `limit` of those before `before_seq`, read a window
    /// of events at a time so a long history is never held at once.
    async fn step_visits(&self, run: Run, step: &str, limit: u64, before_seq: Option<u64>) -> BatonResult<Reply> {
        const WINDOW: u64 = 500;
        let end = before_seq.map_or(run.version, |b| b.saturating_sub(1).min(run.version));
        let mut found: Vec<Event> = Vec::new();
        let mut to = end;
        while to >= 1 && (found.len() as u64) < limit {
            let from = to.saturating_sub(WINDOW - 1).max(1);
            let mut window = self.store.events(&run.id, from, to, usize::MAX).await?;
            window.retain(
                |e| matches!(&e.kind, EventKind::Advanced { report, .. } | EventKind::TaskAdvanced { report, .. } if report.step == step),
            );
            window.append(&mut found);
            found = window;
            to = from - 1;
        }
        let cut = found.len().saturating_sub(limit as usize);
        let events: Vec<Event> = found.split_off(cut);
        let next_before_seq = events.first().map(|e| e.seq).filter(|_| cut > 0 || to >= 1);
        if events.is_empty()
            && run.template.step(step).is_none()
            && !run.fanout.iter().any(|f| f.pipelines.values().any(|p| p.step(step).is_some()))
        {
            return Err(BatonError::invalid(
                "step",
                format!("run {} has no step `{step}`", run.id),
                format!(
                    "Use a step of its template: {}.",
                    run.template.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(Reply::Run(Box::new(RunDetails { summary: RunSummary::of(&run), events, next_before_seq, run })))
    }

    async fn get_event(&self, p: &GetEventParams) -> BatonResult<Reply> {
        let run = self.load(&p.run_id).await?;
        let mut event = self.store.events(&p.run_id, p.seq, p.seq, usize::MAX).await?.pop().ok_or_else(|| {
            BatonError::not_found(
                "seq",
                format!("run {} has no event {} (its events are 1..={})", p.run_id, p.seq, run.version),
                format!("Use a seq from 1 to {}.", run.version),
            )
        })?;
        let text = long_text(&mut event).map(std::mem::take).unwrap_or_default();
        let offset = p.offset.unwrap_or(0);
        if offset > text.len() {
            return Err(BatonError::invalid(
                "offset",
                format!("offset {offset} is past the end of the text ({} bytes)", text.len()),
                "Use an offset returned as `next_offset`, or 0.",
            ));
        }
        let start = floor_char_boundary(&text, offset);
        let end = floor_char_boundary(&text, (start + EVENT_WINDOW_BYTES).min(text.len()));
        Ok(Reply::Event(Box::new(EventDetail {
            run_id: run.id,
            event,
            text: text[start..end].to_string(),
            offset: start,
            total_bytes: text.len(),
            next_offset: (end < text.len()).then_some(end),
        })))
    }

    /// The task an answer without `task` is for: none when the run itself waits (or
    /// nothing does: the engine says so), the one task when exactly one waits, and a
    /// refusal naming them when several do.
    async fn waiting_task(&self, run_id: &str) -> BatonResult<Option<String>> {
        let run = self.load(run_id).await?;
        if run.status == RunStatus::AwaitingHuman && run.pending_gate.is_some() {
            return Ok(None);
        }
        let waiting: Vec<String> = run.tasks_waiting().iter().map(|t| t.id.clone()).collect();
        match waiting.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            several => Err(BatonError::invalid(
                "task",
                format!("{} tasks of run {run_id} wait for an answer ({})", several.len(), several.join(", ")),
                "Name the task the answer is for with `task` (`--task` in the terminal).",
            )),
        }
    }

    async fn load(&self, run_id: &str) -> BatonResult<Run> {
        self.store.run(run_id).await?.ok_or_else(|| unknown_run(run_id))
    }
}

/// The long free text of an event (a report, goal, question, answer or reason), if any.
pub(crate) fn long_text(event: &mut Event) -> Option<&mut String> {
    match &mut event.kind {
        EventKind::Advanced { report, .. } | EventKind::TaskAdvanced { report, .. } => Some(&mut report.output),
        EventKind::Started { goal, .. } => Some(goal),
        EventKind::HumanAsked { question, .. } => Some(question),
        EventKind::HumanAnswered { answer, .. } => Some(answer),
        EventKind::Cancelled { reason } => Some(reason),
        EventKind::CheckpointSaved { .. }
        | EventKind::Forked { .. }
        | EventKind::TaskClaimed { .. }
        | EventKind::LeaseRenewed { .. }
        | EventKind::TaskReleased { .. }
        | EventKind::BranchesMerged { .. }
        | EventKind::Supervised { .. } => None,
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    crate::text::prefix(text, index).len()
}

/// `, checkpoint `name``, when a checkpoint was saved at `version` (named checkpoints are
/// labels on versions).
fn source_label(source: &Run, events: &[Event], version: u64) -> String {
    let named = events.iter().find_map(|e| match &e.kind {
        EventKind::CheckpointSaved { name, .. } if e.seq == version => Some(name.clone()),
        _ => None,
    });
    named.filter(|n| source.checkpoints.contains(n)).map(|n| format!(", checkpoint `{n}`")).unwrap_or_default()
}

/// The code of the run's tree as of the last of `events`: the state the latest step report
/// recorded (see [`crate::engine::tree_state_at`]), on the run's workspace.
fn code_at(events: &[Event], source: &Run) -> Option<Workspace> {
    let (head, state) = crate::engine::tree_state_at(events)?;
    let workspace = events.first().and_then(crate::engine::workspace_of).or_else(|| source.workspace.clone())?;
    Some(Workspace { git_head: Some(head), git_snapshot: Some(state), git_dirty: None, ..workspace })
}

/// Where a run forked from a checkpoint works: a fresh worktree of the checkpoint's
/// repository, to be restored to its code by the caller (see `crate::gitops`). `None` when
/// the checkpoint recorded no git state.
fn fork_workspace(code: Workspace, fork_id: &str) -> Option<Workspace> {
    let root = code.git_root.clone()?;
    code.git_head.as_ref()?;
    Some(Workspace { cwd: fork_worktree(&root, fork_id).dir, ..code })
}

/// The brief of `task` of `run`.
fn task_reply(run: &Run, task: &str, token: Option<u64>) -> BatonResult<Reply> {
    let found = run.fanout.as_ref().and_then(|f| f.task(task)).ok_or_else(|| {
        BatonError::not_found("task", format!("run {} has no task `{task}`", run.id), "Use a task id from the run's brief (`tasks`).")
    })?;
    Ok(Reply::Task(Box::new(TaskBrief::of(run, found, token))))
}

fn run_list(runs: Vec<RunSummary>, total: usize, workspace: Option<String>, other_workspaces: Option<usize>) -> RunList {
    let next_action = match (runs.first(), other_workspaces) {
        (None, Some(others)) if others > 0 => {
            format!(
                "No unfinished runs in this workspace; {others} in other workspaces: call `resume` with all_workspaces true to see them."
            )
        }
        (None, _) => "No runs to resume: start one with `start_workflow`.".to_string(),
        (Some(_), _) => "Call `resume` with a run_id for its full briefing, then continue from its next_action.".to_string(),
    };
    RunList { runs, total, workspace, other_workspaces, next_action }
}

fn check_options(options: &[String]) -> BatonResult<()> {
    if options.len() > MAX_OPTIONS {
        return Err(BatonError::invalid(
            "options",
            format!("{} options were given; the limit is {MAX_OPTIONS}", options.len()),
            "Offer fewer options, or omit them for a free-text answer.",
        ));
    }
    for (i, option) in options.iter().enumerate() {
        if option.trim().is_empty() {
            return Err(BatonError::invalid(format!("options[{i}]"), "an option is empty", "Remove it or give it text."));
        }
        check_len(&format!("options[{i}]"), option.len(), MAX_OPTION_BYTES)?;
        if options[..i].iter().any(|o| o.eq_ignore_ascii_case(option)) {
            return Err(BatonError::invalid(
                format!("options[{i}]"),
                format!("option `{option}` is given twice"),
                "List each option once.",
            ));
        }
    }
    Ok(())
}

fn names_of(templates: &[Template]) -> String {
    templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn require_text(field: &str, value: &str) -> BatonResult<()> {
    if value.trim().is_empty() {
        return Err(BatonError::invalid(field, format!("`{field}` is empty"), format!("Give `{field}` some text.")));
    }
    Ok(())
}

fn bounded_limit(field: &str, value: Option<u32>, default: u32) -> BatonResult<u32> {
    match value.unwrap_or(default) {
        0 => Err(BatonError::invalid(field, format!("`{field}` must be at least 1"), "Omit it for the default.")),
        n if n > MAX_LIST_LIMIT => {
            Err(BatonError::invalid(field, format!("`{field}` is {n}; the maximum is {MAX_LIST_LIMIT}"), "Page with a smaller value."))
        }
        n => Ok(n),
    }
}

/// The caller's title, checked, or `default()` when none (or a blank one) was given.
fn title_or(title: Option<String>, default: impl FnOnce() -> String) -> BatonResult<String> {
    check_len("title", title.as_ref().map_or(0, String::len), MAX_TEXT_BYTES)?;
    Ok(title.filter(|t| !t.trim().is_empty()).unwrap_or_else(default))
}

fn default_title(goal: &str) -> String {
    crate::text::first_line(goal.trim(), 60)
}
