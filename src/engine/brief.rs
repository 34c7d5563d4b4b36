//! The briefing handed to whoever plays the next role: what to do, with what context,
//! and exactly how to report back.

use super::run::{HumanExchange, HumanGate, Run, RunStatus, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How many recent human answers a brief repeats.
const RECENT_ANSWERS: usize = 5;

/// One outcome the current role may report, and where it leads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeChoice {
    pub outcome: String,
    /// Next step, `done` or `failed`.
    pub leads_to: String,
}

/// Everything an agent needs to carry on a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Brief {
    pub run_id: String,
    pub title: String,
    pub goal: String,
    pub template: String,
    pub status: RunStatus,
    /// Pass this as `expected_version` with your next change.
    pub version: u64,
    pub step: Option<String>,
    pub role: Option<String>,
    /// What this step must achieve.
    pub instructions: String,
    /// How to play the role (from the skill's role guide).
    pub role_guide: String,
    pub outcomes: Vec<OutcomeChoice>,
    /// Which visit of this step this is, and its bound.
    pub visit: Option<u32>,
    pub max_visits: Option<u32>,
    /// The output that sent the run here, e.g. the review that asked for changes.
    pub feedback: Option<StepOutput>,
    /// Latest output of each other step (the plan, the implementation notes, ...).
    pub prior_outputs: Vec<StepOutput>,
    pub recent_human_answers: Vec<HumanExchange>,
    pub pending_question: Option<HumanGate>,
    pub context: Map<String, Value>,
    pub artifacts: Map<String, Value>,
    /// The one thing to do now.
    pub next_action: String,
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

impl Brief {
    pub fn of(run: &Run) -> Brief {
        let def = run.current_step.as_deref().and_then(|s| run.template.step(s));
        let outcomes = def
            .map(|d| d.outcomes.iter().map(|(outcome, to)| OutcomeChoice { outcome: outcome.clone(), leads_to: to.clone() }).collect())
            .unwrap_or_default();
        let feedback = run.last_output.clone().filter(|o| Some(&o.step) != run.current_step.as_ref() || run.status.is_finished());
        let prior_outputs = run.outputs.values().filter(|o| Some(&o.version) != feedback.as_ref().map(|f| &f.version)).cloned().collect();
        let skip = run.human_answers.len().saturating_sub(RECENT_ANSWERS);
        Brief {
            run_id: run.id.clone(),
            title: run.title.clone(),
            goal: run.goal.clone(),
            template: run.template.name.clone(),
            status: run.status,
            version: run.version,
            step: run.current_step.clone(),
            role: def.map(|d| d.role.clone()),
            instructions: def.map(|d| d.instructions.clone()).unwrap_or_default(),
            role_guide: def.map(|d| role_guide(&d.role).to_string()).unwrap_or_default(),
            outcomes,
            visit: run.current_step.as_ref().and_then(|s| run.visits.get(s).copied()),
            max_visits: def.and_then(|d| d.max_visits),
            feedback,
            prior_outputs,
            recent_human_answers: run.human_answers[skip..].to_vec(),
            pending_question: run.pending_gate.clone(),
            context: run.context.clone(),
            artifacts: run.artifacts.clone(),
            next_action: next_action(run),
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

fn next_action(run: &Run) -> String {
    let id = &run.id;
    let v = run.version;
    match run.status {
        RunStatus::Active => {
            let step = run.current_step.as_deref().unwrap_or("?");
            let def = run.template.step(step);
            let role = def.map(|d| d.role.as_str()).unwrap_or("?");
            let outcomes: Vec<&str> = def.map(|d| d.outcomes.keys().map(String::as_str).collect()).unwrap_or_default();
            format!(
                "Play the {role} for step `{step}`, then call `advance` with run_id \"{id}\", expected_version {v}, outcome one of [{}] and your report as `output`.",
                outcomes.join(", ")
            )
        }
        RunStatus::AwaitingHuman => {
            let gate = run.pending_gate.as_ref();
            let question = gate.map(|g| g.question.as_str()).unwrap_or("?");
            let options = gate.map(|g| g.options.join(" / ")).unwrap_or_default();
            format!(
                "Waiting for a human. Ask the user: \"{question}\"{} Then call `answer_human` with run_id \"{id}\" and their answer (or run `baton answer {id} ANSWER` in a terminal).",
                if options.is_empty() { String::new() } else { format!(" (options: {options}).") }
            )
        }
        RunStatus::Completed => format!("Run {id} is complete. Summarize the outcome for the user."),
        RunStatus::Failed | RunStatus::Cancelled => format!(
            "Run {id} has {}{}. To try again, fork it from a checkpoint with `resume` (run_id and checkpoint), or start a new run.",
            run.status.as_str(),
            run.end_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        ),
    }
}
