//! The pages: server-rendered HTML from templates embedded in the binary (minijinja,
//! auto-escaping every value), fed by small view models built from baton's replies.
//! Templates only lay things out; what to show is decided here.

use crate::api::{Deleted, RunDetails, RunList};
use crate::engine::naming::run_short;
use crate::engine::{Event, EventKind, RunStatus};
use crate::error::BatonError;
use crate::graph::GraphView;
use crate::graph::to_mermaid;
use crate::graph::to_svg;
use crate::store::RunSummary;
use crate::time::Timestamp;
use minijinja::{Environment, Value};
use serde::Serialize;

/// Bytes of an event's long text shown before "load all".
const EXCERPT_BYTES: usize = 4096;
/// Bytes of one artifact's JSON shown.
const ARTIFACT_BYTES: usize = 16 * 1024;

/// The page templates.
pub struct Views {
    env: Environment<'static>,
}

impl Views {
    pub fn new() -> Result<Views, minijinja::Error> {
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("templates/base.html"))?;
        env.add_template("runs.html", include_str!("templates/runs.html"))?;
        env.add_template("run.html", include_str!("templates/run.html"))?;
        env.add_template("prune.html", include_str!("templates/prune.html"))?;
        env.add_template("message.html", include_str!("templates/message.html"))?;
        env.add_template("diff.html", include_str!("templates/diff.html"))?;
        Ok(Views { env })
    }

    /// Render template `name` with `page` as its context.
    pub fn render<T: Serialize>(&self, name: &str, page: &T) -> Result<String, BatonError> {
        let template = self.env.get_template(name).map_err(|e| BatonError::internal(format!("page template {name}: {e}")))?;
        template.render(page).map_err(|e| BatonError::internal(format!("page {name} could not be rendered: {e:#}")))
    }
}

/// What every page carries.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// The database change counter the page shows (live updates compare against it).
    pub counter: u64,
    /// The address live updates re-read (a page answering a POST is not at its address).
    pub page: String,
    pub csrf: String,
    pub home: String,
    pub error: Option<BatonError>,
    pub notice: Option<String>,
}

/// The runs list's filters, as given.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RunsFilter {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct RunsPage {
    #[serde(flatten)]
    pub frame: Frame,
    pub filter: RunsFilter,
    pub statuses: &'static [&'static str],
    pub templates: Vec<String>,
    pub workspaces: Vec<String>,
    pub runs: Vec<RunRow>,
    pub total: usize,
}

/// Statuses the list filters by, as `StatusFilter` spells them.
pub const STATUSES: &[&str] = &["all", "open", "active", "awaiting_human", "completed", "failed", "cancelled"];

#[derive(Debug, Serialize)]
pub struct RunRow {
    pub id: String,
    pub title: String,
    pub status: &'static str,
    pub step: Option<String>,
    pub role: Option<String>,
    pub template: String,
    pub workspace: Option<String>,
    pub version: u64,
    pub updated: String,
    pub question: Option<String>,
    /// Set when `baton drive` drives (or drove) the run.
    pub driven: Option<DrivenRow>,
}

/// The list's drive column: by whom, and how many agents work now.
#[derive(Debug, Serialize)]
pub struct DrivenRow {
    /// The drivers, as people read them (`host pid 4242`), comma-separated.
    pub by: String,
    /// Their full ids (`host:pid:id`), for the cell's title.
    pub ids: String,
    pub agents: u32,
    pub turns: u64,
    pub tokens: u64,
    /// Every driver with agents recorded as working has stopped (a process of this machine
    /// that no longer runs): its agents work no more until a new `baton drive` carries on.
    pub gone: bool,
}

impl DrivenRow {
    fn of(d: &crate::store::Driven) -> DrivenRow {
        let by: Vec<String> = d.drivers.iter().map(|id| driver_label(id)).collect();
        let gone = d.agents > 0 && !d.drivers.is_empty() && d.drivers.iter().all(|id| crate::drive::driver_is_gone(id));
        DrivenRow {
            by: by.join(", "),
            ids: d.drivers.join(", "),
            agents: if gone { 0 } else { d.agents },
            turns: d.turns,
            tokens: d.tokens,
            gone,
        }
    }
}

/// A driver id `host:pid:uuid` as a person reads it: `host pid 4242`.
fn driver_label(id: &str) -> String {
    let mut parts = id.split(':');
    match (parts.next(), parts.next()) {
        (Some(host), Some(pid)) if !pid.is_empty() => format!("{host} pid {pid}"),
        _ => id.to_string(),
    }
}

impl RunsPage {
    pub fn new(frame: Frame, filter: RunsFilter, list: Option<RunList>, templates: Vec<String>) -> RunsPage {
        let (runs, total) = list.map(|l| (l.runs, l.total)).unwrap_or_default();
        let mut workspaces: Vec<String> = runs.iter().filter_map(|r| r.workspace.clone()).collect();
        workspaces.sort();
        workspaces.dedup();
        RunsPage { frame, filter, statuses: STATUSES, templates, workspaces, runs: runs.iter().map(RunRow::of).collect(), total }
    }
}

impl RunRow {
    fn of(s: &RunSummary) -> RunRow {
        RunRow {
            id: s.run_id.clone(),
            title: s.title.clone(),
            status: s.status.as_str(),
            step: s.step.clone(),
            role: s.role.clone(),
            template: s.template.clone(),
            workspace: s.workspace.clone(),
            version: s.version,
            updated: when(s.updated_at),
            question: s.question.clone(),
            driven: s.driven.as_ref().map(DrivenRow::of),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunPage {
    #[serde(flatten)]
    pub frame: Frame,
    pub run: RunHead,
    pub gates: Vec<GateView>,
    /// The workflow graph as inline SVG (built by baton, not from input: marked safe).
    pub graph_svg: Value,
    pub mermaid: String,
    pub tasks: Vec<TaskRow>,
    /// What `baton drive` recorded, when the run is driven.
    pub drive: Option<DriveView>,
    pub events: Vec<EventRow>,
    /// `before` for the next page of older events.
    pub older: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RunHead {
    pub id: String,
    pub title: String,
    pub status: &'static str,
    pub finished: bool,
    pub template: String,
    pub version: u64,
    pub step: Option<String>,
    pub role: Option<String>,
    pub workspace: Option<String>,
    /// The workspace path cut after each `/`, so the page can wrap it between directories
    /// rather than inside a name.
    pub workspace_parts: Vec<String>,
    pub git_head: Option<String>,
    pub created: String,
    pub updated: String,
    pub started_by: String,
    pub last_actor: String,
    pub goal: String,
    pub end_reason: Option<String>,
    pub forked_from: Option<String>,
    pub artifacts: Vec<(String, String)>,
    pub checkpoints: Vec<String>,
}

/// A pending human question, of the run or of one task.
#[derive(Debug, Serialize)]
pub struct GateView {
    pub task: Option<String>,
    pub question: String,
    pub options: Vec<String>,
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct TaskRow {
    pub id: String,
    pub title: String,
    pub status: &'static str,
    pub step: Option<String>,
    pub holder: Option<String>,
    pub lease_until: Option<String>,
    pub depends_on: String,
}

/// A driven run: who drives it, the totals, and its agents (newest first).
#[derive(Debug, Serialize)]
pub struct DriveView {
    pub summary: String,
    pub agents: Vec<AgentRow>,
}

#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub unit: String,
    pub role: String,
    pub thread: String,
    pub driver: String,
    pub attempts: u32,
    pub tokens: u64,
    pub working: bool,
    pub updated: String,
}

impl DriveView {
    fn of(drive: &crate::engine::DriveState) -> DriveView {
        let mut agents: Vec<AgentRow> = drive
            .units
            .iter()
            .map(|(unit, u)| AgentRow {
                unit: unit.clone(),
                role: u.role.clone().unwrap_or_default(),
                thread: u.thread_id.clone().unwrap_or_default(),
                driver: u.driver.clone(),
                attempts: u.attempts,
                tokens: u.tokens,
                working: u.working,
                updated: when(u.updated_at),
            })
            .collect();
        agents.sort_by(|a, b| b.updated.cmp(&a.updated));
        DriveView { summary: crate::drive::summary(drive).lines().next().unwrap_or_default().to_string(), agents }
    }
}

#[derive(Debug, Serialize)]
pub struct EventRow {
    pub seq: u64,
    pub at: String,
    pub by: String,
    pub actor_kind: String,
    pub kind: &'static str,
    pub outcome: Option<String>,
    pub summary: String,
    /// The comment a person gave with an answer.
    pub comment: Option<String>,
    /// The start of the event's long text (its report, goal, question, answer or reason).
    pub text: Option<String>,
    /// Its whole length, when `text` holds only the start.
    pub more_bytes: Option<usize>,
}

impl RunPage {
    pub fn new(frame: Frame, details: RunDetails, graph: &GraphView) -> RunPage {
        let RunDetails { run, events, next_before_seq, .. } = details;
        let def = run.current_step.as_deref().and_then(|s| run.template.step(s));
        let mut gates: Vec<GateView> = run.pending_gate.iter().map(|g| gate(None, g)).collect();
        for task in run.fanout.iter().filter(|f| !f.joined).flat_map(|f| &f.tasks) {
            gates.extend(task.gate.iter().map(|g| gate(Some(task.id.clone()), g)));
        }
        let tasks = graph
            .tasks
            .iter()
            .flat_map(|t| &t.tasks)
            .map(|t| TaskRow {
                id: t.id.clone(),
                title: t.title.clone(),
                status: t.status.as_str(),
                step: t.step.clone(),
                holder: t.holder.clone(),
                lease_until: t.lease_expires_at.map(when),
                depends_on: t.depends_on.join(", "),
            })
            .collect();
        let head = RunHead {
            id: run.id.clone(),
            title: run.title.clone(),
            status: run.status.as_str(),
            finished: run.status.is_finished(),
            template: run.template.name.clone(),
            version: run.version,
            step: run.current_step.clone(),
            role: def.map(|d| d.role.clone()),
            workspace: run.workspace.as_ref().map(|w| w.key().to_string()),
            workspace_parts: run.workspace.as_ref().map(|w| path_parts(w.key())).unwrap_or_default(),
            git_head: run.workspace.as_ref().and_then(|w| w.git_head.clone()),
            created: when(run.created_at),
            updated: when(run.updated_at),
            started_by: run.started_by.label(),
            last_actor: run.last_actor.label(),
            goal: run.goal.clone(),
            end_reason: run.end_reason.clone(),
            forked_from: crate::rewind::lineage(&run).map(|l| l.trim_start_matches("Forked from ").to_string()),
            artifacts: run.artifacts.iter().map(|(name, value)| (name.clone(), pretty(value))).collect(),
            checkpoints: run.checkpoints.clone(),
        };
        RunPage {
            frame,
            run: head,
            gates,
            graph_svg: Value::from_safe_string(to_svg(graph)),
            mermaid: to_mermaid(graph),
            tasks,
            drive: run.drive.as_ref().map(DriveView::of),
            events: events.into_iter().rev().map(EventRow::of).collect(),
            older: next_before_seq,
        }
    }
}

/// `path` in pieces that each end with `/` (the last one may not).
fn path_parts(path: &str) -> Vec<String> {
    path.split_inclusive('/').map(str::to_string).collect()
}

/// What the page says after a person's answer made event `seq`: what was recorded, and
/// what happens next. None when that event is not an answer (or no longer on the page).
pub fn answer_notice(details: &RunDetails, seq: u64) -> Option<String> {
    let event = details.events.iter().find(|e| e.seq == seq)?;
    let EventKind::HumanAnswered { answer, comment, task, .. } = &event.kind else { return None };
    let run = &details.run;
    let whose = task.as_ref().map(|t| format!(" for task {t}")).unwrap_or_default();
    let with = if comment.is_some() { ", with your comment" } else { "" };
    let recorded = format!("Your answer “{answer}”{whose} is recorded (event #{seq}{with}).");
    let task_now = task.as_ref().and_then(|t| run.fanout.as_ref()?.task(t));
    let next = if run.status.is_finished() {
        format!("The run is {} now.", run.status.as_str())
    } else if run.status == RunStatus::AwaitingHuman || !run.tasks_waiting().is_empty() {
        "Another question waits for you below.".to_string()
    } else if let Some(task) = task_now {
        match (task.status, &task.step) {
            (status, _) if status.has_joined() => {
                format!("Task {} is {}; the run goes on without waiting for it.", task.id, status.as_str())
            }
            (_, Some(step)) => format!(
                "Next, task {} goes on at step {step}: the next agent working on this run picks it up when it asks baton for work.",
                task.id
            ),
            (status, None) => format!("Task {} is {} now.", task.id, status.as_str()),
        }
    } else {
        let step = run.current_step.as_deref().unwrap_or("its next step");
        let role = run.current_step.as_deref().and_then(|s| run.template.step(s)).map(|d| format!(" ({})", d.role)).unwrap_or_default();
        format!(
            "Next, the run goes on at step {step}{role}: the Codex session working on it plays that step the next time it calls baton; if none is, ask Codex to resume baton run {}.",
            run_short(&run.id)
        )
    };
    Some(format!("{recorded} {next}"))
}

fn gate(task: Option<String>, g: &crate::engine::HumanGate) -> GateView {
    let kind = match g.kind {
        crate::engine::GateKind::Question => "question",
        crate::engine::GateKind::LoopLimit { .. } => "loop limit",
        crate::engine::GateKind::TaskFailed => "task failed",
    };
    GateView { task, question: g.question.clone(), options: g.options.clone(), kind }
}

impl EventRow {
    fn of(mut event: Event) -> EventRow {
        let line = crate::engine::EventLine::of(&event);
        let outcome = match &event.kind {
            EventKind::Advanced { report, .. } | EventKind::TaskAdvanced { report, .. } => Some(report.outcome.clone()),
            _ => None,
        };
        let comment = match &event.kind {
            EventKind::HumanAnswered { comment, .. } => comment.clone(),
            _ => None,
        };
        let whole = crate::service::long_text(&mut event).map(std::mem::take).filter(|t| !t.is_empty());
        let more_bytes = whole.as_ref().filter(|t| t.len() > EXCERPT_BYTES).map(String::len);
        let text = whole.map(|t| crate::text::prefix(&t, EXCERPT_BYTES).to_string());
        EventRow {
            seq: event.seq,
            at: when(event.at),
            by: line.by,
            actor_kind: serde_json::to_value(event.actor.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            kind: event.kind.name(),
            outcome,
            summary: line.summary,
            comment,
            text,
            more_bytes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PrunePage {
    #[serde(flatten)]
    pub frame: Frame,
    pub older_than: String,
    pub dry_run: bool,
    pub runs: Vec<RunRow>,
}

impl PrunePage {
    pub fn new(frame: Frame, older_than: String, deleted: Deleted) -> PrunePage {
        PrunePage { frame, older_than, dry_run: deleted.dry_run, runs: deleted.runs.iter().map(RunRow::of).collect() }
    }
}

/// A page with a title and the frame's error or notice (e.g. a run that is gone).
#[derive(Debug, Serialize)]
pub struct MessagePage {
    #[serde(flatten)]
    pub frame: Frame,
    pub title: String,
}

/// Events between the two versions listed on the compare page (`baton diff` lists all).
const DIFF_EVENTS: usize = 500;
/// Lines of the code diff's `--stat` shown on the compare page.
const DIFF_STAT_LINES: usize = 400;

/// Two versions of a run compared: what [`crate::rewind::diff`] found (the same
/// comparison `baton diff` prints), laid out for the page; or only the form to pick the
/// versions, with the error that refused them.
#[derive(Debug, Serialize)]
pub struct DiffPage {
    #[serde(flatten)]
    pub frame: Frame,
    pub run_id: String,
    /// The versions as asked (the form shows them again).
    pub from: String,
    pub to: String,
    /// The same comparison in the terminal, whole.
    pub command: String,
    pub diff: Option<DiffView>,
}

#[derive(Debug, Serialize)]
pub struct DiffView {
    pub from: SideView,
    pub to: SideView,
    pub events: Vec<DiffEvent>,
    /// Events in between not listed here.
    pub more_events: usize,
    pub outcomes: Vec<crate::rewind::OutcomeChange>,
    pub artifacts: crate::rewind::ArtifactChanges,
    pub code: Option<CodeView>,
}

#[derive(Debug, Serialize)]
pub struct SideView {
    pub version: u64,
    pub status: &'static str,
    pub step: Option<String>,
    pub visit: u32,
    pub tasks: String,
}

#[derive(Debug, Serialize)]
pub struct DiffEvent {
    pub seq: u64,
    pub at: String,
    pub by: String,
    pub kind: String,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct CodeView {
    pub repo: String,
    pub from: String,
    pub to: String,
    pub unchanged: bool,
    /// `git -C repo diff A B`: the whole diff, uncut.
    pub git_command: String,
    pub stat: Vec<String>,
    pub more_stat: usize,
    /// The patch's lines, each with its kind (`file`, `hunk`, `add`, `del`, `ctx`) for
    /// colour; the template escapes their text.
    pub lines: Vec<(&'static str, String)>,
    /// Bytes shown, when the patch was cut.
    pub cut_at: Option<usize>,
}

impl DiffPage {
    pub fn new(frame: Frame, run_id: &str, from: String, to: String, diff: Option<crate::rewind::RunDiff>) -> DiffPage {
        let command = format!("baton diff {run_id} --from {from} --to {to}");
        DiffPage { frame, run_id: run_id.to_string(), from, to, command, diff: diff.map(DiffView::of) }
    }
}

impl DiffView {
    fn of(diff: crate::rewind::RunDiff) -> DiffView {
        let crate::rewind::RunDiff { from, to, events, outcomes, artifacts, code, .. } = diff;
        let more_events = events.len().saturating_sub(DIFF_EVENTS);
        let events = events
            .into_iter()
            .take(DIFF_EVENTS)
            .map(|e| DiffEvent { seq: e.seq, at: when(e.at), by: e.by, kind: e.kind.replace('_', " "), summary: e.summary })
            .collect();
        DiffView { from: SideView::of(from), to: SideView::of(to), events, more_events, outcomes, artifacts, code: code.map(CodeView::of) }
    }
}

impl SideView {
    fn of(side: crate::rewind::Side) -> SideView {
        let visit = side.step.as_ref().and_then(|s| side.visits.get(s)).copied().unwrap_or(0);
        SideView { version: side.version, status: side.status, step: side.step, visit, tasks: side.tasks.join(", ") }
    }
}

impl CodeView {
    fn of(code: crate::rewind::CodeDiff) -> CodeView {
        let short = |c: &str| crate::engine::naming::short_id(c).to_string();
        let stat: Vec<String> = code.stat.lines().map(str::to_string).collect();
        let more_stat = stat.len().saturating_sub(DIFF_STAT_LINES);
        let lines = code.patch.lines().map(|l| (patch_line_kind(l), l.to_string())).collect();
        CodeView {
            git_command: format!("git -C {} diff {} {}", code.repo, code.from, code.to),
            unchanged: code.from == code.to,
            from: short(&code.from),
            to: short(&code.to),
            repo: code.repo,
            stat: stat.into_iter().take(DIFF_STAT_LINES).collect(),
            more_stat,
            lines,
            cut_at: code.truncated.then_some(code.patch.len()),
        }
    }
}

/// What a line of `git diff` output is, for its colour.
fn patch_line_kind(line: &str) -> &'static str {
    if line.starts_with("diff --git") || line.starts_with("+++ ") || line.starts_with("--- ") || line.starts_with("index ") {
        "file"
    } else if line.starts_with("@@") {
        "hunk"
    } else if line.starts_with('+') {
        "add"
    } else if line.starts_with('-') {
        "del"
    } else {
        "ctx"
    }
}

/// A time as people read it: `2026-11-25 17:44:54 UTC`.
pub fn when(t: Timestamp) -> String {
    let text = t.to_rfc3339();
    let (date, time) = text.split_once('T').unwrap_or((&text, ""));
    format!("{date} {} UTC", time.get(..8).unwrap_or(time))
}

fn pretty(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.len() <= ARTIFACT_BYTES {
        return text;
    }
    format!("{}\n… ({} bytes in all)", crate::text::prefix(&text, ARTIFACT_BYTES), text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Actor, Change, NewRun, Run, builtin_template};
    use crate::engine::{GateKind, HumanGate};
    use crate::time::Timestamp;

    fn frame() -> Frame {
        Frame { counter: 7, page: "/runs/r1".into(), csrf: "c".into(), home: "/h".into(), error: None, notice: None }
    }

    /// A parallel run fanned out into two tasks, one of which asks a human.
    fn run_with_task_gate() -> (Run, Vec<Event>) {
        let new = NewRun {
            id: "r1".into(),
            template: builtin_template("parallel").unwrap(),
            goal: "g".into(),
            title: "t".into(),
            context: Default::default(),
            workspace: None,
            max_agents: 4,
        };
        let (mut run, first) = Run::start(new, &Actor::default(), Timestamp(1));
        let change = crate::engine::fixtures::planned(1, crate::engine::fixtures::plan(&[("api", &[]), ("ui", &[])]));
        let second = run.apply(&change, &Actor::default(), Timestamp(2)).unwrap();
        let gate = HumanGate {
            kind: GateKind::TaskFailed,
            question: "Retry api?".into(),
            options: vec!["retry".into(), "skip".into()],
            step: "test".into(),
            asked_at: Timestamp(3),
        };
        run.fanout.as_mut().unwrap().tasks[0].gate = Some(gate);
        (run, vec![first, second])
    }

    #[test]
    fn a_tasks_question_gets_its_own_form_and_the_timeline_runs_newest_first() {
        let (run, events) = run_with_task_gate();
        let graph = GraphView::of(&run, &events);
        let details = RunDetails { summary: RunSummary::of(&run), run, events, next_before_seq: None };
        let page = RunPage::new(frame(), details, &graph);
        assert_eq!(page.gates.len(), 1);
        assert_eq!((page.gates[0].task.as_deref(), page.gates[0].kind), (Some("api"), "task failed"));
        assert_eq!(page.gates[0].options, ["retry", "skip"]);
        assert_eq!(page.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["api", "ui"]);
        assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(page.events[0].outcome.as_deref(), Some("planned"));
        let html = Views::new().unwrap().render("run.html", &page).unwrap();
        assert!(html.contains(r#"<input type="hidden" name="task" value="api">"#), "the answer names the task");
        assert!(html.contains(r#"<button type="submit" name="answer" value="retry">retry</button>"#));
        assert!(html.contains(r#"data-counter="7""#) && html.contains("<svg"));
        assert!(!html.contains("id=\"drive\""), "an undriven run shows no drive section");
    }

    #[test]
    fn a_driven_run_shows_its_driver_and_agents() {
        use crate::engine::{DriveAction, DriveRecord};
        let (mut run, mut events) = run_with_task_gate();
        let mut record = DriveRecord::new(DriveAction::Assigned, "task:api:implement#1", "vm:42:ab");
        record.thread_id = Some("thread-7".into());
        record.role = Some("implementer".into());
        record.attempt = 1;
        events.push(run.apply(&Change::Supervise { record }, &Actor::default(), Timestamp(4)).unwrap());
        let graph = GraphView::of(&run, &events);
        let details = RunDetails { summary: RunSummary::of(&run), run, events, next_before_seq: None };
        let page = RunPage::new(frame(), details, &graph);
        let drive = page.drive.as_ref().expect("a drive view");
        assert_eq!((drive.agents[0].thread.as_str(), drive.agents[0].working), ("thread-7", true));
        let html = Views::new().unwrap().render("run.html", &page).unwrap();
        assert!(html.contains("id=\"drive\"") && html.contains("thread-7") && html.contains("vm:42:ab"), "{html}");
    }

    #[test]
    fn the_runs_list_says_when_the_driver_of_working_agents_stopped() {
        use crate::engine::{DriveAction, DriveRecord};
        let host = crate::drive::this_host();
        // A process of this machine that has exited: its pid names no process now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let (mut run, _) = run_with_task_gate();
        let mut record = DriveRecord::new(DriveAction::Assigned, "task:api:implement#1", &format!("{host}:{pid}:ab12"));
        record.thread_id = Some("thread-7".into());
        run.apply(&Change::Supervise { record }, &Actor::default(), Timestamp(4)).unwrap();
        let list =
            RunList { runs: vec![RunSummary::of(&run)], total: 1, workspace: None, other_workspaces: None, next_action: String::new() };
        let page = RunsPage::new(frame(), RunsFilter::default(), Some(list), vec![]);
        let driven = page.runs[0].driven.as_ref().expect("the driven run is marked");
        assert!(driven.gone && driven.agents == 0, "{driven:?}");
        let html = Views::new().unwrap().render("runs.html", &page).unwrap();
        assert!(html.contains(&format!("the driver stopped: <code>baton drive {}</code>", run.id)), "{html}");
    }

    #[test]
    fn the_runs_list_marks_a_driven_run_with_its_driver_and_live_agents() {
        use crate::engine::{DriveAction, DriveRecord};
        // A driver of another machine: never known to be gone from here.
        let (mut run, _) = run_with_task_gate();
        let (undriven, _) = run_with_task_gate();
        for (unit, thread) in [("task:api:implement#1", "thread-7"), ("task:ui:implement#1", "thread-8")] {
            let mut record = DriveRecord::new(DriveAction::Assigned, unit, "elsewhere:4242:ab12");
            record.thread_id = Some(thread.into());
            record.attempt = 1;
            run.apply(&Change::Supervise { record }, &Actor::default(), Timestamp(4)).unwrap();
        }
        let mut ended = DriveRecord::new(DriveAction::TurnEnded, "task:ui:implement#1", "elsewhere:4242:ab12");
        ended.tokens = 300;
        run.apply(&Change::Supervise { record: ended }, &Actor::default(), Timestamp(5)).unwrap();
        let summaries = vec![RunSummary::of(&run), RunSummary { run_id: "r2".into(), ..RunSummary::of(&undriven) }];
        let list = RunList { runs: summaries, total: 2, workspace: None, other_workspaces: None, next_action: String::new() };
        let page = RunsPage::new(frame(), RunsFilter::default(), Some(list), vec![]);
        let driven = page.runs[0].driven.as_ref().expect("the driven run is marked");
        assert_eq!((driven.by.as_str(), driven.agents, driven.turns, driven.tokens), ("elsewhere pid 4242", 1, 2, 300));
        assert!(page.runs[1].driven.is_none(), "an undriven run is not marked");
        let html = Views::new().unwrap().render("runs.html", &page).unwrap();
        assert!(html.contains("<th>Driven</th>"), "{html}");
        assert!(html.contains(r#"<span title="elsewhere:4242:ab12">by elsewhere pid 4242</span>"#), "{html}");
        assert!(html.contains("1 agent working · 2 turns, 300 tokens"), "{html}");
        assert_eq!(html.matches("class=\"driven\"></td>").count(), 1, "the undriven run's cell is empty: {html}");
    }

    #[test]
    fn the_compare_page_escapes_the_code_colours_its_lines_and_says_when_it_is_cut() {
        use crate::rewind::{ArtifactChanges, CodeDiff, RunDiff, Side};
        let side = |version: u64, step: &str| Side {
            version,
            status: "active",
            step: Some(step.into()),
            visits: [(step.to_string(), 2)].into_iter().collect(),
            tasks: vec![],
        };
        let patch = "diff --git a/x.html b/x.html\n@@ -1 +1 @@\n-<b>old</b>\n+<i>new</i>\n same\n".to_string();
        let code = CodeDiff {
            repo: "/r".into(),
            from: "a".repeat(40),
            to: "b".repeat(40),
            stat: " x.html | 2 +-\n".into(),
            patch,
            truncated: true,
        };
        let diff = RunDiff {
            run_id: "r1".into(),
            from: side(2, "implement"),
            to: side(5, "review"),
            events: vec![],
            outcomes: vec![],
            artifacts: ArtifactChanges::default(),
            code: Some(code),
        };
        let page = DiffPage::new(frame(), "r1", "2".into(), "5".into(), Some(diff));
        let html = Views::new().unwrap().render("diff.html", &page).unwrap();
        assert!(html.contains(r#"<span class="del">-&lt;b&gt;old&lt;&#x2f;b&gt;"#), "{html}");
        assert!(html.contains(r#"<span class="add">+&lt;i&gt;new"#) && html.contains(r#"<span class="hunk">@@"#), "{html}");
        assert!(html.contains(r#"<span class="ctx"> same"#) && !html.contains("<b>old"), "{html}");
        assert!(html.contains("The diff is cut") && html.contains("baton diff r1 --from 2 --to 5"), "{html}");
        assert!(html.contains("at step <code>review</code> (visit 2)"), "{html}");
    }

    #[test]
    fn long_texts_are_cut_for_the_timeline_and_times_read_plainly() {
        let (_, mut events) = run_with_task_gate();
        if let EventKind::Advanced { report, .. } = &mut events[1].kind {
            report.output = "é".repeat(EXCERPT_BYTES);
        }
        let row = EventRow::of(events[1].clone());
        assert_eq!(row.more_bytes, Some(2 * EXCERPT_BYTES));
        assert!(row.text.as_ref().is_some_and(|t| t.len() <= EXCERPT_BYTES && t.chars().all(|c| c == 'é')));
        assert_eq!(when(Timestamp::parse("2026-11-25T17:44:54.123Z").unwrap()), "2026-11-25 17:44:54 UTC");
    }
}
