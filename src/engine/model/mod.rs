//! The run model: the data a run is made of (its snapshot, its tasks, what its roles
//! reported, its history of events, the changes it accepts, the records of its code, its
//! merges and its drivers). Plain data with small queries; the machine above changes it.
//!
//! Floors, lowest first: `actor`, `code`, `drive`, `merge` <- `step` <- `task` <- `run` <-
//! `event`, `change`.

mod actor;
mod change;
mod code;
mod drive;
mod event;
mod merge;
mod run;
mod step;
mod task;

pub use actor::{Actor, ActorKind, Workspace};
pub use change::Change;
pub use code::{FileChange, MAX_CODE_FILES, TaskCode};
pub use drive::{DriveAction, DriveRecord, DriveState, DriveUnit, UnitRef};
pub use event::{Event, EventKind, RunOrigin, tree_state_at, workspace_of};
pub use merge::{MAX_CONFLICT_FILES, MAX_MERGE_FILES, MergeConflict, MergeReport, MergeState, TaskMerge};
pub use run::{DEFAULT_MAX_AGENTS, ForkOrigin, NewRun, Run, RunStatus};
pub use step::{GateAnswer, GateKind, HumanExchange, HumanGate, MAX_KEPT_ANSWERS, SNAPSHOT_OUTPUT_BYTES, StepOutput, StepReport};
pub use task::{FanOutState, Lease, Refusal, Task, TaskStatus};
