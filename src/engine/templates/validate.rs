//! Checking templates: `validate` rejects templates that could never finish or could loop
//! forever, with the path of each problem. Above the built-in pipelines it looks up.

use super::builtin::builtin_pipeline;
use super::graph::find_cycle;
use super::template::{DEFAULT_PIPELINE, DONE, FAILED, JOIN, JoinTarget, MAX_PIPELINES, MAX_STEPS, MAX_TASKS, StepDef, Target, Template};
use crate::engine::naming::check_identifier;
use crate::error::{BatonError, BatonResult};
use crate::limits::{MAX_TEXT_BYTES, check_len};
use std::collections::BTreeSet;

/// What a template is validated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
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

/// Most agent turns `baton drive` may give one step before its failure policy applies.
pub const MAX_AGENT_ATTEMPTS: u32 = 20;

/// A step's `max_agent_attempts`: 1 to [`MAX_AGENT_ATTEMPTS`].
fn check_agent_attempts(value: Option<u32>, field: &str) -> BatonResult<()> {
    match value {
        Some(n) if n == 0 || n > MAX_AGENT_ATTEMPTS => Err(BatonError::invalid(
            field,
            format!("max_agent_attempts must be 1 to {MAX_AGENT_ATTEMPTS}; it is {n}"),
            "Give the number of agent turns a step may take before `on_agent_failure` applies (e.g. 3), or omit it.",
        )),
        _ => Ok(()),
    }
}

impl Template {
    /// The pipeline named `name`: one of this template's own, else a built-in one.
    pub fn pipeline(&self, name: &str) -> Option<Template> {
        self.pipelines.iter().find(|p| p.name == name).cloned().or_else(|| builtin_pipeline(name))
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
                "Give `name`, `steps` (each with `name`, `role`, `outcomes`), and optionally `description`, `start`, `instructions`, `max_visits`, `independent_of`, `model`, `effort`, `on_agent_failure` (`ask` or `fail`), `max_agent_attempts`, `pipelines`.",
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
    fn validate_as(&self, field: &str, usage: Usage) -> BatonResult<()> {
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
            check_agent_attempts(step.max_agent_attempts, &format!("{at}.max_agent_attempts"))?;
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
                if fan_out.max_tasks.is_some_and(|max| max == 0 || max as usize > MAX_TASKS) {
                    return Err(BatonError::invalid(
                        format!("{at}.max_tasks"),
                        format!("max_tasks must be 1 to {}", MAX_TASKS),
                        "Omit it for the default.",
                    ));
                }
                match &fan_out.join {
                    JoinTarget::Step(name) if name == JOIN => Err(BatonError::invalid(
                        format!("{at}.join"),
                        "a fan-out joins at a step, `done` or `failed`",
                        "Name the step that runs after the tasks.",
                    )),
                    JoinTarget::Step(name) if !names.contains(name.as_str()) => Err(BatonError::invalid(
                        format!("{at}.join"),
                        format!("fan-out of `{step}` joins at unknown step `{name}`"),
                        format!("Use `done`, `failed` or one of: {}.", join(names)),
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

fn join(names: &BTreeSet<&str>) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}
