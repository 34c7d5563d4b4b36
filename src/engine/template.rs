//! Workflow templates: named steps, each played by a role, joined by outcomes.
//! `validate` rejects templates that could never finish or could loop forever.

use crate::error::{BatonError, BatonResult};
use crate::limits::{MAX_TEXT_BYTES, check_len};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Outcome target that completes the run successfully.
pub const DONE: &str = "done";
/// Outcome target that ends the run as failed.
pub const FAILED: &str = "failed";
/// Most steps a template may have.
pub const MAX_STEPS: usize = 100;

/// Where an outcome leads. Written as a string in templates: a step name, `done` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Another step of the template.
    Step(String),
    /// The run completes.
    Done,
    /// The run ends as failed.
    Failed,
}

impl Target {
    pub fn parse(text: &str) -> Target {
        match text {
            DONE => Target::Done,
            FAILED => Target::Failed,
            step => Target::Step(step.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Target::Step(step) => step,
            Target::Done => DONE,
            Target::Failed => FAILED,
        }
    }

    /// The step this leads to, if it is one.
    pub fn step(&self) -> Option<&str> {
        match self {
            Target::Step(step) => Some(step),
            _ => None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Target::parse(&text))
    }
}

impl JsonSchema for Target {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "description": "A step name, `done` or `failed`."})
    }
}

/// A workflow definition. Runs embed a copy, so editing a template never breaks a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Identifier, e.g. `feature`. Letters, digits, `_` and `-`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The first step; defaults to the first one listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    pub steps: Vec<StepDef>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Identifier, unique in the template; `done` and `failed` are reserved.
    pub name: String,
    /// Who plays it: `architect`, `implementer`, `reviewer`, `tester` or any custom role.
    pub role: String,
    /// What this step must achieve, shown to the agent playing the role.
    #[serde(default)]
    pub instructions: String,
    /// Outcome name -> next step name, or `done` / `failed`.
    pub outcomes: BTreeMap<String, Target>,
    /// How often the step may run before a human must allow more rounds.
    /// Every loop in a template needs at least one step with a bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u32>,
}

impl Template {
    /// Name of the first step.
    pub fn start_step(&self) -> &str {
        self.start.as_deref().unwrap_or_else(|| self.steps.first().map(|s| s.name.as_str()).unwrap_or(""))
    }

    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Parse a template file's text; `.toml` files as TOML, anything else as JSON.
    pub fn parse(text: &str, is_toml: bool, field: &str) -> BatonResult<Template> {
        let parsed: Result<Template, String> = if is_toml {
            // Name the line, but never echo the file's text: the path may be any file.
            toml::from_str(text).map_err(|e| {
                let line = e.span().map_or(0, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
                format!("line {line}: {}", e.message())
            })
        } else {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))
        };
        let template = parsed.map_err(|e| {
            BatonError::invalid(
                field,
                format!("template could not be parsed: {e}"),
                "Give `name`, `steps` (each with `name`, `role`, `outcomes`), and optionally `description`, `start`, `instructions`, `max_visits`.",
            )
        })?;
        template.validate(field)?;
        Ok(template)
    }

    /// Check names, targets, reachability and that every loop is bounded.
    /// `field` prefixes the paths in error messages (e.g. `template`).
    pub fn validate(&self, field: &str) -> BatonResult<()> {
        check_identifier(&self.name, &format!("{field}.name"))?;
        check_len(&format!("{field}.description"), self.description.len(), MAX_TEXT_BYTES)?;
        if self.steps.len() > MAX_STEPS {
            return Err(BatonError::invalid(
                format!("{field}.steps"),
                format!("a template may have at most {MAX_STEPS} steps; this one has {}", self.steps.len()),
                "Split the workflow into smaller templates.",
            ));
        }
        if self.steps.is_empty() {
            return Err(BatonError::invalid(
                format!("{field}.steps"),
                "a template needs at least one step",
                "Add a step, e.g. {\"name\":\"implement\",\"role\":\"implementer\",\"outcomes\":{\"implemented\":\"done\"}}.",
            ));
        }
        let names = self.check_steps(field)?;
        let start = self.start_step();
        if !names.contains(start) {
            return Err(BatonError::invalid(
                format!("{field}.start"),
                format!("start step `{start}` is not a step of this template"),
                format!("Use one of: {}.", join(&names)),
            ));
        }
        self.check_reachable(field, start)?;
        self.check_loops_bounded(field)
    }

    fn check_steps<'a>(&'a self, field: &str) -> BatonResult<BTreeSet<&'a str>> {
        let mut names = BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("{field}.steps[{i}]");
            check_identifier(&step.name, &format!("{at}.name"))?;
            if step.name == DONE || step.name == FAILED {
                return Err(BatonError::invalid(
                    format!("{at}.name"),
                    format!("`{}` is reserved for the end of a run", step.name),
                    "Rename the step.",
                ));
            }
            if !names.insert(step.name.as_str()) {
                return Err(BatonError::invalid(
                    format!("{at}.name"),
                    format!("step `{}` is defined twice", step.name),
                    "Give every step a unique name.",
                ));
            }
            check_identifier(&step.role, &format!("{at}.role"))?;
            check_len(&format!("{at}.instructions"), step.instructions.len(), MAX_TEXT_BYTES)?;
            if step.outcomes.is_empty() {
                return Err(BatonError::invalid(
                    format!("{at}.outcomes"),
                    format!("step `{}` has no outcomes, so a run could never leave it", step.name),
                    "Map at least one outcome to a next step, `done` or `failed`.",
                ));
            }
            if step.max_visits == Some(0) {
                return Err(BatonError::invalid(
                    format!("{at}.max_visits"),
                    "max_visits must be at least 1",
                    "Use a positive bound, or omit it for steps outside loops.",
                ));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            for (outcome, target) in &step.outcomes {
                check_identifier(outcome, &format!("{field}.steps[{i}].outcomes"))?;
                if target.step().is_some_and(|step| !names.contains(step)) {
                    return Err(BatonError::invalid(
                        format!("{field}.steps[{i}].outcomes.{outcome}"),
                        format!("outcome `{outcome}` of step `{}` goes to unknown step `{target}`", step.name),
                        format!("Use `done`, `failed` or one of: {}.", join(&names)),
                    ));
                }
            }
        }
        Ok(names)
    }

    fn check_reachable(&self, field: &str, start: &str) -> BatonResult<()> {
        let mut seen = BTreeSet::from([start.to_string()]);
        let mut stack = vec![start.to_string()];
        while let Some(name) = stack.pop() {
            if let Some(step) = self.step(&name) {
                for target in step.outcomes.values() {
                    if seen.insert(target.as_str().to_string()) {
                        stack.push(target.as_str().to_string());
                    }
                }
            }
        }
        if let Some((i, step)) = self.steps.iter().enumerate().find(|(_, s)| !seen.contains(&s.name)) {
            return Err(BatonError::invalid(
                format!("{field}.steps[{i}]"),
                format!("step `{}` is unreachable from start step `{start}`", step.name),
                "Point an outcome of another step at it, or remove it.",
            ));
        }
        if !seen.contains(DONE) {
            return Err(BatonError::invalid(
                format!("{field}.steps"),
                "no outcome leads to `done`, so a run could never complete",
                "Map some step's success outcome to `done`.",
            ));
        }
        self.check_every_step_can_finish(field)
    }

    /// A step from which neither `done` nor `failed` can be reached would trap a run.
    fn check_every_step_can_finish(&self, field: &str) -> BatonResult<()> {
        let mut can_finish: BTreeSet<&str> = BTreeSet::from([DONE, FAILED]);
        loop {
            let before = can_finish.len();
            for step in &self.steps {
                if step.outcomes.values().any(|t| can_finish.contains(t.as_str())) {
                    can_finish.insert(&step.name);
                }
            }
            if can_finish.len() == before {
                break;
            }
        }
        match self.steps.iter().enumerate().find(|(_, s)| !can_finish.contains(s.name.as_str())) {
            Some((i, step)) => Err(BatonError::invalid(
                format!("{field}.steps[{i}].outcomes"),
                format!("from step `{}` no sequence of outcomes leads to `done` or `failed`, so a run there could never end", step.name),
                "Give one of the steps in that loop an outcome that leads out of it.",
            )),
            None => Ok(()),
        }
    }

    /// Every cycle must pass through a step with `max_visits`: drop bounded steps, and
    /// what is left must be acyclic.
    fn check_loops_bounded(&self, field: &str) -> BatonResult<()> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Fresh,
            Open,
            Closed,
        }
        let unbounded: Vec<&StepDef> = self.steps.iter().filter(|s| s.max_visits.is_none()).collect();
        let index = |name: &str| unbounded.iter().position(|s| s.name == name);
        let mut marks = vec![Mark::Fresh; unbounded.len()];
        for root in 0..unbounded.len() {
            if marks[root] != Mark::Fresh {
                continue;
            }
            // Iterative DFS keeping the current path for the error message.
            let mut path: Vec<(usize, Vec<usize>)> = Vec::new();
            let successors = |i: usize| -> Vec<usize> { unbounded[i].outcomes.values().filter_map(|t| index(t.as_str())).collect() };
            marks[root] = Mark::Open;
            path.push((root, successors(root)));
            while let Some((node, next)) = path.last_mut() {
                let node = *node;
                match next.pop() {
                    Some(succ) if marks[succ] == Mark::Open => {
                        let start = path.iter().position(|(n, _)| *n == succ).unwrap_or(0);
                        let cycle: Vec<&str> =
                            path[start..].iter().map(|(n, _)| unbounded[*n].name.as_str()).chain([unbounded[succ].name.as_str()]).collect();
                        let first = self.steps.iter().position(|s| s.name == cycle[0]).unwrap_or(0);
                        return Err(BatonError::invalid(
                            format!("{field}.steps[{first}].max_visits"),
                            format!("unbounded loop: {} has no step with max_visits", cycle.join(" -> ")),
                            format!("Set max_visits on one of the steps in the loop, e.g. on `{}`.", cycle[0]),
                        ));
                    }
                    Some(succ) if marks[succ] == Mark::Fresh => {
                        marks[succ] = Mark::Open;
                        path.push((succ, successors(succ)));
                    }
                    Some(_) => {}
                    None => {
                        marks[node] = Mark::Closed;
                        path.pop();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Names are short identifiers so they are safe in keys, prompts and file names.
pub fn check_identifier(value: &str, field: &str) -> BatonResult<()> {
    let ok = !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(BatonError::invalid(field, format!("`{value}` is not a valid name"), "Use 1-64 characters from letters, digits, `_` and `-`."))
    }
}

fn join(names: &BTreeSet<&str>) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}
