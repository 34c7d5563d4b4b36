//! The history as people and agents read it: one line per event, and the Codex threads
//! that worked on a run.

use crate::engine::model::{Actor, ActorKind, Event, EventKind, Run};
use crate::text::first_line;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
