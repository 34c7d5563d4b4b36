//! The pieces every brief is made of (run briefs and task briefs alike): excerpts of
//! reports, pending questions, role guides, and the byte caps that keep a brief within
//! [`MAX_BRIEF_BYTES`].

use crate::engine::model::{GateKind, HumanGate, Run, StepOutput};
use crate::text::prefix;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upper bound of a serialized brief.
pub const MAX_BRIEF_BYTES: usize = 16 * 1024;

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

/// Guide text for a built-in role; custom roles follow their step instructions.
pub fn role_guide(role: &str) -> &'static str {
    match role {
        "architect" => include_str!("../../../skill/roles/architect.md"),
        "implementer" => include_str!("../../../skill/roles/implementer.md"),
        "reviewer" => include_str!("../../../skill/roles/reviewer.md"),
        "tester" => include_str!("../../../skill/roles/tester.md"),
        _ => "A custom role: follow the step instructions exactly and report one of the listed outcomes.",
    }
}

/// How to read the whole text of event `seq` of a run.
pub fn read_more(run_id: &str, seq: u64) -> String {
    format!("inspect {{\"run_id\": \"{run_id}\", \"event\": {seq}}}")
}

pub fn guide_pointer(role: &str) -> String {
    format!("As before for the {role}: see skill/roles/{role}.md, or `resume` this run for the whole guide.")
}

pub fn excerpt(run: &Run, output: &StepOutput, cap: usize, shortened: &mut Vec<String>, field: &str) -> OutputExcerpt {
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

pub fn pending(gate: &HumanGate, cap: usize, shortened: &mut Vec<String>) -> PendingQuestion {
    let kind = match gate.kind {
        GateKind::Question => "question",
        GateKind::LoopLimit { .. } => "loop_limit",
        GateKind::TaskFailed => "task_failed",
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
    format!("{}…", prefix(text, cap.saturating_sub(3)))
}

/// The length of `value` as JSON, counted as it is written rather than written into a
/// buffer: every answer measures its brief this way, and the buffer (a few KB, grown by
/// doubling) was thrown away at once.
pub fn serialized_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}
