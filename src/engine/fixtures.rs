//! What the engine's tests (and the graph's, which draws runs) build runs from: one
//! clock, actors, new runs, plans and the advance change, so that a change to these
//! types is made here once rather than in every test file.

use super::{Actor, ActorKind, Change, NewRun, Plan, PlanTask, Template};
use crate::time::Timestamp;
use serde_json::Map;

/// The tests' "now": a fixed instant, so events and leases are the same on every run.
pub const NOW: Timestamp = Timestamp(1_795_000_000_000);

/// A Codex thread with this id.
pub fn actor(thread: &str) -> Actor {
    Actor { kind: ActorKind::Codex, id: Some(thread.into()), agent: None }
}

/// A new run `id` of `template`, goal "add login", no workspace, 4 agents at most.
pub fn new_run(id: &str, template: Template) -> NewRun {
    NewRun { id: id.into(), template, goal: "add login".into(), title: "Login".into(), context: Map::new(), workspace: None, max_agents: 4 }
}

/// A plan of `(id, depends_on)` tasks, titled "task ID".
pub fn plan(tasks: &[(&str, &[&str])]) -> Plan {
    Plan {
        tasks: tasks
            .iter()
            .map(|(id, deps)| PlanTask {
                id: id.to_string(),
                title: format!("task {id}"),
                description: String::new(),
                depends_on: deps.iter().map(|d| d.to_string()).collect(),
                pipeline: None,
            })
            .collect(),
        base: None,
    }
}

/// Report `outcome` with `output` for the run at `version` (no plan, no code).
pub fn advance(version: u64, outcome: &str, output: &str) -> Change {
    Change::Advance {
        code: None,
        expected_version: version,
        outcome: outcome.into(),
        output: output.into(),
        artifacts: Map::new(),
        plan: None,
    }
}

/// Report the plan `plan` (outcome `planned`) for the run at `version`.
pub fn planned(version: u64, plan: Plan) -> Change {
    Change::Advance {
        code: None,
        expected_version: version,
        outcome: "planned".into(),
        output: "the plan".into(),
        artifacts: Map::new(),
        plan: Some(plan),
    }
}
