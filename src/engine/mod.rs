//! The workflow engine: templates, runs and briefs. Pure logic, no I/O.

pub mod brief;
pub mod builtin;
pub mod change;
pub mod event;
pub mod run;
pub mod template;

#[cfg(test)]
mod tests;

pub use brief::Brief;
pub use builtin::{builtin_template, builtin_templates};
pub use change::Change;
pub use event::{Actor, ActorKind, Event, EventKind, Workspace};
pub use run::{NewRun, Run, RunStatus};
pub use template::{Target, Template};
