//! The briefing handed to whoever plays the next role: what to do, with what context,
//! and exactly how to report back.
//!
//! Briefs are read by models whose tool output is cut (Codex keeps the first and last
//! ~24,000 characters), so a brief puts the fields an agent acts on first, caps every long
//! text with a pointer to the whole of it, and stays within [`MAX_BRIEF_BYTES`] whatever
//! was reported.

use super::event::{Actor, ActorKind, Event, EventKind, Workspace};
use super::merge::MergeState;
use super::run::{HumanExchange, HumanGate, Run, RunStatus, StepOutput};
pub use super::task_brief::{TaskBrief, TaskLine, TasksOverview};
use crate::text::first_line;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Upper bound of a serialized brief.
pub const MAX_BRIEF_BYTES: usize = 16 * 1024;
/// How many recent human answers a brief repeats.
const RECENT_ANSWERS: usize = 3;

/// Byte caps for the long texts of a brief, loosest first; [`Brief::of`] takes the first
/// set under which the whole brief fits in [`MAX_BRIEF_BYTES`].
#[derive(Clone, Copy)]
struct Caps {
    task_lines: usize,
    goal: usize,
    instructions: usize,
    feedback: usize,
    prior_output: usize,
    question: usize,
    answer: usize,
    json: usize,
}

const CAPS: [Caps; 3] = [
    Caps { task_lines: 40, goal: 2048, instructions: 2048, feedback: 4096, prior_output: 1024, question: 2048, answer: 512, json: 1536 },
    Caps { task_lines: 20, goal: 1024, instructions: 1024, feedback: 2048, prior_output: 384, question: 1024, answer: 256, json: 512 },
    Caps { task_lines: 8, goal: 512, instructions: 512, feedback: 1024, prior_output: 128, question: 512, answer: 128, json: 128 },
];

/// One outcome the current role may report, and where it leads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeChoice {
    pub outcome: String,
    /// Next step, `done` or `failed`.
    pub leads_to: String,
}

/// A role's report, shortened when long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputExcerpt {
    pub step: String,
    pub role: String,
    pub outcome: String,
    /// The report (its start, when `output_bytes` says it is longer).
    pub output: String,
    /// Set when `output` is cut: the report's full length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    /// Set when `output` is cut: how to read all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_more: Option<String>,
    /// The `seq` of the event that recorded it.
    pub seq: u64,
    /// Who reported it.
    pub by: String,
}

/// The pending question for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingQuestion {
    pub question: String,
    /// Allowed answers; empty means free text.
    pub options: Vec<String>,
    /// `question` (a person asked) or `loop_limit` (a loop used up its rounds).
    pub kind: String,
}

/// Everything an agent needs to carry on a run. The fields to act on come first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Brief {
    pub run_id: String,
    pub status: RunStatus,
    /// Pass this as `expected_version` with your next change.
    pub version: u64,
    pub step: Option<String>,
    pub role: Option<String>,
    pub outcomes: Vec<OutcomeChoice>,
    /// The one thing to do now.
    pub next_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<PendingQuestion>,
    /// Something the caller should know about this answer (e.g. how a human gate went).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub title: String,
    pub template: String,
    pub goal: String,
    /// What this step must achieve.
    pub instructions: String,
    /// Which visit of this step this is, and its bound.
    pub visit: Option<u32>,
    pub max_visits: Option<u32>,
    /// The output that sent the run here, e.g. the review that asked for changes.
    pub feedback: Option<OutputExcerpt>,
    /// Latest output of each other step (the plan, the implementation notes, ...).
    pub prior_outputs: Vec<OutputExcerpt>,
    pub recent_human_answers: Vec<HumanExchange>,
    /// How to play the role: the whole guide the first time a role appears in a run (and
    /// on `resume`), afterwards a pointer to it.
    pub role_guide: String,
    /// The tasks of the fan-out in progress: who works on what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TasksOverview>,
    /// Where the run's agents work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    /// Once every task of the fan-out has joined: merging their git branches into the
    /// run's tree, pending or done (what was merged, and any conflict left to resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeState>,
    pub context: Map<String, Value>,
    pub artifacts: Map<String, Value>,
    /// Names of the fields shortened to keep this brief within its size bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortened: Vec<String>,
}

/// Guide text for a built-in role; custom roles follow their step instructions.
pub fn role_guide(role: &str) -> &'static str {
    match role {
        "architect" => include_str!("../../skill/roles/architect.md"),
        "implementer" => include_str!("../../skill/roles/implementer.md"),
        "reviewer" => include_str!("../../skill/roles/reviewer.md"),
        "tester" => include_str!("../../skill/roles/tester.md"),
        _ => "A custom role: follow the step instructions exactly and report one of the listed outcomes.",
    }
}

/// Whether the brief repeats the whole role guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guide {
    /// Only the first time the role appears in the run (briefs after each change).
    FirstTime,
    /// Always (a new session picking the run up has not seen it).
    Always,
}

impl Brief {
    /// The brief for whoever acts next on `run`, within [`MAX_BRIEF_BYTES`].
    pub fn of(run: &Run, guide: Guide) -> Brief {
        let mut brief = Brief::with_caps(run, guide, CAPS[0]);
        for caps in &CAPS[1..] {
            if serialized_len(&brief) <= MAX_BRIEF_BYTES {
                break;
            }
            brief = Brief::with_caps(run, guide, *caps);
        }
        if serialized_len(&brief) > MAX_BRIEF_BYTES {
            // Only a huge number of steps or options can get here: keep the fields to act on.
            brief.prior_outputs.clear();
            brief.recent_human_answers.clear();
            brief.context.clear();
            brief.artifacts.clear();
            brief.role_guide = guide_pointer(brief.role.as_deref().unwrap_or_default());
            brief.shortened.extend(["prior_outputs", "recent_human_answers", "context", "artifacts", "role_guide"].map(String::from));
        }
        brief
    }

    fn with_caps(run: &Run, guide: Guide, caps: Caps) -> Brief {
        let mut shortened = Vec::new();
        let def = run.current_step.as_deref().and_then(|s| run.template.step(s));
        let role = def.map(|d| d.role.clone());
        let outcomes = def
            .map(|d| d.outcomes.iter().map(|(outcome, to)| OutcomeChoice { outcome: outcome.clone(), leads_to: to.to_string() }).collect())
            .unwrap_or_default();
        let feedback_source = run.last_output.as_ref().filter(|o| Some(&o.step) != run.current_step.as_ref() || run.status.is_finished());
        let feedback = feedback_source.map(|o| excerpt(run, o, caps.feedback, &mut shortened, "feedback"));
        let prior_outputs = run
            .outputs
            .values()
            .filter(|o| Some(o.version) != feedback_source.map(|f| f.version))
            .map(|o| excerpt(run, o, caps.prior_output, &mut shortened, "prior_outputs"))
            .collect();
        let skip = run.human_answers.len().saturating_sub(RECENT_ANSWERS);
        let recent_human_answers = run.human_answers[skip..]
            .iter()
            .map(|a| HumanExchange {
                answer: cut(&a.answer, caps.answer, &mut shortened, "recent_human_answers"),
                comment: a.comment.as_ref().map(|c| cut(c, caps.answer, &mut shortened, "recent_human_answers")),
                question: cut(&a.question, caps.answer, &mut shortened, "recent_human_answers"),
                ..a.clone()
            })
            .collect();
        let role_guide = match &role {
            Some(role) if guide == Guide::Always || !run.outputs.values().any(|o| &o.role == role) => role_guide(role).to_string(),
            Some(role) => guide_pointer(role),
            None => String::new(),
        };
        Brief {
            run_id: run.id.clone(),
            status: run.status,
            version: run.version,
            step: run.current_step.clone(),
            role,
            outcomes,
            next_action: next_action(run),
            question: run.pending_gate.as_ref().map(|g| pending(g, caps.question, &mut shortened)),
            note: None,
            title: run.title.clone(),
            template: run.template.name.clone(),
            goal: cut(&run.goal, caps.goal, &mut shortened, "goal"),
            instructions: def.map(|d| cut(&d.instructions, caps.instructions, &mut shortened, "instructions")).unwrap_or_default(),
            visit: run.current_step.as_ref().and_then(|s| run.visits.get(s).copied()),
            max_visits: def.and_then(|d| d.max_visits),
            feedback,
            prior_outputs,
            recent_human_answers,
            role_guide,
            tasks: run.fanout.as_ref().filter(|f| !f.joined).map(|f| TasksOverview::of(run, f, caps.task_lines)),
            workspace: run.workspace.clone(),
            merge: run.merge_state(),
            context: capped_map(&run.context, caps.json, &run.id, &mut shortened, "context"),
            artifacts: capped_map(&run.artifacts, caps.json, &run.id, &mut shortened, "artifacts"),
            shortened,
        }
    }

    /// A few lines for humans and the chat transcript.
    pub fn summary(&self) -> String {
        let mut text = format!("Run {} \"{}\" [{}] v{}: {}", self.run_id, self.title, self.template, self.version, self.status.as_str());
        if let (Some(step), Some(role)) = (&self.step, &self.role) {
            text.push_str(&format!(" - step `{step}` (role: {role})"));
        }
        text.push('\n');
        text.push_str(&self.next_action);
        text
    }
}

/// How to read the whole text of event `seq` of a run.
pub fn read_more(run_id: &str, seq: u64) -> String {
    format!("inspect {{\"run_id\": \"{run_id}\", \"event\": {seq}}}")
}

pub(super) fn guide_pointer(role: &str) -> String {
    format!("As before for the {role}: see skill/roles/{role}.md, or `resume` this run for the whole guide.")
}

pub(super) fn excerpt(run: &Run, output: &StepOutput, cap: usize, shortened: &mut Vec<String>, field: &str) -> OutputExcerpt {
    let mut text = cut(&output.output, cap, shortened, field);
    let is_cut = text.len() < output.full_len() || output.output_bytes.is_some();
    if is_cut && !text.ends_with('…') {
        text.push('…');
        if !shortened.iter().any(|f| f == field) {
            shortened.push(field.to_string());
        }
    }
    OutputExcerpt {
        step: output.step.clone(),
        role: output.role.clone(),
        outcome: output.outcome.clone(),
        output: text,
        output_bytes: is_cut.then_some(output.full_len()),
        read_more: is_cut.then(|| read_more(&run.id, output.version)),
        seq: output.version,
        by: output.actor.label(),
    }
}

pub(super) fn pending(gate: &HumanGate, cap: usize, shortened: &mut Vec<String>) -> PendingQuestion {
    let kind = match gate.kind {
        super::run::GateKind::Question => "question",
        super::run::GateKind::LoopLimit { .. } => "loop_limit",
        super::run::GateKind::TaskFailed => "task_failed",
    };
    PendingQuestion { question: cut(&gate.question, cap, shortened, "question"), options: gate.options.clone(), kind: kind.into() }
}

/// `text` cut to at most `cap` bytes at a character boundary, noting `field` when cut.
pub fn cut(text: &str, cap: usize, shortened: &mut Vec<String>, field: &str) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    if !shortened.iter().any(|f| f == field) {
        shortened.push(field.to_string());
    }
    format!("{}…", super::run::prefix(text, cap.saturating_sub(3)))
}

/// The map itself if its JSON fits in `cap` bytes, else each value that fits on its own
/// with the rest replaced by a note of their size.
fn capped_map(map: &Map<String, Value>, cap: usize, run_id: &str, shortened: &mut Vec<String>, field: &str) -> Map<String, Value> {
    if serde_json::to_vec(map).map_or(0, |v| v.len()) <= cap {
        return map.clone();
    }
    shortened.push(field.to_string());
    let mut used = 2;
    let mut kept = Map::new();
    for (name, value) in map {
        let len = serde_json::to_vec(value).map_or(0, |v| v.len()) + name.len() + 4;
        if used + len <= cap {
            used += len;
            kept.insert(name.clone(), value.clone());
        } else {
            let note = format!("({len} bytes; `inspect {{\"run_id\": \"{run_id}\"}}` shows the whole {field})");
            used += note.len() + name.len() + 4;
            kept.insert(name.clone(), Value::String(note));
        }
        if used > cap {
            break;
        }
    }
    kept
}

pub(super) fn serialized_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

fn next_action(run: &Run) -> String {
    let id = &run.id;
    let v = run.version;
    match run.status {
        RunStatus::Active if run.current_step.is_none() => super::task_brief::fanout_next_action(run),
        RunStatus::Active => {
            let step = run.current_step.as_deref().unwrap_or("?");
            let def = run.template.step(step);
            let role = def.map(|d| d.role.as_str()).unwrap_or("?");
            let outcomes: Vec<&str> = def.map(|d| d.outcomes.keys().map(String::as_str).collect()).unwrap_or_default();
            let merge = run.merge_instructions().map(|m| format!("{m} ")).unwrap_or_default();
            format!(
                "{merge}Play the {role} for step `{step}`, then call `advance` with run_id \"{id}\", expected_version {v}, outcome one of [{}] and your report as `output`.",
                outcomes.join(", ")
            )
        }
        RunStatus::AwaitingHuman => {
            let gate = run.pending_gate.as_ref();
            let options = gate.map(|g| g.options.join(" / ")).unwrap_or_default();
            format!(
                "Waiting for a human: ask the user the `question`{} in chat, then call `answer_human` with run_id \"{id}\", expected_version {v} and their answer (they can also run `baton answer {id} ANSWER` in a terminal). Never answer it yourself.",
                if options.is_empty() { String::new() } else { format!(" (options: {options})") }
            )
        }
        RunStatus::Completed => format!("Run {id} is complete. Summarize the outcome for the user."),
        RunStatus::Failed | RunStatus::Cancelled => format!(
            "Run {id} has {}{}. To try again, fork it from an earlier version with `resume` (run_id and at_version, an event's number), or start a new run.",
            run.status.as_str(),
            run.end_reason.as_deref().map(|r| format!(": {}", first_line(r, 200))).unwrap_or_default()
        ),
    }
}

/// One line of history: who did what, for briefings and the terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventLine {
    pub seq: u64,
    pub at: crate::time::Timestamp,
    #[serde(rename = "type")]
    pub kind: String,
    pub by: String,
    pub summary: String,
}

impl EventLine {
    pub fn of(event: &Event) -> EventLine {
        let summary = match &event.kind {
            EventKind::Advanced { report, .. } => report.line(160),
            EventKind::Started { template, step, goal, .. } => format!("template {template} at {step}: {}", first_line(goal, 160)),
            EventKind::HumanAsked { question, .. } => format!("asked: {}", first_line(question, 160)),
            EventKind::HumanAnswered { answer, task: None, .. } => format!("answered: {}", first_line(answer, 160)),
            EventKind::HumanAnswered { answer, task: Some(task), .. } => format!("task {task}: answered: {}", first_line(answer, 160)),
            EventKind::TaskClaimed { task, step, token, taken_over_from, .. } => format!(
                "task {task}: claimed at {step} (token {token}){}",
                taken_over_from.as_ref().map(|a| format!(", taken over from {}", a.label())).unwrap_or_default()
            ),
            EventKind::TaskAdvanced { task, report } => format!("task {task}: {}", report.line(120)),
            EventKind::LeaseRenewed { task, token, .. } => format!("task {task}: lease {token} renewed"),
            EventKind::TaskReleased { task, token } => format!("task {task}: lease {token} released"),
            EventKind::CheckpointSaved { name, .. } => format!("checkpoint {name}"),
            EventKind::Cancelled { reason } => format!("cancelled: {}", first_line(reason, 160)),
            EventKind::Forked { from_run, checkpoint, from_version, .. } if checkpoint.is_empty() => {
                format!("forked from {from_run} at version {from_version}")
            }
            EventKind::Forked { from_run, checkpoint, .. } => format!("forked from {from_run} at checkpoint {checkpoint}"),
            EventKind::Supervised { record } => format!(
                "drive: {:?} {}{}{}",
                record.action,
                record.unit,
                record.thread_id.as_deref().map(|t| format!(" thread {t}")).unwrap_or_default(),
                if record.tokens > 0 { format!(" ({} tokens)", record.tokens) } else { String::new() }
            ),
            EventKind::BranchesMerged { report } => format!(
                "merged task branches [{}] into {}{}{}",
                report.merged.join(", "),
                report.tree,
                if report.nothing_to_merge.is_empty() {
                    String::new()
                } else {
                    format!("; nothing to merge for [{}]", report.nothing_to_merge.join(", "))
                },
                report.conflict.as_ref().map(|c| format!("; conflict merging {}", c.task)).unwrap_or_default()
            ),
        };
        EventLine { seq: event.seq, at: event.at, kind: event.kind.name().to_string(), by: event.actor.label(), summary }
    }

    /// `#4 2026-.. advanced by codex 0199..: review (reviewer) -> implement [changes_requested]: ...`
    pub fn render(&self) -> String {
        format!("#{} {} {} by {}: {}", self.seq, self.at, self.kind, self.by, self.summary)
    }
}

/// The Codex threads that worked on a run, newest first, for `codex resume <id>`.
pub fn codex_threads<'a>(run: &'a Run, events: &'a [Event]) -> Vec<String> {
    let mut threads: Vec<String> = Vec::new();
    let actors: Vec<&Actor> = events.iter().rev().map(|e| &e.actor).chain([&run.last_actor, &run.started_by]).collect();
    for actor in actors {
        if let (ActorKind::Codex, Some(id)) = (actor.kind, &actor.id)
            && !threads.contains(id)
        {
            threads.push(id.clone());
        }
    }
    threads
}
