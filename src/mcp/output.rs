//! What each tool answers, as JSON Schema: a tool's `outputSchema` is the union of the
//! schemas of the reply types it can give and of the error object, generated (schemars,
//! serialize contract) from the very types whose serialization becomes `structuredContent`.
//!
//! Clients validate structured results against these schemas (the Python SDK refuses a
//! result outside them), so a reply type a tool gives but does not list here breaks them:
//! [`Answer::of`] ties each [`Reply`] to its kind, and the server logs a reply outside its
//! tool's kinds. The schemas are kept small (they are loaded into model context with the
//! tool list) and free of `$ref` cycles, which some clients cannot resolve.

use crate::api::{Briefing, CheckpointSaved, EventDetail, Reply, RunDetails, RunList, TemplateList};
use crate::engine::{Brief, TaskBrief};
use crate::error::BatonError;
use rmcp::model::JsonObject;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The dialect of every schema baton publishes (MCP's default, and the Python SDK's pick
/// by `$schema`).
const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// One kind of successful answer a tool can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A run's brief (a change to the run, a fork, a cancel).
    Brief,
    /// A task's brief (a claim, a task's report, renewal, release or question).
    Task,
    /// Where a run stands (`resume` with a run id).
    Briefing,
    /// A listing of runs.
    Runs,
    /// One run with a window of its history.
    Run,
    /// One event with a window of its long text.
    Event,
    /// A saved checkpoint.
    Checkpoint,
    /// The workflow templates.
    Templates,
}

impl Answer {
    /// The kind of `reply`; `None` for replies no tool gives (maintenance, live views).
    pub fn of(reply: &Reply) -> Option<Answer> {
        Some(match reply {
            Reply::Brief(_) => Answer::Brief,
            Reply::Task(_) => Answer::Task,
            Reply::Briefing(_) => Answer::Briefing,
            Reply::Runs(_) => Answer::Runs,
            Reply::Run(_) => Answer::Run,
            Reply::Event(_) => Answer::Event,
            Reply::Checkpoint(_) => Answer::Checkpoint,
            Reply::Templates(_) => Answer::Templates,
            Reply::Graph(_)
            | Reply::Changes(_)
            | Reply::Deleted(_)
            | Reply::Verified(_)
            | Reply::BackedUp(_)
            | Reply::Exported(_)
            | Reply::Imported(_)
            | Reply::Owner(_) => return None,
        })
    }

    /// The schema of the type [`Reply::to_json`] serializes for this kind (a `$ref` into
    /// the generator's definitions).
    fn schema(self, generator: &mut SchemaGenerator) -> Schema {
        match self {
            Answer::Brief => generator.subschema_for::<Brief>(),
            Answer::Task => generator.subschema_for::<TaskBrief>(),
            Answer::Briefing => generator.subschema_for::<Briefing>(),
            Answer::Runs => generator.subschema_for::<RunList>(),
            Answer::Run => generator.subschema_for::<RunDetails>(),
            Answer::Event => generator.subschema_for::<EventDetail>(),
            Answer::Checkpoint => generator.subschema_for::<CheckpointSaved>(),
            Answer::Templates => generator.subschema_for::<TemplateList>(),
        }
    }
}

/// The structured content of a tool error (`isError: true`). The MCP spec applies
/// `outputSchema` to structured results and the Python SDK skips error results, but a
/// stricter client may not: the schema admits this object too.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ToolError {
    pub error: BatonError,
}

impl ToolError {
    pub fn to_json(err: &BatonError) -> Value {
        serde_json::to_value(ToolError { error: err.clone() })
            .unwrap_or_else(|_| json!({ "error": { "code": "internal", "message": err.message, "fix": err.fix } }))
    }
}

/// The `outputSchema` of a tool that answers with `answers` (or an error): an object that
/// is one of them.
pub fn output_schema(answers: &[Answer]) -> Arc<JsonObject> {
    // The serialize contract: an `Option` without `skip_serializing_if` is always written
    // (as null), so it is required; what `skip_serializing_if` leaves out is optional.
    let mut generator = SchemaSettings::draft2020_12().for_serialize().into_generator();
    let mut branches: Vec<Value> = answers.iter().map(|a| a.schema(&mut generator).to_value()).collect();
    branches.push(generator.subschema_for::<ToolError>().to_value());
    let definitions = generator.take_definitions(true);
    let mut schema = json!({ "$schema": DIALECT, "type": "object", "anyOf": branches, "$defs": definitions });
    break_template_cycle(&mut schema);
    compact(&mut schema);
    match schema {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// `Template.pipelines` holds templates, a `$ref` cycle; but pipelines cannot define
/// pipelines (the template check refuses it), so a pipeline's schema is a template whose
/// `pipelines` is empty, and the cycle ends there. Used for input schemas too.
pub fn break_template_cycle(schema: &mut Value) {
    let Some(defs) = schema.get_mut("$defs").and_then(Value::as_object_mut) else { return };
    let Some(template) = defs.get("Template").cloned() else { return };
    if template.pointer("/properties/pipelines").is_none() {
        return;
    }
    let mut pipeline = template;
    if let Some(pipelines) = pipeline.pointer_mut("/properties/pipelines") {
        *pipelines = json!({ "type": "array", "maxItems": 0 });
    }
    if let Some(description) = pipeline.get_mut("description") {
        *description = Value::from("A pipeline: a template run by the tasks of a fan-out; it defines no pipelines.");
    }
    defs.insert("Pipeline".into(), pipeline);
    if let Some(items) = defs.get_mut("Template").and_then(|t| t.pointer_mut("/properties/pipelines/items")) {
        *items = json!({ "$ref": "#/$defs/Pipeline" });
    }
}

/// Drop the annotations that validate nothing (descriptions, titles, defaults, examples):
/// the brief's own `next_action` and the tool descriptions tell a model what to do, and
/// every byte here is loaded into its context with the tool list.
fn compact(schema: &mut Value) {
    let Value::Object(map) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(compact);
        }
        return;
    };
    for keyword in ["description", "title", "default", "examples"] {
        map.remove(keyword);
    }
    for (keyword, value) in map.iter_mut() {
        match keyword.as_str() {
            // Maps from names to schemas: the names (e.g. a property called `description`) stay.
            "properties" | "$defs" | "patternProperties" | "dependentSchemas" => {
                if let Value::Object(named) = value {
                    named.values_mut().for_each(compact);
                }
            }
            // Values, not schemas.
            "enum" | "const" | "required" => {}
            _ => compact(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names of the definitions reachable from `value` through `$ref`s.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => out.push(target.trim_start_matches("#/$defs/").to_string()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn schemas_have_an_object_root_resolvable_refs_and_no_cycles() {
        let all = [
            Answer::Brief,
            Answer::Task,
            Answer::Briefing,
            Answer::Runs,
            Answer::Run,
            Answer::Event,
            Answer::Checkpoint,
            Answer::Templates,
        ];
        let schema = Value::Object(output_schema(&all).as_ref().clone());
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["anyOf"].as_array().map(Vec::len), Some(all.len() + 1), "one branch per answer and the error");
        let defs = schema["$defs"].as_object().expect("definitions");
        // Depth-first search for a definition that reaches itself.
        fn cycle(name: &str, defs: &serde_json::Map<String, Value>, path: &mut Vec<String>) -> Option<Vec<String>> {
            if path.iter().any(|p| p == name) {
                path.push(name.to_string());
                return Some(path.clone());
            }
            let mut next = Vec::new();
            refs(defs.get(name).unwrap_or_else(|| panic!("unresolved $ref {name}")), &mut next);
            path.push(name.to_string());
            for n in next {
                if let Some(found) = cycle(&n, defs, path) {
                    return Some(found);
                }
            }
            path.pop();
            None
        }
        for name in defs.keys() {
            assert_eq!(cycle(name, defs, &mut Vec::new()), None, "a $ref cycle");
        }
        assert!(defs.contains_key("Pipeline") && defs.contains_key("Template"));
        assert_eq!(defs["Pipeline"]["properties"]["pipelines"]["maxItems"], 0);
        // A property named `description` is kept; the annotation `description` is not.
        assert!(defs["Template"]["properties"].get("description").is_some());
        assert!(!schema.to_string().contains("\"description\":\""), "descriptions are dropped");
    }

    #[test]
    fn a_task_brief_status_is_a_task_status_and_a_brief_status_a_run_status() {
        let schema = Value::Object(output_schema(&[Answer::Brief, Answer::Task]).as_ref().clone());
        let defs = &schema["$defs"];
        let task_status = &defs["TaskBrief"]["properties"]["status"]["$ref"];
        let run_status = &defs["Brief"]["properties"]["status"]["$ref"];
        assert_eq!(task_status, "#/$defs/TaskStatus");
        assert_eq!(run_status, "#/$defs/RunStatus");
        let statuses = defs["TaskStatus"].to_string();
        assert!(statuses.contains("\"claimed\"") && statuses.contains("\"ready\""), "{statuses}");
        // The discriminating fields are required: a task brief has `task`, a run brief `version`.
        let required = |def: &str| defs[def]["required"].as_array().cloned().unwrap_or_default();
        assert!(required("TaskBrief").contains(&json!("task")));
        assert!(required("Brief").contains(&json!("version")));
    }
}
