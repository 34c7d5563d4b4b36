//! The MCP tool catalog: each tool's name, description, JSON schemas, annotations, and
//! how its arguments become a [`Request`].
//!
//! Codex loads MCP tools through `tool_search`, which returns 8 tools by default, so
//! baton keeps to 8 tools whose descriptions all say "baton" and the workflow verbs; the
//! read-only views (listing, history, one event, templates) share one tool, `inspect`.
//! Codex asks the user before a tool unless it is read-only or says `openWorldHint:
//! false` (and always asks for destructive ones), so every tool states both hints.

use super::output::{Answer, break_template_cycle, output_schema};
use crate::api::*;
use crate::error::{BatonError, BatonResult};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Read-only views of baton's runs: pick one by the arguments given.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct InspectParams {
    /// A run to show: its state and a page of its history. Omit to list runs.
    #[serde(default)]
    pub run_id: Option<String>,
    /// With `run_id`: show this one event (`seq`) whole, e.g. a report a brief shortened.
    #[serde(default)]
    pub event: Option<u64>,
    /// With `event`: byte offset into its long text (`next_offset` of the previous answer).
    #[serde(default)]
    pub offset: Option<usize>,
    /// With `run_id`: how many events (default 50, max 1000), newest first window.
    #[serde(default)]
    pub history_limit: Option<u32>,
    /// With `run_id`: only events before this seq, to page back (`next_before_seq`).
    #[serde(default)]
    pub before_seq: Option<u64>,
    /// Listing: only runs with this status (open = active or awaiting_human).
    #[serde(default)]
    pub status: Option<StatusFilter>,
    /// Listing: only runs of this template.
    #[serde(default)]
    pub template: Option<String>,
    /// Listing: only runs of this workspace (a git repository root or directory).
    #[serde(default)]
    pub workspace: Option<String>,
    /// Listing: at most this many (default 50, max 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// List the workflow templates (built-in and saved) instead of runs.
    #[serde(default)]
    pub templates: Option<bool>,
}

impl InspectParams {
    /// The read-only request these arguments ask for.
    fn into_request(self) -> BatonResult<Request> {
        let listing_only = [self.status.is_some(), self.template.is_some(), self.workspace.is_some(), self.limit.is_some()];
        if self.templates == Some(true) {
            return Ok(Request::ListTemplates(NoParams {}));
        }
        let Some(run_id) = self.run_id else {
            if let Some(field) = [("event", self.event.is_some()), ("history_limit", self.history_limit.is_some())]
                .into_iter()
                .find_map(|(name, given)| given.then_some(name))
            {
                return Err(BatonError::invalid(field, format!("`{field}` needs a `run_id`"), "Add the run_id it belongs to."));
            }
            return Ok(Request::ListRuns(ListRunsParams {
                status: self.status,
                template: self.template,
                limit: self.limit,
                workspace: self.workspace,
            }));
        };
        if listing_only.iter().any(|given| *given) {
            return Err(BatonError::invalid(
                "run_id",
                "`status`, `template`, `workspace` and `limit` filter listings, which `run_id` does not ask for",
                "Omit `run_id` to list runs, or the filters to show one run.",
            ));
        }
        Ok(match self.event {
            Some(seq) => Request::GetEvent(GetEventParams { run_id, seq, offset: self.offset }),
            None => Request::GetRun(GetRunParams { run_id, history_limit: self.history_limit, before_seq: self.before_seq }),
        })
    }
}

type Parser = Box<dyn Fn(Value, &Path) -> BatonResult<Request> + Send + Sync>;

/// One tool: its MCP description, the kinds of answer it gives and its argument parser.
pub struct ToolSpec {
    pub tool: Tool,
    /// What its structured results can be (besides an error); its `outputSchema` admits these.
    pub answers: &'static [Answer],
    parse: Parser,
}

impl ToolSpec {
    /// Turn raw arguments into a request, naming the field at fault on error; relative
    /// paths are taken from `cwd`, the caller's working directory.
    pub fn parse(&self, arguments: Option<JsonObject>, cwd: &Path) -> BatonResult<Request> {
        (self.parse)(Value::Object(arguments.unwrap_or_default()), cwd)
    }
}

/// What a tool does to state, for MCP tool annotations.
#[derive(Clone, Copy, PartialEq)]
enum Effect {
    /// Only reads.
    Reads,
    /// Records a change that later changes can build on (never asks for approval).
    Changes,
    /// Ends something for good (Codex asks the user first).
    Ends,
}

fn spec<P>(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    effect: Effect,
    answers: &'static [Answer],
    into: fn(P, &Path) -> BatonResult<Request>,
) -> ToolSpec
where
    P: JsonSchema + DeserializeOwned + 'static,
{
    let annotations = ToolAnnotations::with_title(title)
        .read_only(effect == Effect::Reads)
        .destructive(effect == Effect::Ends)
        .idempotent(effect == Effect::Reads)
        .open_world(false);
    let tool = Tool::new(name, description, schema_object::<P>())
        .with_title(title)
        .with_raw_output_schema(output_schema(answers))
        .with_annotations(annotations);
    ToolSpec { tool, answers, parse: Box::new(move |value, cwd| parse_arguments::<P>(value).and_then(|p| into(p, cwd))) }
}

/// All tools baton serves, at most 8 (Codex's `tool_search` default limit).
pub fn catalog() -> Vec<ToolSpec> {
    vec![
        spec::<StartWorkflowParams>(
            "start_workflow",
            "baton: start a workflow",
            "baton: start a durable multi-agent workflow run (template `feature`: architect plans, implementer builds, reviewer reviews, tester tests; review and test failures loop back; `bugfix` and custom templates too). Returns the first brief: the role to play now and how to report with `advance`.",
            Effect::Changes,
            &[Answer::Brief],
            |mut p, cwd| {
                if let Some(path) = &p.template_file {
                    if p.template.is_some() || p.template_definition.is_some() {
                        return Err(BatonError::invalid(
                            "template",
                            "more than one of `template`, `template_definition` and `template_file` was given",
                            "Give only one: a template name, an inline definition, or a file path.",
                        ));
                    }
                    p.template_definition = Some(crate::template_file::read(path, cwd)?);
                }
                Ok(Request::StartWorkflow(p))
            },
        ),
        spec::<AdvanceParams>(
            "advance",
            "baton: report a step and advance",
            "baton: finish the current step of a workflow run: report the role's outcome (one listed in the brief) and output, with the brief's version as expected_version. Returns the brief for the next role (implementer, reviewer, tester, ...).",
            Effect::Changes,
            // With `task`: the task's brief.
            &[Answer::Brief, Answer::Task],
            |p, _| Ok(Request::Advance(p)),
        ),
        spec::<CheckpointParams>(
            "checkpoint",
            "baton: checkpoint a run",
            "baton: save a named checkpoint of a workflow run (with the git HEAD), e.g. before a risky step; `resume` with that checkpoint forks a new run from it.",
            Effect::Changes,
            &[Answer::Checkpoint],
            |p, _| Ok(Request::Checkpoint(p)),
        ),
        spec::<ResumeParams>(
            "resume",
            "baton: resume runs",
            "baton: resume workflow runs, e.g. in a new Codex session. No arguments: this workspace's unfinished runs. run_id: a full briefing of where the run stands and what to do next. run_id + checkpoint: fork a new run from that checkpoint.",
            Effect::Changes,
            // No run: a listing; a run: a briefing; a checkpoint: the fork's brief; claim or task: a task's brief.
            &[Answer::Runs, Answer::Briefing, Answer::Brief, Answer::Task],
            |p, _| Ok(Request::Resume(p)),
        ),
        spec::<AwaitHumanParams>(
            "await_human",
            "baton: ask the user",
            "baton: pause a workflow run with a question only the user can decide (and its options). baton asks the user directly when the client can show a form; otherwise the run waits durably for `answer_human` or `baton answer`.",
            Effect::Changes,
            &[Answer::Brief],
            |p, _| Ok(Request::AwaitHuman(p)),
        ),
        spec::<AnswerHumanParams>(
            "answer_human",
            "baton: give the user's answer",
            "baton: give the user's answer to a workflow run's pending question (loop-limit gates: `continue` or `fail`). Returns the brief to carry on with.",
            Effect::Changes,
            // With `task`: the task's brief.
            &[Answer::Brief, Answer::Task],
            |p, _| Ok(Request::AnswerHuman(p)),
        ),
        spec::<CancelRunParams>(
            "cancel_run",
            "baton: cancel a run",
            "baton: cancel a workflow run for good, with a reason (Codex asks the user first).",
            Effect::Ends,
            &[Answer::Brief],
            |p, _| Ok(Request::CancelRun(p)),
        ),
        spec::<InspectParams>(
            "inspect",
            "baton: inspect runs",
            "baton: read-only views of workflow runs: list runs (by status, template, workspace), show one run's state and paged history (run_id), one event's whole report (run_id + event), or the templates (templates: true).",
            Effect::Reads,
            &[Answer::Runs, Answer::Run, Answer::Event, Answer::Templates],
            |p: InspectParams, _| p.into_request(),
        ),
    ]
}

/// A schemars schema as the JSON object MCP wants.
fn schema_object<T: JsonSchema>() -> Arc<JsonObject> {
    let mut schema = schemars::schema_for!(T).to_value();
    break_template_cycle(&mut schema);
    match schema {
        Value::Object(mut map) => {
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
