//! The operations baton offers, as serializable requests and typed replies. The MCP
//! tools, the terminal commands and the inter-process protocol all speak these types.

use crate::engine::ForkOrigin;
use crate::engine::MergeReport;
use crate::engine::TaskCode;
use crate::engine::{Actor, Event, Plan, Run, Template, Workspace};
use crate::engine::{Brief, EventLine, TaskBrief};
use crate::error::BatonError;
use crate::graph::GraphView;
use crate::store::RunSummary;
pub use crate::store::StatusFilter;
use crate::store::{BackupReport, VerifyReport};
use schemars::JsonSchema;

mod call;
mod resume;

pub use call::{AskOwner, Briefed, Call, ListTemplates, Verify};
pub use resume::{Claim, ClaimTarget, ForkAt, ForkCheckpoint, ListOpen, Release, Renew, Resume, RunBriefing, ShowTask};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Start a new run of a workflow template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
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
    /// Path to a template file (.toml or .json), relative to the working directory. The
    /// calling process reads it (see `template_file`) and sends it as `template_definition`.
    #[serde(default)]
    pub template_file: Option<String>,
    /// Extra facts every role should see (repository, branch, constraints, ...).
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// Most sub-agents to work this run's tasks at once (1 to 16, default 4).
    #[serde(default)]
    pub max_agents: Option<u32>,
}

/// Report the current role's outcome and get the next role's brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceParams {
    pub run_id: String,
    /// The `version` from the brief you are acting on; a stale one is refused as a conflict.
    /// Required unless you report a task (then `task` and `lease_token`).
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// One of the outcomes listed in the brief, e.g. `approved` or `changes_requested`.
    pub outcome: String,
    /// Your report: what you did, found or decided. The next roles read it.
    pub output: String,
    /// Named results to keep with the run (paths, commit ids, test counts), merged into its artifacts.
    #[serde(default)]
    pub artifacts: Option<Map<String, Value>>,
    /// When the outcome fans out (the brief's outcome leads to `fan_out`): the tasks to work
    /// in parallel, `{"tasks": [{"id", "title", "description", "depends_on": [ids]}]}`.
    #[serde(default)]
    pub plan: Option<Plan>,
    /// Report a task of the fan-out instead of the run's own step: the task's id...
    #[serde(default)]
    pub task: Option<String>,
    /// ...and the lease token its claim gave you.
    #[serde(default)]
    pub lease_token: Option<u64>,
    /// What the calling process found and committed in the task's worktree before sending
    /// the report (see `crate::gitops`). Not a tool argument: the calling process always
    /// replaces whatever a client put here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub code: Option<TaskCode>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ResumeParams {
    /// Omit to list runs that are still in progress (this workspace's; see `all_workspaces`).
    #[serde(default)]
    pub run_id: Option<String>,
    /// With `run_id`: fork a new run from this checkpoint instead of resuming the run itself.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// With `run_id`: fork a new run from this version of it (any event's `seq`): its state
    /// replayed up to that event, its code restored into the fork's own worktree.
    #[serde(default)]
    pub at_version: Option<u64>,
    /// Title of the forked run.
    #[serde(default)]
    pub title: Option<String>,
    /// Without `run_id`: list unfinished runs of every workspace, not just this one.
    #[serde(default)]
    pub all_workspaces: Option<bool>,
    /// With `run_id`: claim a task of the run's fan-out, `"next"` for the first one you may
    /// take, or a task id. Answers with the task's brief and your `lease_token`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub claim: Option<ClaimTarget>,
    /// With `run_id`: the brief of this task (renewing your lease if you pass `lease_token`).
    #[serde(default)]
    pub task: Option<String>,
    /// With `task`: your lease token, to renew (or with `release`, give back) the lease.
    #[serde(default)]
    pub lease_token: Option<u64>,
    /// With `task` and `lease_token`: give the task back unfinished.
    #[serde(default)]
    pub release: Option<bool>,
    /// With `claim` or a renewal: how long the lease lasts (5 to 3600 s, default 600).
    #[serde(default)]
    pub lease_seconds: Option<u32>,
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
    /// The task whose question this answers, when a task of a fan-out asks.
    #[serde(default)]
    pub task: Option<String>,
    /// The answer; must be one of the question's options when it has any.
    pub answer: String,
    /// Free-text detail to pass on with the answer.
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// For a task's answer: what the calling process committed in the task's worktree before
    /// sending it (see `crate::gitops`). Not a tool argument: the calling process always
    /// replaces whatever a client put here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub code: Option<TaskCode>,
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
    /// Only runs of this workspace (a git repository root, or a directory).
    #[serde(default)]
    pub workspace: Option<String>,
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
    /// Only the reports of this step: every visit of it (the run's, and its tasks' steps
    /// of that name), oldest first, within `history_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// One event of a run in full, with its long text read in windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetEventParams {
    pub run_id: String,
    /// The event's `seq` (briefs name it in `read_more`).
    pub seq: u64,
    /// Byte offset into the event's long text (its report, goal, question or answer).
    #[serde(default)]
    pub offset: Option<usize>,
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

/// A run's workflow graph: its steps, outcomes, the path taken and its fan-out's tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetGraphParams {
    pub run_id: String,
}

/// Wait until some run changes (for live views): answered as soon as the database's
/// change counter passes `after`, or at the timeout with the counter unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForChangeParams {
    /// The `counter` of the previous answer; 0 the first time (answered at once).
    pub after: u64,
    /// Longest wait in milliseconds (default 25,000, at most 50,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Delete a finished run and everything kept for it (history, checkpoints, listing entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRunParams {
    pub run_id: String,
}

/// Delete the finished runs whose last change is older than an age; runs in progress are
/// never touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneParams {
    /// An age such as `30d`, `12h` or `90min`.
    pub older_than: String,
    /// Only list the runs that would be deleted.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Only runs of this workspace.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Record what merging a joined fan-out's task branches did. Sent by the baton process
/// that performed the merge (see `crate::gitops`), not offered as a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordMergeParams {
    pub run_id: String,
    pub report: MergeReport,
}

/// Record what `baton drive` decided. Sent by the driver, not offered as a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuperviseParams {
    pub run_id: String,
    pub record: crate::engine::DriveRecord,
}

/// No arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Copy the database, consistently, into a new directory (done by the owning process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Absolute path of a directory that does not exist yet (or is empty).
    pub dir: String,
}

/// Write every run (with its events and checkpoints) and template as JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Absolute path of the file to create.
    pub file: String,
}

/// Add the runs and templates of an export file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Absolute path of a file written by `baton export`.
    pub file: String,
    /// Overwrite runs whose id exists (otherwise the import is refused).
    #[serde(default)]
    pub replace: bool,
}

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
    GetEvent(GetEventParams),
    CancelRun(CancelRunParams),
    ListTemplates(NoParams),
    GetGraph(GetGraphParams),
    WaitForChange(WaitForChangeParams),
    DeleteRun(DeleteRunParams),
    Prune(PruneParams),
    RecordMerge(RecordMergeParams),
    Supervise(SuperviseParams),
    Verify(NoParams),
    Backup(BackupParams),
    Export(ExportParams),
    Import(ImportParams),
    /// Who owns the database and how many connections it serves (answered by the owner).
    OwnerStatus(NoParams),
}

/// Who sends a request and from where: recorded as the actor of the change and used to
/// tie runs to their workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Caller {
    #[serde(default)]
    pub actor: Actor,
    #[serde(default)]
    pub workspace: Option<Workspace>,
}

/// A request plus the id that makes retrying it safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// A fresh UUID per logical request: it becomes the id of a run the request creates,
    /// and a retry with the same id is applied at most once.
    pub op_id: String,
    #[serde(default)]
    pub caller: Caller,
    pub request: Request,
    /// The caller gives up at this instant (milliseconds of this machine's CLOCK_MONOTONIC,
    /// shared by all its processes); a request read later is refused, never applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// Where a run stands, for picking it up in a new session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Briefing {
    pub brief: Brief,
    /// Codex threads that worked on the run, newest first: `codex resume <id>` reopens one.
    pub codex_threads: Vec<String>,
    /// The latest events, oldest first, one line each.
    pub recent_events: Vec<EventLine>,
    pub checkpoints: Vec<String>,
    pub forked_from: Option<ForkOrigin>,
}

/// A run with a window of its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunDetails {
    pub summary: RunSummary,
    pub run: Run,
    /// Events, oldest first.
    pub events: Vec<Event>,
    /// Pass as `before_seq` to page further back; absent when the window starts at the first event.
    pub next_before_seq: Option<u64>,
}

/// Runs matching a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// How many runs matched before `limit` applied.
    pub total: usize,
    /// The workspace the listing is limited to, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Unfinished runs in other workspaces, when the listing is limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_workspaces: Option<usize>,
    /// What to do with this list.
    pub next_action: String,
}

/// One event, with a window of its long text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventDetail {
    pub run_id: String,
    /// The event, its long text replaced by the window `text`.
    pub event: Event,
    /// The window of the long text starting at `offset`.
    pub text: String,
    pub offset: usize,
    pub total_bytes: usize,
    /// Pass as `offset` to read on; absent at the end.
    pub next_offset: Option<usize>,
}

/// A saved checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointSaved {
    pub run_id: String,
    pub checkpoint: String,
    pub version: u64,
    /// The code's state at the checkpoint, when the run has a git workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    pub how_to_fork: String,
    /// What became of the code's snapshot (kept under a ref, or why it could not be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Known templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// Where the database's change counter stands. It grows by one with every change and
/// starts each owner process above any value an earlier owner reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeMark {
    pub counter: u64,
}

/// Runs deleted, or on a dry run those that would be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub runs: Vec<RunSummary>,
    pub dry_run: bool,
    /// What the calling process could not clean up in git (the deleted runs' refs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A successful answer, typed by what was asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "data", rename_all = "snake_case")]
pub enum Reply {
    Brief(Box<Brief>),
    Briefing(Box<Briefing>),
    Task(Box<TaskBrief>),
    Runs(RunList),
    Run(Box<RunDetails>),
    Event(Box<EventDetail>),
    Checkpoint(CheckpointSaved),
    Templates(TemplateList),
    Graph(Box<GraphView>),
    Changes(ChangeMark),
    Deleted(Deleted),
    Verified(VerifyReport),
    BackedUp(BackupReport),
    Exported(RunsMoved),
    Imported(RunsMoved),
    Owner(OwnerStatus),
}

/// The process that owns the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OwnerStatus {
    pub pid: u32,
    /// Connections it serves now, the asker's included.
    pub connections: usize,
}

/// Runs written to or read from an export file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunsMoved {
    pub runs: u64,
    pub file: String,
}

/// `$body` applied to the answer inside a [`Reply`], whatever its type.
macro_rules! with_answer {
    ($reply:expr, $v:ident => $body:expr) => {
        match $reply {
            Reply::Brief($v) => $body,
            Reply::Briefing($v) => $body,
            Reply::Task($v) => $body,
            Reply::Runs($v) => $body,
            Reply::Run($v) => $body,
            Reply::Event($v) => $body,
            Reply::Checkpoint($v) => $body,
            Reply::Templates($v) => $body,
            Reply::Graph($v) => $body,
            Reply::Changes($v) => $body,
            Reply::Deleted($v) => $body,
            Reply::Verified($v) => $body,
            Reply::BackedUp($v) => $body,
            Reply::Exported($v) | Reply::Imported($v) => $body,
            Reply::Owner($v) => $body,
        }
    };
}

impl Reply {
    /// The answer as one JSON object (MCP structured content).
    pub fn to_json(&self) -> Value {
        with_answer!(self, v => serde_json::to_value(v))
            .unwrap_or_else(|e| serde_json::json!({ "error": BatonError::internal(format!("reply could not be encoded: {e}")) }))
    }

    /// [`Reply::to_json`] as JSON text, encoded straight from the answer's type.
    pub fn to_text(&self) -> String {
        with_answer!(self, v => serde_json::to_string(v)).unwrap_or_else(|_| self.to_json().to_string())
    }
}
