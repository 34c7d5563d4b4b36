//! The workflow engine: templates, runs and briefs. Pure logic, no I/O.

pub mod brief;
pub mod builtin;
pub mod change;
pub mod code;
pub mod drive;
pub mod event;
mod fanout;
mod graph;
pub mod merge;
pub mod plan;
pub mod run;
pub mod task;
pub mod task_brief;
pub mod template;

#[cfg(test)]
mod fanout_tests;
#[cfg(test)]
mod tests;

pub use brief::{Brief, TaskBrief};
pub use builtin::{builtin_template, builtin_templates};
pub use change::Change;
pub use event::{Actor, ActorKind, Event, EventKind, Workspace};
pub use plan::{Plan, PlanTask};
pub use run::{NewRun, Run, RunStatus};
pub use task::{Lease, Task, TaskStatus};
pub use template::{Target, Template};
