//! The operations baton offers, as serializable requests. The MCP tools, the terminal
//! commands and the inter-process protocol all speak these types.

use crate::engine::Template;
pub use crate::store::StatusFilter;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Start a new run of a workflow template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflowParams {
    /// What the run must achieve, in the user's words.
    pub goal: String,
    /// Short name for listings; defaults to the start of the goal.
    #[serde(default)]
    pub title: Option<String>,
    /// Name of a built-in (`feature`, `bugfix`) or previously used template. Default `feature`.
    #[serde(default)]
    pub template: Option<String>,
    /// A whole template given inline: {name, description?, start?, steps:[{name, role, instructions?, outcomes:{outcome: next_step|done|failed}, max_visits?}]}.
    #[serde(default)]
    pub template_definition: Option<Template>,
    /// Path to a template file (.toml or .json), relative to the working directory.
    #[serde(default)]
    pub template_file: Option<String>,
    /// Extra facts every role should see (repository, branch, constraints, ...).
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// Report the current role's outcome and get the next role's brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceParams {
    pub run_id: String,
    /// The `version` from the brief you are acting on; a stale one is refused as a conflict.
    pub expected_version: u64,
    /// One of the outcomes listed in the brief, e.g. `approved` or `changes_requested`.
    pub outcome: String,
    /// Your report: what you did, found or decided. The next roles read it.
    pub output: String,
    /// Named results to keep with the run (paths, commit ids, test counts), merged into its artifacts.
    #[serde(default)]
    pub artifacts: Option<Map<String, Value>>,
}

/// Save a named snapshot of a run that can later be forked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointParams {
    pub run_id: String,
    /// Checkpoint name, unique within the run (letters, digits, `_`, `-`).
    pub name: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// Resume work: list resumable runs, brief one run, or fork one from a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeParams {
    /// Omit to list runs that are still in progress.
    #[serde(default)]
    pub run_id: Option<String>,
    /// With `run_id`: fork a new run from this checkpoint instead of resuming the run itself.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Title of the forked run.
    #[serde(default)]
    pub title: Option<String>,
}

/// Fork a new run from a checkpoint of an existing run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRunParams {
    pub run_id: String,
    pub checkpoint: String,
    #[serde(default)]
    pub title: Option<String>,
}

/// Pause a run until a human answers a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitHumanParams {
    pub run_id: String,
    /// One precise question for the user.
    pub question: String,
    /// Allowed answers; omit for a free-text answer.
    #[serde(default)]
    pub options: Option<Vec<String>>,
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// Answer a run's pending human question and let it continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerHumanParams {
    pub run_id: String,
    /// The answer; must be one of the question's options when it has any.
    pub answer: String,
    /// Free-text detail to pass on with the answer.
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// List runs, newest change first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ListRunsParams {
    #[serde(default)]
    pub status: Option<StatusFilter>,
    /// Only runs of this template.
    #[serde(default)]
    pub template: Option<String>,
    /// At most this many (default 50, max 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A run's state and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRunParams {
    pub run_id: String,
    /// How many events to return (newest first window; default 50, max 1000).
    #[serde(default)]
    pub history_limit: Option<u32>,
    /// Only events with seq below this, for paging back through long histories.
    #[serde(default)]
    pub before_seq: Option<u64>,
}

/// Stop a run for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRunParams {
    pub run_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// No arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Every operation, tagged by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "params", rename_all = "snake_case")]
pub enum Request {
    StartWorkflow(StartWorkflowParams),
    Advance(AdvanceParams),
    Checkpoint(CheckpointParams),
    Resume(ResumeParams),
    ForkRun(ForkRunParams),
    AwaitHuman(AwaitHumanParams),
    AnswerHuman(AnswerHumanParams),
    ListRuns(ListRunsParams),
    GetRun(GetRunParams),
    CancelRun(CancelRunParams),
    ListTemplates(NoParams),
}

/// A request plus the id that makes retrying it safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// A fresh UUID per logical request: it becomes the id of a run the request creates,
    /// and a retry with the same id is applied at most once.
    pub op_id: String,
    pub request: Request,
    /// The caller gives up at this instant (milliseconds of this machine's CLOCK_MONOTONIC,
    /// shared by all its processes); a request read later is refused, never applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// A successful answer: structured data plus a short text for humans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    pub data: Value,
}
