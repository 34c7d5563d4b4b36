//! The workflow engine: templates, runs and briefs. Pure logic, no I/O.

pub mod brief;
pub mod builtin;
pub mod run;
pub mod template;

#[cfg(test)]
mod tests;

pub use brief::Brief;
pub use builtin::{builtin_template, builtin_templates};
pub use run::{AdvanceInput, Event, EventKind, Run, RunStatus};
pub use template::Template;
