//! Making what sled wrote reach stable storage. sled 0.34's `flush` writes its log with
//! `pwrite` + `sync_file_range`, which neither flushes the device's volatile cache nor
//! commits file metadata, so an acknowledged change could vanish in a power cut. After
//! each flush the writer calls [`Syncer::sync`], which makes durable every file sled's
//! recovery reads (from sled-0.34.7's source):
//!
//! - `db`: the log of every tree (pages, transactions' batch manifests): `fdatasync`;
//! - `blobs/<lsn>`: values too large for a log segment, written with `write_all` and no
//!   sync at all: each new one is `fdatasync`ed and then the `blobs` directory synced;
//! - `snap.<lsn>`: recovery snapshots, synced by sled but renamed into place without a
//!   directory sync, and `conf`, written once without any sync: the directory is synced
//!   whenever its listing changed.
//!
//! Listings are compared by name (two `getdents` per batch, a few microseconds), so the
//! common batch costs exactly one `fdatasync` and hence one device flush.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub struct Syncer {
    dir: PathBuf,
    db_file: File,
    dir_names: HashSet<OsString>,
    blob_names: HashSet<OsString>,
}

impl Syncer {
    /// Sync every file and directory of the database in `dir` once, then track changes.
    pub fn open(dir: &Path) -> io::Result<Syncer> {
        let mut syncer =
            Syncer { dir: dir.to_path_buf(), db_file: File::open(dir.join("db"))?, dir_names: HashSet::new(), blob_names: HashSet::new() };
        syncer.sync_everything()?;
        Ok(syncer)
    }

    /// Sync all files, both directories, and remember their listings.
    pub fn sync_everything(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        self.blob_names = names(&blobs)?;
        for name in &self.blob_names {
            sync_file(&blobs.join(name))?;
        }
        self.dir_names = names(&self.dir)?;
        for name in &self.dir_names {
            let path = self.dir.join(name);
            if path.is_file() {
                sync_file(&path)?;
            }
        }
        File::open(&blobs)?.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        self.db_file.sync_data()
    }

    /// Make everything sled has written so far durable. Call after `sled::Db::flush`.
    pub fn sync(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let blob_names = names(&blobs)?;
        let new_blobs: Vec<&OsString> = blob_names.difference(&self.blob_names).collect();
        if !new_blobs.is_empty() {
            for name in &new_blobs {
                sync_file(&blobs.join(name))?;
            }
            File::open(&blobs)?.sync_all()?;
        }
        self.blob_names = blob_names;
        let dir_names = names(&self.dir)?;
        if dir_names != self.dir_names {
            for name in dir_names.difference(&self.dir_names) {
                let path = self.dir.join(name);
                if path.is_file() {
                    sync_file(&path)?;
                }
            }
            File::open(&self.dir)?.sync_all()?;
            self.dir_names = dir_names;
        }
        self.db_file.sync_data()
    }
}

/// Room sled needs to reopen: recovery may write up to a segment, then new writes need one.
const REOPEN_BYTES: u64 = 2 * 512 * 1024;
/// Descriptors sled needs to reopen (its files, directories, snapshot, blobs), with margin.
const REOPEN_FDS: usize = 32;

/// Whether reopening the database in `dir` after a write error can succeed now: there is
/// room on its disk and descriptors to spare. A reopen that fails would leave no open
/// database to read from, so the writer waits for this before it tries.
pub fn can_reopen(dir: &Path) -> bool {
    let spare: Vec<_> = (0..REOPEN_FDS).map_while(|_| File::open("/dev/null").ok()).collect();
    if spare.len() < REOPEN_FDS {
        return false;
    }
    free_bytes(dir).is_none_or(|free| free >= REOPEN_BYTES)
}

/// This process's resident size in KiB (`/proc/self/statm`), where there is one.
pub fn resident_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * (page.max(4096) as u64) / 1024)
}

/// Give the memory freed inside the heap back to the system. glibc raises its mmap
/// threshold to the largest block freed (sled's 512 KiB log buffers), so sled's pages of
/// long values come from the heap, and freeing them (closing sled) left the owner's RSS as
/// it was (64 -> 64 MiB, then 96 -> 96 MiB, in the test of long outputs) until trimmed.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Free bytes (for unprivileged users) on the disk holding `dir`, if it can be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a pointer to a statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Free the log buffers sled 0.34 has finished with. sled drops each sealed 512 KiB log
/// buffer through the epoch collector (`pin().defer`), in the bag of the thread that sealed
/// it: the flush thread, whose `flush` seals the buffer being filled. A thread's bag goes
/// to the collector only when it holds 64 deferred drops, and the flush thread defers only
/// a few a flush, so dozens of buffers waited: the owner's RSS swung between 26 and 54 MiB
/// while 8 sessions filled 100,000 events, with no `munmap` in 2 s of checkpoints (strace;
/// `/proc/PID/smaps`; the mappings traced to `AlignedBuf::new` with `perf record -e
/// syscalls:sys_enter_mmap`). Flushing the thread's bag and advancing the epoch twice frees
/// them (each advance succeeds unless another thread is inside sled right then; the next
/// flush retries). A few microseconds, after the flush's answer is sent.
fn release_sled_garbage() {
    for _ in 0..3 {
        crossbeam_epoch::pin().flush();
    }
}

/// Room kept free beyond what a batch needs: sled may start a new log segment (512 KiB)
/// while it writes, and reopening needs [`REOPEN_BYTES`].
const SPARE_BYTES: u64 = 2 * 512 * 1024;

/// `ENOSPC` unless the disk holding `dir` has room for sled to take `bytes` more (written
/// up to four times: its log buffer, a value's own blob file, and their rewrites) and
/// [`SPARE_BYTES`]. sled 0.34 must never meet a full disk inside a write: when writing a
/// large value's blob file fails, it leaves a log buffer with a writer that never
/// finishes, and every later flush (even the one on drop) waits forever (gdb, issue 22).
pub fn room_for(dir: &Path, bytes: u64) -> io::Result<()> {
    match free_bytes(dir) {
        Some(free) if free < bytes.saturating_mul(4).saturating_add(SPARE_BYTES) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        _ => Ok(()),
    }
}

/// Descriptors kept in reserve for a batch: sled opens one file at a time (a large value),
/// the syncer one or two (a directory listing, a new file to sync).
const RESERVE_FDS: usize = 4;

/// File descriptors held back for the write path. sled opens a file for each large value
/// inside a transaction, and if that open fails (EMFILE) sled 0.34 leaves an I/O buffer
/// with a writer that never finishes: every later flush, even the one on drop, blocks
/// forever. So the writer keeps a few descriptors (of /dev/null) in reserve, closes them
/// right before a batch and checks with one open that a descriptor can really be had
/// (a lowered limit can make freed slots unusable): if not, the batch fails before sled
/// sees it. Under a flood of connections that uses up the process's descriptors, the
/// reserve also keeps writes working. (Another thread could still take the freed
/// descriptors in the instant between the check and sled's open.) Cost per use: 4
/// closes and 5 opens of /dev/null, a few microseconds; only sled's work uses it (a
/// journaled batch opens no file).
pub struct FdReserve {
    held: Vec<File>,
    /// Releases not yet followed by their [`FdReserve::refill`]: sled's work can nest (a
    /// write through sled starts with a checkpoint), and the reserve stays free until the
    /// outermost ends.
    released: usize,
}

impl FdReserve {
    pub fn new() -> FdReserve {
        let mut reserve = FdReserve { held: Vec::new(), released: 0 };
        reserve.top_up();
        reserve
    }

    /// Free the reserve for sled's work, or say why it cannot have descriptors.
    pub fn release_for_batch(&mut self) -> io::Result<()> {
        if self.released == 0 {
            self.top_up();
            if self.held.len() < RESERVE_FDS {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.held.clear();
            File::open("/dev/null").map(drop)?;
        }
        self.released += 1;
        Ok(())
    }

    /// After a successful release: take the reserve back once the outermost work is over
    /// (as much of it as can be had).
    pub fn refill(&mut self) {
        self.released = self.released.saturating_sub(1);
        if self.released == 0 {
            self.top_up();
        }
    }

    fn top_up(&mut self) {
        while self.held.len() < RESERVE_FDS {
            match File::open("/dev/null") {
                Ok(file) => self.held.push(file),
                Err(_) => break,
            }
        }
    }
}

/// `fdatasync` a file that may have been removed since it was listed.
fn sync_file(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn names(dir: &Path) -> io::Result<HashSet<OsString>> {
    std::fs::read_dir(dir)?.map(|entry| entry.map(|e| e.file_name())).collect()
}

/// Closing sled: when dropped, waits (at most [`UNLOCK_WAIT`]) until no open file holds the
/// `flock` sled takes on its log file, so the database can be opened again at once (by
/// this process, or by the next owner). sled's own drop writes what its log buffer holds
/// on its I/O threads, which let go of the file a moment after the drop returned.
pub struct Unlocked(pub PathBuf);

const UNLOCK_WAIT: Duration = Duration::from_secs(2);

impl Drop for Unlocked {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let Ok(probe) = File::open(&self.0) else { return };
        let deadline = std::time::Instant::now() + UNLOCK_WAIT;
        // SAFETY: flock on a descriptor this function owns; closing it releases the lock.
        while unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if std::time::Instant::now() >= deadline {
                tracing::warn!("sled still holds {} {UNLOCK_WAIT:?} after it was closed", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How long the writer waits for sled's flush. A flush is a few `pwrite`s and a
/// `sync_file_range`, milliseconds even on a busy disk; this bound stays below a caller's
/// deadline (4 s), so a caller hears `storage` from the store instead of `unavailable`.
pub const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// When (milliseconds since the Unix epoch) a flush of this process started that has not
/// returned within [`FLUSH_WAIT`]; 0 while none is stuck.
static STUCK_SINCE_MS: AtomicU64 = AtomicU64::new(0);

/// How long a flush of this process has been stuck inside sled, if one is. sled 0.34 can
/// wait forever for an I/O buffer whose write was lost (its I/O thread panicked); while
/// that instance lives it holds the database's file lock, so the store cannot reopen it in
/// this process. The owner then exits, and the next owner opens the database afresh.
pub fn stuck_for() -> Option<Duration> {
    match STUCK_SINCE_MS.load(Ordering::Relaxed) {
        0 => None,
        since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1).max(1)
}

/// sled's flush, run on a thread of its own so the writer waits for it at most
/// [`FLUSH_WAIT`]. Cost: one hand-over to the thread and back per batch (microseconds).
pub struct Flusher {
    requests: mpsc::Sender<sled::Db>,
    done: mpsc::Receiver<std::thread::Result<sled::Result<usize>>>,
    /// A flush has not returned yet: the thread is still inside sled.
    stuck: bool,
    /// A closed instance whose drop (which flushes) has not returned yet.
    closing: Option<mpsc::Receiver<()>>,
}

/// Tests: the next flush of the database in this directory first sleeps this long.
#[cfg(test)]
pub static TEST_SLOW_FLUSH: std::sync::Mutex<Option<(PathBuf, Duration)>> = std::sync::Mutex::new(None);

impl Flusher {
    pub fn start(dir: &Path) -> io::Result<Flusher> {
        let (requests, inbox) = mpsc::channel::<sled::Db>();
        let (finished, done) = mpsc::channel();
        #[cfg(test)]
        let dir = dir.to_path_buf();
        #[cfg(not(test))]
        let _ = dir;
        std::thread::Builder::new().name("baton-flush".into()).spawn(move || {
            while let Ok(db) = inbox.recv() {
                #[cfg(test)]
                {
                    let slow = TEST_SLOW_FLUSH.lock().unwrap_or_else(|p| p.into_inner()).take_if(|(d, _)| *d == dir);
                    if let Some((_, delay)) = slow {
                        std::thread::sleep(delay);
                    }
                }
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.flush()));
                // Dropping the handle can be the last reference (sled flushes again then),
                // so it is dropped here too, never on the writer thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
                if finished.send(result).is_err() {
                    break;
                }
                release_sled_garbage();
            }
        })?;
        Ok(Flusher { requests, done, stuck: false, closing: None })
    }

    /// Whether a flush is still stuck inside sled (checking whether it returned meanwhile).
    pub fn is_stuck(&mut self) -> bool {
        if self.stuck && self.done.try_recv().is_ok() {
            self.stuck = false;
            self.unstick();
        }
        if let Some(closing) = &self.closing
            && !matches!(closing.try_recv(), Err(mpsc::TryRecvError::Empty))
        {
            self.closing = None;
            self.unstick();
        }
        self.stuck || self.closing.is_some()
    }

    fn unstick(&mut self) {
        if !self.stuck && self.closing.is_none() {
            STUCK_SINCE_MS.store(0, Ordering::Relaxed);
            tracing::info!("sled's flush returned after being stuck; the store can reopen the database");
        }
    }

    /// Drop a sled instance (sled flushes on drop) on a thread of its own, waiting at most
    /// `wait`: the flush on drop can wait forever just like any other (see [`room_for`]).
    pub fn close<T: Send + 'static>(&mut self, db: T, wait: Duration) -> Result<(), String> {
        let (closed, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("baton-close".into()).spawn(move || {
            // sled syncs on drop unless it saw an error; a failing sync there panics.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
            let _ = closed.send(());
        });
        if let Err(e) = spawned {
            return Err(format!("cannot start a thread to close the database: {e}"));
        }
        match finished.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.closing = Some(finished);
                let _ = STUCK_SINCE_MS.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
                tracing::error!("sled did not finish closing the database within {wait:?} (its flush on close is stuck)");
                Err(format!("sled did not finish writing its log within {wait:?} while closing the database"))
            }
            _ => Ok(()),
        }
    }

    /// Flush `db`, waiting at most `wait`. The error text names what happened.
    pub fn flush(&mut self, db: &sled::Db, wait: Duration) -> Result<(), String> {
        if self.is_stuck() {
            return Err(self.stuck_text());
        }
        if self.requests.send(db.clone()).is_err() {
            return Err("the store's flush thread has stopped".into());
        }
        match self.done.recv_timeout(wait) {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(super::sled_text(&e)),
            Ok(Err(_)) => Err("sled panicked while flushing its log".into()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stuck = true;
                let _ = STUCK_SINCE_MS.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
                tracing::error!("sled's flush did not return within {wait:?}; the write fails and the store stops writing until it does");
                Err(format!("sled did not finish writing its log within {wait:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the store's flush thread has stopped".into()),
        }
    }

    fn stuck_text(&self) -> String {
        let since = stuck_for().map(|d| format!(" for {d:?}")).unwrap_or_default();
        format!("sled has been stuck writing its log{since} (the owner restarts to reopen the database)")
    }
}
