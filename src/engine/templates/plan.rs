//! The plan a role reports when its outcome fans out: the tasks to work in parallel and
//! what each depends on. Checked as strictly as templates, with the path of each problem.

use super::graph::find_cycle;
use super::template::{FanOut, MAX_TASKS, Template};
use crate::engine::naming::check_identifier;
use crate::error::{BatonError, BatonResult};
use crate::limits::{MAX_TEXT_BYTES, check_len};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest task title.
pub const MAX_TITLE_BYTES: usize = 200;
/// Longest base revision.
pub const MAX_BASE_BYTES: usize = 200;

/// Tasks to run in parallel, each through a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub tasks: Vec<PlanTask>,
    /// In a git repository: the commit (or branch, tag, ...) the tasks' branches start
    /// from. Omit it: baton takes the HEAD of the run's working tree when the plan is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// One task of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanTask {
    /// Identifier, unique in the plan (letters, digits, `_`, `-`); names the task's branch.
    pub id: String,
    pub title: String,
    /// What the task must achieve, for whoever implements, reviews and tests it.
    #[serde(default)]
    pub description: String,
    /// Ids of tasks that must be done before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The pipeline this task runs, if not the fan-out's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

impl Plan {
    /// Check the plan against the fan-out it feeds and the run's template (for pipelines).
    pub fn validate(&self, field: &str, fan_out: &FanOut, template: &Template) -> BatonResult<()> {
        let max = fan_out.max_tasks.map_or(MAX_TASKS, |m| m as usize).min(MAX_TASKS);
        if self.tasks.is_empty() {
            return Err(BatonError::invalid(
                format!("{field}.tasks"),
                "the plan has no tasks",
                "List at least one task: {\"id\": \"api\", \"title\": \"...\", \"description\": \"...\", \"depends_on\": []}.",
            ));
        }
        if self.tasks.len() > max {
            return Err(BatonError::invalid(
                format!("{field}.tasks"),
                format!("the plan has {} tasks; this fan-out takes at most {max}", self.tasks.len()),
                "Merge small tasks, or split the goal over several runs.",
            ));
        }
        if let Some(base) = &self.base {
            check_len(&format!("{field}.base"), base.len(), MAX_BASE_BYTES)?;
        }
        let mut index = BTreeMap::new();
        for (i, task) in self.tasks.iter().enumerate() {
            let at = format!("{field}.tasks[{i}]");
            check_identifier(&task.id, &format!("{at}.id"))?;
            if index.insert(task.id.as_str(), i).is_some() {
                return Err(BatonError::invalid(
                    format!("{at}.id"),
                    format!("task id `{}` is used twice", task.id),
                    "Give every task a unique id.",
                ));
            }
            if task.title.trim().is_empty() {
                return Err(BatonError::invalid(format!("{at}.title"), "the task has no title", "Give it a short title."));
            }
            check_len(&format!("{at}.title"), task.title.len(), MAX_TITLE_BYTES)?;
            check_len(&format!("{at}.description"), task.description.len(), MAX_TEXT_BYTES)?;
            if let Some(pipeline) = &task.pipeline
                && template.pipeline(pipeline).is_none()
            {
                return Err(BatonError::invalid(
                    format!("{at}.pipeline"),
                    format!("task `{}` names unknown pipeline `{pipeline}`", task.id),
                    format!("Omit it for `{}`, or use one of the template's `pipelines`.", fan_out.fan_out),
                ));
            }
        }
        for (i, task) in self.tasks.iter().enumerate() {
            for (j, dep) in task.depends_on.iter().enumerate() {
                let at = format!("{field}.tasks[{i}].depends_on[{j}]");
                if dep == &task.id {
                    return Err(BatonError::invalid(at, format!("task `{dep}` depends on itself"), "Remove it from its own depends_on."));
                }
                if !index.contains_key(dep.as_str()) {
                    return Err(BatonError::invalid(
                        at,
                        format!("task `{}` depends on unknown task `{dep}`", task.id),
                        "Depend only on ids of this plan.",
                    ));
                }
                if task.depends_on[..j].contains(dep) {
                    return Err(BatonError::invalid(at, format!("task `{}` lists `{dep}` twice", task.id), "List each dependency once."));
                }
            }
        }
        let successors =
            |i: usize| -> Vec<usize> { self.tasks[i].depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect() };
        if let Some(cycle) = find_cycle(self.tasks.len(), successors) {
            let ids: Vec<&str> = cycle.iter().map(|i| self.tasks[*i].id.as_str()).collect();
            return Err(BatonError::invalid(
                format!("{field}.tasks[{}].depends_on", cycle[0]),
                format!("the tasks depend on each other in a cycle: {}", ids.join(" -> ")),
                "Break the cycle: one of these tasks must not wait for the others.",
            ));
        }
        Ok(())
    }
}
