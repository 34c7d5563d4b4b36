//! The briefing handed to whoever plays the next role: what to do, with what context,
//! and exactly how to report back.
//!
//! Briefs are read by models whose tool output is cut (Codex keeps the first and last
//! ~24,000 characters), so a brief puts the fields an agent acts on first, caps every long
//! text with a pointer to the whole of it, and stays within [`MAX_BRIEF_BYTES`] whatever
//! was reported.

use super::parts::{
    MAX_BRIEF_BYTES, OutcomeChoice, OutputExcerpt, PendingQuestion, cut, excerpt, guide_pointer, pending, role_guide, serialized_len,
};
use super::task_brief::{TasksOverview, fanout_next_action};
use crate::engine::model::{HumanExchange, MergeState, Run, RunStatus, Workspace};
use crate::text::first_line;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
        // Measured once per candidate: measuring is serializing the whole brief, and the
        // answer serializes it again anyway.
        let mut fits = serialized_len(&brief) <= MAX_BRIEF_BYTES;
        for caps in &CAPS[1..] {
            if fits {
                break;
            }
            brief = Brief::with_caps(run, guide, *caps);
            fits = serialized_len(&brief) <= MAX_BRIEF_BYTES;
        }
        if !fits {
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

fn next_action(run: &Run) -> String {
    let id = &run.id;
    let v = run.version;
    match run.status {
        RunStatus::Active if run.current_step.is_none() => fanout_next_action(run),
        RunStatus::Active => {
            let step = run.current_step.as_deref().unwrap_or("?");
            let def = run.template.step(step);
            let role = def.map(|d| d.role.as_str()).unwrap_or("?");
            let outcomes: Vec<&str> = def.map(|d| d.outcomes.keys().map(String::as_str).collect()).unwrap_or_default();
            let merge = merge_instructions(run).map(|m| format!("{m} ")).unwrap_or_default();
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

/// What the join step's agent must know about the merge before playing the step, when
/// the run is at that step.
pub(in crate::engine) fn merge_instructions(run: &Run) -> Option<String> {
    let fanout = run.fanout.as_ref()?;
    if fanout.join.step().is_none() || fanout.join.step() != run.current_step.as_deref() {
        return None;
    }
    Some(match run.merge_state()? {
        MergeState::Pending { tree, .. } => format!(
            "The task branches are not merged into {tree} yet: call `resume` with run_id \"{}\" (baton merges them) before playing this step.",
            run.id
        ),
        MergeState::Done(report) => report.summary(&run.id, run.workspace.as_ref().and_then(|w| w.git_root.as_deref())),
    })
}
