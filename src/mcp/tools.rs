//! The MCP tool catalog: each tool's name, description, JSON schemas, and how its
//! arguments become a [`Request`].

use crate::api::*;
use crate::engine::Brief;
use crate::error::{BatonError, BatonResult};
use crate::service::{Briefing, CheckpointSaved, RunDetails, RunList, TemplateList};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// `resume` answers with a run list, a briefing or a forked run's brief.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ResumeOutput {
    Runs(RunList),
    Briefing(Briefing),
    Forked(Brief),
}

/// Every tool answers with its result, or with `{"error": ...}` when `isError` is set;
/// the published output schema admits both.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ToolOutcome<T> {
    Done(T),
    Failed { error: BatonError },
}

type Parser = Box<dyn Fn(Value) -> BatonResult<Request> + Send + Sync>;

/// One tool: its MCP description and its argument parser.
pub struct ToolSpec {
    pub tool: Tool,
    parse: Parser,
}

impl ToolSpec {
    /// Turn raw arguments into a request, naming the field at fault on error.
    pub fn parse(&self, arguments: Option<JsonObject>) -> BatonResult<Request> {
        (self.parse)(Value::Object(arguments.unwrap_or_default()))
    }
}

/// What a tool does to state, for MCP tool annotations.
#[derive(Clone, Copy, PartialEq)]
enum Effect {
    /// Only reads.
    Reads,
    /// Records a change that later changes can build on.
    Changes,
    /// Ends something for good.
    Ends,
}

fn spec<P, O>(name: &'static str, description: &'static str, effect: Effect, into: fn(P) -> Request) -> ToolSpec
where
    P: JsonSchema + DeserializeOwned + 'static,
    O: JsonSchema,
{
    let annotations = ToolAnnotations::new().read_only(effect == Effect::Reads).destructive(effect == Effect::Ends);
    let tool = Tool::new(name, description, schema_object::<P>())
        .with_raw_output_schema(schema_object::<ToolOutcome<O>>())
        .with_annotations(annotations);
    ToolSpec { tool, parse: Box::new(move |value| parse_arguments::<P>(value).map(into)) }
}

/// All tools baton serves.
pub fn catalog() -> Vec<ToolSpec> {
    vec![
        spec::<StartWorkflowParams, Brief>(
            "start_workflow",
            "Start a durable multi-role workflow run (default template `feature`: architect -> implementer -> reviewer -> tester, with review and test failures looping back). Returns the first role's brief; keep its run_id and version.",
            Effect::Changes,
            |mut p| {
                p.template_file = p.template_file.map(absolute_path);
                Request::StartWorkflow(p)
            },
        ),
        spec::<AdvanceParams, Brief>(
            "advance",
            "Finish the current step: report the role's outcome (one listed in the brief) and output, with the brief's version as expected_version. Returns the brief for the next role.",
            Effect::Changes,
            Request::Advance,
        ),
        spec::<CheckpointParams, CheckpointSaved>(
            "checkpoint",
            "Save a named snapshot of a run, e.g. before a risky step; `resume` (or `fork_run`) with that checkpoint starts a new run from it.",
            Effect::Changes,
            Request::Checkpoint,
        ),
        spec::<ResumeParams, ResumeOutput>(
            "resume",
            "Pick work up again, e.g. in a new Codex session. No arguments: list runs in progress. run_id: a full briefing of where the run stands and what to do next. run_id + checkpoint: fork a new run from that checkpoint.",
            Effect::Changes,
            Request::Resume,
        ),
        spec::<AwaitHumanParams, Brief>(
            "await_human",
            "Pause a run with a question for the user (a decision only they can make). The run waits, durably, until `answer_human` or `baton answer` gives the answer.",
            Effect::Changes,
            Request::AwaitHuman,
        ),
        spec::<AnswerHumanParams, Brief>(
            "answer_human",
            "Give the user's answer to a run's pending question (including loop-limit gates: `continue` or `fail`). Returns the brief to carry on with.",
            Effect::Changes,
            Request::AnswerHuman,
        ),
        spec::<ListRunsParams, RunList>(
            "list_runs",
            "List runs (newest change first), optionally by status (open, active, awaiting_human, completed, failed, cancelled) or template.",
            Effect::Reads,
            Request::ListRuns,
        ),
        spec::<GetRunParams, RunDetails>(
            "get_run",
            "A run's full state and its event history (paged with history_limit and before_seq).",
            Effect::Reads,
            Request::GetRun,
        ),
        spec::<CancelRunParams, Brief>("cancel_run", "Cancel a run for good, with a reason.", Effect::Ends, Request::CancelRun),
        spec::<ForkRunParams, Brief>(
            "fork_run",
            "Start a new run from a checkpoint of an existing run (same as `resume` with run_id and checkpoint).",
            Effect::Changes,
            Request::ForkRun,
        ),
        spec::<NoParams, TemplateList>(
            "list_templates",
            "List workflow templates: the built-in ones and those used before by name.",
            Effect::Reads,
            Request::ListTemplates,
        ),
    ]
}

/// A schemars schema as the JSON object MCP wants.
fn schema_object<T: JsonSchema>() -> Arc<JsonObject> {
    match serde_json::to_value(schemars::schema_for!(T)) {
        Ok(Value::Object(mut map)) => {
            map.remove("title");
            map.entry("type").or_insert_with(|| Value::from("object"));
            Arc::new(map)
        }
        _ => Arc::new(JsonObject::new()),
    }
}

/// Deserialize arguments, reporting the exact field path of the first problem.
pub fn parse_arguments<P: DeserializeOwned>(value: Value) -> BatonResult<P> {
    crate::limits::check_argument_depths(&value)?;
    serde_path_to_error::deserialize::<_, P>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = if path != "." {
            path
        } else {
            // "missing field `x`" / "unknown field `x`" carry the name in backticks.
            message.split('`').nth(1).unwrap_or("arguments").to_string()
        };
        let fix = if message.starts_with("unknown field") {
            format!("Remove `{field}`; {}", message.split(", expected").nth(1).map(|s| format!("allowed:{s}.")).unwrap_or_default())
        } else {
            "Check the tool's input schema for the expected type.".to_string()
        };
        BatonError::invalid(field, format!("invalid arguments: {message}"), fix)
    })
}

fn absolute_path(path: String) -> String {
    let p = std::path::Path::new(&path);
    if p.is_absolute() {
        return path;
    }
    std::env::current_dir().map(|cwd| cwd.join(p).to_string_lossy().into_owned()).unwrap_or(path)
}
