//! The workflow engine: pure logic, no I/O. Its rooms, lowest first (no arrow runs back up):
//!
//! - `naming`: how baton names worktrees, branches and refs (a leaf every room may use);
//! - `templates`: the workflows runs follow, built-in ones and fan-out plans;
//! - `model`: the data of a run (snapshot, tasks, events, changes, code and merge records);
//! - `machine`: [`Run::apply`] deciding and evolving a run one event at a time;
//! - `briefs`: what the next role reads.
//!
//! The re-exports below are the engine's face: other rooms import from `crate::engine`.

pub mod briefs;
mod machine;
pub mod model;
pub mod naming;
pub mod templates;

#[cfg(test)]
mod fanout_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use briefs::{Brief, EventLine, Guide, TaskBrief, TaskLine, TasksOverview, codex_threads, role_guide};
pub use machine::merge_order;
pub use model::{
    Actor, ActorKind, Change, DEFAULT_MAX_AGENTS, DriveAction, DriveRecord, DriveState, DriveUnit, Event, EventKind, FanOutState,
    FileChange, ForkOrigin, GateKind, HumanExchange, HumanGate, Lease, MAX_CODE_FILES, MAX_CONFLICT_FILES, MAX_MERGE_FILES, MergeConflict,
    MergeReport, MergeState, NewRun, Run, RunStatus, StepOutput, Task, TaskCode, TaskMerge, TaskStatus, Workspace, tree_state_at,
    workspace_of,
};
pub use templates::{DONE, FAILED, Plan, PlanTask, Target, Template, builtin_template, builtin_templates};
