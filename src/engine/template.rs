//! Workflow templates: named steps, each played by a role, joined by outcomes.
//! `validate` rejects templates that could never finish or could loop forever.
//!
//! An outcome may also fan out: the role reports a plan of tasks, each task runs a
//! pipeline (a small template whose steps end at `join`), and when every task has joined
//! the run goes on at the fan-out's `join` target.

use super::graph::find_cycle;
use crate::error::{BatonError, BatonResult};
use crate::limits::{MAX_TEXT_BYTES, check_len};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Outcome target that completes the run successfully.
pub const DONE: &str = "done";
/// Outcome target that ends the run as failed (in a pipeline: the task fails).
pub const FAILED: &str = "failed";
/// Outcome target that finishes a task of a fan-out (pipelines only).
pub const JOIN: &str = "join";
/// Most steps a template may have.
pub const MAX_STEPS: usize = 100;
/// Most pipelines a template may define.
pub const MAX_PIPELINES: usize = 10;
/// The built-in pipeline tasks run unless a fan-out or task names another.
pub const DEFAULT_PIPELINE: &str = "task";

/// Where an outcome leads. Written as a string (a step name, `done`, `failed`, or in a
/// pipeline `join`) or, to fan out, as a table `{ fan_out = "task", join = "integrate" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "TargetText", into = "TargetText")]
pub enum Target {
    /// Another step of the template.
    Step(String),
    /// The run completes.
    Done,
    /// The run ends as failed (in a pipeline, the task fails).
    Failed,
    /// The task is finished and joins its fan-out (pipelines only).
    Join,
    /// Expand the plan the role reported into parallel tasks.
    FanOut(Box<FanOut>),
}

/// A fan-out: the plan's tasks each run a pipeline; the run continues at `join` once all
/// of them have joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOut {
    /// The pipeline each task runs unless its plan entry names another: `task` (built in:
    /// implement -> independent review -> test) or one of the template's `pipelines`.
    #[serde(default = "default_pipeline")]
    pub fan_out: String,
    /// Where the run goes when every task has joined: a step, `done` or `failed`.
    pub join: String,
    /// What a task that fails for good does: `fail` the run, or `ask` a human whether to
    /// retry it, skip it or fail the run.
    #[serde(default)]
    pub on_task_failure: TaskFailurePolicy,
    /// Most tasks a plan may have (at most, and by default, 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
}

fn default_pipeline() -> String {
    DEFAULT_PIPELINE.to_string()
}

/// What happens when a task of a fan-out fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskFailurePolicy {
    /// The whole run fails.
    #[default]
    Fail,
    /// A human decides: retry the task, skip it, or fail the run.
    Ask,
}

/// How a target is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum TargetText {
    Name(String),
    FanOut(Box<FanOut>),
}

impl From<TargetText> for Target {
    fn from(text: TargetText) -> Target {
        match text {
            TargetText::Name(name) => Target::parse(&name),
            TargetText::FanOut(fan_out) => Target::FanOut(fan_out),
        }
    }
}

impl From<Target> for TargetText {
    fn from(target: Target) -> TargetText {
        match target {
            Target::FanOut(fan_out) => TargetText::FanOut(fan_out),
            other => TargetText::Name(other.as_str().to_string()),
        }
    }
}

impl Target {
    pub fn parse(text: &str) -> Target {
        match text {
            DONE => Target::Done,
            FAILED => Target::Failed,
            JOIN => Target::Join,
            step => Target::Step(step.to_string()),
        }
    }

    /// The target as written; a fan-out is named by where it joins.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Step(step) => step,
            Target::Done => DONE,
            Target::Failed => FAILED,
            Target::Join => JOIN,
            Target::FanOut(fan_out) => &fan_out.join,
        }
    }

    /// The step this leads to, if it is one.
    pub fn step(&self) -> Option<&str> {
        match self {
            Target::Step(step) => Some(step),
            _ => None,
        }
    }

    /// The node this leads to in the template's graph: a step, an end, or for a fan-out
    /// its join target (the run continues there once the tasks are done).
    fn successor(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::FanOut(fan_out) => write!(f, "fan_out({}) -> {}", fan_out.fan_out, fan_out.join),
            other => f.write_str(other.as_str()),
        }
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
    /// Pipelines the tasks of this template's fan-outs may run (besides the built-in `task`):
    /// small templates whose steps end at `join` (task done) or `failed` (task failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<Template>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Identifier, unique in the template; `done`, `failed` and `join` are reserved.
    pub name: String,
    /// Who plays it: `architect`, `implementer`, `reviewer`, `tester` or any custom role.
    pub role: String,
    /// What this step must achieve, shown to the agent playing the role.
    #[serde(default)]
    pub instructions: String,
    /// Outcome name -> next step name, `done` / `failed` (`join` in pipelines), or a fan-out.
    pub outcomes: BTreeMap<String, Target>,
    /// How often the step may run before a human must allow more rounds.
    /// Every loop in a template needs at least one step with a bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u32>,
    /// Steps whose player may not play this one (e.g. a review independent of `implement`):
    /// baton refuses the same agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub independent_of: Vec<String>,
    /// The Codex model `baton drive` gives this step's agents (over `--model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The reasoning effort `baton drive` gives this step's agents' turns (over `--effort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
}

/// What a template is validated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Started as a run: ends at `done` or `failed`, may fan out.
    Run,
    /// Run by each task of a fan-out: ends at `join` or `failed`, never fans out.
    Pipeline,
}

impl Usage {
    fn success(self) -> &'static str {
        match self {
            Usage::Run => DONE,
            Usage::Pipeline => JOIN,
        }
    }
}

impl Template {
    /// Name of the first step.
    pub fn start_step(&self) -> &str {
        self.start.as_deref().unwrap_or_else(|| self.steps.first().map(|s| s.name.as_str()).unwrap_or(""))
    }

    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The pipeline named `name`: one of this template's own, else a built-in one.
    pub fn pipeline(&self, name: &str) -> Option<Template> {
        self.pipelines.iter().find(|p| p.name == name).cloned().or_else(|| super::builtin::builtin_pipeline(name))
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
                "Give `name`, `steps` (each with `name`, `role`, `outcomes`), and optionally `description`, `start`, `instructions`, `max_visits`, `independent_of`, `model`, `effort`, `pipelines`.",
            )
        })?;
        template.validate(field)?;
        Ok(template)
    }

    /// Check a template started as a run, and its pipelines: names, targets,
    /// reachability, that every loop is bounded and every fan-out's pipeline exists.
    /// `field` prefixes the paths in error messages (e.g. `template`).
    pub fn validate(&self, field: &str) -> BatonResult<()> {
        self.validate_as(field, Usage::Run)?;
        if self.pipelines.len() > MAX_PIPELINES {
            return Err(BatonError::invalid(
                format!("{field}.pipelines"),
                format!("a template may define at most {MAX_PIPELINES} pipelines; this one has {}", self.pipelines.len()),
                "Share pipelines between fan-outs.",
            ));
        }
        for (i, pipeline) in self.pipelines.iter().enumerate() {
            let at = format!("{field}.pipelines[{i}]");
            if !pipeline.pipelines.is_empty() {
                return Err(BatonError::invalid(
                    format!("{at}.pipelines"),
                    "pipelines cannot define pipelines",
                    "Define them all at the top level.",
                ));
            }
            pipeline.validate_as(&at, Usage::Pipeline)?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            for (outcome, target) in &step.outcomes {
                if let Target::FanOut(fan_out) = target
                    && self.pipeline(&fan_out.fan_out).is_none()
                {
                    return Err(BatonError::invalid(
                        format!("{field}.steps[{i}].outcomes.{outcome}.fan_out"),
                        format!("fan-out of `{}` runs unknown pipeline `{}`", step.name, fan_out.fan_out),
                        format!("Use `{DEFAULT_PIPELINE}` or define it under `pipelines`."),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check this template as used for `usage` (its pipelines are not looked at).
    pub fn validate_as(&self, field: &str, usage: Usage) -> BatonResult<()> {
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
        let names = self.check_steps(field, usage)?;
        let start = self.start_step();
        if !names.contains(start) {
            return Err(BatonError::invalid(
                format!("{field}.start"),
                format!("start step `{start}` is not a step of this template"),
                format!("Use one of: {}.", join(&names)),
            ));
        }
        self.check_reachable(field, start, usage)?;
        self.check_loops_bounded(field)
    }

    fn check_steps<'a>(&'a self, field: &str, usage: Usage) -> BatonResult<BTreeSet<&'a str>> {
        let mut names = BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("{field}.steps[{i}]");
            check_identifier(&step.name, &format!("{at}.name"))?;
            if [DONE, FAILED, JOIN].contains(&step.name.as_str()) {
                return Err(BatonError::invalid(
                    format!("{at}.name"),
                    format!("`{}` is reserved for the end of a run or task", step.name),
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
            for (key, value) in [("model", &step.model), ("effort", &step.effort)] {
                if value.as_ref().is_some_and(|v| v.trim().is_empty() || v.len() > 100 || v.chars().any(char::is_control)) {
                    return Err(BatonError::invalid(
                        format!("{at}.{key}"),
                        format!("`{key}` must be a name of 1 to 100 printable characters"),
                        format!("Give a Codex {key} name such as {}, or omit it.", if key == "model" { "`gpt-5.5`" } else { "`high`" }),
                    ));
                }
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            for (j, other) in step.independent_of.iter().enumerate() {
                if !names.contains(other.as_str()) || other == &step.name {
                    return Err(BatonError::invalid(
                        format!("{field}.steps[{i}].independent_of[{j}]"),
                        format!("step `{}` is to be independent of `{other}`, which is not another step of this template", step.name),
                        format!("Name one of: {}.", join(&names)),
                    ));
                }
            }
            for (outcome, target) in &step.outcomes {
                let at = format!("{field}.steps[{i}].outcomes.{outcome}");
                check_identifier(outcome, &format!("{field}.steps[{i}].outcomes"))?;
                self.check_target(&at, &step.name, outcome, target, &names, usage)?;
            }
        }
        Ok(names)
    }

    /// A target must exist and suit the template's use.
    fn check_target(&self, at: &str, step: &str, outcome: &str, target: &Target, names: &BTreeSet<&str>, usage: Usage) -> BatonResult<()> {
        let ends = match usage {
            Usage::Run => "`done`, `failed`",
            Usage::Pipeline => "`join`, `failed`",
        };
        match (target, usage) {
            (Target::Step(name), _) if !names.contains(name.as_str()) => Err(BatonError::invalid(
                at,
                format!("outcome `{outcome}` of step `{step}` goes to unknown step `{name}`"),
                format!("Use {ends} or one of: {}.", join(names)),
            )),
            (Target::Join, Usage::Run) => Err(BatonError::invalid(
                at,
                "`join` ends a task of a fan-out; this template is started as a run",
                "Use `done` to complete the run, or move these steps into a pipeline under `pipelines`.",
            )),
            (Target::Done, Usage::Pipeline) => Err(BatonError::invalid(
                at,
                "`done` would complete the whole run from inside one task",
                "Use `join` to finish the task; the run goes on when every task has joined.",
            )),
            (Target::FanOut(_), Usage::Pipeline) => {
                Err(BatonError::invalid(at, "a task cannot fan out again", "Plan all tasks in one fan-out of the run's template."))
            }
            (Target::FanOut(fan_out), Usage::Run) => {
                if fan_out.max_tasks.is_some_and(|max| max == 0 || max as usize > super::plan::MAX_TASKS) {
                    return Err(BatonError::invalid(
                        format!("{at}.max_tasks"),
                        format!("max_tasks must be 1 to {}", super::plan::MAX_TASKS),
                        "Omit it for the default.",
                    ));
                }
                match Target::parse(&fan_out.join) {
                    Target::Step(name) if !names.contains(name.as_str()) => Err(BatonError::invalid(
                        format!("{at}.join"),
                        format!("fan-out of `{step}` joins at unknown step `{name}`"),
                        format!("Use `done`, `failed` or one of: {}.", join(names)),
                    )),
                    Target::Join => Err(BatonError::invalid(
                        format!("{at}.join"),
                        "a fan-out joins at a step, `done` or `failed`",
                        "Name the step that runs after the tasks.",
                    )),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn check_reachable(&self, field: &str, start: &str, usage: Usage) -> BatonResult<()> {
        let mut seen = BTreeSet::from([start.to_string()]);
        let mut stack = vec![start.to_string()];
        while let Some(name) = stack.pop() {
            if let Some(step) = self.step(&name) {
                for target in step.outcomes.values() {
                    if seen.insert(target.successor().to_string()) {
                        stack.push(target.successor().to_string());
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
        let success = usage.success();
        if !seen.contains(success) {
            return Err(BatonError::invalid(
                format!("{field}.steps"),
                format!("no outcome leads to `{success}`, so a {} could never complete", if usage == Usage::Run { "run" } else { "task" }),
                format!("Map some step's success outcome to `{success}`."),
            ));
        }
        self.check_every_step_can_finish(field, usage)
    }

    /// A step from which no end can be reached would trap a run.
    fn check_every_step_can_finish(&self, field: &str, usage: Usage) -> BatonResult<()> {
        let mut can_finish: BTreeSet<&str> = BTreeSet::from([usage.success(), FAILED]);
        loop {
            let before = can_finish.len();
            for step in &self.steps {
                if step.outcomes.values().any(|t| can_finish.contains(t.successor())) {
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
                format!(
                    "from step `{}` no sequence of outcomes leads to `{}` or `failed`, so a run there could never end",
                    step.name,
                    usage.success()
                ),
                "Give one of the steps in that loop an outcome that leads out of it.",
            )),
            None => Ok(()),
        }
    }

    /// Every cycle must pass through a step with `max_visits`: drop bounded steps, and
    /// what is left must be acyclic.
    fn check_loops_bounded(&self, field: &str) -> BatonResult<()> {
        let unbounded: Vec<&StepDef> = self.steps.iter().filter(|s| s.max_visits.is_none()).collect();
        let index = |name: &str| unbounded.iter().position(|s| s.name == name);
        let successors = |i: usize| -> Vec<usize> { unbounded[i].outcomes.values().filter_map(|t| index(t.successor())).collect() };
        let Some(cycle) = find_cycle(unbounded.len(), successors) else { return Ok(()) };
        let names: Vec<&str> = cycle.iter().map(|i| unbounded[*i].name.as_str()).collect();
        let first = self.steps.iter().position(|s| s.name == names[0]).unwrap_or(0);
        Err(BatonError::invalid(
            format!("{field}.steps[{first}].max_visits"),
            format!("unbounded loop: {} has no step with max_visits", names.join(" -> ")),
            format!("Set max_visits on one of the steps in the loop, e.g. on `{}`.", names[0]),
        ))
    }
}

/// Names are short identifiers so they are safe in keys, prompts, branches and file names.
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
