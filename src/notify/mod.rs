//! Telling people when they are needed: when a run or a task starts waiting for a human,
//! and when a run completes, fails or is cancelled (and a task is done or fails), baton
//! runs a command with the event as JSON, POSTs it to webhooks (with a Slack-compatible
//! `text`), or shows a desktop notification, as `notify.toml` in the baton home says.
//!
//! Notifications are derived from what the store made durable, never from the commit path:
//! the notifier watches the store's change feed, compares each changed run with what it
//! last saw, and writes the notifications due into a durable outbox *before* delivering
//! them. With sled the notifier is the owner process and the outbox `notify/outbox.json` in
//! the home (written atomically and synced). With PostgreSQL every long-lived process
//! (`baton serve`, `ui`, `drive`) whose home has a `notify.toml` runs a notifier, but only
//! one leads at a time and the outbox is a row of the database (see
//! `store::postgres::outbox`), so each event is told once across all processes. Each is then
//! delivered once per channel and removed, retried with backoff while it fails, and
//! picked up again by the next owner after a crash or an idle exit. A crash between a
//! delivery and its removal can repeat that one delivery: every event carries an `id` for
//! receivers to drop repeats.

mod deliver;

use crate::engine::GateKind;
use crate::engine::{Run, RunStatus, TaskStatus};
use crate::error::{BatonError, BatonResult};
use crate::home::Home;
use crate::store::{RunQuery, RunStore, SharedOutbox, StatusFilter};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use deliver::post_json;

/// Attempts of one delivery before it is given up (logged): about 2 hours of backoff.
const MAX_ATTEMPTS: u32 = 16;
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Runs changed this long before a scan are looked at again by the next one: a change
/// stamped just before a scan may become durable just after it.
const RESCAN_MARGIN_MS: u64 = 60_000;
/// Page size of the listing scanned for changed runs.
const PAGE: usize = 200;

/// What `notify.toml` in the baton home says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A program and its arguments; the event's JSON is added as the last argument (as
    /// Codex's `notify` does).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// URLs (http or https) that get each event as a JSON POST.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Show a desktop notification with `notify-send` where there is one.
    #[serde(default)]
    pub desktop: bool,
    /// Only these kinds: awaiting_human, completed, failed, cancelled, done (a task's).
    /// Default: all of them.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl Config {
    pub fn path(home: &Home) -> PathBuf {
        home.dir.join("notify.toml")
    }

    /// The configuration, `None` when there is no `notify.toml`.
    pub fn load(home: &Home) -> BatonResult<Option<Config>> {
        let path = Config::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BatonError::storage(format!("cannot read {}: {e}", path.display()), "Check its permissions.")),
        };
        let config: Config = toml::from_str(&text).map_err(|e| {
            BatonError::invalid("notify.toml", format!("{} is not a valid notification setup: {e}", path.display()), SAMPLE_FIX)
        })?;
        for url in &config.webhooks {
            deliver::Url::parse(url)?;
        }
        if config.command.as_ref().is_some_and(Vec::is_empty) {
            return Err(BatonError::invalid("command", "`command` is empty", SAMPLE_FIX));
        }
        Ok(Some(config))
    }

    /// Every channel configured, by the name the outbox keys deliveries with.
    fn channels(&self) -> Vec<Channel> {
        let mut channels = Vec::new();
        if let Some(command) = &self.command {
            channels.push(Channel::Command(command.clone()));
        }
        channels.extend(self.webhooks.iter().cloned().map(Channel::Webhook));
        if self.desktop {
            channels.push(Channel::Desktop);
        }
        channels
    }

    fn wants(&self, kind: &str) -> bool {
        let short = kind.rsplit('.').next().unwrap_or(kind);
        self.events.as_ref().is_none_or(|kinds| kinds.iter().any(|k| k == short || k == kind))
    }
}

const SAMPLE_FIX: &str = "Write it like:\n  command = [\"/usr/local/bin/on-baton\"]   # gets the event JSON as its last argument\n  webhooks = [\"https://hooks.slack.com/services/...\"]\n  desktop = true\n  events = [\"awaiting_human\", \"completed\", \"failed\", \"cancelled\"]";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Channel {
    Command(Vec<String>),
    Webhook(String),
    Desktop,
}

impl Channel {
    fn label(&self) -> String {
        match self {
            Channel::Command(argv) => format!("command {}", argv.join(" ")),
            Channel::Webhook(url) => format!("webhook {}", deliver::Url::shown(url)),
            Channel::Desktop => "desktop".into(),
        }
    }

    async fn send(&self, event: &Value) -> Result<(), String> {
        match self {
            Channel::Command(argv) => deliver::run_command(argv, event).await,
            Channel::Webhook(url) => deliver::post_json(url, event).await,
            Channel::Desktop => deliver::desktop(event).await,
        }
    }
}

/// What the notifier last saw of a run: enough to tell what changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Seen {
    version: u64,
    status: Option<RunStatus>,
    /// When the run's pending question was asked.
    gate: Option<Timestamp>,
    /// Per task: its status and when its question was asked.
    tasks: BTreeMap<String, (TaskStatus, Option<Timestamp>)>,
    finished: bool,
    updated_at: Timestamp,
    /// What the run's question and each task's asked ([`fingerprint`]): two questions can
    /// be asked in the same millisecond (one answer can raise the next at once). Absent
    /// in what an older baton saved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    asked: BTreeMap<String, u32>,
}

/// A question's identity beyond its time: CRC-32 of its JSON (stable across builds, as
/// the notifier's saved state needs).
fn fingerprint(gate: &crate::engine::HumanGate) -> u32 {
    crc32fast::hash(serde_json::to_string(gate).unwrap_or_default().as_bytes())
}

/// Whether `gate`, asked at `asked`, is another question than the one seen under `key`.
fn new_question(before: &Seen, key: &str, seen_at: Option<Timestamp>, gate: &crate::engine::HumanGate) -> bool {
    Some(gate.asked_at) != seen_at || before.asked.get(key).is_some_and(|f| *f != fingerprint(gate))
}

/// One notification to one channel, until delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    event: Value,
    channel: Channel,
    attempts: u32,
    next_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// The durable outbox and what was seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Runs changed before this instant are settled (see [`RESCAN_MARGIN_MS`]).
    watermark: Timestamp,
    seen: BTreeMap<String, Seen>,
    pending: Vec<Pending>,
}

/// Where the outbox is kept: a file of the home (one owner holds the store) or the store
/// itself, shared by every process and led by one.
enum Outbox {
    Home(HomeOutbox),
    Shared(Box<dyn SharedOutbox>),
}

impl Outbox {
    fn new(home: &Home, store: &dyn RunStore) -> Outbox {
        match store.shared_outbox() {
            Some(shared) => Outbox::Shared(shared),
            None => Outbox::Home(HomeOutbox { path: home.dir.join("notify").join("outbox.json") }),
        }
    }

    /// Whether this process may notify now (always, with the outbox in the home).
    async fn lead(&mut self) -> BatonResult<bool> {
        match self {
            Outbox::Home(_) => Ok(true),
            Outbox::Shared(shared) => shared.lead().await,
        }
    }

    /// Whether what was read must be read again after a failure: another process may
    /// have led meanwhile.
    fn shared(&self) -> bool {
        matches!(self, Outbox::Shared(_))
    }

    async fn load(&mut self) -> BatonResult<Option<State>> {
        match self {
            Outbox::Home(file) => file.load(),
            Outbox::Shared(shared) => match shared.load().await? {
                Some(bytes) => decode(&bytes, "in the database").map(Some),
                None => Ok(None),
            },
        }
    }

    async fn save(&mut self, state: &State) -> BatonResult<()> {
        match self {
            Outbox::Home(file) => file.save(state),
            Outbox::Shared(shared) => shared.save(&encode(state)?).await,
        }
    }
}

fn encode(state: &State) -> BatonResult<Vec<u8>> {
    serde_json::to_vec(state).map_err(|e| BatonError::internal(format!("cannot encode the outbox: {e}")))
}

fn decode(bytes: &[u8], place: &str) -> BatonResult<State> {
    serde_json::from_slice(bytes).map_err(|e| {
        BatonError::storage(
            format!("the notification outbox {place} cannot be read: {e}"),
            "Move it aside; baton starts a new one (notifications not yet delivered are then lost).",
        )
    })
}

struct HomeOutbox {
    path: PathBuf,
}

impl HomeOutbox {
    fn load(&self) -> BatonResult<Option<State>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => decode(&bytes, &self.path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BatonError::storage(format!("cannot read {}: {e}", self.path.display()), "Check its permissions.")),
        }
    }

    /// Write atomically and durably: a temp file, synced, renamed, the directory synced.
    fn save(&self, state: &State) -> BatonResult<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |e: std::io::Error| {
            BatonError::storage(format!("cannot write {}: {e}", self.path.display()), "Check the disk and the home's permissions.")
        };
        let dir = self.path.parent().unwrap_or(std::path::Path::new("/"));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = encode(state)?;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Timestamp(ms)
}

/// How often a notifier that does not lead asks again (the longest a notification waits
/// after its leader is gone).
const FOLLOWER_WAIT: Duration = Duration::from_secs(5);

/// The notifier: runs until the process ends. Does nothing while there is no
/// `notify.toml`; picks up changes to it without a restart. `store` is any handle that
/// keeps the store open while held (the owner's handle also keeps its lock, see
/// [`crate::backend::owner::StoreHold`]).
pub async fn run<S>(home: Home, store: S)
where
    S: std::ops::Deref<Target = dyn RunStore> + Send + Sync,
{
    let store: &dyn RunStore = &*store;
    let mut outbox = Outbox::new(&home, store);
    // Subscribed only once leading: with PostgreSQL the feed is a connection of its own.
    let mut changes = None;
    let mut state: Option<State> = None;
    let mut complained = String::new();
    loop {
        let wait = match Config::load(&home) {
            Ok(None) => Duration::from_secs(5),
            Ok(Some(config)) => match outbox.lead().await {
                Ok(true) => {
                    changes.get_or_insert_with(|| store.changes());
                    match step(store, &mut outbox, &mut state, &config).await {
                        Ok(wait) => wait,
                        Err(e) => {
                            tracing::error!("notifications: {e}");
                            if outbox.shared() {
                                state = None;
                            }
                            Duration::from_secs(5)
                        }
                    }
                }
                Ok(false) => {
                    // Another process leads; what this one read is stale once it leads again.
                    state = None;
                    FOLLOWER_WAIT
                }
                Err(e) => {
                    tracing::warn!("notifications: cannot tell whether this process leads: {e}");
                    state = None;
                    FOLLOWER_WAIT
                }
            },
            Err(e) => {
                // Said once per distinct problem, not every few seconds.
                if e.message != complained {
                    tracing::error!("notifications are off: {e}");
                    complained = e.message.clone();
                }
                Duration::from_secs(5)
            }
        };
        match changes.as_mut() {
            Some(feed) => tokio::select! {
                changed = feed.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            },
            None => tokio::time::sleep(wait).await,
        }
    }
}

/// One round: note what changed, then deliver what is due. Returns how long to wait
/// before the next round at the latest.
async fn step(store: &dyn RunStore, outbox: &mut Outbox, state: &mut Option<State>, config: &Config) -> BatonResult<Duration> {
    let state = match state {
        Some(state) => state,
        None => state.insert(outbox.load().await?.unwrap_or_else(|| State { watermark: now(), ..State::default() })),
    };
    let queued = scan(store, state, config).await?;
    if queued {
        // Durable before any delivery: a crash from here on loses nothing. What was seen
        // is saved only with new notifications: changes that notify nobody need not be
        // remembered, as comparing with the state of the last notification finds no new
        // question or ending in them either.
        outbox.save(state).await?;
    }
    deliver_due(outbox, state).await
}

/// Look at the runs changed since the watermark; queue a notification per channel for
/// each thing a person should hear about. Returns whether any was queued.
async fn scan(store: &dyn RunStore, state: &mut State, config: &Config) -> BatonResult<bool> {
    let started = now();
    let mut queued = false;
    let mut cursor = None;
    'pages: loop {
        let query = RunQuery { status: StatusFilter::All, limit: PAGE, cursor, ..RunQuery::default() };
        let page = store.list(&query).await?;
        for summary in &page.runs {
            if summary.updated_at < state.watermark {
                break 'pages;
            }
            let before = state.seen.get(&summary.run_id).cloned().unwrap_or_default();
            if before.version == summary.version {
                continue;
            }
            let Some(run) = store.run(&summary.run_id).await? else { continue };
            let (after, events) = observe(&run, &before);
            for event in events.into_iter().filter(|e| config.wants(e["type"].as_str().unwrap_or(""))) {
                for channel in config.channels() {
                    state.pending.push(Pending { event: event.clone(), channel, attempts: 0, next_at: started, last_error: None });
                    queued = true;
                }
            }
            state.seen.insert(run.id.clone(), after);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let watermark = Timestamp(started.0.saturating_sub(RESCAN_MARGIN_MS));
    if watermark > state.watermark {
        state.watermark = watermark;
        // Unfinished runs stay remembered however long they wait, so a later change never
        // repeats an old question.
        // A finished run is forgotten once it is older than the watermark: no scan reaches it.
        state.seen.retain(|_, seen| !seen.finished || seen.updated_at >= watermark);
    }
    Ok(queued)
}

/// What a run is now, and the events since `before`.
fn observe(run: &Run, before: &Seen) -> (Seen, Vec<Value>) {
    let mut events = Vec::new();
    let gate = run.pending_gate.as_ref().map(|g| g.asked_at);
    let mut asked = BTreeMap::new();
    if let Some(g) = &run.pending_gate {
        if new_question(before, "", before.gate, g) {
            events.push(event(run, "run.awaiting_human", None, Some(g)));
        }
        asked.insert(String::new(), fingerprint(g));
    }
    if run.status.is_finished() && before.status != Some(run.status) {
        let kind = match run.status {
            RunStatus::Completed => "run.completed",
            RunStatus::Failed => "run.failed",
            _ => "run.cancelled",
        };
        events.push(event(run, kind, None, None));
    }
    let mut tasks = BTreeMap::new();
    for task in run.fanout.iter().flat_map(|f| &f.tasks) {
        let asked_at = task.gate.as_ref().map(|g| g.asked_at);
        let (was, was_asked) = before.tasks.get(&task.id).cloned().map_or((None, None), |(s, a)| (Some(s), a));
        if let Some(g) = &task.gate {
            if new_question(before, &task.id, was_asked, g) {
                events.push(event(run, "task.awaiting_human", Some(&task.id), Some(g)));
            }
            asked.insert(task.id.clone(), fingerprint(g));
        }
        if was != Some(task.status) {
            match task.status {
                TaskStatus::Done => events.push(event(run, "task.done", Some(&task.id), None)),
                TaskStatus::Failed => events.push(event(run, "task.failed", Some(&task.id), None)),
                _ => {}
            }
        }
        tasks.insert(task.id.clone(), (task.status, asked_at));
    }
    let seen = Seen {
        version: run.version,
        status: Some(run.status),
        gate,
        tasks,
        finished: run.status.is_finished(),
        updated_at: run.updated_at,
        asked,
    };
    (seen, events)
}

/// The event as JSON: what happened, to which run or task, what a person can do, and a
/// one-line `text` (what Slack shows).
fn event(run: &Run, kind: &str, task: Option<&str>, gate: Option<&crate::engine::HumanGate>) -> Value {
    let short = run.id.get(..8).unwrap_or(&run.id);
    let subject = match task {
        Some(task) => format!("task `{task}` of run {short} \"{}\"", run.title),
        None => format!("run {short} \"{}\"", run.title),
    };
    let task_arg = task.map(|t| format!(" --task {t}")).unwrap_or_default();
    let (text, command) = match (kind, gate) {
        (_, Some(gate)) => {
            let answer = gate.options.first().map(|o| crate::text::shell_word(o)).unwrap_or_else(|| "'YOUR ANSWER'".into());
            let command = format!("baton answer {} {answer}{task_arg}", run.id);
            let why = match gate.kind {
                GateKind::LoopLimit { .. } => " (a loop used up its rounds)",
                GateKind::TaskFailed => " (a task failed)",
                GateKind::Question => "",
            };
            let options = if gate.options.is_empty() { String::new() } else { format!(" [{}]", gate.options.join(" | ")) };
            (format!("baton: {subject} waits for you{why}: {}{options}. Answer: {command}", gate.question), Some(command))
        }
        ("run.completed", _) => (format!("baton: {subject} completed."), None),
        ("run.failed", _) => (format!("baton: {subject} failed{}.", reason(run)), None),
        ("run.cancelled", _) => (format!("baton: {subject} was cancelled{}.", reason(run)), None),
        ("task.done", _) => (format!("baton: {subject} is done."), None),
        _ => (format!("baton: {subject} failed."), None),
    };
    let mut value = json!({
        "id": format!("{}:{}:{kind}{}", run.id, run.version, task.map(|t| format!(":{t}")).unwrap_or_default()),
        "type": kind,
        "run_id": run.id,
        "title": run.title,
        "template": run.template.name,
        "status": run.status.as_str(),
        "step": run.current_step,
        "version": run.version,
        "at": run.updated_at,
        "text": text,
        "show_command": format!("baton show {short}"),
    });
    if let Some(task) = task {
        value["task"] = json!(task);
    }
    if let Some(gate) = gate {
        value["question"] = json!(gate.question);
        value["options"] = json!(gate.options);
        value["answer_command"] = json!(command);
    }
    value
}

fn reason(run: &Run) -> String {
    run.end_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
}

/// Attempt every delivery that is due; keep the outbox durable after each. Returns how
/// long until the next one is due (at most 5 s).
async fn deliver_due(outbox: &mut Outbox, state: &mut State) -> BatonResult<Duration> {
    let mut index = 0;
    while index < state.pending.len() {
        let at = now();
        if state.pending[index].next_at > at {
            index += 1;
            continue;
        }
        let pending = &mut state.pending[index];
        match pending.channel.send(&pending.event).await {
            Ok(()) => {
                tracing::info!("notified {} of {}", pending.channel.label(), pending.event["id"]);
                state.pending.remove(index);
            }
            Err(why) => {
                pending.attempts += 1;
                if pending.attempts >= MAX_ATTEMPTS {
                    tracing::error!(
                        "gave up notifying {} of {} after {} attempts: {why}",
                        pending.channel.label(),
                        pending.event["id"],
                        pending.attempts
                    );
                    state.pending.remove(index);
                } else {
                    let backoff = Duration::from_secs(1 << pending.attempts.min(10)).min(MAX_BACKOFF);
                    tracing::warn!(
                        "notifying {} of {} failed (attempt {}; again in {backoff:?}): {why}",
                        pending.channel.label(),
                        pending.event["id"],
                        pending.attempts
                    );
                    pending.next_at = now().after(backoff);
                    pending.last_error = Some(why);
                    index += 1;
                }
            }
        }
        outbox.save(state).await?;
    }
    let next = state.pending.iter().map(|p| p.next_at).min();
    Ok(next.map_or(Duration::from_secs(5), |n| Duration::from_millis(n.0.saturating_sub(now().0)).min(Duration::from_secs(5))))
}

/// `baton notify test`: a sample event to every configured channel, at once; one line per
/// channel saying how it went.
pub async fn send_test(home: &Home) -> BatonResult<Vec<(String, Result<(), String>)>> {
    let path = Config::path(home);
    let config = Config::load(home)?.ok_or_else(|| {
        BatonError::not_found("notify.toml", format!("no notification setup: {} does not exist", path.display()), SAMPLE_FIX)
    })?;
    let channels = config.channels();
    if channels.is_empty() {
        return Err(BatonError::invalid("notify.toml", format!("{} names no command, webhook or desktop", path.display()), SAMPLE_FIX));
    }
    let sample = json!({
        "id": format!("test:{}", uuid::Uuid::new_v4()),
        "type": "test",
        "text": "baton: this is a test notification (`baton notify test`).",
        "at": now(),
    });
    let mut results = Vec::new();
    for channel in channels {
        results.push((channel.label(), channel.send(&sample).await));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Caller, Envelope, Reply, Request};
    use crate::service::Service;

    async fn call(service: &Service, op: &str, params: Value) -> Value {
        let request: Request = serde_json::from_value(json!({"op": op, "params": params})).unwrap();
        let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller: Caller::default(), request, deadline_ms: None };
        match service.handle(&envelope).await.unwrap() {
            Reply::Brief(b) => serde_json::to_value(b).unwrap(),
            Reply::Task(t) => serde_json::to_value(t).unwrap(),
            other => other.to_json(),
        }
    }

    /// The types queued by one scan, in order.
    async fn scanned(service: &Service, state: &mut State, config: &Config) -> Vec<String> {
        state.pending.clear();
        scan(service.store().as_ref(), state, config).await.unwrap();
        state
            .pending
            .iter()
            .map(|p| {
                format!("{}{}", p.event["type"].as_str().unwrap(), p.event["task"].as_str().map(|t| format!(":{t}")).unwrap_or_default())
            })
            .collect()
    }

    #[tokio::test]
    async fn each_question_and_ending_of_runs_and_tasks_is_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let service = Service::new(std::sync::Arc::new(crate::store::SledStore::open(&dir.path().join("db")).unwrap()));
        let config = Config { webhooks: vec!["http://127.0.0.1:9/hook".into()], ..Config::default() };
        let mut state = State { watermark: Timestamp(0), ..State::default() };
        let split = json!({"name": "split-once", "steps": [
            {"name": "plan", "role": "architect", "outcomes": {"planned": {"fan_out": "quick", "join": "check", "on_task_failure": "ask"}}},
            {"name": "check", "role": "tester", "outcomes": {"passed": "done", "failed": "failed"}}],
            "pipelines": [{"name": "quick", "steps": [
                {"name": "do", "role": "implementer", "max_visits": 1, "outcomes": {"done": "verify"}},
                {"name": "verify", "role": "reviewer", "outcomes": {"ok": "join", "redo": "do"}}]}]});
        let brief = call(&service, "start_workflow", json!({"goal": "g", "template_definition": split})).await;
        let id = brief["run_id"].as_str().unwrap().to_string();
        assert_eq!(scanned(&service, &mut state, &config).await, Vec::<String>::new(), "a start tells nobody");
        let plan = json!({"tasks": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]});
        call(&service, "advance", json!({"run_id": id, "expected_version": 1, "outcome": "planned", "output": "p", "plan": plan})).await;
        for (task, outcomes) in [("a", ["done", "ok"]), ("b", ["done", "redo"])] {
            for outcome in outcomes {
                let claim = call(&service, "resume", json!({"run_id": id, "claim": task})).await;
                call(
                    &service,
                    "advance",
                    json!({"run_id": id, "task": task, "lease_token": claim["lease_token"], "outcome": outcome, "output": "o"}),
                )
                .await;
            }
        }
        assert_eq!(scanned(&service, &mut state, &config).await, ["task.done:a", "task.awaiting_human:b"]);
        assert_eq!(scanned(&service, &mut state, &config).await, Vec::<String>::new(), "nothing twice");
        let asked = &state.seen[&id].tasks["b"];
        assert!(asked.1.is_some());
        call(&service, "answer_human", json!({"run_id": id, "task": "b", "answer": "fail"})).await;
        // The loop gave up: the task failed for good, and asks whether to retry, skip or fail the run.
        assert_eq!(scanned(&service, &mut state, &config).await, ["task.awaiting_human:b"], "a new question of the same task");
        assert!(state.pending[0].event["text"].as_str().unwrap().contains("(a task failed)"), "{}", state.pending[0].event);
        assert_eq!(state.pending[0].event["answer_command"], format!("baton answer {id} retry --task b"));
        call(&service, "answer_human", json!({"run_id": id, "task": "b", "answer": "fail_run"})).await;
        let types = scanned(&service, &mut state, &config).await;
        assert_eq!(types, ["run.failed"]);
        call(&service, "cancel_run", json!({"run_id": call(&service, "start_workflow", json!({"goal": "h"})).await["run_id"]})).await;
        assert_eq!(scanned(&service, &mut state, &config).await, ["run.cancelled"]);
    }

    #[test]
    fn a_config_names_its_problem() {
        let err = toml::from_str::<Config>("webhook = 'x'").unwrap_err();
        assert!(err.to_string().contains("webhook"), "{err}");
        let config: Config = toml::from_str("webhooks = ['http://127.0.0.1:1/x']\nevents = ['completed']").unwrap();
        assert!(config.wants("run.completed") && !config.wants("run.awaiting_human"));
        assert!(Config::default().wants("task.done"));
    }
}
