//! Briefs: what the next role, a task's agent or a person reads to carry a run on, made
//! from the run model after the machine moved it. The top floor of the engine: nothing
//! below it reads a brief.

mod brief;
mod history;
mod parts;
mod task_brief;

#[cfg(test)]
pub(in crate::engine) use brief::merge_instructions;
pub use brief::{Brief, Guide};
pub use history::{EventLine, codex_threads};
pub use parts::{MAX_BRIEF_BYTES, OutcomeChoice, OutputExcerpt, PendingQuestion, read_more, role_guide};
pub use task_brief::{TaskBrief, TaskLine, TasksOverview, fanout_next_action};
