//! The built-in templates: `feature`, `bugfix` and `parallel` (a plan fanned out into
//! tasks), and the built-in pipeline `task` that each task of a fan-out runs.

use super::template::{DEFAULT_PIPELINE, FanOut, StepDef, Target, TaskFailurePolicy, Template};
use std::collections::BTreeMap;

/// All built-in templates, validated by the unit tests.
pub fn builtin_templates() -> Vec<Template> {
    vec![feature(), bugfix(), parallel()]
}

/// Look a built-in template up by name.
pub fn builtin_template(name: &str) -> Option<Template> {
    builtin_templates().into_iter().find(|t| t.name == name)
}

/// A built-in pipeline for the tasks of a fan-out.
pub fn builtin_pipeline(name: &str) -> Option<Template> {
    (name == DEFAULT_PIPELINE).then(task)
}

fn step(name: &str, role: &str, instructions: &str, max_visits: Option<u32>, outcomes: &[(&str, &str)]) -> StepDef {
    StepDef {
        name: name.into(),
        role: role.into(),
        instructions: instructions.into(),
        outcomes: outcomes.iter().map(|(o, t)| (o.to_string(), Target::parse(t))).collect::<BTreeMap<_, _>>(),
        max_visits,
        independent_of: Vec::new(),
        model: None,
        effort: None,
        on_agent_failure: None,
        max_agent_attempts: None,
    }
}

/// `step` whose player must not be whoever played `of`.
fn independent(mut step: StepDef, of: &str) -> StepDef {
    step.independent_of.push(of.to_string());
    step
}

/// Plan, fan out into parallel tasks, integrate.
fn parallel() -> Template {
    let mut design = step(
        "design",
        "architect",
        "Study the goal and the code base and split the work into tasks that can proceed in parallel: report `plan` with `tasks` (id, title, description, depends_on). Each task is implemented, reviewed by another agent and tested on its own branch; then everything is integrated.",
        Some(3),
        &[],
    );
    design.outcomes.insert(
        "planned".into(),
        Target::FanOut(Box::new(FanOut {
            fan_out: DEFAULT_PIPELINE.into(),
            join: "integrate".into(),
            on_task_failure: TaskFailurePolicy::Ask,
            max_tasks: None,
        })),
    );
    Template {
        name: "parallel".into(),
        description: "Plan tasks, work them in parallel (each implemented, independently reviewed and tested), then integrate.".into(),
        start: Some("design".into()),
        steps: vec![
            design,
            step(
                "integrate",
                "tester",
                "All tasks have joined and their branches are merged. Run the acceptance checks and the whole test suite on the integrated result. Report passed, or failed with what broke (a new plan follows).",
                None,
                &[("passed", "done"), ("failed", "design")],
            ),
        ],
        pipelines: Vec::new(),
    }
}

/// One task of a fan-out: implement, review by another agent, test.
fn task() -> Template {
    Template {
        name: DEFAULT_PIPELINE.into(),
        description: "Implement a task, have another agent review it (changes loop back), test it (failures loop back).".into(),
        start: Some("implement".into()),
        steps: vec![
            step(
                "implement",
                "implementer",
                "Implement this task (and any review or test feedback in the brief) in the task's own working directory (baton commits what you leave there on the task's branch when you report; commits of your own are kept). Report the files changed and how you verified them.",
                Some(4),
                &[("implemented", "review")],
            ),
            independent(
                step(
                    "review",
                    "reviewer",
                    "Review the task's change (its branch against the base) as someone who did not write it: correctness, tests, naming, duplication. Approve, or request changes with a concrete list.",
                    None,
                    &[("approved", "test"), ("changes_requested", "implement")],
                ),
                "implement",
            ),
            step(
                "test",
                "tester",
                "Run the task's checks and the affected tests on its branch. Report passed, or failed with the exact failures.",
                None,
                &[("passed", "join"), ("failed", "implement")],
            ),
        ],
        pipelines: Vec::new(),
    }
}

fn feature() -> Template {
    Template {
        pipelines: Vec::new(),
        name: "feature".into(),
        description: "Design, implement, review (changes loop back) and test (failures loop back) a feature.".into(),
        start: Some("design".into()),
        steps: vec![
            step(
                "design",
                "architect",
                "Study the goal and the code base. Write a plan: the modules to touch, interfaces, data shapes, risks, and the acceptance checks the tester will run. Do not write production code.",
                None,
                &[("planned", "implement")],
            ),
            step(
                "implement",
                "implementer",
                "Implement the plan (and any reviewer or tester feedback in the brief). Keep changes small and tested; report the files changed and how you verified them.",
                Some(4),
                &[("implemented", "review")],
            ),
            step(
                "review",
                "reviewer",
                "Review the implementer's change against the plan: correctness, tests, naming, duplication, error handling. Approve, or request changes with a concrete list.",
                None,
                &[("approved", "test"), ("changes_requested", "implement")],
            ),
            step(
                "test",
                "tester",
                "Run the acceptance checks from the plan and the project's test suite. Report passed, or failed with the exact failures and how to reproduce them.",
                None,
                &[("passed", "done"), ("failed", "implement")],
            ),
        ],
    }
}

fn bugfix() -> Template {
    Template {
        pipelines: Vec::new(),
        name: "bugfix".into(),
        description: "Reproduce a bug, fix it, review the fix, verify it.".into(),
        start: Some("reproduce".into()),
        steps: vec![
            step(
                "reproduce",
                "tester",
                "Reproduce the reported bug with a failing test or exact steps. If it cannot be reproduced, say what you tried.",
                None,
                &[("reproduced", "fix"), ("not_reproducible", "failed")],
            ),
            step(
                "fix",
                "implementer",
                "Find the root cause and fix it at the right depth; make the reproduction pass without weakening any test.",
                Some(4),
                &[("fixed", "review")],
            ),
            step(
                "review",
                "reviewer",
                "Check that the fix addresses the root cause, is covered by a test, and breaks nothing else.",
                None,
                &[("approved", "verify"), ("changes_requested", "fix")],
            ),
            step(
                "verify",
                "tester",
                "Run the reproduction and the full test suite. Report passed, or failed with the failures.",
                None,
                &[("passed", "done"), ("failed", "fix")],
            ),
        ],
    }
}
