//! The embedded store: runs in sled.
//!
//! - Writes: one writer thread owns the write path ([`writer`]). Commits arriving together
//!   form a batch: one journal append and one `fdatasync` ([`journal`]); each commit is
//!   answered only once its batch is durable. The journaled changes wait in memory
//!   ([`pending`]) and reach sled at checkpoints, when the journal is full: one sled
//!   transaction, sled's flush and sync ([`durability`]).
//! - Reads go straight to sled and never wait for the writer. A reader sees only durable
//!   state: while a batch is applied but not yet durable, the runs it touches are read
//!   from the batch's *overlay* (their state before the batch), so a change is never shown
//!   before it is acknowledged, and a batch that fails is never shown at all.
//! - A failed batch is undone (sled is closed and reopened, since it keeps an I/O error
//!   for the life of the open database, and the values the batch replaced are written
//!   back) before the next write, so an error leaves no trace and the store heals once
//!   the cause (a full disk, too many open files) is gone.
//! - Records carry a format tag ([`codec`]); the first format is upgraded on open
//!   ([`upgrade`]); an integrity record outside sled detects a log that recovered less than
//!   was acknowledged ([`integrity`]); payloads can be encrypted ([`crypto`]).

mod batch;
mod codec;
pub mod crypto;
mod delete;
mod durability;
mod index;
mod integrity;
mod journal;
mod keys;
mod leftovers;
mod maintenance;
mod pending;
mod upgrade;
mod writer;

use super::{Mutation, RunPage, RunQuery, RunStore, RunSummary};
use crate::engine::{Event, Run, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::store::{BackupReport, VerifyReport};
use async_trait::async_trait;
use codec::Codec;
use keys::TreeId;
use sled::Tree;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use crypto::Key;
pub use durability::stuck_for;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Encrypt record payloads under this key (a database is encrypted or not for life).
    pub key: Option<Key>,
    /// Bytes of sled's page cache. sled's default (1 GiB) lets a long-running owner grow
    /// without bound; a few MiB hold every hot page baton reads.
    pub cache_bytes: u64,
    /// Reopen sled to drop its cache once the process holds more than this (KiB) and has
    /// grown 32 MiB since the last opening (see `Writer::refresh`); `None`: never. Baton's
    /// processes set it ([`Options::for_dir`]); a test process holding many stores does not.
    pub reopen_above_kib: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options { key: None, cache_bytes: 4 * 1024 * 1024, reopen_above_kib: None }
    }
}

/// [`Options::reopen_above_kib`] for baton's processes: the owner's ordinary working set is
/// 31 MiB at 100,000 events.
pub const REOPEN_ABOVE_KIB: u64 = 64 * 1024;

/// The environment variable naming the database key file (default: `db.key` beside `db/`).
pub const KEY_FILE_ENV: &str = "BATON_KEY_FILE";

impl Options {
    /// The key file `BATON_KEY_FILE` names, if it is set (and not empty).
    pub fn named_key_file() -> Option<PathBuf> {
        std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// Where the key of the database in `dir` is kept: `BATON_KEY_FILE`, else `db.key`
    /// beside the database directory (outside it, so copies of `db/` and backups carry no key).
    pub fn key_path(dir: &Path) -> PathBuf {
        Options::named_key_file().unwrap_or_else(|| dir.with_file_name("db.key"))
    }

    /// The options for the database in `dir`: encrypted when its key file exists. A key
    /// file named by `BATON_KEY_FILE` must exist.
    pub fn for_dir(dir: &Path) -> BatonResult<Options> {
        let path = Options::key_path(dir);
        let key = match path.try_exists() {
            Ok(true) => Some(Key::load(&path)?),
            Ok(false) if Options::named_key_file().is_some() => {
                return Err(BatonError::invalid(
                    KEY_FILE_ENV,
                    format!("{KEY_FILE_ENV} names {}, which does not exist", path.display()),
                    "Point BATON_KEY_FILE at the database's key file, or unset it for a database without encryption.",
                ));
            }
            _ => None,
        };
        Ok(Options { key, reopen_above_kib: Some(REOPEN_ABOVE_KIB), ..Options::default() })
    }
}

/// The sled database and its trees, in the order of [`keys::TREES`].
pub(crate) struct Db {
    sled: sled::Db,
    trees: Vec<Tree>,
    /// What was set aside before sled opened (see [`leftovers`]), one line per file.
    set_aside: Vec<String>,
    /// Journaled changes not yet in sled; every read looks here first ([`pending`]).
    pending: pending::Pending,
    /// Dropped last (fields drop in order): waits until sled's file lock is free.
    _closed: durability::Unlocked,
}

impl Db {
    fn tree(&self, t: TreeId) -> &Tree {
        &self.trees[t as usize]
    }
}

/// A test hook run before a batch's sync.
#[cfg(test)]
type SyncHook = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// What readers and the writer share.
pub(crate) struct StoreCore {
    dir: PathBuf,
    codec: Codec,
    options: Options,
    /// `None` only while the writer reopens sled after a failed batch, or if that failed.
    db: RwLock<Option<Db>>,
    /// The durable state of what the batch in flight (or a failed, not yet undone, batch)
    /// changes.
    overlay: Mutex<Overlay>,
    /// The number of the last durable write batch (kept by the writer, read by anyone).
    durable_batch: std::sync::atomic::AtomicU64,
    /// The change feed ([`RunStore::changes`]): bumped by the writer after each durable batch.
    changes: tokio::sync::watch::Sender<u64>,
    /// Tests: called between a batch's transaction and its sync, to hold it in flight or fail it.
    #[cfg(test)]
    before_sync: Mutex<Option<SyncHook>>,
}

/// State before the batch in flight, for every run and named template it touches.
#[derive(Default)]
pub(crate) struct Overlay {
    /// Run id -> the durable run (`None`: the batch creates it).
    runs: HashMap<String, Option<Run>>,
    /// Run id -> (durable summary, summary the batch writes to the index).
    summaries: HashMap<String, (Option<RunSummary>, Option<RunSummary>)>,
    /// Template name -> the durable named template.
    templates: HashMap<String, Option<Template>>,
}

impl Overlay {
    /// Forget everything: the batch became durable, or was undone.
    fn clear(&mut self) {
        *self = Overlay::default();
    }
}

/// The store: cheap to share behind an `Arc`; dropping it stops the writer (which records
/// the integrity witness) and closes sled.
pub struct SledStore {
    shared: Arc<StoreCore>,
    writer: writer::Handle,
}

impl SledStore {
    /// Open (or create) the database in `dir` with default options.
    pub fn open(dir: &Path) -> BatonResult<SledStore> {
        SledStore::open_with(dir, Options::default())
    }

    /// Open (or create) the database in `dir`: set aside what an interrupted open left
    /// half-written, check its configuration file, recover sled,
    /// check encryption and the integrity record, upgrade an older format, and start the
    /// writer. Refuses, with the damaged path and the fix, a database that lost
    /// acknowledged changes.
    pub fn open_with(dir: &Path, options: Options) -> BatonResult<SledStore> {
        let db = open_sled(dir, &options)?;
        let cipher = options.key.as_ref().map(crypto::Cipher::new);
        let codec = Codec::new(dir, cipher);
        let shared = Arc::new(StoreCore {
            dir: dir.to_path_buf(),
            codec,
            options,
            db: RwLock::new(None),
            overlay: Mutex::default(),
            durable_batch: Default::default(),
            changes: tokio::sync::watch::Sender::new(0),
            #[cfg(test)]
            before_sync: Mutex::new(None),
        });
        let state = upgrade::prepare(&shared, &db)?;
        let record = upgrade::check_integrity(dir, &state)?;
        if !db.set_aside.is_empty() {
            tracing::warn!(
                "the baton database at {} opened after {} leftover file(s) were set aside: sled recovered through write batch {} ({} run(s)), at least what its integrity record witnessed",
                dir.display(),
                db.set_aside.len(),
                state.batch,
                db.tree(TreeId::Runs).len()
            );
        }
        // What opening wrote (sled's recovery, new trees, the format's records, a replayed
        // journal) is made durable before the journal starts afresh: sled 0.34 cannot
        // recover a log that lost the pages its trees were created in ("tried to serialize
        // Uninitialized" on the next open, seen in the power-cut test).
        db.sled.flush()?;
        let syncer = durability::Syncer::open(dir).map_err(|e| io_storage(dir, "sync", &e))?;
        *shared.db.write().unwrap_or_else(|p| p.into_inner()) = Some(db);
        let writer = writer::Handle::start(Arc::clone(&shared), syncer, record, state)?;
        Ok(SledStore { shared, writer })
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The number of the last durable write batch (for tests and benchmarks).
    pub fn writer_batch(&self) -> u64 {
        self.shared.durable_batch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Accept a damaged database in `dir` as it is (no process may have it open):
    /// rewrite a damaged configuration file, rebuild the listing from the runs, and make
    /// the integrity record match what sled recovered. Returns what `verify` then finds.
    pub fn repair(dir: &Path, options: Options) -> BatonResult<VerifyReport> {
        maintenance::repair(dir, &options)
    }
}

/// Checking sled's own configuration file before sled reads it.
mod integrity_conf {
    use crate::error::{BatonError, BatonResult};
    use std::path::Path;

    /// What sled 0.34 writes with baton's settings (segment size, no compression, version),
    /// followed by its CRC-32.
    pub fn expected() -> Vec<u8> {
        let mut bytes = b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n".to_vec();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// sled reports a damaged `conf` as "created using a different version"; say what it is.
    pub fn check(dir: &Path) -> BatonResult<()> {
        let path = dir.join("conf");
        match std::fs::read(&path) {
            Ok(bytes) if bytes == expected() => Ok(()),
            Ok(_) => Err(BatonError::storage(
                format!("the database configuration file {} is damaged (it does not hold the settings baton writes)", path.display()),
                "It holds only fixed settings: run `baton verify --repair` to rewrite it, or restore the database directory from a backup.",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BatonError::storage(
                format!("cannot read the database configuration file {}: {e}", path.display()),
                "Check the database directory's permissions.",
            )),
        }
    }

    /// Rewrite `conf` with the settings baton uses.
    pub fn rewrite(dir: &Path) -> std::io::Result<()> {
        let path = dir.join("conf");
        std::fs::write(&path, expected())?;
        std::fs::File::open(&path)?.sync_all()?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Open sled and its trees. sled can panic on some damaged files; that becomes an error.
pub(crate) fn open_sled(dir: &Path, options: &Options) -> BatonResult<Db> {
    // Only the process holding the owner lock (or a repair) opens sled, so nothing else
    // is writing these files now.
    let set_aside = leftovers::set_aside_before_open(dir)?;
    integrity_conf::check(dir)?;
    let config = sled::Config::new().path(dir).cache_capacity(options.cache_bytes).flush_every_ms(None);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || -> sled::Result<Db> {
        let sled = config.open()?;
        let trees = keys::TREES.iter().map(|name| sled.open_tree(name)).collect::<sled::Result<Vec<_>>>()?;
        Ok(Db { sled, trees, set_aside, pending: Default::default(), _closed: durability::Unlocked(dir.join("db")) })
    }));
    let db = match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(io)))
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock") =>
        {
            Err(BatonError::new(
                ErrorCode::Unavailable,
                format!("the database at {} is still held by another process", dir.display()),
                "Retry in a moment; if it persists, look for a stray process using that directory.",
            ))
        }
        Ok(Err(e @ sled::Error::Corruption { .. })) => Err(BatonError::storage(
            format!(
                "the baton database at {} is damaged: sled found corrupted data in its log {} ({e})",
                dir.display(),
                dir.join("db").display()
            ),
            format!(
                "Stop every baton process and restore {} from a backup (the integrity record beside it names the database and how far it was acknowledged).",
                dir.display()
            ),
        )),
        Ok(Err(e)) if sled_text(&e).contains("No space left") => Err(BatonError::storage(
            format!("cannot open the baton database at {}: {}", dir.display(), sled_text(&e)),
            format!(
                "Free space on the disk holding {}; nothing was changed, and the database opens as soon as there is room.",
                dir.display()
            ),
        )),
        Ok(Err(e)) => Err(BatonError::storage(
            format!("cannot open the baton database at {}: {e}", dir.display()),
            format!(
                "Check the directory exists, is writable by you and its disk has room; if it is damaged, restore it from a backup (or run `baton verify` for details on {}).",
                dir.display()
            ),
        )),
        Err(_) => Err(BatonError::storage(
            format!("the baton database at {} is damaged: sled could not recover its log {}", dir.display(), dir.join("db").display()),
            "Restore the database directory from a backup.",
        )),
    }?;
    // What was acknowledged since sled was last flushed is in the journal.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| journal::replay(dir, &db))).unwrap_or_else(|_| {
        Err(BatonError::storage(
            format!(
                "the baton database at {} is damaged: sled could not take back its journal {}",
                dir.display(),
                journal::path(dir).display()
            ),
            "Restore the database directory from a backup.",
        ))
    })?;
    Ok(db)
}

/// The text of a sled error. sled passes I/O errors from its I/O threads on in their Debug
/// form (`Os { code: 28, .. }`); the OS error's own text is what a person can act on.
pub(crate) fn sled_text(e: &sled::Error) -> String {
    let text = match e {
        sled::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    let code = text.split("code: ").nth(1).and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
    match code {
        Some(code) if text.contains("Os {") => std::io::Error::from_raw_os_error(code).to_string(),
        _ => text,
    }
}

/// A storage error for an I/O failure on the database in `dir`.
pub(crate) fn io_storage(dir: &Path, what: &str, e: &dyn std::fmt::Display) -> BatonError {
    let text = e.to_string();
    let fix = if text.contains("No space left") || text.contains("ENOSPC") {
        format!("Free space on the disk holding {}; the change was not applied, and writes work again once there is room.", dir.display())
    } else if text.contains("Too many open files") {
        "Close some files or connections, or raise the open-file limit (`ulimit -n`); the change was not applied, and writes work again once descriptors are free.".to_string()
    } else {
        format!("Check that the disk holding {} is healthy and writable; the change was not applied.", dir.display())
    };
    BatonError::storage(format!("cannot {what} the baton database at {}: {text}", dir.display()), fix)
}

impl StoreCore {
    /// Run `read` against the open database.
    /// sled panics on some inconsistencies of a damaged log ("cannot find pid"); such a
    /// read becomes a storage error instead of taking the process down.
    fn with_db<R>(&self, read: impl FnOnce(&Db) -> BatonResult<R>) -> BatonResult<R> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(db) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(db))).unwrap_or_else(|_| Err(self.panicked())),
            None => Err(BatonError::storage(
                format!("the baton database at {} is closed after a write error and could not be reopened yet", self.dir.display()),
                "Fix the cause named by the failed write (disk space, open files); the next change reopens it.",
            )),
        }
    }

    /// The error for a sled panic: its log is inconsistent.
    fn panicked(&self) -> BatonError {
        BatonError::storage(
            format!(
                "the baton database at {} is damaged: sled found its log inconsistent ({})",
                self.dir.display(),
                self.dir.join("db").display()
            ),
            "Restore the database directory from a backup; `baton verify` lists what can still be read.",
        )
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored snapshot of a run as sled has it (durable or in flight).
    fn stored_run(&self, db: &Db, run_id: &str) -> BatonResult<Option<Run>> {
        let tree = TreeId::Runs.name();
        match db.get(TreeId::Runs, run_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => self.decode_run(db, tree, run_id.as_bytes(), &bytes).map(Some),
        }
    }

    fn decode_run(&self, db: &Db, tree: &str, key: &[u8], bytes: &[u8]) -> BatonResult<Run> {
        self.codec.decode_run(tree, key, bytes, |hash| Ok(db.get(TreeId::Bodies, hash.as_bytes())?.map(|v| v.to_vec())))
    }

    /// The durable snapshot of a run. sled is read first and the overlay second: a value
    /// read while its batch was in flight is then replaced by the state before the batch.
    /// The overlay is consulted while the database guard is still held, so a heal (which
    /// writes back a failed batch and clears the overlay under the write guard) cannot
    /// come in between.
    fn run(&self, run_id: &str) -> BatonResult<Option<Run>> {
        self.with_db(|db| {
            let stored = self.stored_run(db, run_id)?;
            Ok(match self.overlay().runs.get(run_id) {
                Some(before) => before.clone(),
                None => stored,
            })
        })
    }

    fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
        self.with_db(|db| {
            let to = match self.overlay().runs.get(run_id) {
                Some(before) => to.min(before.as_ref().map_or(0, |r| r.version)),
                None => to,
            };
            if from > to {
                return Ok(Vec::new());
            }
            let (first, last) = (keys::event_key(run_id, from), keys::event_key(run_id, to));
            let mut events = Vec::new();
            let mut used = 0;
            for entry in db.range(TreeId::Events, Bound::Included(&first), Bound::Included(&last)).rev() {
                let (key, bytes) = entry?;
                let json = self.codec.json(TreeId::Events.name(), &key, &bytes)?;
                used += json.len();
                if used > max_bytes && !events.is_empty() {
                    break;
                }
                let event: Event = serde_json::from_slice(&json)
                    .map_err(|e| self.codec.damaged(TreeId::Events.name(), &key, &format!("it does not decode ({e})")))?;
                events.push(event);
            }
            events.reverse();
            Ok(events)
        })
    }

    fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        let key = keys::checkpoint_key(run_id, name);
        self.with_db(|db| {
            let stored = match db.get(TreeId::Checkpoints, &key)? {
                None => None,
                Some(bytes) => Some(self.decode_run(db, TreeId::Checkpoints.name(), &key, &bytes)?),
            };
            // A checkpoint never changes once saved, so it is durable if the durable run lists it.
            Ok(match self.overlay().runs.get(run_id) {
                Some(before) => stored.filter(|_| before.as_ref().is_some_and(|r| r.checkpoints.iter().any(|c| c == name))),
                None => stored,
            })
        })
    }

    fn template(&self, name: &str) -> BatonResult<Option<Template>> {
        self.with_db(|db| {
            let stored = self.durable_template(db, name)?;
            Ok(match self.overlay().templates.get(name) {
                Some(before) => before.clone(),
                None => stored,
            })
        })
    }

    fn templates(&self) -> BatonResult<Vec<Template>> {
        self.with_db(|db| {
            let mut stored: Vec<Template> = db
                .iter(TreeId::Templates)
                .map(|entry| {
                    let (key, bytes) = entry?;
                    self.codec.decode(TreeId::Templates.name(), &key, &bytes)
                })
                .collect::<BatonResult<_>>()?;
            let overlay = self.overlay();
            stored.retain(|t| !overlay.templates.contains_key(&t.name));
            stored.extend(overlay.templates.values().flatten().cloned());
            stored.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(stored)
        })
    }
}

#[async_trait]
impl RunStore for SledStore {
    async fn run(&self, run_id: &str) -> BatonResult<Option<Run>> {
        self.shared.run(run_id)
    }

    async fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
        self.shared.events(run_id, from, to, max_bytes)
    }

    async fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        self.shared.checkpoint(run_id, name)
    }

    async fn template(&self, name: &str) -> BatonResult<Option<Template>> {
        self.shared.template(name)
    }

    async fn templates(&self) -> BatonResult<Vec<Template>> {
        self.shared.templates()
    }

    async fn list(&self, query: &RunQuery) -> BatonResult<RunPage> {
        index::list(&self.shared, query)
    }

    async fn commit(&self, op_id: &str, run_id: &str, change: Mutation) -> BatonResult<Run> {
        self.writer.commit(op_id, run_id, change).await
    }

    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> BatonResult<u64> {
        maintenance::export(&self.shared, out)
    }

    async fn import(&self, input: &mut (dyn std::io::BufRead + Send), replace: bool) -> BatonResult<u64> {
        let records = maintenance::read_export(input)?;
        self.writer.exclusive(move |w| w.import(records, replace)).await
    }

    async fn backup(&self, dir: &Path) -> BatonResult<BackupReport> {
        let target = dir.to_path_buf();
        self.writer.exclusive(move |w| w.backup(&target)).await
    }

    async fn verify(&self) -> BatonResult<VerifyReport> {
        self.writer.exclusive(|w| w.shared.with_db(|db| maintenance::verify(&w.shared, db))).await
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    async fn delete_run(&self, run_id: &str) -> BatonResult<Option<RunSummary>> {
        let run_id = run_id.to_string();
        self.writer.exclusive(move |w| w.delete(&run_id)).await
    }
}

// sled's errors become storage errors here, in the sled store, so the ground floor
// (`crate::error`) knows no store.
impl From<sled::Error> for BatonError {
    fn from(err: sled::Error) -> Self {
        BatonError::storage(
            format!("database error: {err}"),
            "Check that the baton home directory is on a healthy, writable disk; the change was not applied.",
        )
    }
}

#[cfg(test)]
mod tests;
