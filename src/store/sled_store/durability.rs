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
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return true };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a pointer to a statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return true;
    }
    stat.f_bavail as u64 * stat.f_frsize as u64 >= REOPEN_BYTES
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
/// descriptors in the instant between the check and sled's open.) Cost per batch: 4
/// closes and 5 opens of /dev/null, a few microseconds.
pub struct FdReserve {
    held: Vec<File>,
}

impl FdReserve {
    pub fn new() -> FdReserve {
        let mut reserve = FdReserve { held: Vec::new() };
        reserve.refill();
        reserve
    }

    /// Free the reserve for a batch, or say why the batch cannot have descriptors.
    pub fn release_for_batch(&mut self) -> io::Result<()> {
        self.refill();
        if self.held.len() < RESERVE_FDS {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        self.held.clear();
        File::open("/dev/null").map(drop)
    }

    /// Take the reserve back (as much of it as can be had).
    pub fn refill(&mut self) {
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
