//! The built-in templates: `feature` and `bugfix`.

use super::template::{StepDef, Target, Template};
use std::collections::BTreeMap;

/// All built-in templates, validated by the unit tests.
pub fn builtin_templates() -> Vec<Template> {
    vec![feature(), bugfix()]
}

/// Look a built-in template up by name.
pub fn builtin_template(name: &str) -> Option<Template> {
    builtin_templates().into_iter().find(|t| t.name == name)
}

fn step(name: &str, role: &str, instructions: &str, max_visits: Option<u32>, outcomes: &[(&str, &str)]) -> StepDef {
    StepDef {
        name: name.into(),
        role: role.into(),
        instructions: instructions.into(),
        outcomes: outcomes.iter().map(|(o, t)| (o.to_string(), Target::parse(t))).collect::<BTreeMap<_, _>>(),
        max_visits,
    }
}

fn feature() -> Template {
    Template {
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
