//! The one write path. One [`Writer`] at a time writes a batch. A commit that finds it
//! free and nothing queued writes its batch itself, on the caller's thread (no hand-off to
//! another thread and back: two wake-ups fewer, the most of an advance's time after the
//! disk's). Otherwise it is queued for the writer thread, which takes every commit waiting
//! when the writer becomes free into the next batch (group commit: no timer, so a lone
//! writer never waits). The thread also runs the exclusive tasks (backup, import, delete)
//! and writes the integrity record once writes pause. A batch is:
//!
//! 1. each commit's mutation run against the run as the batch left it (a later commit of
//!    the same run sees the earlier one), retries recognised by op id;
//! 2. its records, with the batch number in `meta`, appended to the journal, the
//!    integrity witness staged, one `fdatasync` ([`journal`]: on the writing thread, no
//!    hand-off);
//! 3. its writes added to the pending changes ([`pending`]), which every read consults
//!    before sled: readers see the batch only now, once it is durable;
//! 4. every commit answered.
//!
//! sled's files change only at a checkpoint: when the journal is full (and before an
//! import, and before a batch too large for the journal), the pending changes go into sled
//! in ONE transaction (atomic in recovery), then sled's flush and [`Syncer::sync`]. A batch
//! too large for the journal then takes that path itself: the runs and templates it
//! touches entered in the overlay with their durable state (sled shows a transaction's
//! writes before they are durable; readers keep seeing the overlay's), its transaction,
//! flush and sync, then the overlay cleared.
//!
//! If 2 fails, every commit of the batch gets the storage error, and a record that may be
//! on disk is overwritten with zeros before the next write. If a checkpoint or a write
//! through sled fails, the values it replaced are kept as an undo log; before the next
//! write the writer reopens sled (which keeps an I/O error for the life of an open
//! database; reopening replays the journal), writes the undo log back and syncs, and only
//! then clears the overlay. Until that succeeds readers keep seeing the state before the
//! failed batch.

use super::batch::{Batch, Bodies, Write, count_into};
use super::durability::{self, FLUSH_WAIT, FdReserve, Flusher, Syncer};
use super::integrity::{Record, Witness};
use super::journal::Journal;
use super::keys::{self, TreeId};
use super::upgrade::State;
use super::{Db, Overlay, StoreCore, index, io_storage, open_sled, sled_text};
use crate::engine::{Run, Template};
use crate::error::{BatonError, BatonResult};
use crate::store::{Commit, Mutation, RECENT_OPS, RunSummary, already_applied, check_commit};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most commits in one batch (bounds the transaction's memory).
const MAX_BATCH: usize = 256;
/// After this long without commits, the exact batch number is written to the integrity
/// record (see `integrity`).
const IDLE: Duration = Duration::from_millis(20);
/// How often an idle writer looks at the owner's memory: reads alone (history pages of long
/// outputs) fill sled's cache too, and with no write there is no checkpoint to look after.
const MEMORY_CHECK: Duration = Duration::from_secs(10);
/// How long reopening sled after a failure waits for the old instance to let go.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

type Reply<T> = oneshot::Sender<BatonResult<T>>;

/// A task run on the writer thread between batches, with no write in flight.
type Task = Box<dyn FnOnce(&mut Writer) + Send>;

enum Job {
    Commit {
        op_id: String,
        run_id: String,
        change: Mutation,
        reply: Reply<Run>,
    },
    Exclusive(Task),
    /// A batch was written outside the thread while it waited with no timeout.
    Wake,
}

/// The channel to the writer thread; dropping it lets the thread finish and waits for it.
pub struct Handle {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The writer's state: whoever holds it writes the next batch.
    writer: Arc<Mutex<Writer>>,
    /// What the thread is told, beside the channel.
    signals: Arc<Signals>,
}

/// What commits written outside the writer thread tell it.
#[derive(Default)]
struct Signals {
    /// Jobs sent to the thread and not taken yet: while there are any, a commit queues
    /// behind them instead of overtaking them.
    queued: AtomicUsize,
    /// The thread waits for jobs with no timeout (the integrity record is exact), so a
    /// batch written elsewhere must wake it to witness that batch once writes pause.
    idle: AtomicBool,
}

impl Handle {
    pub fn start(shared: Arc<StoreCore>, syncer: Syncer, record: Record, state: State) -> BatonResult<Handle> {
        let (jobs, inbox) = mpsc::channel();
        let flusher =
            Flusher::start(&shared.dir).map_err(|e| BatonError::internal(format!("cannot start the store's flush thread: {e}")))?;
        shared.durable_batch.store(state.batch, std::sync::atomic::Ordering::Relaxed);
        // Opening replayed the journal into sled and synced it: the journal starts afresh.
        let journal = Journal::open(&shared.dir).map_err(|e| io_storage(&shared.dir, "open the journal of", &e))?;
        let memory_mark = memory_floor(&shared.options);
        let writer = Writer {
            shared,
            syncer,
            flusher,
            journal,
            record,
            db_id: state.db_id,
            batch: state.batch,
            witnessed: state.batch,
            undo: None,
            bodies: Bodies::default(),
            reserve: FdReserve::new(),
            recent: HashMap::new(),
            failures: 0,
            last_batch: Instant::now(),
            memory_mark,
            checkpointed: false,
        };
        let writer = Arc::new(Mutex::new(writer));
        let signals = Arc::new(Signals::default());
        let thread = {
            let (writer, signals) = (Arc::clone(&writer), Arc::clone(&signals));
            std::thread::Builder::new()
                .name("baton-writer".into())
                .spawn(move || Writer::run(&writer, &signals, inbox))
                .map_err(|e| BatonError::internal(format!("cannot start the store's writer thread: {e}")))?
        };
        Ok(Handle { jobs: Some(jobs), thread: Some(thread), writer, signals })
    }

    fn send(&self, job: Job) -> BatonResult<()> {
        let stopped = || BatonError::internal("the store's writer has stopped");
        self.signals.queued.fetch_add(1, Ordering::SeqCst);
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| {
            self.signals.queued.fetch_sub(1, Ordering::SeqCst);
            stopped()
        })
    }

    pub async fn commit(&self, op_id: &str, run_id: &str, change: Mutation) -> BatonResult<Run> {
        let change = match self.alone(op_id, run_id, change) {
            Ok(answer) => return answer,
            Err(change) => change,
        };
        let (reply, answer) = oneshot::channel();
        self.send(Job::Commit { op_id: op_id.to_string(), run_id: run_id.to_string(), change, reply })?;
        answer.await.map_err(|_| BatonError::internal("the store's writer stopped before answering"))?
    }

    /// Write `change` as a batch of its own on this thread, if the writer is free and no
    /// commit is queued; else hand it back. This blocks the calling (runtime) thread for
    /// the batch's `fdatasync`, as long as a device flush takes; the runtime's other
    /// thread serves meanwhile, and every later commit queues for the writer thread.
    fn alone(&self, op_id: &str, run_id: &str, change: Mutation) -> Result<BatonResult<Run>, Mutation> {
        if self.signals.queued.load(Ordering::SeqCst) > 0 {
            return Err(change);
        }
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            // A panic while writing is answered where it happened; the state is kept.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(change),
        };
        let (reply, mut answer) = oneshot::channel();
        writer.batch(vec![(op_id.to_string(), run_id.to_string(), change, reply)]);
        let unwitnessed = writer.witnessed < writer.batch;
        drop(writer);
        if unwitnessed && self.signals.idle.load(Ordering::SeqCst) {
            self.send(Job::Wake).ok();
        }
        Ok(answer.try_recv().unwrap_or_else(|_| Err(BatonError::internal("the store's writer did not answer a commit"))))
    }

    /// Run `task` on the writer thread with no batch in flight (writes wait; reads do not).
    pub async fn exclusive<R: Send + 'static>(&self, task: impl FnOnce(&mut Writer) -> BatonResult<R> + Send + 'static) -> BatonResult<R> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Exclusive(Box::new(move |w: &mut Writer| {
            let _ = reply.send(task(w));
        })))?;
        answer.await.map_err(|_| BatonError::internal("the store's writer stopped before answering"))?
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
pub struct Writer {
    pub(super) shared: Arc<StoreCore>,
    syncer: Syncer,
    /// Runs sled's flush with a bounded wait (see [`Flusher`]).
    flusher: Flusher,
    /// Where batches become durable between checkpoints.
    journal: Journal,
    record: Record,
    db_id: [u8; 16],
    /// Number of the last durable batch.
    pub(super) batch: u64,
    /// The batch number the integrity record holds durably.
    witnessed: u64,
    /// The values a failed batch replaced, newest last, until they are written back.
    undo: Option<(Vec<Undo>, BatonError)>,
    /// Content hashes of recently committed templates.
    bodies: Bodies,
    /// Descriptors held for the write path (see [`FdReserve`]).
    reserve: FdReserve,
    /// Runs, with their op-id rings, as the last durable batches left them. This thread is
    /// the only writer, so the next change to a busy run starts from here instead of
    /// decoding the run again; anything but a successful commit batch empties it.
    recent: HashMap<String, (Run, Vec<Option<String>>)>,
    /// Batches that failed since the last one that did not (for the log).
    failures: u64,
    /// When the last batch was written, or the integrity record last tried (it is written
    /// once writes have paused for [`IDLE`]).
    last_batch: Instant,
    /// A checkpoint ran since the last look at the owner's memory (see [`Writer::refresh`]).
    checkpointed: bool,
    /// The resident size (KiB) above which the next look (after a checkpoint, or idle)
    /// reopens sled.
    memory_mark: u64,
}

/// sled 0.34's cache counts each page at the size of its log record, and a leaf over
/// ~128 KiB (16 values of 8 KiB or more: agents' long outputs) is written as a blob whose
/// record is only a pointer, so such leaves are never evicted: a sled tree with a 4 MiB
/// cache held 100 MiB after 1,600 values of 60 KiB, and the owner grew 6.3 MiB per 100
/// advances with 60 KiB outputs. Reopening sled drops its cache (29 ms for a 140 MB
/// database); the writer does that after a checkpoint once the process holds this much
/// more than after the last opening, and more than `Options::reopen_above_kib`.
const MEMORY_GROWTH_KIB: u64 = 32 * 1024;

/// The least resident size (KiB) at which the writer reopens sled for memory: never unless
/// the options ask (see `Options::reopen_above_kib`).
fn memory_floor(options: &super::Options) -> u64 {
    options.reopen_above_kib.unwrap_or(u64::MAX)
}

/// Most runs kept in [`Writer::recent`] (it is emptied when full).
const RECENT_RUNS: usize = 1024;

/// A value a batch replaced: tree, key, previous value.
type Undo = (TreeId, IVec, Option<IVec>);

/// Why a batch failed, and what undoing it takes.
struct Failed {
    error: BatonError,
    /// `None`: sled never saw the batch. Otherwise sled must be reopened (it may hold an
    /// I/O error) and these values written back (empty: nothing to write back).
    undo: Option<Vec<Undo>>,
}

impl Failed {
    /// A failure before sled saw the batch.
    fn before_sled(error: BatonError) -> Failed {
        Failed { error, undo: None }
    }
}

impl Writer {
    /// The writer thread: batches of queued jobs, and the integrity record once writes
    /// have paused for [`IDLE`].
    fn run(writer: &Mutex<Writer>, signals: &Signals, inbox: mpsc::Receiver<Job>) {
        let lock = || writer.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // How long writes have paused, while the record lags behind the last batch.
            let waiting = {
                let mut writer = lock();
                let mut waiting = (writer.witnessed < writer.batch).then(|| writer.last_batch.elapsed());
                if waiting.is_some_and(|since| since >= IDLE) {
                    writer.witness_now();
                    // If it could not be written (a failed batch waits to be healed), the
                    // next try is one pause later.
                    writer.last_batch = Instant::now();
                    waiting = (writer.witnessed < writer.batch).then_some(Duration::ZERO);
                }
                // Under the lock: a batch written after this sees `idle` and wakes the thread.
                signals.idle.store(waiting.is_none(), Ordering::SeqCst);
                waiting
            };
            let first = match waiting {
                Some(since) => match inbox.recv_timeout(IDLE - since) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match inbox.recv_timeout(MEMORY_CHECK) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        lock().refresh();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            signals.idle.store(false, Ordering::SeqCst);
            let mut writer = lock();
            let mut commits = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                signals.queued.fetch_sub(1, Ordering::SeqCst);
                match job {
                    Job::Commit { op_id, run_id, change, reply } => commits.push((op_id, run_id, change, reply)),
                    Job::Exclusive(task) => {
                        if !commits.is_empty() {
                            writer.batch(std::mem::take(&mut commits));
                        }
                        let _ = writer.heal();
                        writer.recent.clear();
                        task(&mut writer);
                    }
                    Job::Wake => {}
                }
                if commits.len() < MAX_BATCH {
                    next = inbox.try_recv().ok();
                }
            }
            if !commits.is_empty() {
                writer.batch(commits);
            }
        }
        lock().witness_now();
    }

    /// Write the exact batch number to the integrity record, durably.
    fn witness_now(&mut self) {
        if self.witnessed == self.batch || self.undo.is_some() || self.journal.is_dirty() {
            return;
        }
        match self.record.write_synced(Witness { db_id: self.db_id, batch: self.batch }) {
            Ok(()) => self.witnessed = self.batch,
            Err(e) => tracing::warn!("cannot update the integrity record {}: {e}", self.record.path().display()),
        }
    }

    fn batch(&mut self, commits: Vec<(String, String, Mutation, Reply<Run>)>) {
        let ready = self.heal();
        self.batch_ready(commits, ready);
        self.last_batch = Instant::now();
        if std::mem::take(&mut self.checkpointed) {
            self.refresh();
        }
    }

    /// After a checkpoint, or every [`MEMORY_CHECK`] while idle (the batch answered, nothing
    /// of sled's in flight): reopen sled when the process has grown past
    /// [`Writer::memory_mark`], so that sled's cache cannot hold every large leaf written or
    /// read (see [`MEMORY_GROWTH_KIB`]). Skipped when a reopening could not work now; if it
    /// fails midway, the next batch's heal reopens.
    fn refresh(&mut self) {
        let Some(resident) = durability::resident_kib() else { return };
        if resident < self.memory_mark || self.undo.is_some() || self.journal.is_dirty() {
            return;
        }
        let started = Instant::now();
        match self.reopen() {
            None => {}
            Some(Ok(())) => {
                durability::return_free_memory();
                let after = durability::resident_kib().unwrap_or(resident);
                self.memory_mark = (after + MEMORY_GROWTH_KIB).max(memory_floor(&self.shared.options));
                tracing::info!(
                    "reopened the baton database at {} to free sled's cache: {} -> {} MiB resident in {} ms",
                    self.shared.dir.display(),
                    resident / 1024,
                    after / 1024,
                    started.elapsed().as_millis()
                );
            }
            Some(Err(error)) => {
                tracing::warn!("{error}");
                self.undo = Some((Vec::new(), error));
            }
        }
    }

    fn batch_ready(&mut self, commits: Vec<(String, String, Mutation, Reply<Run>)>, ready: BatonResult<()>) {
        if let Err(e) = ready {
            for (.., reply) in commits {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        let shared = Arc::clone(&self.shared);
        let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = guard.as_ref() else { unreachable!("healed") };
        let mut batch = Batch::default();
        let mut answers = Vec::with_capacity(commits.len());
        for (op_id, run_id, change, reply) in commits {
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| self.stage(db, &mut batch, &op_id, &run_id, &change)))
                .unwrap_or_else(|_| Err(self.shared.panicked()));
            answers.push((reply, answer));
        }
        if batch.writes.is_empty() {
            drop(guard);
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
            return;
        }
        let outcome = self.write(db, &mut batch);
        drop(guard);
        let (runs, mut rings) = (batch.runs, batch.rings);
        match self.finish_batch(outcome) {
            Ok(()) => {
                if self.recent.len() + runs.len() > RECENT_RUNS {
                    self.recent.clear();
                }
                for (run_id, run) in runs {
                    match (run, rings.remove(&run_id)) {
                        (Some(run), Some(ring)) => self.recent.insert(run_id, (run, ring)),
                        _ => self.recent.remove(&run_id),
                    };
                }
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!("{error}");
                for (reply, _) in answers {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// After a batch was written: count it durable and show it to readers, or keep what
    /// the next heal needs and return the error.
    fn finish_batch(&mut self, outcome: Result<(), Failed>) -> BatonResult<()> {
        match outcome {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(
                        "writes to the baton database at {} work again, after {} failed write(s)",
                        self.shared.dir.display(),
                        self.failures
                    );
                    self.failures = 0;
                }
                self.batch += 1;
                self.shared.durable_batch.store(self.batch, std::sync::atomic::Ordering::Relaxed);
                self.shared.overlay().clear();
                self.shared.changes.send_modify(|c| *c += 1);
                Ok(())
            }
            Err(Failed { error, undo }) => {
                self.failures += 1;
                match undo {
                    Some(undo) => self.undo = Some((undo, error.clone())),
                    // Neither sled nor the pending changes took the batch: the overlay
                    // only repeats what they hold.
                    None => self.shared.overlay().clear(),
                }
                self.recent.clear();
                Err(error)
            }
        }
    }

    /// Add one commit to the batch; the answer it gets once the batch is durable.
    fn stage(&mut self, db: &Db, batch: &mut Batch, op_id: &str, run_id: &str, change: &Mutation) -> BatonResult<Run> {
        let current = match batch.runs.get(run_id) {
            Some(run) => run.clone(),
            // The run's first change in this batch: taken (not copied) from the runs the
            // last batches left, and put back once this batch is durable.
            None => match self.recent.remove(run_id) {
                Some((run, ring)) => {
                    batch.rings.insert(run_id.to_string(), ring);
                    Some(run)
                }
                None => self.shared.stored_run(db, run_id)?,
            },
        };
        if let Some(run) = &current
            && already_applied(run, op_id, self.ring(db, batch, run_id)?)
        {
            batch.runs.insert(run_id.to_string(), Some(run.clone()));
            return Ok(run.clone());
        }
        let before = current.as_ref().map(RunSummary::of);
        // The change takes the run itself (no copy); what is checked after is its version.
        let version = current.as_ref().map(|run| run.version);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| change(current)))
            .unwrap_or_else(|_| Err(BatonError::internal(format!("a change to run {run_id} panicked"))));
        let commit = outcome?;
        check_commit(run_id, version, &commit)?;
        let Commit { run, event, checkpoint, template } = commit;
        let shared = Arc::clone(&self.shared);
        let hash = self.bodies.body_in(&shared, db, batch, &run.template)?;
        let codec = &shared.codec;
        batch.writes.push((
            TreeId::Runs,
            run_id.as_bytes().to_vec(),
            Some(codec.encode_run(TreeId::Runs.name(), run_id.as_bytes(), &run, &hash)?),
        ));
        let event_key = keys::event_key(run_id, event.seq);
        batch.writes.push((TreeId::Events, event_key.clone(), Some(codec.encode(TreeId::Events.name(), &event_key, &event)?)));
        if let Some(name) = &checkpoint {
            let key = keys::checkpoint_key(run_id, name);
            batch.writes.push((TreeId::Checkpoints, key.clone(), Some(codec.encode_run(TreeId::Checkpoints.name(), &key, &run, &hash)?)));
        }
        if let Some(template) = &template {
            let name = template.name.clone();
            if !batch.overlay.templates.contains_key(&name) {
                let durable = self.shared.durable_template(db, &name)?;
                batch.overlay.templates.insert(name.clone(), durable);
            }
            batch.writes.push((
                TreeId::Templates,
                name.as_bytes().to_vec(),
                Some(codec.encode(TreeId::Templates.name(), name.as_bytes(), template)?),
            ));
        }
        self.ring(db, batch, run_id)?[(run.version % RECENT_OPS as u64) as usize] = Some(op_id.to_string());
        batch.writes.push((TreeId::Ops, keys::op_key(run_id, run.version, RECENT_OPS), Some(op_id.as_bytes().to_vec())));
        let after = RunSummary::of(&run);
        if let Some(before) = &before {
            batch.writes.push((TreeId::Index, index::key_of(before), None));
            count_into(&mut batch.counts, before, -1);
        }
        let key = index::key_of(&after);
        batch.writes.push((TreeId::Index, key.clone(), Some(codec.encode(TreeId::Index.name(), &key, &after)?)));
        count_into(&mut batch.counts, &after, 1);
        batch.runs.insert(run_id.to_string(), Some(run.clone()));
        Ok(run)
    }

    /// The op-id ring of a run, loaded once per batch.
    fn ring<'b>(&self, db: &Db, batch: &'b mut Batch, run_id: &str) -> BatonResult<&'b mut Vec<Option<String>>> {
        if !batch.rings.contains_key(run_id) {
            let mut ring = vec![None; RECENT_OPS];
            for entry in db.scan_prefix(TreeId::Ops, &keys::run_prefix(run_id)) {
                let (key, op) = entry?;
                if let Some(slot) = key.last().map(|s| *s as usize).filter(|s| *s < RECENT_OPS && key.len() == run_id.len() + 2) {
                    ring[slot] = Some(String::from_utf8_lossy(&op).into_owned());
                }
            }
            batch.rings.insert(run_id.to_string(), ring);
        }
        Ok(batch.rings.get_mut(run_id).expect("inserted"))
    }

    /// Steps 2-3 of a batch: journal and sync, or (too large for the journal) overlay and
    /// sled's transaction, flush and sync.
    fn write(&mut self, db: &Db, batch: &mut Batch) -> Result<(), Failed> {
        for (key, delta) in std::mem::take(&mut batch.counts) {
            if delta != 0 {
                let now = index::read_counter(db, &key).map_err(Failed::before_sled)? as i64;
                batch.writes.push((TreeId::Meta, key, Some(((now + delta).max(0) as u64).to_be_bytes().to_vec())));
            }
        }
        batch.writes.push((TreeId::Meta, keys::META_BATCH.to_vec(), Some((self.batch + 1).to_be_bytes().to_vec())));
        let len = self.journal.encode(self.batch + 1, &batch.writes);
        if !Journal::fits(len) {
            durability::room_for(&self.shared.dir, len).map_err(|e| Failed::before_sled(io_storage(&self.shared.dir, "write to", &e)))?;
            // sled shows a transaction's writes before they are durable: readers see the
            // state before the batch, from the overlay, until then.
            self.shield(db, batch).map_err(Failed::before_sled)?;
            return self.write_through(db, &batch.writes);
        }
        // A journaled batch needs no overlay: readers see it only once it is durable, when
        // its writes join the pending changes. Nor does it need free space: the journal's
        // blocks were written when it was made, so an append allocates none (a `statvfs`
        // per batch was 2% of the owner's CPU per advance; issue 22). sled, which must
        // never meet a full disk, takes the batch at a checkpoint, which asks first.
        if !self.journal.has_room(len) {
            // sled holds every journaled batch: once it is durable the journal is free.
            self.checkpoint_or_fail(db)?;
        }
        self.journaled().map_err(Failed::before_sled)?;
        // Durable: readers see it through the pending changes until the next checkpoint.
        db.pending.apply(&batch.writes);
        Ok(())
    }

    /// Enter the state before `batch` of what it touches in the overlay: the runs its
    /// commits changed (read now, before any of the batch is written) and whatever its
    /// plan (a delete, an import) entered in its own overlay.
    fn shield(&self, db: &Db, batch: &mut Batch) -> BatonResult<()> {
        let Overlay { mut runs, mut summaries, templates } = std::mem::take(&mut batch.overlay);
        for (run_id, written) in &batch.runs {
            if !runs.contains_key(run_id) {
                let durable = self.shared.stored_run(db, run_id)?;
                summaries.insert(run_id.clone(), (durable.as_ref().map(RunSummary::of), written.as_ref().map(RunSummary::of)));
                runs.insert(run_id.clone(), durable);
            }
        }
        let mut overlay = self.shared.overlay();
        overlay.runs.extend(runs);
        overlay.summaries.extend(summaries);
        overlay.templates.extend(templates);
        Ok(())
    }

    /// Append the encoded batch to the journal and make it durable, with the witness of
    /// the previous batch staged before the sync.
    fn journaled(&mut self) -> BatonResult<()> {
        let dir = &self.shared.dir;
        self.journal.append().map_err(|e| io_storage(dir, "write to", &e))?;
        self.before_sync().map_err(|e| io_storage(dir, "sync", &e))?;
        // The witness of the previous batch rides on this batch's device flush.
        self.record
            .stage(Witness { db_id: self.db_id, batch: self.batch })
            .map_err(|e| io_storage(dir, "stage the integrity record of", &e))?;
        self.journal.sync().map_err(|e| io_storage(dir, "sync", &e))?;
        self.witnessed = self.witnessed.max(self.batch);
        Ok(())
    }

    /// A batch too large for the journal: sled's transaction, flush and sync, after a
    /// checkpoint (the pending changes are older, so they go into sled first).
    fn write_through(&mut self, db: &Db, writes: &[Write]) -> Result<(), Failed> {
        self.reserve.release_for_batch().map_err(|e| Failed::before_sled(io_storage(&self.shared.dir, "write to", &e)))?;
        let written = self.write_through_sled(db, writes);
        self.reserve.refill();
        written
    }

    fn write_through_sled(&mut self, db: &Db, writes: &[Write]) -> Result<(), Failed> {
        if !db.pending.is_empty() {
            self.checkpoint_or_fail(db)?;
        }
        let undo = self.transaction(db, writes)?;
        let synced = self.before_sync().map_err(|e| io_storage(&self.shared.dir, "sync", &e)).and_then(|_| self.checkpoint(db));
        let staged = synced.and_then(|_| {
            self.record
                .stage(Witness { db_id: self.db_id, batch: self.batch })
                .map_err(|e| io_storage(&self.shared.dir, "stage the integrity record of", &e))
        });
        match staged {
            Ok(()) => {
                self.witnessed = self.witnessed.max(self.batch);
                Ok(())
            }
            Err(error) => Err(Failed { error, undo: Some(undo) }),
        }
    }

    /// Tests: the hook run between a batch's write and its sync.
    fn before_sync(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(hook) = self.shared.before_sync.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            return hook();
        }
        Ok(())
    }

    /// Write `writes` in one sled transaction; the values they replaced.
    fn transaction(&self, db: &Db, writes: &[Write]) -> Result<Vec<Undo>, Failed> {
        let dir = &self.shared.dir;
        let undo = std::cell::RefCell::new(Vec::new());
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
            db.trees.as_slice().transaction(|trees| {
                let mut replaced = undo.borrow_mut();
                replaced.clear();
                for (tree, key, value) in writes {
                    let view = &trees[*tree as usize];
                    let previous = match value {
                        Some(value) => view.insert(key.as_slice(), value.as_slice())?,
                        None => view.remove(key.as_slice())?,
                    };
                    replaced.push((*tree, IVec::from(key.as_slice()), previous));
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
        }));
        let undo = undo.into_inner();
        let error = match applied {
            Ok(Ok(())) => return Ok(undo),
            Ok(Err(TransactionError::Storage(e))) => io_storage(dir, "write to", &sled_text(&e)),
            Ok(Err(TransactionError::Abort(()))) => BatonError::internal("a write transaction aborted"),
            Err(_) => self.shared.panicked(),
        };
        Err(Failed { error, undo: Some(undo) })
    }

    /// A checkpoint as part of a batch: when it fails, sled may hold an I/O error, so the
    /// next heal reopens it (nothing of the batch to write back).
    fn checkpoint_or_fail(&mut self, db: &Db) -> Result<(), Failed> {
        self.checkpoint(db).map_err(|error| Failed { error, undo: Some(Vec::new()) })
    }

    /// Write the pending changes into sled in one transaction and make sled durable (its
    /// flush, then [`Syncer::sync`]); then they, and the journal, can start afresh. On
    /// failure both stay as they are: the heal reopens sled, which replays the journal.
    fn checkpoint(&mut self, db: &Db) -> BatonResult<()> {
        let dir = &self.shared.dir;
        durability::room_for(dir, self.journal.used()).map_err(|e| io_storage(dir, "flush", &e))?;
        self.reserve.release_for_batch().map_err(|e| io_storage(dir, "write to", &e))?;
        let done = self.checkpoint_sled(db);
        self.reserve.refill();
        done
    }

    fn checkpoint_sled(&mut self, db: &Db) -> BatonResult<()> {
        let dir = &self.shared.dir;
        if !db.pending.is_empty() {
            self.transaction(db, &db.pending.writes()).map_err(|f| f.error)?;
        }
        self.flusher.flush(&db.sled, FLUSH_WAIT).map_err(|e| io_storage(dir, "flush", &e))?;
        self.syncer.sync().map_err(|e| io_storage(dir, "sync", &e))?;
        db.pending.clear();
        self.journal.restart();
        self.checkpointed = true;
        Ok(())
    }

    /// Undo a failed batch: reopen sled, write back what the batch replaced, sync. A
    /// no-op when no batch failed.
    pub(super) fn heal(&mut self) -> BatonResult<()> {
        let dir = self.shared.dir.clone();
        if self.journal.is_dirty() {
            // First, so that reopening sled below cannot replay the failed batch.
            self.journal.invalidate().map_err(|e| io_storage(&dir, "erase a failed change from the journal of", &e))?;
        }
        let Some((_, cause)) = &self.undo else { return Ok(()) };
        let cause = cause.clone();
        match self.reopen() {
            None => Err(cause),
            Some(Err(error)) => Err(error),
            Some(Ok(())) => {
                self.undo = None;
                tracing::info!("the baton database at {} recovered from a failed write", dir.display());
                Ok(())
            }
        }
    }

    /// Reopen sled if it can be reopened now (see [`Writer::reopen_sled`]), with the
    /// descriptors held in reserve freed for it: `None` if it cannot, else how it went.
    fn reopen(&mut self) -> Option<BatonResult<()>> {
        // Reopening opens sled's files: the descriptors held in reserve are for that.
        // (If they cannot be freed, the check below finds no descriptors to spare.)
        let freed = self.reserve.release_for_batch().is_ok();
        // A flush stuck inside sled keeps the old instance (and its file lock) alive:
        // dropping it would wait forever too, and reopening would find the lock taken.
        // Reopening sled writes (recovery) and opens files; while that would fail, keep the
        // old instance, whose reads still work (the overlay hides a failed batch).
        let ready = !self.flusher.is_stuck() && durability::can_reopen(&self.shared.dir);
        let reopened = ready.then(|| self.reopen_sled());
        if freed {
            self.reserve.refill();
        }
        reopened
    }

    /// Close sled, open it again (which replays the journal), write back what a failed
    /// batch replaced (newest last; nothing when no batch failed), make it all durable and
    /// start the journal afresh.
    fn reopen_sled(&mut self) -> BatonResult<()> {
        let dir = self.shared.dir.clone();
        let undo: &[Undo] = self.undo.as_ref().map_or(&[], |(undo, _)| undo);
        let mut slot = self.shared.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            // Reads fail until a database is back (`with_db` says why).
            self.flusher.close(old, FLUSH_WAIT).map_err(|e| io_storage(&dir, "close", &e))?;
        }
        let deadline = Instant::now() + REOPEN_TIMEOUT;
        let db = loop {
            match open_sled(&dir, &self.shared.options) {
                Ok(db) => break db,
                Err(e) if e.code == crate::error::ErrorCode::Unavailable && Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
        };
        let restored = db.trees.as_slice().transaction(|trees| {
            for (tree, key, previous) in undo.iter().rev() {
                let view = &trees[*tree as usize];
                match previous {
                    Some(value) => view.insert(key.clone(), value.clone())?,
                    None => view.remove(key.clone())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        restored.map_err(|e| io_storage(&dir, "undo a failed change in", &format!("{e:?}")))?;
        self.flusher.flush(&db.sled, FLUSH_WAIT).map_err(|e| io_storage(&dir, "flush", &e))?;
        self.syncer.sync_everything().map_err(|e| io_storage(&dir, "sync", &e))?;
        // Reopening replayed the journal into sled, and that is durable now.
        self.journal.restart();
        *slot = Some(db);
        // Cleared under the write guard: no reader is between its read and its overlay check.
        self.shared.overlay().clear();
        drop(slot);
        Ok(())
    }

    /// Tests: write the pending changes into sled now, so that sled alone holds the state.
    #[cfg(test)]
    pub(super) fn checkpoint_now(&mut self) -> BatonResult<()> {
        let shared = Arc::clone(&self.shared);
        let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or_else(|| BatonError::internal("database closed"))?;
        self.checkpoint(db)
    }

    /// A consistent copy of the database into `target` (see `maintenance`).
    pub(super) fn backup(&mut self, target: &Path) -> BatonResult<crate::store::BackupReport> {
        self.heal()?;
        super::maintenance::backup(&self.shared, target, self.db_id, self.batch)
    }

    /// Write imported runs (see `maintenance`), as one durable batch.
    pub(super) fn import(&mut self, records: Vec<super::maintenance::Exported>, replace: bool) -> BatonResult<u64> {
        self.heal()?;
        let shared = Arc::clone(&self.shared);
        let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or_else(|| BatonError::internal("database closed"))?;
        // An import can be large: it starts from an empty journal, and a stuck or failing
        // sled shows here, before anything is planned.
        if let Err(failed) = self.checkpoint_or_fail(db) {
            return self.finish_batch(Err(failed)).map(|()| 0);
        }
        let mut batch = Batch::default();
        let count = super::maintenance::plan_import(&shared, &mut self.bodies, db, &mut batch, records, replace)?;
        let outcome = self.write(db, &mut batch);
        drop(guard);
        self.finish_batch(outcome).map(|()| count)
    }

    /// Delete a finished run's records (see `retention`), as one durable batch.
    pub(super) fn delete(&mut self, run_id: &str) -> BatonResult<Option<RunSummary>> {
        self.heal()?;
        let shared = Arc::clone(&self.shared);
        let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or_else(|| BatonError::internal("database closed"))?;
        let mut batch = Batch::default();
        let Some(deleted) = super::delete::plan_delete(&shared, db, &mut batch, run_id)? else { return Ok(None) };
        let outcome = self.write(db, &mut batch);
        drop(guard);
        self.finish_batch(outcome)?;
        Ok(Some(deleted))
    }
}

impl StoreCore {
    /// The durable named template `name`, read inside a batch.
    pub(super) fn durable_template(&self, db: &Db, name: &str) -> BatonResult<Option<Template>> {
        match db.get(TreeId::Templates, name.as_bytes())? {
            None => Ok(None),
            Some(bytes) => self.codec.decode(TreeId::Templates.name(), name.as_bytes(), &bytes).map(Some),
        }
    }
}
