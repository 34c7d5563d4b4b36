//! Templates: the workflows runs follow, the built-in ones, and the plans a fan-out
//! expands. Below the run model and the machine, which embed and follow them; nothing
//! here knows about runs.

mod builtin;
mod graph;
mod plan;
mod template;
mod validate;

pub use builtin::{builtin_pipeline, builtin_template, builtin_templates};
pub use plan::{Plan, PlanTask};
pub use template::{
    AgentFailurePolicy, DEFAULT_PIPELINE, DONE, FAILED, FanOut, JOIN, JoinTarget, MAX_TASKS, StepDef, Target, TaskFailurePolicy, Template,
};
