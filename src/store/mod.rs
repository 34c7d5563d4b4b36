//! Durable storage of runs behind one small trait, [`RunStore`]. The service knows only
//! the trait; the embedded sled store is the default and other databases fit behind it.
//!
//! A store keeps, per run: the current snapshot, its dense event log (`seq` 1..=version),
//! named checkpoint snapshots, and the ids of recent changes so a retried request is
//! applied at most once. Templates used by name are kept beside the runs. A store can
//! also check itself, copy itself, and move runs out and in as JSON lines.

pub mod export;
mod location;
pub mod postgres;
pub mod record;
pub mod report;
pub mod sled_store;

use crate::engine::{Event, Run, RunStatus, Template};
use crate::error::{BatonError, BatonResult};
use crate::time::Timestamp;
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use location::{Location, open_at, open_sled};
pub use postgres::PgStore;
pub use report::{BackupCopy, BackupReport, VerifyReport};
pub use sled_store::SledStore;

/// How many change ids a run remembers for deduplicating retries. Retries follow an owner
/// failover within seconds, long before 32 further changes; a creation is recognised by
/// its run id, which is its op id, however old.
pub const RECENT_OPS: usize = 32;

/// Everything one change writes, atomically: the run as it is after the change, the one
/// event that records it, and the side records the change asks for.
#[derive(Debug, Clone)]
pub struct Commit {
    pub run: Run,
    pub event: Event,
    /// Save the run (as it is after the change) as this checkpoint name.
    pub checkpoint: Option<String>,
    /// Remember this template by name for later runs.
    pub template: Option<Template>,
}

impl Commit {
    pub fn new(run: Run, event: Event) -> Commit {
        Commit { run, event, checkpoint: None, template: None }
    }
}

/// A change to one run: given the stored run (`None` if there is none yet), the commit to
/// write, or why the change is refused (then nothing is written). A store may call it more
/// than once when it retries a transaction, so it must be pure.
pub type Mutation = Box<dyn Fn(Option<Run>) -> BatonResult<Commit> + Send + Sync>;

/// Which runs a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    #[default]
    All,
    /// Active or awaiting a human.
    Open,
    Active,
    AwaitingHuman,
    Completed,
    Failed,
    Cancelled,
}

impl StatusFilter {
    pub fn matches(self, status: RunStatus) -> bool {
        match self {
            StatusFilter::All => true,
            StatusFilter::Open => !status.is_finished(),
            StatusFilter::Active => status == RunStatus::Active,
            StatusFilter::AwaitingHuman => status == RunStatus::AwaitingHuman,
            StatusFilter::Completed => status == RunStatus::Completed,
            StatusFilter::Failed => status == RunStatus::Failed,
            StatusFilter::Cancelled => status == RunStatus::Cancelled,
        }
    }
}

/// A listing request: newest change first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunQuery {
    pub status: StatusFilter,
    pub template: Option<String>,
    /// Only runs of this workspace key (see [`crate::engine::Workspace::key`]).
    pub workspace: Option<String>,
    pub limit: usize,
    /// Continue after the page that returned this `next_cursor` (opaque).
    pub cursor: Option<String>,
}

impl RunQuery {
    /// Whether `summary` belongs in this listing (the status, template and workspace match).
    pub fn matches(&self, summary: &RunSummary) -> bool {
        self.status.matches(summary.status)
            && self.template.as_ref().is_none_or(|t| &summary.template == t)
            && self.workspace.as_ref().is_none_or(|w| summary.workspace.as_ref() == Some(w))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    /// How many runs match in all (every page together).
    pub total: usize,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A compact listing entry, kept beside each run so listing never loads full runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub title: String,
    pub template: String,
    /// The status a listing shows: the run's own, except that an active run one of whose
    /// tasks waits for a human is listed as `awaiting_human` (the tasks are in
    /// `tasks_waiting`), so whoever filters for what needs a person finds it.
    pub status: RunStatus,
    pub step: Option<String>,
    pub role: Option<String>,
    pub version: u64,
    /// The pending human question (the run's, else the first waiting task's), if any.
    pub question: Option<String>,
    /// The tasks of the run's fan-out that wait for a human, in plan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks_waiting: Vec<String>,
    /// The workspace key the run belongs to (a git repository root, or a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Who drives the run with `baton drive`, and its agents working now (as recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driven: Option<Driven>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A driven run, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Driven {
    /// The drivers (`host:pid:id`) whose agents work the run now; when none works, the one
    /// that recorded last.
    pub drivers: Vec<String>,
    /// Agent turns in flight, as the drivers recorded them (a killed driver's stay counted
    /// until another driver takes its units over).
    pub agents: u32,
    pub turns: u64,
    pub tokens: u64,
}

impl Driven {
    fn of(drive: &crate::engine::DriveState) -> Driven {
        let working: Vec<&crate::engine::DriveUnit> = drive.units.values().filter(|u| u.working).collect();
        let mut drivers: Vec<String> = working.iter().map(|u| u.driver.clone()).collect();
        drivers.sort();
        drivers.dedup();
        if drivers.is_empty() && !drive.last_driver.is_empty() {
            drivers.push(drive.last_driver.clone());
        }
        Driven { drivers, agents: working.len() as u32, turns: drive.turns, tokens: drive.tokens }
    }
}

impl RunSummary {
    pub fn of(run: &Run) -> RunSummary {
        let waiting = run.tasks_waiting();
        let status = match run.status {
            RunStatus::Active if !waiting.is_empty() => RunStatus::AwaitingHuman,
            status => status,
        };
        let question = match (&run.pending_gate, waiting.first().and_then(|t| t.gate.as_ref())) {
            (Some(gate), _) => Some(crate::text::first_line(&gate.question, 200)),
            // A task's questions name the task (see `HumanGate`).
            (None, Some(gate)) => Some(crate::text::first_line(&gate.question, 200)),
            (None, None) => None,
        };
        RunSummary {
            run_id: run.id.clone(),
            title: run.title.clone(),
            template: run.template.name.clone(),
            status,
            step: run.current_step.clone(),
            role: run.current_step.as_deref().and_then(|s| run.template.step(s)).map(|s| s.role.clone()),
            version: run.version,
            question,
            tasks_waiting: waiting.iter().map(|t| t.id.clone()).collect(),
            workspace: run.workspace.as_ref().map(|w| w.key().to_string()),
            driven: run.drive.as_ref().map(Driven::of),
            created_at: run.created_at,
            updated_at: run.updated_at,
        }
    }
}

/// Where runs are kept. Every method answers only with what is durable: a change is
/// acknowledged (its `commit` returns) only once it is on stable storage.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// The current snapshot of a run.
    async fn run(&self, run_id: &str) -> BatonResult<Option<Run>>;

    /// The newest events of a run with `seq` in `from..=to` whose stored size fits in
    /// `max_bytes` (at least one, if any), oldest first.
    async fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>>;

    /// The snapshot saved as checkpoint `name` of a run.
    async fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>>;

    /// A template remembered by name.
    async fn template(&self, name: &str) -> BatonResult<Option<Template>>;

    /// Every template remembered by name.
    async fn templates(&self) -> BatonResult<Vec<Template>>;

    /// Run summaries matching `query`, newest change first.
    async fn list(&self, query: &RunQuery) -> BatonResult<RunPage>;

    /// Apply `change` to run `run_id` atomically and durably. `op_id` identifies the
    /// request: if this run already recorded it (it created the run, or is among its last
    /// [`RECENT_OPS`] changes), the stored run is returned and `change` is not applied again.
    async fn commit(&self, op_id: &str, run_id: &str, change: Mutation) -> BatonResult<Run>;

    /// Write every run (with all its events and checkpoints) and every named template as
    /// JSON lines; returns the number of runs.
    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> BatonResult<u64>;

    /// Add the runs and templates of an export, durably and all at once. A run id that
    /// exists is refused (nothing is written) unless `replace`. Returns the number of runs.
    async fn import(&self, input: &mut (dyn std::io::BufRead + Send), replace: bool) -> BatonResult<u64>;

    /// A consistent copy of the whole store into the new directory `dir`, made while
    /// other sessions keep reading and writing.
    async fn backup(&self, dir: &std::path::Path) -> BatonResult<BackupReport>;

    /// Check every record and that runs, events, checkpoints and listings agree.
    async fn verify(&self) -> BatonResult<VerifyReport>;

    /// Delete a finished run and everything kept for it (snapshot, events, checkpoints,
    /// listing entry) in one atomic, durable step; `None` if there is no such run. A run
    /// in progress is refused (`invalid_state`) and left untouched.
    async fn delete_run(&self, run_id: &str) -> BatonResult<Option<RunSummary>>;

    /// The change feed: a counter that grows after changes become durable, made by this
    /// process or (for a shared database server) by any process. It only says *that*
    /// something changed; readers then read what they show. Counts are per process and
    /// may skip or merge (a reconnect counts as one change, since notifications may have
    /// been missed), so compare with `>` only.
    ///
    /// A live view (the service's `WaitForChange`) should subscribe here instead of
    /// counting its own commits, so it also wakes for other processes' changes: with
    /// PostgreSQL there is no owner process that sees every change.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Where people's notifications are queued when several processes share this store
    /// (a database server: every long-lived process may notify, and each event must be
    /// told once). `None`: one owner process holds the store, and it keeps the outbox in
    /// its home.
    fn shared_outbox(&self) -> Option<Box<dyn SharedOutbox>> {
        None
    }
}

/// The notifier's outbox in a store that several processes share: one of them leads at a
/// time and only the leader reads or writes it. The state is opaque bytes (the notifier's
/// own JSON).
#[async_trait]
pub trait SharedOutbox: Send {
    /// Lead, or keep leading: `true` while this process is the one notifier. Call it
    /// before each round; after `false` or an error, whatever was read is stale.
    async fn lead(&mut self) -> BatonResult<bool>;
    /// The saved state, `None` before the first save.
    async fn load(&mut self) -> BatonResult<Option<Vec<u8>>>;
    /// Replace the saved state, durably.
    async fn save(&mut self, state: &[u8]) -> BatonResult<()>;
}

/// Check what a mutation produced before any store writes it: the run it was given (of
/// version `current`, `None` for a new run), one version further, and the event that
/// makes that version.
pub(crate) fn check_commit(run_id: &str, current: Option<u64>, commit: &Commit) -> BatonResult<()> {
    let expected = current.map_or(1, |version| version + 1);
    let (run, event) = (&commit.run, &commit.event);
    if run.id != run_id || run.version != expected || event.seq != run.version {
        return Err(BatonError::internal(format!(
            "a change to run {run_id} produced run {} version {} with event {} (expected version {expected})",
            run.id, run.version, event.seq
        )));
    }
    Ok(())
}

/// Whether change `op_id` is already recorded in `run`: it created the run, or it is in
/// the ring of the run's last [`RECENT_OPS`] op ids.
pub(crate) fn already_applied(run: &Run, op_id: &str, ring: &[Option<String>]) -> bool {
    run.id == op_id || ring.iter().flatten().any(|op| op == op_id)
}

/// The error for a run id that is not in the store.
pub fn unknown_run(run_id: &str) -> BatonError {
    BatonError::not_found(
        "run_id",
        format!("no run with id `{run_id}`"),
        "Call `resume` without arguments (or `inspect`, or `baton runs` in a terminal) to see existing run ids.",
    )
}
